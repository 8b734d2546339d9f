"""The whole fleet through Redis faults: killed and restarted a minute later (with and without
persistence), and paused (SIGSTOP) for 30 s.

For each: no process exits, every batch is live again within 10 s of the fault ending with no
supervisor, no alert row and no delivery is doubled, and every trade the simulator delivered at
or above the threshold alerts once (the consumers keep reading their source through the outage
and send what they kept once Redis answers again).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.faults.conftest import Fleet, Shape, assert_exact_after_more_traffic

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("fleet", [Shape(redis="aof"), Shape(redis="none")], indirect=True, ids=str)
def test_redis_killed_and_restarted_after_a_minute(fleet: Fleet):
    time.sleep(3)  # traffic before the fault
    # When Redis is killed (-9) and comes back on the same port a minute later
    fleet.redis.kill()
    time.sleep(60)
    assert not fleet.exited(), fleet.exited()
    back_ms = int(time.time() * 1000)
    fleet.redis.start()
    # Then every batch is live again within 10 s, and the alerts are exact
    recovered_s = fleet.wait_live_since(back_ms, "the batches live again")
    print(f"live again {recovered_s:.1f}s after Redis came back")
    fleet.wait_beat_schedules("beat to schedule again")  # its schedule lives in Redis
    assert_exact_after_more_traffic(fleet)


def test_redis_paused_for_30s(fleet: Fleet):
    time.sleep(3)
    # When Redis stops answering (SIGSTOP: connections stay open, nothing replies) for 30 s
    os.kill(fleet.redis.pid, signal.SIGSTOP)
    try:
        time.sleep(30)
    finally:
        os.kill(fleet.redis.pid, signal.SIGCONT)
    back_ms = int(time.time() * 1000)
    recovered_s = fleet.wait_live_since(back_ms, "the batches live again")
    print(f"live again {recovered_s:.1f}s after Redis answered again")
    fleet.wait_beat_schedules("beat to schedule again")
    assert_exact_after_more_traffic(fleet)
