"""kill -9 of each kind of process in a fleet of two of each (streams, alerts, control, beat),
with no supervisor: the other one carries on.

For each: the fleet is live again within 10 s of the kill (the killed consumer's batches served
by the other streams worker, the standby beat scheduling, alerts judged), no alert row and no
delivery is doubled, and every trade the simulator delivered at or above the threshold alerts
once, but for the trades a killed stream consumer had read and not yet sent (it sends every
50 ms; a feed cannot replay them: without a standby a known limit, in the README; with one,
`test_standby` loses nothing).
"""

from __future__ import annotations

import re
import time

import pytest

from kakarot_workers.tools.fleet import BeatProcess, WorkerProcess
from tests.faults.conftest import (
    FAST,
    LIVE_WITHIN_S,
    Fleet,
    Shape,
    assert_exact_after_more_traffic,
    must_alert,
)
from tests.support.scenario import alert_keys, wait_for

pytestmark = pytest.mark.faults

SPARES = Shape(spares=True)


def _holders(fleet: Fleet) -> set[str]:
    """The consumer ids (`host-pid-slot`) that hold a batch."""
    return {s["consumer_id"] for s in fleet.batch_statuses() if s.get("consumer_id")}


def _streams_worker_holding_a_batch(fleet: Fleet) -> WorkerProcess:
    pids = {int(c.rsplit("-", 2)[1]) for c in _holders(fleet)}
    workers = [p for p in fleet.processes if p.name.startswith("streams-") and p.pid in pids]
    assert workers, f"no streams worker holds a batch: {_holders(fleet)}"
    return workers[0]


def _succeeded(process: WorkerProcess | BeatProcess, task: str) -> int:
    return len(re.findall(rf"Task {re.escape(task)}\[[^\]]+\] succeeded", process.log_text()))


@pytest.mark.parametrize("fleet", [SPARES], indirect=True, ids=str)
def test_kill_9_a_streams_worker(fleet: Fleet):
    time.sleep(3)
    victim = _streams_worker_holding_a_batch(fleet)
    before = len(fleet.sim.delivered_snapshot())
    time.sleep(1)
    killed_ms = int(time.time() * 1000)
    fleet.kill(victim.name)
    time.sleep(0.5)  # what the simulator still wrote to the dead consumer's socket
    gap = fleet.sim.delivered_snapshot()[before:]
    recovered_s = fleet.wait_live_since(killed_ms, "the other streams worker to serve")
    print(f"every batch live again {recovered_s:.1f}s after the kill")
    assert all(f"-{victim.pid}-" not in c for c in _holders(fleet))
    outcome = assert_exact_after_more_traffic(fleet, may_miss=must_alert(gap))
    print(f"lost in the gap: {len(outcome.missing)} alert(s)")


@pytest.mark.parametrize("fleet", [SPARES], indirect=True, ids=str)
def test_kill_9_an_alerts_worker(fleet: Fleet):
    time.sleep(3)
    client = fleet.client()
    fleet.kill("alerts-a")
    killed_at = time.monotonic()
    print(f"{client.hlen('unacked')} message(s) taken and unacknowledged at the kill")
    # new alerts keep coming from the other alerts worker at once
    rows_at_kill = len(alert_keys(fleet.task_id))
    wait_for(
        lambda: len(alert_keys(fleet.task_id)) > rows_at_kill,
        LIVE_WITHIN_S,
        "new alerts from the other alerts worker",
    )
    print(f"new alerts {time.monotonic() - killed_at:.1f}s after the kill")
    # what the killed worker had taken and not acknowledged comes back after the visibility
    # timeout
    visibility_s = float(FAST["KAKAROT_BROKER_VISIBILITY_TIMEOUT_S"])
    assert_exact_after_more_traffic(fleet, wait_s=visibility_s + LIVE_WITHIN_S)
    print(f"everything judged {time.monotonic() - killed_at:.1f}s after the kill")


@pytest.mark.parametrize("fleet", [SPARES], indirect=True, ids=str)
def test_kill_9_a_control_worker(fleet: Fleet):
    time.sleep(3)
    fleet.kill("control-a")
    killed_at = time.monotonic()
    survivor = fleet.process("control-b")
    done = _succeeded(survivor, "kakarot.control.reconcile")
    wait_for(
        lambda: _succeeded(survivor, "kakarot.control.reconcile") > done,
        LIVE_WITHIN_S,
        "the other control worker to run beat's jobs",
    )
    print(f"the other control worker ran a job {time.monotonic() - killed_at:.1f}s after the kill")
    assert_exact_after_more_traffic(fleet)


@pytest.mark.parametrize("fleet", [SPARES], indirect=True, ids=str)
def test_kill_9_the_active_beat(fleet: Fleet):
    beats = [fleet.process("beat-a"), fleet.process("beat-b")]
    wait_for(lambda: any(b.active for b in beats), 20, "a beat to hold the lock")
    active, standby = beats if beats[0].active else beats[::-1]
    fleet.kill(active.name)
    killed_at = time.monotonic()
    # the lock lapses (KAKAROT_BEAT_LOCK_TIMEOUT_S) and the standby takes it
    wait_for(lambda: standby.active, LIVE_WITHIN_S, "the standby beat to take over")
    wait_for(
        lambda: "Sending due task reconcile" in standby.log_text(),
        LIVE_WITHIN_S,
        "the standby to schedule",
    )
    print(f"the standby scheduled {time.monotonic() - killed_at:.1f}s after the kill")
    assert_exact_after_more_traffic(fleet)
