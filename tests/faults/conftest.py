"""The fleet under test: real processes, a simulator that records every trade it delivered and a
webhook receiver that records every delivery, on a Redis server and a database of its own that
the tests kill, pause and restart.

`fleet` takes its shape from the test's parameter (`indirect=True`), a `Shape`: Redis with or
without persistence, SQLite or MariaDB, and with `spares` two of every process (two streams,
two alerts, two control workers and two beats) so that one of each can be killed; with
`standby`, a hot standby per batch (KAKAROT_STANDBY); with `nodes`, that many nodes of a streams
and an alerts worker each (`streams-1`, `alerts-1`, …), one control worker and one beat, and
batches of `batch_cap` tokens.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from kakarot_workers.db.session import upgrade_schema
from kakarot_workers.redis_urls import connect
from kakarot_workers.tools.embedded_redis import EmbeddedRedis
from kakarot_workers.tools.fleet import BeatProcess, WorkerProcess
from kakarot_workers.tools.market import Market, Trade
from kakarot_workers.tools.simulator import SimulatorServer
from tests.support.mariadb import MariaDBServer, find_binaries
from tests.support.notify_servers import WEBHOOK_SECRET, NotifyServer
from tests.support.scenario import alert_keys, create_task_with, wait_for, wait_quiet
from tests.support.sentinel import MASTER, SentinelGroup

THRESHOLD_USD = 2_500.0
TOKENS = 40  # two batches of at most 20
BATCHES = 2
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
    # a killed alerts worker's unacknowledged messages come back to the others after this
    "KAKAROT_BROKER_VISIBILITY_TIMEOUT_S": "10",
    "KAKAROT_BEAT_REBALANCE_S": "1",
    "KAKAROT_HANDOVER_TIMEOUT_S": "5",
}


@dataclass(frozen=True)
class Shape:
    # "aof": append-only file; "none": no persistence; "sentinel": a primary, a replica and
    # three sentinels (`tests.support.sentinel`)
    redis: str = "none"
    database: str = "sqlite"  # or "mariadb"
    spares: bool = False
    standby: bool = False  # KAKAROT_STANDBY: a hot standby per batch
    nodes: int = 0  # nodes of a streams and an alerts worker (0: one of each kind, or spares)
    batch_cap: int = 20

    @property
    def batches(self) -> int:
        return -(-TOKENS // self.batch_cap)

    def __str__(self) -> str:
        return (
            f"redis-{self.redis}-{self.database}"
            + ("-spares" if self.spares else "")
            + ("-standby" if self.standby else "")
            + (f"-{self.nodes}-nodes" if self.nodes else "")
        )


@dataclass
class Fleet:
    redis: EmbeddedRedis
    sim: SimulatorServer
    hooks: NotifyServer
    task_id: int
    processes: list[WorkerProcess | BeatProcess]
    mariadb: MariaDBServer | None = None
    killed: set[str] = field(default_factory=set)
    batches: int = BATCHES
    log_dir: Path | None = None
    redis_url: str = ""
    sentinels: SentinelGroup | None = None  # Shape(redis="sentinel"): redis is its primary

    def client(self) -> redis.Redis:
        """A client of the fleet's Redis (with Sentinel, of its primary wherever it is)."""
        return connect(
            self.redis_url or self.redis.url, MASTER, decode_responses=True, socket_timeout=2
        )

    def process(self, name: str) -> WorkerProcess | BeatProcess:
        return next(p for p in self.processes if p.name == name)

    def kill(self, name: str) -> None:
        self.killed.add(name)
        self.process(name).kill()

    def exited(self) -> dict[str, int]:
        """The processes that exited although nobody killed them, with their exit codes."""
        codes = {p.name: p.process.poll() for p in self.processes if p.process is not None}
        return {n: c for n, c in codes.items() if c is not None and n not in self.killed}

    def batch_statuses(self) -> list[dict[str, str]]:
        client = self.client()
        try:
            return [client.hgetall(k) for k in client.scan_iter("kakarot:batch:*:status")]
        except redis.RedisError:
            return []
        finally:
            client.close()

    def batches_live_since(self, moment_ms: int) -> bool:
        """Every batch reported running by its consumer after `moment_ms`."""
        statuses = self.batch_statuses()
        return len(statuses) == self.batches and all(
            s.get("status") == "running" and int(s.get("updated_ms", 0)) > moment_ms
            for s in statuses
        )

    def add_node(self, name: str) -> None:
        """Start node `name`: a streams worker `streams-<name>` and an alerts worker
        `alerts-<name>`, as the fixture starts them."""
        for worker in node_workers(name, self.log_dir or Path(".")):
            self.processes.append(worker.start(wait=False))
            wait_for(lambda w=worker: " ready." in w.log_text(), 30, f"{worker.name} ready")

    def jobs_sent(self) -> int:
        """How many jobs the beats have sent so far (reconcile, allocate, …)."""
        return sum(
            p.log_text().count("Sending due task ")
            for p in self.processes
            if isinstance(p, BeatProcess)
        )

    def wait_beat_schedules(self, what: str) -> None:
        """Until the beat sends jobs again: a reconcile pass runs at least every second, so two
        more jobs mean beat is scheduling."""
        sent = self.jobs_sent()
        wait_for(lambda: self.jobs_sent() >= sent + 2, LIVE_WITHIN_S, what)

    def wait_live_since(self, moment_ms: int, what: str) -> float:
        """Seconds until every batch is live again after `moment_ms` (at most LIVE_WITHIN_S)."""
        started = time.monotonic()
        wait_for(lambda: self.batches_live_since(moment_ms), LIVE_WITHIN_S, what)
        return time.monotonic() - started


