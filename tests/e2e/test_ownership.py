"""Who serves a batch, with real worker processes: many batches per process, failover after
`kill -9`, a zombie after SIGSTOP, and a graceful SIGTERM hand-over.

The reconcile loop here stands in for beat: it calls `control.reconcile.reconcile()` as beat's
reconcile job does (tests/e2e/test_beat.py runs beat itself).
"""

import os
import signal
import socket
import time
from datetime import UTC, datetime

from sqlalchemy import select

from kakarot_workers import runtime
from kakarot_workers.control.reconcile import ensure_allocated, reconcile
from kakarot_workers.db.models import MonitorBatch
from kakarot_workers.db.session import session_scope
from kakarot_workers.tools.market import Market
from kakarot_workers.tools.simulator import SimulatorServer
from tests.support.scenario import (
    alert_keys,
    create_task_for,
    queued_args,
    wait_for,
    wait_quiet,
)

THRESHOLD_USD = 2_500.0


def holder_pid(client, batch_id: int) -> int | None:
    """The pid of the consumer holding the batch's lease (`hostname-pid-slot:token`)."""
    value = client.get(runtime.keys().batch_lease(batch_id))
    return int(value.split(":")[0].rsplit("-", 2)[1]) if value else None


def live_by(client, batch_ids: list[int], pid: int) -> bool:
    """Every batch leased by `pid` and reported running by that consumer."""
    for batch_id in batch_ids:
        if holder_pid(client, batch_id) != pid:
            return False
        status = client.hgetall(runtime.keys().batch_status(batch_id))
        if status.get("status") != "running" or f"-{pid}-" not in status.get("consumer_id", ""):
            return False
    return True


