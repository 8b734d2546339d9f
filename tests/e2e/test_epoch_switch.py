"""An epoch switch under a live simulator stream, with real streams and alerts workers.

Given a task on 150 tokens (batches of 99 + 51) being served, 40 tokens are added: they fit in the
batch of 51, which changes (a new row with 91); the full batch is carried. The old row of
the changed batch must keep serving until its successor is subscribed, then retire. No trade of a
covered token may go unsubscribed, and every trade at or above the threshold alerts exactly once,
although the overlap delivers some trades twice.
"""

import time

from sqlalchemy import select

from kakarot_workers import runtime
from kakarot_workers.control.reconcile import allocate_task, ensure_allocated, retire_handed_over
from kakarot_workers.db.models import MonitorBatch
from kakarot_workers.db.session import session_scope
from kakarot_workers.streams.dispatch import dispatch
from kakarot_workers.tools.market import Market
from kakarot_workers.tools.simulator import SimulatorServer
from tests.support.scenario import add_tokens, alert_keys, create_task_for, wait_for, wait_quiet

THRESHOLD_USD = 2_500.0


def test_epoch_switch_loses_nothing_and_doubles_nothing(db_url, redis_client, workers, use_env):
    market = Market.with_tokens(seed=23, count=190)
    first, later = market.tokens[:150], market.tokens[150:]
    covered = {t.ca for t in first}
    with SimulatorServer(market, rate=300, record=True) as sim:
        use_env(KAKAROT_SIMULATOR_URL=sim.url)
        task_id = create_task_for(first, THRESHOLD_USD)
        epoch1 = ensure_allocated(task_id)
        workers("streams", pool="threads", concurrency=8)
        workers("alerts", pool="prefork", concurrency=2)
        dispatch(epoch1)
        wait_for(lambda: sim.subscribed_tokens() >= covered, 20, "epoch 1 subscribed")
        covered_since = sim.generated  # from here on, no covered token may go unsubscribed
        time.sleep(2)  # traffic: epoch 1 serves a while before the switch

        # When: 40 tokens are added and the task moves to epoch 2
        add_tokens(task_id, later)
        report = allocate_task(task_id)
        assert (report.epoch_before, report.epoch_after) == (1, 2)
        assert len(report.diff.changed) == 1 and not report.diff.new
        assert len(report.carried_batch_ids) == 1 and not report.diff.moved
        (old_row,) = report.diff.changed
        dispatch(list(report.new_batch_ids))
        wait_for(
            lambda: old_row in retire_handed_over(task_id),
            30,
            "the old batch handed over",
            poll_s=0.2,  # one retire pass every 0.2 s
        )
        wait_for(
            lambda: sim.subscribed_tokens() >= covered | {t.ca for t in later},
            10,
            "epoch 2 subscribed",
        )
        time.sleep(2)  # traffic: epoch 2 serves a while after the switch
        sim.pause()
        wait_quiet(redis_client)

        # Then: no gap for covered tokens during the switch …
        gaps = [t for t in sim.undelivered_snapshot() if t.ca in covered and t.seq >= covered_since]
        assert gaps == []
        # … every trade at or above the threshold alerted exactly once …
        delivered = sim.delivered_snapshot()
        expected = {(t.tx_hash, t.log_index) for t in delivered if t.amount_usd >= THRESHOLD_USD}
        rows = alert_keys(task_id)
        assert len(rows) == len(set(rows)), "duplicate alert rows"
        assert set(rows) == expected
        assert len(expected) >= 20
        # … although the overlap delivered some events twice (the dedup key absorbed them)
        emitted = int(redis_client.get(runtime.keys().events_total))
        assert emitted > len(delivered)

        with session_scope() as session:
            status = {
                b.id: (b.status, b.epoch)
                for b in session.scalars(
                    select(MonitorBatch).where(MonitorBatch.task_id == task_id)
                )
            }
        assert status[old_row] == ("retired", 1)
        assert status[report.carried_batch_ids[0]] == ("running", 2)
        assert all(status[b] == ("running", 2) for b in report.new_batch_ids)
        assert redis_client.hget(runtime.keys().batch_status(old_row), "status") == "retired"
