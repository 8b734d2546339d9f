"""This worker process as a node of the fleet: its consumers, heartbeats, metrics and DB rows.

One `NodeAgent` per worker process, created and started by the worker's `Node` bootstep
(`kakarot_workers.worker`), stopped on shutdown once its consumers have let go. It keeps
- `heartbeat:node:{node_id}`: ISO time, TTL 3 × `node_heartbeat_s` (default every 10 s, TTL 30 s);
- `node:metrics:{node_id}`: a hash with the notes' fields (`portfolio_count` = batches held,
  `queue_size` = events buffered in this node's consumers, `cpu_usage` %, `memory_usage` MiB RSS,
  `total_events`, `backpressure_count`, `dropped_events`) plus `batch_count`, `reconnects`,
  `pid`, `hostname`, `updated_at`. Removed on a clean shutdown; a node killed without one
  shows `offline` in `kakarot nodes` until the hash expires, `node_forget_s` after its last beat;
- with `heartbeat_writer=node`, the `monitor_batch_v2` rows of the batches it serves (status,
  consumer, worker, pid, last_heartbeat) and their tasks' `last_heartbeat`, written in bulk every
  `db_heartbeat_s`, never once per event (by default beat's sync_heartbeats writes them).

It answers the backend's questions about its batches (`batch_report`, `batch_reload`); the
reconcile pass a reload runs is given to it, so this stage does not import the control plane.
Stream consumers run as threads of this process (the streams pool is `threads`), so the registry
here sees them all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import psutil
import redis
from redis.typing import EncodableT, FieldT
from sqlalchemy.exc import SQLAlchemyError

from kakarot_workers import metrics, runtime
from kakarot_workers.db import heartbeats
from kakarot_workers.db.models import MonitorTask, utcnow
from kakarot_workers.db.session import session_scope
from kakarot_workers.keys import Keys
from kakarot_workers.queues import STREAMS
from kakarot_workers.settings import get_settings
from kakarot_workers.status import LIVE, protocol_status

log = logging.getLogger(__name__)

# On shutdown the node waits this long past the hand-over timeout for its consumers to let go.
LET_GO_MARGIN_S = 2.0


class Held(Protocol):
    """What the node needs to know of a consumer it holds."""

    batch_id: int
    task_id: int
    consumer_id: str

    @property
    def status(self) -> str: ...

    @property
    def pending(self) -> int: ...

    @property
    def progress(self) -> int: ...

    @property
    def epoch(self) -> int: ...


@dataclass
class NodeCounters:
    total_events: int = 0
    backpressure_count: int = 0
    dropped_events: int = 0
    reconnects: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **amounts: int) -> None:
        with self.lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)


class NodeAgent:
    """Heartbeats, metrics and batch rows for one worker process."""

    def __init__(
        self,
        node_id: str,
        queues: str = "",
        reconcile: Callable[[int], object] | None = None,
        slots: int = 0,
    ) -> None:
        settings = get_settings()
        self.node_id = node_id
        self.queues = queues
        self.slots = slots  # batches this node can serve at once (0: unknown)
        self.leaving = False
        self.reconcile = reconcile
        self.handover_timeout_s = settings.handover_timeout_s
        self.heartbeat_s = settings.node_heartbeat_s
        self.forget_s = settings.node_forget_s
        self.db_heartbeat_s = settings.db_heartbeat_s
        self.counters = NodeCounters()
        self._held: dict[int, Held] = {}
        self.standbys = 0  # hot standbys this process runs (each holds a slot)
        self.beaten_at = time.monotonic()  # the last heartbeat written (a grace at start)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first reading is meaningless; prime it

    # --- the consumers of this process ----------------------------------------------------
    def hold(self, consumer: Held) -> None:
        with self._lock:
            self._held[consumer.batch_id] = consumer
            metrics.LEASES_HELD.set(len(self._held))
        self._publish_count()

    def let_go(self, consumer: Held) -> None:
        with self._lock:
            if self._held.get(consumer.batch_id) is consumer:
                del self._held[consumer.batch_id]
            metrics.LEASES_HELD.set(len(self._held))
        self._publish_count()

    def _publish_count(self) -> None:
        """The node's batch count in its metrics at once, not at the next beat: placement
        reads it to spread the batches dispatched next (`placement`)."""
        if not self._threads or self._stop.is_set():
            return  # not a started node (a tool, a test): it has no metrics to keep
        count = str(len(self.held()))
        keys = runtime.keys()
        with contextlib.suppress(redis.RedisError):  # the next beat writes it
            runtime.redis_client().hset(
                keys.node_metrics(self.node_id),
                mapping={"batch_count": count, "portfolio_count": count},
            )

    def held(self) -> list[Held]:
        with self._lock:
            return list(self._held.values())

    def batches_live(self) -> None:
        """Raise unless every batch this node holds is live (its source connected, its lease
        held): what a streams worker's `/ready` checks (`probes`)."""
        waiting = sorted(h.batch_id for h in self.held() if h.status not in LIVE)
        if waiting:
            raise RuntimeError(f"batch(es) not live: {', '.join(map(str, waiting))}")

    def standing_by(self, change: int) -> None:
        """A hot standby starts (+1) or ends (-1) in this process (`standby`)."""
        with self._lock:
            self.standbys += change
            metrics.STANDBYS.set(self.standbys)

    # --- life cycle ----------------------------------------------------------------------
    def start(self) -> NodeAgent:
        settings = get_settings()
        beats: list[tuple[str, float, Callable[[], None]]] = [
            ("node-heartbeat", self.heartbeat_s, self.beat)
        ]
        if settings.heartbeat_writer == "node":
            beats.append(("node-db-heartbeat", self.db_heartbeat_s, self.write_rows))
        for name, interval, beat in beats:
            thread = threading.Thread(
                target=self._every, args=(interval, beat), name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        log.info("node %s up (queues %s)", self.node_id, self.queues)
        return self

    def successor_possible(self) -> bool:
        """This node is going down: say so in its metrics (no other leaving node waits for it),
        and whether another live node could take one of its batches now."""
        self.leaving = True
        client, keys = runtime.redis_client(), runtime.keys()
        client.hset(keys.node_metrics(self.node_id), "leaving", "1")
        return any(
            node_id != self.node_id and could_take_a_batch(metrics)
            for node_id, metrics in live_nodes(client, keys).items()
        )

    def stop(self) -> None:
        """Wait for the consumers to let go (they are handing their batches over), then stop
        beating and remove the node keys (a clean shutdown)."""
        deadline = time.monotonic() + self.handover_timeout_s + LET_GO_MARGIN_S
        while self.held() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError):
            keys = runtime.keys()
            runtime.redis_client().delete(
                keys.node_heartbeat(self.node_id), keys.node_metrics(self.node_id)
            )

    def _every(self, interval: float, beat: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                beat()
            except (redis.RedisError, SQLAlchemyError) as exc:
                log.warning("node %s: %s failed: %s", self.node_id, beat.__name__, exc)
            if self._stop.wait(interval):
                return

    # --- the backend's questions ---------------------------------------------------------
    def batch_report(self) -> list[dict[str, object]]:
        """This node's batches as a backend heartbeat lists them (statuses in the notes' set)."""
        return [
            {
                "batch_id": h.batch_id,
                "task_id": h.task_id,
                "status": protocol_status(h.status),
                "progress": h.progress,
            }
            for h in self.held()
        ]

    def batch_reload(self, task_id: int, epoch: int) -> str:
        """The backend says a task's allocation changed: re-read its epoch; when this node
        serves batches of an older one, reconcile the task now (its new batches are dispatched,
        the old ones hand over and retire) and answer `reloading`, else `skipping`."""
        with session_scope() as session:
            task = session.get(MonitorTask, task_id)
            current = task.current_epoch if task is not None else None
        mine = [h for h in self.held() if h.task_id == task_id]
        if (
            current is None
            or not mine
            or all(h.epoch >= current for h in mine)
            or self.reconcile is None
        ):
            log.info("batch_reload task %s epoch %s: skipping (epoch %s)", task_id, epoch, current)
            return "skipping"
        self.reconcile(task_id)
        log.info("batch_reload task %s: epoch %s → %s, reloading", task_id, mine[0].epoch, current)
        return "reloading"

    # --- the beats -----------------------------------------------------------------------
    def metrics(self) -> dict[FieldT, EncodableT]:
        held = self.held()
        c = self.counters
        memory = self._process.memory_info().rss / 2**20
        return {
            "portfolio_count": str(len(held)),
            "batch_count": str(len(held)),
            "queue_size": str(sum(h.pending for h in held)),
            "cpu_usage": f"{self._process.cpu_percent(None):.1f}",
            "memory_usage": f"{memory:.1f}",
            "total_events": str(c.total_events),
            "backpressure_count": str(c.backpressure_count),
            "dropped_events": str(c.dropped_events),
            "reconnects": str(c.reconnects),
            "queues": self.queues,
            "slots": str(self.slots),
            "standby_count": str(self.standbys),
            "leaving": "1" if self.leaving else "0",
            "hostname": socket.gethostname(),
            "pid": str(os.getpid()),
            "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def beat(self) -> None:
        """One node heartbeat: the ISO time with a TTL, and the metrics hash."""
        keys, client = runtime.keys(), runtime.redis_client()
        pipe = client.pipeline(transaction=False)
        pipe.set(
            keys.node_heartbeat(self.node_id),
            heartbeat_time(),
            ex=max(1, round(self.heartbeat_s * 3)),
        )
        pipe.hset(keys.node_metrics(self.node_id), mapping=self.metrics())
        pipe.expire(keys.node_metrics(self.node_id), max(1, round(self.forget_s)))
        pipe.execute()
        self.beaten_at = time.monotonic()

    def beating(self) -> None:
        """Raise unless this node has beaten lately (its beat thread alive and reaching Redis):
        what every worker's `/ready` checks (`probes`)."""
        silent = time.monotonic() - self.beaten_at
        if silent > 3 * self.heartbeat_s:
            raise RuntimeError(f"no node heartbeat for {silent:.0f}s")

    def write_rows(self) -> None:
        """The batch rows of every held consumer, and their tasks' heartbeat, in bulk."""
        # `now` is taken before the snapshot: a consumer that lets go after it writes its final
        # status later, and `write_heartbeats` never writes over a later heartbeat
        now = utcnow()
        pid = os.getpid()
        heartbeats.write_heartbeats(
            [
                {
                    "batch_id": h.batch_id,
                    "task_id": h.task_id,
                    "status": h.status,
                    "consumer_id": runtime.consumer_id(),
                    "worker_id": runtime.worker_id(self.node_id),
                    "worker_pid": pid,
                    "at": now,
                }
                for h in self.held()
            ]
        )


def heartbeat_time() -> str:
    """A node heartbeat's value as the notes show it: ISO 8601 without an offset (UTC), which
    Java's `LocalDateTime.parse` reads."""
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


_agent: NodeAgent | None = None
_agent_pid = 0
_agent_lock = threading.Lock()


def current() -> NodeAgent:
    """This process's agent. Outside a worker (tests, tools) an unstarted one named after the
    host and pid is made, so consumers work anywhere; a forked child makes its own."""
    global _agent, _agent_pid
    with _agent_lock:
        if _agent is None or _agent_pid != os.getpid():
            _agent, _agent_pid = NodeAgent(f"{socket.gethostname()}-{os.getpid()}"), os.getpid()
        return _agent


def install(agent: NodeAgent) -> NodeAgent:
    """Make `agent` this process's node (the worker's `Node` bootstep does, before it starts)."""
    global _agent, _agent_pid
    with _agent_lock:
        _agent, _agent_pid = agent, os.getpid()
        return agent


def reported_nodes(client: redis.Redis, keys: Keys) -> dict[str, tuple[dict[str, str], str | None]]:
    """Every node that left metrics in Redis: its metrics hash, and its heartbeat (the ISO time
    of its last beat; None once the key expired, the node gone or stalled)."""
    prefix = len(keys.node_metrics(""))
    node_ids = sorted(
        name[prefix:] for name in client.scan_iter(match=keys.node_pattern, count=500)
    )
    pipe = client.pipeline(transaction=False)
    for node_id in node_ids:
        pipe.hgetall(keys.node_metrics(node_id))
        pipe.get(keys.node_heartbeat(node_id))
    replies = pipe.execute()
    return {
        node_id: (replies[2 * i], replies[2 * i + 1])
        for i, node_id in enumerate(node_ids)
        if replies[2 * i]
    }


def live_nodes(client: redis.Redis, keys: Keys) -> dict[str, dict[str, str]]:
    """The metrics of every node whose heartbeat key is present."""
    return {
        node_id: metrics
        for node_id, (metrics, beat) in reported_nodes(client, keys).items()
        if beat is not None
    }


def serves_streams(metrics: dict[str, str]) -> bool:
    """A node (by its metrics) that serves `streams` and is not going down."""
    return STREAMS in metrics.get("queues", "").split(",") and metrics.get("leaving") != "1"


def could_take_a_batch(metrics: dict[str, str]) -> bool:
    """A node (by its metrics) that serves `streams`, is not going down and has a free slot
    (or does not say how many it has): a batch and a hot standby each hold one."""
    if not serves_streams(metrics):
        return False
    slots = int(metrics.get("slots") or 0)
    used = int(metrics.get("batch_count") or 0) + int(metrics.get("standby_count") or 0)
    return slots == 0 or used < slots


def queues_without_workers(
    client: redis.Redis, keys: Keys, names: tuple[str, ...]
) -> dict[str, int]:
    """Of the queues `names`, those no live node consumes (its heartbeat key present, its
    metrics naming the queue), with how many messages wait in each. Beat warns of them, and
    `kakarot nodes` shows them."""
    served: set[str] = set()
    for reported in live_nodes(client, keys).values():
        served.update(q for q in reported.get("queues", "").split(",") if q)
    waiting = client.pipeline(transaction=False)
    for name in names:
        waiting.llen(keys.queue(name))
    return {
        name: int(count)
        for name, count in zip(names, waiting.execute(), strict=True)
        if name not in served
    }