def caught_up_s(fleet: Fleet, what: str) -> float:
    """Seconds until every trade delivered so far that must alert has its row (the alert pool
    caught up with its backlog), at most LIVE_WITHIN_S."""
    expected = must_alert(fleet.sim.delivered_snapshot())
    started = time.monotonic()
    wait_for(lambda: set(alert_keys(fleet.task_id)) >= expected, LIVE_WITHIN_S, what)
    return time.monotonic() - started


@dataclass
class Outcome:
    """What the fleet made of the traffic: each must-alert trade, alert row and delivery."""

    expected: set[tuple[str, int]]
    rows: list[tuple[str, int]]
    deliveries: list[tuple[str, int]]

    @property
    def missing(self) -> set[tuple[str, int]]:
        return self.expected - set(self.rows)

    def assert_exact(self, may_miss: AbstractSet[tuple[str, int]] = frozenset()) -> None:
        """No alert row and no delivery doubled, none wrong, none missing (but `may_miss`)."""
        assert len(self.rows) == len(set(self.rows)), "duplicate alert rows"
        assert len(self.deliveries) == len(set(self.deliveries)), "duplicate deliveries"
        assert set(self.rows) <= self.expected, "alerts for trades below the threshold"
        assert sorted(self.deliveries) == sorted(self.rows), "deliveries differ from alert rows"
        unexpected = self.missing - may_miss
        assert not unexpected, f"{len(unexpected)} of {len(self.expected)} alerts missing"


def must_alert(trades: list[Trade]) -> set[tuple[str, int]]:
    return {(t.tx_hash, t.log_index) for t in trades if t.amount_usd >= THRESHOLD_USD}


def judged(fleet: Fleet, wait_s: float = 60) -> Outcome:
    """Stop the traffic; once every delivered trade that must alert has its row and delivery,
    and the fleet is quiet, what it made of them."""
    fleet.sim.pause()
    expected = must_alert(fleet.sim.delivered_snapshot())

    def deliveries() -> list[tuple[str, int]]:
        return [
            (h["alert"]["tx_hash"], h["alert"]["log_index"])
            for h in fleet.hooks.messages("webhook")
        ]

    def done() -> bool:
        rows = alert_keys(fleet.task_id)
        return set(rows) >= expected and len(deliveries()) >= len(rows)

    with contextlib.suppress(AssertionError):  # the assertions on the outcome say what is missing
        wait_for(done, wait_s, "every delivered trade that must alert alerted and delivered")
    client = fleet.client()
    wait_quiet(client)
    client.close()
    time.sleep(1)  # a late duplicate would show up now
    return Outcome(expected, alert_keys(fleet.task_id), deliveries())


def assert_exact_after_more_traffic(
    fleet: Fleet, may_miss: AbstractSet[tuple[str, int]] = frozenset(), wait_s: float = 60
) -> Outcome:
    """A few more seconds of traffic, then: no process exited that was not killed, and the
    alerts and deliveries are exact (see `Outcome.assert_exact`)."""
    time.sleep(3)
    outcome = judged(fleet, wait_s)
    assert not fleet.exited(), fleet.exited()
    outcome.assert_exact(may_miss)
    return outcome


