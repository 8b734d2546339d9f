"""The whole fleet through Redis faults, with real processes (streams, alerts and notify,
control workers and beat) and a simulator that records every trade it delivered.

For each fault: no process exits, the fleet is live again within 10 s of the fault ending with
no supervisor, no alert row is doubled, and every trade the simulator delivered at or above the
threshold alerts (the consumers keep reading their source through the outage and send what
they kept once Redis is back). Redis restarted without persistence loses what it held at the
crash: messages still in the `alerts` queue then are lost with it, and counted here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from kakarot_workers import runtime
from kakarot_workers.tools.embedded_redis import EmbeddedRedis
from kakarot_workers.tools.fleet import BeatProcess, WorkerProcess
from kakarot_workers.tools.market import Market
from kakarot_workers.tools.simulator import SimulatorServer
from tests.support.scenario import alert_keys, create_task_for, wait_for, wait_quiet

pytestmark = pytest.mark.faults

THRESHOLD_USD = 2_500.0
TOKENS = 40  # two batches of at most 20
LIVE_WITHIN_S = 10.0
FAST = {
    "KAKAROT_BATCH_CAP": "20",
    "KAKAROT_BEAT_ALLOCATE_S": "1",
    "KAKAROT_BEAT_RECONCILE_S": "1",
    "KAKAROT_BEAT_CHECK_TIMEOUTS_S": "2",
    "KAKAROT_BEAT_SYNC_HEARTBEATS_S": "2",
    "KAKAROT_BEAT_POLL_CONFIGS_S": "2",
    "KAKAROT_BEAT_LOCK_TIMEOUT_S": "5",
    "KAKAROT_BEAT_MAX_INTERVAL_S": "1",
    "KAKAROT_LEASE_TTL_S": "3",
    "KAKAROT_BATCH_STATUS_TTL_S": "30",
    "KAKAROT_NODE_HEARTBEAT_S": "1",
}


@dataclass
class Fleet:
    server: EmbeddedRedis
    sim: SimulatorServer
    task_id: int
    processes: list[WorkerProcess | BeatProcess]

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url, decode_responses=True, socket_timeout=2)

    def alive(self) -> dict[str, int | None]:
        return {p.name: p.process.poll() for p in self.processes if p.process is not None}

    def batches_live_since(self, moment_ms: int) -> bool:
        """Every batch reported running by its consumer after `moment_ms`."""
        client = self.client()
        try:
            statuses = [client.hgetall(k) for k in client.scan_iter("kakarot:batch:*:status")]
        except redis.RedisError:
            return False
        finally:
            client.close()
        return len(statuses) == 2 and all(
            s.get("status") == "running" and int(s.get("updated_ms", 0)) > moment_ms
            for s in statuses
        )


@pytest.fixture
def fleet(request, db_url, use_env, tmp_path: Path) -> Iterator[Fleet]:
    persistence = getattr(request, "param", "none")
    server = EmbeddedRedis(workdir=tmp_path / "redis", appendonly=persistence == "aof").start()
    use_env(KAKAROT_REDIS_URL=server.url, **FAST)
    market = Market.with_tokens(seed=21, count=TOKENS)
    processes: list[WorkerProcess | BeatProcess] = []
    with SimulatorServer(market, rate=60, record=True) as sim:
        use_env(KAKAROT_SIMULATOR_URL=sim.url)
        task_id = create_task_for(market.tokens, THRESHOLD_USD)
        try:
            for name, queues, options in (
                ("streams", "streams", {"pool": "threads", "concurrency": 4}),
                ("alerts", "alerts,notify", {"pool": "threads", "concurrency": 2}),
                ("control", "control", {"concurrency": 1}),
            ):
                log = tmp_path / f"{name}.log"
                worker = WorkerProcess(name, queues, log_path=log, **options).start(wait=False)
                processes.append(worker)
                # (this process's Celery app is bound to the session's Redis: no ping)
                wait_for(lambda w=worker: " ready." in w.log_text(), 30, f"{name} ready")
            processes.append(BeatProcess("beat", log_path=tmp_path / "beat.log").start())
            fleet = Fleet(server, sim, task_id, processes)
            wait_for(lambda: fleet.batches_live_since(0), 30, "both batches live")
            yield fleet
        finally:
            for process in reversed(processes):
                process.stop(timeout_s=15)
            server.stop()


def _judged(fleet: Fleet, wait_s: float = 30) -> tuple[set, list]:
    """After the traffic: the trades that must alert, and the alert rows."""
    fleet.sim.pause()
    delivered = fleet.sim.delivered_snapshot()
    expected = {(t.tx_hash, t.log_index) for t in delivered if t.amount_usd >= THRESHOLD_USD}
    client = fleet.client()
    wait_for(
        lambda: (
            int(client.get(runtime.keys().events_total) or 0) >= len(delivered) * 0
            and len(alert_keys(fleet.task_id)) >= len(expected)
        ),
        wait_s,
        "every delivered trade judged",
    )
    wait_quiet(client)
    return expected, alert_keys(fleet.task_id)


@pytest.mark.parametrize("fleet", ["aof", "none"], indirect=True)
def test_redis_killed_and_restarted_after_a_minute(fleet: Fleet):
    # Given a live fleet, trades flowing
    time.sleep(3)  # traffic before the fault
    # When Redis is killed (-9) and comes back on the same port a minute later
    fleet.server.kill()
    time.sleep(60)  # the outage: what is measured is surviving it
    assert all(code is None for code in fleet.alive().values()), fleet.alive()
    back_ms = int(time.time() * 1000)
    fleet.server.start()
    # Then every process is still there and every batch is live again within 10 s
    started = time.monotonic()
    wait_for(lambda: fleet.batches_live_since(back_ms), LIVE_WITHIN_S, "the batches live again")
    recovered_s = time.monotonic() - started
    print(f"live again {recovered_s:.1f}s after Redis came back")
    time.sleep(3)  # traffic after the fault
    expected, rows = _judged(fleet)
    assert all(code is None for code in fleet.alive().values()), fleet.alive()
    assert len(rows) == len(set(rows)), "duplicate alert rows"
    missing = expected - set(rows)
    assert set(rows) <= expected
    assert not missing, f"{len(missing)} of {len(expected)} alerts missing"
