"""The hot standby (KAKAROT_STANDBY=true) on the simulator: the worker owning a batch is killed
(kill -9) or paused (SIGSTOP, then woken as a zombie); the standby on the other streams worker
takes over from the owner's last sent trade. Every trade the simulator delivered is judged, once:
every one at or above the threshold alerts exactly once and is delivered once, with none of the
gap lost (without a standby, `test_workers` allows the gap's trades to be missed).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from kakarot_workers import runtime
from kakarot_workers.tools.fleet import WorkerProcess
from tests.faults.conftest import BATCHES, Fleet, Shape, assert_exact_after_more_traffic
from tests.support.scenario import wait_for

pytestmark = pytest.mark.faults

STANDBY = Shape(spares=True, standby=True)


def _standbys(fleet: Fleet) -> dict[str, str]:
    client = fleet.client()
    try:
        return {k: client.get(k) for k in client.scan_iter("kakarot:batch:*:standby")}
    finally:
        client.close()


def _owner_of_a_batch(fleet: Fleet) -> WorkerProcess:
    holders = {s["consumer_id"] for s in fleet.batch_statuses() if s.get("consumer_id")}
    pids = {int(c.rsplit("-", 2)[1]) for c in holders}
    workers = [p for p in fleet.processes if p.name.startswith("streams-") and p.pid in pids]
    assert workers, f"no streams worker holds a batch: {holders}"
    return workers[0]


def _judged(fleet: Fleet) -> int:
    client = fleet.client()
    try:
        return int(client.get(runtime.keys().alert_stat("evaluated")) or 0)
    finally:
        client.close()


@pytest.mark.parametrize("fault", ["kill", "pause"])
@pytest.mark.parametrize("fleet", [STANDBY], indirect=True, ids=str)
def test_the_standby_takes_over_and_nothing_is_lost(fleet: Fleet, fault: str):
    wait_for(lambda: len(_standbys(fleet)) == BATCHES, 20, "a standby for each batch")
    time.sleep(2)
    victim = _owner_of_a_batch(fleet)
    faulted_ms = int(time.time() * 1000)
    if fault == "kill":
        fleet.kill(victim.name)
    else:
        os.killpg(victim.pid, signal.SIGSTOP)
    recovered_s = fleet.wait_live_since(faulted_ms, "the standby to take over")
    print(f"{fault}: every batch live again {recovered_s:.1f}s after the fault")
    (survivor,) = [p for p in fleet.processes if p.name.startswith("streams-") and p is not victim]
    assert "the standby takes over" in survivor.log_text()
    if fault == "pause":
        time.sleep(2)
        os.killpg(victim.pid, signal.SIGCONT)  # a zombie now: what it still sends is refused
    outcome = assert_exact_after_more_traffic(fleet)  # nothing may be missed
    delivered = len({(t.tx_hash, t.log_index) for t in fleet.sim.delivered_snapshot()})
    judged = _judged(fleet)
    print(
        f"{fault}: {len(outcome.rows)} alerts of {len(outcome.expected)}, none missing; "
        f"{judged} events judged for {delivered} trades delivered"
    )
    # a trade is judged twice only if the owner died between a send and its mark
    assert delivered <= judged <= delivered + 200
