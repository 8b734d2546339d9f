"""The one place that wires the stages into a Celery worker: bootsteps and process signals.

Bootsteps (Celery's `StartStopStep`, like its own `worker/consumer/heart.py`), in the worker's
main process:
- `Node`: this process as a node of the fleet (`streams.node`: heartbeat, metrics, batch rows);
  a `batch_reload` from the backend runs the control plane's reconcile for its task;
- `Probes`: `/metrics`, `/health` and `/ready` (`probes`), when `KAKAROT_PROBE_PORT` is set;
- `BackendLink`: the node's conversation with the backend WebSocket, when one is configured;
- `ConfigListening`: the listener of `monitor:config:changed`, unless `config_pubsub` is off.

`KakarotConsumer` is Celery's consumer with the messages it refuses (a body it cannot decode,
no task header, a task we do not have, an invalid task message) moved to the dead letters.

Signals: logging set-up; task outcomes counted (`metrics`); beat's probes; a forked pool child
forgets its parent's sockets; what a worker loads once is kept out of the garbage collector's
full collections (their pauses are observed); a worker that serves
`notify` sweeps the outbox when ready; on SIGTERM every stream consumer starts its hand-over;
beat does not take RedBeat's lock at start-up (blocking: a standby would never tick), as
`beat.Scheduler` tries it at every tick.

`kakarot_workers.celery` lists this module in `include`, so a worker imports it before it builds
its blueprint, and beat before it makes its scheduler.
"""

from __future__ import annotations

import collections
import functools
import gc
import json
import logging
import os
import time
from typing import Any

from celery import bootsteps, signals
from celery.worker.consumer import Consumer
from redbeat.schedulers import acquire_distributed_beat_lock

from kakarot_workers import backend, deadletters, logs, metrics, probes, queues, runtime
from kakarot_workers.celery import app
from kakarot_workers.control.configs import ConfigListener
from kakarot_workers.control.reconcile import reconcile
from kakarot_workers.db.session import dispose_engines
from kakarot_workers.notify import notifiers
from kakarot_workers.settings import get_settings
from kakarot_workers.streams import node

log = logging.getLogger(__name__)

BROKER_RETRY_START_S = 0.5
BROKER_RETRY_MAX_S = 2.0


def _queues(worker: Any) -> str:
    return ",".join(sorted(worker.app.amqp.queues.consume_from))


class Node(bootsteps.StartStopStep):
    """This worker process as a node of the fleet; stopped once its consumers have let go."""

    def create(self, worker: Any) -> node.NodeAgent:
        return node.install(
            node.NodeAgent(
                worker.hostname, _queues(worker), reconcile=reconcile, slots=worker.concurrency
            )
        )


class Probes(bootsteps.StartStopStep):
    """/metrics, /health and /ready (`probes`), when `KAKAROT_PROBE_PORT` is set."""

    requires = (Node,)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.enabled = bool(get_settings().probe_port)

    def create(self, worker: Any) -> probes.Probes:
        settings = get_settings()
        probes.clear_multiprocess_dir()  # a prefork pool's children: a new life, new counts
        agent = node.current()
        checks = {
            "redis": probes.redis_answers,
            "database": probes.database_answers,
            "node": agent.beating,
        }
        if queues.STREAMS in _queues(worker).split(","):
            checks["batches"] = agent.batches_live
        return probes.Probes(settings.probe_port, settings.probe_address, checks)


class BackendLink(bootsteps.StartStopStep):
    """The node's WebSocket to the backend (SPEC §7), when `KAKAROT_BACKEND_WS_URL` is set."""

    requires = (Node,)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.enabled = bool(get_settings().backend_ws_url)

    def create(self, worker: Any) -> backend.BackendClient:
        settings = get_settings()
        agent = node.current()
        token = settings.backend_token.get_secret_value() if settings.backend_token else None
        return backend.BackendClient(
            settings.backend_ws_url or "",
            runtime.consumer_id(),  # hostname-pid, the notes' consumer id
            node_id=agent.node_id,
            batches=agent.batch_report,
            on_batch_reload=agent.batch_reload,
            token=token,
            heartbeat_s=settings.backend_heartbeat_s,
            ping_s=settings.backend_heartbeat_s,
            max_backoff_s=settings.reconnect_max_backoff_s,
        )