STREAMS_OPTIONS: dict[str, object] = {"pool": "threads", "concurrency": 4}
ALERTS_OPTIONS: dict[str, object] = {"pool": "threads", "concurrency": 2}


def node_workers(name: str, log_dir: Path) -> list[WorkerProcess]:
    """The workers of one node: a streams and an alerts (and notify) worker."""
    return [
        WorkerProcess(
            f"streams-{name}",
            "streams",
            log_path=log_dir / f"streams-{name}.log",
            **STREAMS_OPTIONS,
        ),
        WorkerProcess(
            f"alerts-{name}",
            "alerts,notify",
            log_path=log_dir / f"alerts-{name}.log",
            **ALERTS_OPTIONS,
        ),
    ]


@pytest.fixture
def fleet(request, use_env, tmp_path: Path) -> Iterator[Fleet]:
    shape: Shape = getattr(request, "param", Shape())
    mariadb = None
    if shape.database == "mariadb":
        binaries = find_binaries()
        assert binaries is not None, "mariadb-server is not installed (.ci/run installs it)"
        mariadb = MariaDBServer(*binaries).start()
        url = mariadb.create_database("kakarot_faults")
    else:
        url = f"sqlite:///{tmp_path}/kakarot.db"
    upgrade_schema(url)
    group = None
    if shape.redis == "sentinel":
        group = SentinelGroup(tmp_path / "redis").start()
        server, redis_url = group.primary, group.url
    else:
        server = EmbeddedRedis(workdir=tmp_path / "redis", appendonly=shape.redis == "aof").start()
        redis_url = server.url
    processes: list[WorkerProcess | BeatProcess] = []
    try:
        with NotifyServer() as hooks:
            use_env(
                KAKAROT_DATABASE_URL=url,
                KAKAROT_REDIS_URL=redis_url,
                KAKAROT_REDIS_SENTINEL_MASTER=MASTER,
                KAKAROT_WEBHOOK_URL=f"{hooks.url}/hook",
                KAKAROT_WEBHOOK_SECRET=WEBHOOK_SECRET,
                KAKAROT_STANDBY="true" if shape.standby else "false",
                **FAST,
            )
            use_env(KAKAROT_BATCH_CAP=str(shape.batch_cap))
            market = Market.with_tokens(seed=21, count=TOKENS)
            with SimulatorServer(market, rate=60, record=True) as sim:
                use_env(KAKAROT_SIMULATOR_URL=sim.url)
                task_id = create_task_with(
                    [t.ca for t in market.tokens],
                    min_transaction_usd=THRESHOLD_USD,
                    # every trade at or above the threshold alerts, delivered to the webhook
                    events_config={"cooldown": {"seconds": 0}},
                    notify_methods={"webhook": {}},
                )
                copies = ("a", "b") if shape.spares else ("a",)
                workers: list[WorkerProcess] = []
                if shape.nodes:
                    for number in range(1, shape.nodes + 1):
                        workers += node_workers(str(number), tmp_path)
                else:
                    workers += [
                        WorkerProcess(
                            f"{kind}-{copy}",
                            queues,
                            log_path=tmp_path / f"{kind}-{copy}.log",
                            **options,
                        )
                        for kind, queues, options in (
                            ("streams", "streams", STREAMS_OPTIONS),
                            ("alerts", "alerts,notify", ALERTS_OPTIONS),
                        )
                        for copy in copies
                    ]
                workers += [
                    WorkerProcess(
                        f"control-{copy}",
                        "control",
                        log_path=tmp_path / f"control-{copy}.log",
                        concurrency=1,
                    )
                    for copy in copies
                ]
                for worker in workers:
                    processes.append(worker.start(wait=False))
                    # (this process's Celery app is bound to the session's Redis: no ping)
                    wait_for(lambda w=worker: " ready." in w.log_text(), 30, f"{worker.name} ready")
                for copy in copies:
                    name = f"beat-{copy}"
                    processes.append(BeatProcess(name, log_path=tmp_path / f"{name}.log").start())
                fleet = Fleet(
                    server,
                    sim,
                    hooks,
                    task_id,
                    processes,
                    mariadb,
                    batches=shape.batches,
                    log_dir=tmp_path,
                    redis_url=redis_url,
                    sentinels=group,
                )
                wait_for(lambda: fleet.batches_live_since(0), 30, "every batch live")
                yield fleet
    finally:
        for process in reversed(processes):
            process.stop(timeout_s=15)
        if group is not None:
            group.stop()
        else:
            server.stop()
        if mariadb is not None:
            mariadb.stop()