def reconcile_until(predicate, timeout_s: float, what: str, every_s: float = 0.3) -> float:
    """Run the reconcile pass until `predicate()`; return the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"timed out waiting for {what}"
        reconcile()
        time.sleep(every_s)
    return time.monotonic() - started


def test_a_streams_worker_with_no_flags_holds_many_batches_and_leaves_cleanly(
    db_url, redis_client, workers, use_env
):
    use_env(
        KAKAROT_BATCH_CAP="2",
        KAKAROT_NODE_HEARTBEAT_S="0.5",
        KAKAROT_DB_HEARTBEAT_S="0.5",
        KAKAROT_HEARTBEAT_WRITER="node",  # each node writes its own rows (beat's job: test_beat)
    )
    market = Market.with_tokens(seed=5, count=80)
    with SimulatorServer(market, rate=100) as sim:
        use_env(KAKAROT_SIMULATOR_URL=sim.url)
        task_id = create_task_for(market.tokens, THRESHOLD_USD)
        batch_ids = ensure_allocated(task_id)
        assert len(batch_ids) == 40
        worker = workers("streams")  # exactly `celery -A kakarot_workers worker -Q streams`
        reconcile_until(lambda: live_by(redis_client, batch_ids, worker.pid), 30, "40 live")
        assert sim.subscribed_tokens() == {t.ca for t in market.tokens}

        keys = runtime.keys()
        wait_for(
            lambda: redis_client.hget(keys.node_metrics(worker.nodename), "batch_count") == "40",
            5,
            "node metrics",
        )
        # the snapshot that first counts 40 batches may come before their first micro-batch
        wait_for(
            lambda: int(redis_client.hget(keys.node_metrics(worker.nodename), "total_events")) > 0,
            5,
            "the node's metrics to count events",
        )
        beat = redis_client.get(keys.node_heartbeat(worker.nodename))
        assert "+" not in beat and not beat.endswith("Z")  # the notes' form: no offset (UTC)
        at = datetime.fromisoformat(beat).replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - at).total_seconds()) < 5
        assert 0 < redis_client.ttl(keys.node_heartbeat(worker.nodename)) <= 2
        metrics = redis_client.hgetall(keys.node_metrics(worker.nodename))
        assert float(metrics["memory_usage"]) > 10  # MiB of a real Python process
        assert float(metrics["cpu_usage"]) >= 0
        assert int(metrics["total_events"]) > 0
        assert metrics["backpressure_count"] == "0" and metrics["dropped_events"] == "0"

        def rows_written() -> bool:
            with session_scope() as session:
                rows = session.scalars(select(MonitorBatch).where(MonitorBatch.id.in_(batch_ids)))
                return all(
                    r.worker_id == f"{worker.pid}@{worker.nodename}"
                    and r.consumer_id == f"{socket.gethostname()}-{worker.pid}"
                    and r.last_heartbeat
                    and r.status == "running"
                    for r in rows
                )

        wait_for(rows_written, 5, "batch rows written in bulk")

        # SIGTERM with no other worker: nobody could take over, so the worker does not wait the
        # hand-over timeout (10 s, past honcho's 5 s kill): every batch is released at once, sent
        # back to the queue for the next worker, marked stopped, and the node keys are gone.
        started = time.monotonic()
        assert worker.stop(timeout_s=20) == 0
        stopped_in = time.monotonic() - started
        assert stopped_in < 5, f"stopped {stopped_in:.1f}s after SIGTERM: a supervisor kills at 5s"
        assert sorted(b for (b,) in queued_args(redis_client, "streams")) == sorted(batch_ids)
        assert all(redis_client.get(keys.batch_lease(b)) is None for b in batch_ids)
        assert {redis_client.hget(keys.batch_status(b), "status") for b in batch_ids} == {"stopped"}
        assert not redis_client.exists(keys.node_heartbeat(worker.nodename))
        assert not redis_client.exists(keys.node_metrics(worker.nodename))
        with session_scope() as session:
            statuses = set(
                session.scalars(select(MonitorBatch.status).where(MonitorBatch.id.in_(batch_ids)))
            )
        assert statuses == {"stopped"}


def test_kill_9_the_holder_and_the_other_worker_serves_the_batch_within_10s(
    db_url, redis_client, workers, use_env
):
    use_env(KAKAROT_BATCH_CAP="20")  # 60 tokens → three batches; lease TTL is the default
    market = Market.with_tokens(seed=9, count=60)
    with SimulatorServer(market, rate=200, record=True) as sim:
        use_env(KAKAROT_SIMULATOR_URL=sim.url)
        task_id = create_task_for(market.tokens, THRESHOLD_USD)
        batch_ids = ensure_allocated(task_id)
        assert len(batch_ids) == 3
        first = workers("streams")
        reconcile_until(lambda: live_by(redis_client, batch_ids, first.pid), 20, "first live")
        second = workers("streams")
        workers("alerts", pool="prefork", concurrency=2)
        time.sleep(1)  # traffic: the fleet runs a while, alerting, before the holder dies

        first.kill()  # kill -9: no flush, no release; the lease must expire
        taken = reconcile_until(
            lambda: live_by(redis_client, batch_ids, second.pid), 10, "failover within 10 s"
        )
        print(f"failover after kill -9: {taken:.1f}s")
        assert sim.subscribed_tokens() == {t.ca for t in market.tokens}
        # the last 50 delivered trades, checked below, all come after the takeover
        at_takeover = len(sim.delivered_snapshot())
        wait_for(
            lambda: len(sim.delivered_snapshot()) >= at_takeover + 50,
            10,
            "50 trades delivered since the takeover",
        )
        sim.pause()
        wait_quiet(redis_client)

        rows = alert_keys(task_id)
        assert len(rows) == len(set(rows)), "duplicate alert rows"
        # trades generated after the takeover alert exactly as expected
        with session_scope() as session:
            after = session.scalars(
                select(MonitorBatch.status).where(MonitorBatch.id.in_(batch_ids))
            ).all()
        assert set(after) == {"running"}
        expected_late = {
            (t.tx_hash, t.log_index)
            for t in sim.delivered_snapshot()[-50:]
            if t.amount_usd >= THRESHOLD_USD
        }
        assert expected_late <= set(rows)


def test_a_zombie_resumed_after_losing_its_lease_alerts_nothing(
    db_url, redis_client, workers, use_env
):
    use_env(KAKAROT_LEASE_TTL_S="1.5")
    market = Market.with_tokens(seed=31, count=40)
    events_total = runtime.keys().events_total
    with SimulatorServer(market, rate=400, record=True) as sim:
        use_env(KAKAROT_SIMULATOR_URL=sim.url)
        task_id = create_task_for(market.tokens, THRESHOLD_USD)
        (batch_id,) = ensure_allocated(task_id)
        workers("alerts", pool="prefork", concurrency=2)
        # The zombie flushes every 2 s, so when it is stopped it holds about a second of trades
        # that nobody else has seen: exactly what a zombie could wrongly alert on.
        zombie = workers(
            "streams", env={"KAKAROT_EMIT_MAX_MS": "2000", "KAKAROT_EMIT_MAX_EVENTS": "100000"}
        )
        reconcile_until(lambda: live_by(redis_client, [batch_id], zombie.pid), 20, "live")
        seen = redis_client.get(events_total)
        wait_for(lambda: redis_client.get(events_total) != seen, 5, "a flush")
        held_from = sim.generated + 20  # later trades sit in the zombie's buffer, unsent
        time.sleep(1)  # about a second of them, well before its next flush (2 s after this one)

        os.kill(zombie.pid, signal.SIGSTOP)
        try:
            lease = runtime.keys().batch_lease(batch_id)
            wait_for(lambda: not redis_client.exists(lease), 10, "the zombie's lease to expire")
            heir_from = sim.generated  # the heir sees nothing older than its start
            heir = workers("streams")
            reconcile_until(lambda: live_by(redis_client, [batch_id], heir.pid), 15, "heir live")
            time.sleep(1)  # traffic: the heir serves a while before the zombie wakes
            sim.pause()
        finally:
            os.kill(zombie.pid, signal.SIGCONT)
        # Woken, the zombie cannot prove its lease (unconfirmed for a full TTL): it keeps its
        # buffer, finds the lease lost and stops, sending nothing (had it sent, the alert pool
        # would have fenced it off: tests/integration/test_consumer.py).
        wait_quiet(redis_client, quiet_s=2.0)

        only_zombie = {
            (t.tx_hash, t.log_index)
            for t in sim.delivered_snapshot()
            if held_from <= t.seq < heir_from and t.amount_usd >= THRESHOLD_USD
        }
        assert len(only_zombie) >= 5, "the scenario must give the zombie something to alert"
        rows = alert_keys(task_id)
        assert len(rows) == len(set(rows))
        assert not (set(rows) & only_zombie), "a zombie's event became an alert"
        wait_for(lambda: "lease lost" in zombie.log_text(), 5, "the zombie to find it lost")
        assert int(redis_client.get(runtime.keys().events_fenced) or 0) == 0, "it sent nothing"
        assert live_by(redis_client, [batch_id], heir.pid), "the zombie disturbed the heir"


def test_sigterm_hands_the_batch_over_with_no_gap_and_no_duplicate(
    db_url, redis_client, workers, use_env
):
    use_env(KAKAROT_BATCH_CAP="20")
    market = Market.with_tokens(seed=13, count=60)
    covered = {t.ca for t in market.tokens}
    with SimulatorServer(market, rate=300, record=True) as sim:
        use_env(KAKAROT_SIMULATOR_URL=sim.url)
        task_id = create_task_for(market.tokens, THRESHOLD_USD)
        batch_ids = ensure_allocated(task_id)
        leaving = workers("streams")
        reconcile_until(lambda: live_by(redis_client, batch_ids, leaving.pid), 20, "live")
        covered_since = sim.generated
        successor = workers("streams")
        workers("alerts", pool="prefork", concurrency=2)
        time.sleep(1)  # traffic: the leaving worker serves a while before its SIGTERM

        # No reconcile from here on: the leaving consumers dispatch their successors themselves.
        leaving.process.send_signal(signal.SIGTERM)
        wait_for(lambda: live_by(redis_client, batch_ids, successor.pid), 15, "successor live")
        leaving.process.wait(20)
        assert leaving.process.returncode == 0
        time.sleep(1)  # traffic: the successor serves a while after the hand-over
        sim.pause()
        wait_quiet(redis_client)

        gaps = [t for t in sim.undelivered_snapshot() if t.ca in covered and t.seq >= covered_since]
        assert gaps == []
        delivered = [t for t in sim.delivered_snapshot() if t.seq >= covered_since]
        expected = {(t.tx_hash, t.log_index) for t in delivered if t.amount_usd >= THRESHOLD_USD}
        rows = alert_keys(task_id)
        assert len(rows) == len(set(rows)), "duplicate alert rows"
        assert expected <= set(rows), f"{len(expected - set(rows))} trades never alerted"
        assert len(expected) >= 10