class ConfigListening(bootsteps.StartStopStep):
    """Announced config versions from `monitor:config:changed`, unless `config_pubsub` is off."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.enabled = get_settings().config_pubsub

    def create(self, worker: Any) -> ConfigListener:
        return ConfigListener(max_backoff_s=get_settings().reconnect_max_backoff_s)


app.steps["worker"].update({Node, Probes, BackendLink, ConfigListening})


class KakarotConsumer(Consumer):
    """Celery's consumer; what it refuses goes to the dead letters (one log line, no
    traceback: the message is the sender's mistake, not the worker's) and is acknowledged.
    When the broker is lost it tries again every 0.5-2 s (Celery's own steps grow to 30 s, so a
    worker could stay away half a minute after Redis came back)."""

    def ensure_connected(self, conn: Any) -> Any:
        retry = conn.ensure_connection
        conn.ensure_connection = functools.partial(
            retry,
            interval_start=BROKER_RETRY_START_S,
            interval_step=BROKER_RETRY_START_S,
            interval_max=BROKER_RETRY_MAX_S,
        )
        return super().ensure_connected(conn)

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        # Celery 5.7 closes the lost connection after `collect()` has taken it apart; when a
        # late-acked message's ack failed with the connection (Redis killed mid-ack), closing
        # the channel restores it through connection info that is gone, and the AttributeError
        # stopped the worker ("Unrecoverable error"; seen once in `make faults`). The message
        # stays in `unacked`, and comes back after the visibility timeout; the worker
        # reconnects as for any lost connection.
        try:
            super().on_connection_error_after_connected(exc)
        except AttributeError as error:
            log.warning("broker connection lost; closing it failed (%s): reconnecting", error)
            self.connection = None

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        _dead_letter(message, f"body not decodable ({message.content_type}): {exc}")
        message.ack()

    def on_unknown_message(self, body: Any, message: Any) -> None:
        _dead_letter(message, "not a task message: no task header")
        self._refuse(message, None)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = (message.headers or {}).get("task")
        _dead_letter(message, f"no such task: {name!r}")
        self._refuse(message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        _dead_letter(message, f"invalid task message: {exc}")
        self._refuse(message, exc)

    def _refuse(self, message: Any, exc: Exception | None) -> None:
        message.reject_log_error(log, self.connection_errors)
        signals.task_rejected.send(sender=self, message=message, exc=exc)


def _dead_letter(message: Any, reason: str) -> None:
    raw = getattr(message, "_raw", None)
    queue = (message.delivery_info or {}).get("routing_key") or "unknown"
    deadletters.put(queue, reason, raw=json.dumps(raw) if raw is not None else None)


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    logs.configure()


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A forked pool child must not reuse the parent's sockets.
    dispose_engines()
    runtime.forget_inherited_clients()
    notifiers.reset(close=False)
    _freeze_what_is_loaded()


# --- the garbage collector ----------------------------------------------------------------------
# A full collection walks every object the process holds: in a worker, about 190,000 after
# start-up (Celery, SQLAlchemy, the rules), which took 76 ms on the 2-core development machine,
# with every thread of the process stopped: an alert judged then waited that long (#19, the
# latency tail). The modules and objects a worker loads once are moved out of the collector's
# reach (`gc.freeze`) when it is ready, and again after its first task (what that task loaded
# lazily), so a full collection walks only what came after. Pauses are observed in
# `kakarot_gc_pause_seconds` after each task (not inside the collector's callback: a thread that
# holds the metrics' lock when a collection starts would wait on itself).
_gc_started: dict[int, float] = {}
_gc_pauses: collections.deque[tuple[int, float]] = collections.deque(maxlen=10_000)
_first_task_frozen: set[int] = set()


def _freeze_what_is_loaded() -> None:
    gc.collect()
    gc.freeze()


def _observe_gc(phase: str, info: dict[str, int]) -> None:
    generation = info["generation"]
    if phase == "start":
        _gc_started[generation] = time.perf_counter()
    elif generation in _gc_started:
        _gc_pauses.append((generation, time.perf_counter() - _gc_started.pop(generation)))


@signals.worker_init.connect
def _watch_gc(**_: Any) -> None:
    if _observe_gc not in gc.callbacks:
        gc.callbacks.append(_observe_gc)


@signals.task_postrun.connect
def _after_a_task(**_: Any) -> None:
    while _gc_pauses:
        generation, pause = _gc_pauses.popleft()
        metrics.GC_PAUSES.labels(str(generation)).observe(pause)
    pid = os.getpid()
    if pid not in _first_task_frozen:
        _first_task_frozen.add(pid)
        _freeze_what_is_loaded()


@signals.worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    _freeze_what_is_loaded()
    if sender is not None and queues.NOTIFY in _queues(sender).split(","):
        # Notifications left behind by a worker that died between two steps.
        sender.app.send_task(queues.SWEEP_OUTBOX)


@signals.worker_shutting_down.connect
def _on_shutting_down(sig: str = "", how: str = "", **_: Any) -> None:
    # Sent in the main process on SIGTERM/SIGINT; stream consumers (threads) see the flag,
    # flush their pending events, release their leases and return, so the warm shutdown can
    # complete and another worker can take their batches at once.
    log.info("worker shutting down (%s %s): stopping stream consumers", how, sig)
    runtime.request_shutdown()


signals.beat_init.disconnect(acquire_distributed_beat_lock)


@signals.beat_init.connect
def _beat_probes(**_: Any) -> None:
    # beat is ready when Redis answers (it rides out an outage, `beat`)
    probes.serve({"redis": probes.redis_answers, "ticking": probes.beat_ticking})


@signals.worker_process_shutdown.connect
def _child_gone(pid: int | None = None, **_: Any) -> None:
    probes.child_gone(pid)


@signals.task_success.connect
def _task_ok(sender: Any = None, **_: Any) -> None:
    metrics.TASKS.labels(getattr(sender, "name", "?"), "success").inc()


@signals.task_failure.connect
def _task_failed(sender: Any = None, **_: Any) -> None:
    metrics.TASKS.labels(getattr(sender, "name", "?"), "failure").inc()


@signals.task_retry.connect
def _task_retried(sender: Any = None, **_: Any) -> None:
    metrics.TASKS.labels(getattr(sender, "name", "?"), "retry").inc()


@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    dispose_engines()
