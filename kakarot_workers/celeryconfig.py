"""Celery configuration, built from the one settings object (`KAKAROT_*`).

Loaded by `kakarot_workers.celery` with `config_from_object("kakarot_workers.celeryconfig")`, on
first use of the configuration (not at import of the app).
"""

import sys
from typing import Any

from kombu.entity import Queue

from kakarot_workers import queues
from kakarot_workers.errors import ConfigError
from kakarot_workers.keys import Keys
from kakarot_workers.redis_urls import sentinel_group
from kakarot_workers.settings import get_settings

try:
    _settings = get_settings()
except ConfigError as exc:  # a worker or beat with an invalid setting: one line, exit 2
    sys.stderr.write(f"error: {exc}\n")
    raise SystemExit(2) from None

broker_url = _settings.redis_url
_sentinels = sentinel_group(broker_url)
if broker_url.startswith(("redis://", "rediss://")):
    # kombu's Redis transport, with undecodable queue items sent to the dead letters
    broker_transport = "kakarot_workers.broker:Transport"
elif _sentinels is not None:
    # kombu's Sentinel transport, the same check: it asks the sentinels for the primary again
    # whenever its connection fails, so workers follow a failover
    broker_transport = "kakarot_workers.broker:SentinelTransport"
# Nothing reads task results (alerts land in the database). With a result backend, every
# send_task would also subscribe to a result channel: a round trip per micro-batch for nothing.
result_backend = _settings.result_backend_url
task_ignore_result = True

# JSON only, never pickle.
task_serializer = "json"
result_serializer = "json"
event_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# Notifications wait on other services (and their rate limits): their own queue, so slow
# deliveries never hold up judging, and operators can run them on their own workers.
task_queues = tuple(Queue(name) for name in queues.ALL)
task_default_queue = queues.CONTROL
task_routes = queues.ROUTES

# Prefetch: a worker that consumes `streams` takes a message only when a pool slot is free
# (`worker_disable_prefetch`, set for it by `celery.KakarotWorker`): a stream task holds its
# slot for hours, and a message prefetched behind it would starve there while an idle worker
# waits. Other workers run tasks of milliseconds (alerts, notify, control jobs) and keep up to
# this many unacknowledged messages per slot, so a slot never waits on the broker between two
# tasks (`--prefetch-multiplier N` per worker; the running one counts for late-acked alerts).
worker_disable_prefetch = False
worker_prefetch_multiplier = _settings.worker_prefetch_multiplier
# Acknowledgement is set per task (stream tasks early, alert tasks late); see the task modules.
task_acks_late = False
task_reject_on_worker_lost = True

broker_connection_retry_on_startup = True
# A worker waits for the broker as long as it takes (Celery gives up after 100 tries by
# default, then exits); the worker's consumer tries every 0.5-2 s (worker.KakarotConsumer).
broker_connection_max_retries = None
broker_transport_options: dict[str, Any] = {
    # Unacknowledged (acks_late) alert messages come back after this many seconds if their
    # worker vanished. Stream tasks are acknowledged on receipt: one comes back this way only
    # if its worker died within the 50 ms its acknowledgement may wait (`broker.QoS`), and
    # then finds its batch's lease taken, or takes it as any dispatch would.
    "visibility_timeout": _settings.broker_visibility_timeout_s,
    # kombu looks for such messages every 10 s but scans only every 10th time (~100 s): an
    # alert of a dead worker would wait that long on top. One ZRANGE every 2 s is cheap.
    "unacked_restore_interval": 2,
    "unacked_restore_throttle": 1,
    # A send on a connection known to be down fails at once, instead of kombu retrying to
    # connect for up to `broker_connection_timeout` (4 s) inside the send: a stream consumer
    # keeps its events and serves on (its lease renewals, above all), and a send with
    # `retry=True` still follows its own retry policy. (The worker's consuming connection
    # retries on its own terms, `worker.KakarotConsumer`.)
    "max_retries": 0,
}
if _settings.redis_key_prefix:
    # fleets sharing one Redis share no queue either (`Keys.queue` names them)
    broker_transport_options["global_keyprefix"] = _settings.redis_key_prefix
if _sentinels is not None:
    broker_transport_options["master_name"] = _settings.redis_sentinel_master
worker_send_task_events = _settings.celery_task_events
task_send_sent_event = _settings.celery_task_events
worker_hijack_root_logger = False
# Celery's consumer, with the messages it refuses moved to the dead letters (worker.py)
worker_consumer = "kakarot_workers.worker:KakarotConsumer"
# A cold shutdown (a second SIGTERM/SIGINT, or SIGQUIT) first gives running tasks this long:
# stream consumers use it to flush and hand their batches over instead of vanishing.
worker_soft_shutdown_timeout = _settings.handover_timeout_s + 5
timezone = "UTC"
enable_utc = True

# --- beat: the control plane's jobs (`control/tasks.py`), on queue `control` ---------------------
# RedBeat keeps the schedule in Redis and holds a lock, so a second beat (HA) waits as a standby:
# it tries every `beat_max_loop_interval` and takes over when the lock lapses, well within a
# minute (RedBeat's default lock, 5 × the max interval, would be 25 minutes with Celery's 300 s).
beat_scheduler = "kakarot_workers.beat:Scheduler"  # RedBeat, riding out Redis outages
redbeat_redis_url = _settings.redis_url
if _sentinels is not None:
    redbeat_redis_url = "redis-sentinel://"
    redbeat_redis_options = {
        "sentinels": list(_sentinels.sentinels),
        "service_name": _settings.redis_sentinel_master,
        "db": _sentinels.db,
        "password": _sentinels.password,
        "username": _sentinels.username,
        "socket_timeout": 5,
    }
redbeat_key_prefix = Keys(_settings.redis_key_prefix).beat_prefix
redbeat_lock_timeout = _settings.beat_lock_timeout_s
beat_max_loop_interval = _settings.beat_max_interval_s


def _every(seconds: float, task: str) -> dict[str, Any]:
    # A job that waited longer than its own interval is dropped: the next one is on its way.
    return {"task": task, "schedule": seconds, "options": {"expires": seconds}}


beat_schedule = {
    "allocate": _every(_settings.beat_allocate_s, queues.ALLOCATE),
    "reconcile": _every(_settings.beat_reconcile_s, queues.RECONCILE),
    "check_timeouts": _every(_settings.beat_check_timeouts_s, queues.CHECK_TIMEOUTS),
    "sync_heartbeats": _every(_settings.beat_sync_heartbeats_s, queues.SYNC_HEARTBEATS),
    "poll_configs": _every(_settings.beat_poll_configs_s, queues.POLL_CONFIGS),
    "sweep_outbox": _every(_settings.beat_sweep_outbox_s, queues.SWEEP_OUTBOX),
}
if _settings.beat_rebalance_s:
    beat_schedule["rebalance"] = _every(_settings.beat_rebalance_s, queues.REBALANCE)
