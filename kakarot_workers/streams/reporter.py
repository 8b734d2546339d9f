"""What a consumer reports: its batch's status in Redis, its counts, and status changes to the
backend.

The status hash (`kakarot:batch:{id}:status`: status, consumer, node, pid, token, epoch, task,
source frames and reconnects, events emitted, the last event's time) is refreshed every few
seconds and on every change, and expires with its consumer. The control plane reads all of them
to keep `monitor_batch_v2` current (`read_statuses`, beat's sync_heartbeats). Each change of
status is also queued for the backend (`batch_status`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import redis

from kakarot_workers import backend
from kakarot_workers.keys import Keys
from kakarot_workers.sources import SourceStats
from kakarot_workers.status import BatchStatus, protocol_status

log = logging.getLogger(__name__)


class StatusReporter:
    """The reports of the consumer `consumer_id` of one batch, on node `node_id`."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        batch_id: int,
        task_id: int,
        consumer_id: str,
        node_id: str,
        ttl_s: int,
    ) -> None:
        self.client = client
        self.keys = keys
        self.batch_id = batch_id
        self.task_id = task_id
        self.consumer_id = consumer_id
        self.node_id = node_id
        self.ttl_s = ttl_s
        self._key = keys.batch_status(batch_id)
        self._reported: str | None = None

    def write(self, status: BatchStatus, *, token: int, epoch: int, stats: SourceStats) -> None:
        """Refresh the status hash; queue a `batch_status` for the backend when it changed."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(
            self._key,
            mapping={
                "status": status,
                "consumer_id": self.consumer_id,
                "node_id": self.node_id,
                "token": token,
                "epoch": epoch,
                "task_id": self.task_id,
                "frames": stats.frames,
                "frames_rejected": stats.frames_rejected,
                "reconnects": stats.reconnects,
                "updated_ms": int(time.time() * 1000),
                "pid": os.getpid(),
            },
        )
        pipe.expire(self._key, self.ttl_s)
        pipe.execute()
        protocol = protocol_status(status)
        if protocol != self._reported:  # the backend hears of changes (in its words) only
            self._reported = protocol
            backend.send_event(
                "batch_status",
                {
                    "batch_id": self.batch_id,
                    "task_id": self.task_id,
                    "status": protocol,
                    "message": f"{status}: {self.consumer_id} epoch {epoch}",
                },
                node_id=self.node_id,
            )

    def emitted(self, count: int, last_event_ms: int) -> None:
        """`count` events went to the alert pool (the fleet's counter and the batch's)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.incrby(self.keys.events_total, count)
        pipe.hincrby(self._key, "events", count)
        pipe.hset(self._key, "last_event_ms", last_event_ms)
        pipe.execute()

    def rejected(self, reasons: Counter[str]) -> None:
        """Events and frames refused, by reason: the fleet's counter, the batch's, each
        reason's."""
        total = sum(reasons.values())
        pipe = self.client.pipeline(transaction=False)
        pipe.incrby(self.keys.frames_rejected, total)
        pipe.hincrby(self.keys.rejects_by_batch, str(self.batch_id), total)
        for reason, count in reasons.items():
            pipe.hincrby(self.keys.rejects_by_reason, reason, count)
        pipe.execute()

    def reconnected(self, count: int) -> None:
        """The source reconnected `count` more times (the fleet's counter)."""
        self.client.incrby(self.keys.reconnects, count)


def read_statuses(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """Every consumer's status as it last wrote it to Redis (keys expire with their consumer)."""
    names = list(client.scan_iter(match=keys.batch_status_pattern, count=1000))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    rows = []
    for name, status in zip(names, pipe.execute(), strict=True):
        try:
            rows.append(
                {
                    "batch_id": int(name.rsplit(":", 2)[-2]),
                    "task_id": int(status.get("task_id") or 0),
                    "status": status["status"],
                    "consumer_id": status.get("consumer_id"),
                    "worker_id": status.get("node_id"),
                    "worker_pid": int(status["pid"]) if status.get("pid") else None,
                    "at": datetime.fromtimestamp(int(status["updated_ms"]) / 1000, UTC).replace(
                        tzinfo=None
                    ),
                }
            )
        except (KeyError, ValueError) as exc:  # a half-written or foreign key: skip it
            log.warning("sync_heartbeats: %s skipped: %r", name, exc)
    return rows
