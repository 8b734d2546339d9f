"""A batch's status in Redis (`kakarot:batch:{id}:status`), as its consumer reports it.

The consumer refreshes the hash every few seconds and on every change; it expires with its
consumer. The control plane reads every one of them to keep `monitor_batch_v2` current
(`read_statuses`, beat's sync_heartbeats).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import redis

from kakarot_workers.keys import Keys

log = logging.getLogger(__name__)


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
