"""The control plane for real: `celery beat` (RedBeat) subprocesses sending the jobs to a
`control` worker, streams and alerts workers, Redis and SQLite."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from kakarot_workers import queues, runtime
from kakarot_workers.celery import app
from kakarot_workers.control.configs import publish_config
from kakarot_workers.control.reconcile import ensure_allocated, reconcile
from kakarot_workers.db.models import MonitorBatch, MonitorConfig
from kakarot_workers.db.session import session_scope
from kakarot_workers.tools.embedded_redis import EmbeddedRedis
from kakarot_workers.tools.fleet import BeatProcess, WorkerProcess
from kakarot_workers.tools.market import Market
from kakarot_workers.tools.simulator import SimulatorServer
from tests.support.scenario import (
    create_task_for,
    create_task_with,
    first_alert_at,
    wait_for,
    wire_event,
)

# Fast schedules; the lock is RedBeat's, at the shortest the settings allow.
FAST = {
    "KAKAROT_BEAT_ALLOCATE_S": "1",
    "KAKAROT_BEAT_RECONCILE_S": "1",
    "KAKAROT_BEAT_CHECK_TIMEOUTS_S": "1",
    "KAKAROT_BEAT_SYNC_HEARTBEATS_S": "1",
    "KAKAROT_BEAT_POLL_CONFIGS_S": "1",
    "KAKAROT_BEAT_LOCK_TIMEOUT_S": "5",
    "KAKAROT_BEAT_MAX_INTERVAL_S": "1",
}


def _beat(tmp_path: Path, name: str, started: list[BeatProcess]) -> BeatProcess:
    beat = BeatProcess(name, log_path=tmp_path / f"{name}.log").start()
    started.append(beat)
    return beat


@pytest.fixture
def beats(tmp_path):
    started: list[BeatProcess] = []
    yield lambda name: _beat(tmp_path, name, started)
    for beat in started:
        beat.kill()


def _queued_batches(client) -> list[int]:
    messages = [json.loads(m) for m in client.lrange("streams", 0, -1)]
    return sorted(json.loads(base64.b64decode(m["body"]))[0][0] for m in messages)


def _sent(beat: BeatProcess, job: str) -> int:
    return beat.log_text().count(f"Sending due task {job} ")


def _tasks(worker: WorkerProcess, name: str, outcome: str) -> int:
    """How many `name` tasks the worker logged as `received` or `succeeded`."""
    return len(re.findall(rf"Task {re.escape(name)}\[[^\]]+\] {outcome}\b", worker.log_text()))


def test_two_beats_one_schedule_each_unowned_batch_dispatched_once_and_a_standby_takes_over(
    db_url, redis_client, use_env, workers, beats
):
    use_env(**FAST)
    task_id = create_task_with([f"0x{i:040x}" for i in range(250)])  # three batches
    control = workers("control")
    first, second = beats("beat-a"), beats("beat-b")
    wait_for(lambda: first.active or second.active, 20, "a beat to take the lock")
    active, standby = (first, second) if first.active else (second, first)
    # the standby ticks too (it tries the lock at each tick, without blocking), and says so
    standby_key = runtime.keys().beat_heartbeat(socket.gethostname(), "standby")
    wait_for(lambda: redis_client.exists(standby_key), 10, "the standby's heartbeat")
    assert "(leader and standby)" in _kakarot("health", "beat").stdout
    # allocate finds the new task, reconcile dispatches its batches; nobody serves streams
    wait_for(lambda: len(_queued_batches(redis_client)) == 3, 20, "three dispatches")
    # several more reconcile passes: three received after the dispatches, run to their end
    received = _tasks(control, queues.RECONCILE, "received")
    wait_for(
        lambda: _tasks(control, queues.RECONCILE, "succeeded") >= received + 3,
        20,
        "three more reconcile passes",
    )
    with session_scope() as session:
        batch_ids = sorted(session.scalars(select(MonitorBatch.id)))
    assert _queued_batches(redis_client) == batch_ids, "each batch dispatched exactly once"
    assert _sent(active, "reconcile") >= 4
    assert _sent(standby, "reconcile") == 0 and not standby.active
    assert task_id

    active.kill()  # kill -9: the lock is not released, it lapses
    killed_at = time.monotonic()
    wait_for(lambda: standby.active, 20, "the standby to take the lock")
    wait_for(lambda: _sent(standby, "reconcile") > 0, 10, "the standby to schedule")
    took_over_s = time.monotonic() - killed_at
    assert took_over_s < 5 + 1 + 5, f"took over after {took_over_s:.1f}s"


def test_a_dead_consumers_batch_goes_stale_and_is_live_again_on_another_worker(
    db_url, redis_client, use_env, workers, beats
):
    use_env(**FAST)
    use_env(
        # only check_timeouts may send the batch again here: reconcile would not wait for it
        KAKAROT_BEAT_RECONCILE_S="3600",
        KAKAROT_BEAT_ALLOCATE_S="3600",
        KAKAROT_BATCH_STALE_S="3",
        KAKAROT_LEASE_TTL_S="1.5",
        KAKAROT_HANDOVER_TIMEOUT_S="0",
    )
    market = Market.with_tokens(seed=3, count=20)
    with SimulatorServer(market, rate=50) as sim:
        use_env(KAKAROT_SIMULATOR_URL=sim.url)
        task_id = create_task_for(market.tokens, 1e12)
        (batch_id,) = ensure_allocated(task_id)
        first = workers("streams", pool="threads", concurrency=4)
        reconcile(task_id)
        workers("control")
        beats("beat")

        def row() -> MonitorBatch:
            with session_scope() as session:
                batch = session.get(MonitorBatch, batch_id)
                session.expunge(batch)
                return batch

        wait_for(
            lambda: row().worker_id == f"{first.pid}@{first.nodename}",
            20,
            "the first worker's heartbeat",
        )
        assert row().status == "running"
        first.kill()
        # the batch is `stale` until its new consumer starts, often too briefly to see: the
        # counter says check_timeouts found it
        stale = runtime.keys().batches_stale
        wait_for(lambda: redis_client.get(stale) == "1", 20, "check_timeouts to find it stale")
        second = workers("streams", pool="threads", concurrency=4)

        def live_on_second() -> bool:
            # the row says `running` as soon as the consumer holds the lease; its own status
            # says `running` once its source is live (`connecting` until then)
            current = row()
            status = redis_client.hgetall(runtime.keys().batch_status(batch_id))
            return (
                current.status == "running"
                and current.worker_id == f"{second.pid}@{second.nodename}"
                and status.get("status") == "running"
                and status.get("node_id") == second.nodename
            )

        wait_for(live_on_second, 30, "the batch live on the second worker")


class Feeder:
    """Sends one event per message every 20 ms to the alerts queue, each a new trade."""

    def __init__(self, task_id: int, ca: str) -> None:
        self.task_id, self.ca = task_id, ca
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.wait(0.02) and n < 5_000:
            n += 1
            event = wire_event(self.task_id, self.ca, n, amount_usd=50.0)
            app.send_task("kakarot.alerts.evaluate_events", args=[[event]])

    def __enter__(self) -> Feeder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def _lower_the_threshold_and_publish(task_id: int) -> tuple[int, float]:
    with session_scope() as session:
        config = session.scalars(select(MonitorConfig)).one()
        session.execute(
            update(MonitorConfig)
            .where(MonitorConfig.id == config.id)
            .values(min_transaction_usd=10)
        )
        config_id = config.id
    published_at = time.time()
    return publish_config(config_id), published_at


@pytest.mark.parametrize("path", ["pubsub", "poll"])
def test_a_config_change_reaches_the_alert_workers(
    path, db_url, redis_client, use_env, workers, beats
):
    """Pub/Sub alone (no beat running), or polling alone (the workers do not listen)."""
    if path == "poll":
        use_env(**FAST, KAKAROT_CONFIG_PUBSUB="false")
    ca = "0x" + "c" * 40
    task_id = create_task_with(
        [ca], min_transaction_usd=1_000, events_config={"cooldown": {"seconds": 0}}
    )
    workers("alerts", concurrency=2)
    if path == "poll":
        workers("control")
        beats("beat")
    evaluated = runtime.keys().alert_stat("evaluated")
    with Feeder(task_id, ca):
        # the workers judge under version 1: nothing alerts
        wait_for(
            lambda: int(redis_client.get(evaluated) or 0) >= 50,
            10,
            "50 events judged under version 1",
        )
        assert first_alert_at(task_id, 1) is None
        version, published_at = _lower_the_threshold_and_publish(task_id)
        wait_for(lambda: first_alert_at(task_id, version) is not None, 15, "an alert")
    delay_s = first_alert_at(task_id, version) - published_at
    bound = 1.0 if path == "pubsub" else 1.0 + 1.0  # poll interval + 1 s
    # a generous margin for a loaded test machine; bench/config_reload.py measures it
    assert delay_s < bound + 2.0, f"{path}: first alert under v{version} after {delay_s:.2f}s"


def test_with_no_control_worker_beat_and_kakarot_nodes_say_so(db_url, use_env, workers, beats):
    """A fleet started from the card without `-Q control`: beat's jobs queue up and nothing is
    allocated. Beat says so in its log (within `beat_check_workers_s`), naming the worker to
    start, and `kakarot nodes` shows it. The container healthchecks see both processes alive."""
    use_env(**FAST, KAKAROT_BEAT_CHECK_WORKERS_S="1")
    create_task_with([f"0x{i:040x}" for i in range(5)])
    alerts = workers("alerts,notify")
    beat = beats("beat")
    wait_for(
        lambda: (
            "wait on queue control and no live worker consumes it: start one "
            "(celery -A kakarot_workers worker -Q control)" in beat.log_text()
        ),
        20,
        "beat to say no worker consumes control",
    )
    result = _kakarot("nodes")
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("no live worker consumes:")]
    assert "control (" in line and "streams (0 waiting)" in line
    assert "alerts" not in line and "notify" not in line

    healthy = _kakarot("health", "worker", alerts.nodename)
    assert healthy.returncode == 0 and "healthy: worker" in healthy.stdout, healthy.stderr
    assert "(leader)" in _kakarot("health", "beat").stdout
    missing = _kakarot("health", "worker", "control@nowhere")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "unhealthy: worker control@nowhere has not beaten in Redis lately"
    )


def _kakarot(*args: str) -> subprocess.CompletedProcess:
    """The `kakarot` console script as an operator (or a container healthcheck) runs it."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("kakarot")), *args],
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_beat_started_before_redis_waits_and_schedules_once_redis_answers(
    db_url, use_env, beats, tmp_path
):
    """Started while Redis is away (a host booting, Redis still loading), beat waits instead of
    exiting, then takes the lock, installs its schedule and sends the jobs."""
    server = EmbeddedRedis(workdir=tmp_path / "late-redis")
    use_env(**FAST, KAKAROT_REDIS_URL=server.url)
    beat = beats("beat")
    time.sleep(3)
    assert beat.process.poll() is None, beat.log_text()[-2000:]
    assert "Redis unreachable" in beat.log_text()
    server.start()
    try:
        wait_for(lambda: _sent(beat, "reconcile") >= 2, 20, "beat to schedule once Redis answers")
        assert beat.active
    finally:
        beat.kill()
        server.stop()
