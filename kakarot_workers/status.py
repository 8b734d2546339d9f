"""The words for where a batch, a notification and a task's health stand.

They are written to the database (`monitor_batch_v2.status`, `monitor_alert_outbox_v2.status`,
`monitor_alert_log_v2.notify_status`, `monitor_task_v2.health`) and to Redis (a consumer's status
hash), and the Java backend reads them: the values are part of the contract. `StrEnum` members
are strings, so they go to SQL, Redis and JSON as they are.
"""

from __future__ import annotations

from enum import StrEnum


class BatchStatus(StrEnum):
    PENDING = "pending"  # allocated, waiting for a consumer
    CONNECTING = "connecting"  # a consumer holds the lease; its source is not live yet
    RUNNING = "running"  # live: subscribed and receiving
    HANDING_OVER = "handing_over"  # its consumer is leaving and serves until the successor is live
    HANDED_OVER = "handed_over"  # its consumer left once the successor was live
    LEASE_LOST = "lease_lost"  # its consumer lost the lease; another owns the batch
    STOPPED = "stopped"  # nobody serves it until reconcile dispatches it again
    STALE = "stale"  # silent past `batch_stale_s` with no lease: dispatched again
    ERROR = "error"  # its consumer failed (`last_error` says why)
    RETIRED = "retired"  # an old epoch's batch, handed over: never served again


# What the backend hears of a batch's status: the notes' set (pending, running, paused, stopped,
# completed, error); the fleet's finer states stay internal (SPEC §7, docs/backend-protocol.md).
PROTOCOL_STATUS: dict[str, str] = {
    "pending": "pending",
    "connecting": "pending",  # a consumer holds it; its source is not live yet
    "running": "running",
    "handing_over": "running",  # still served, until its successor is live
    "handed_over": "stopped",  # this consumer stopped; its successor reports `running`
    "lease_lost": "stopped",
    "stopped": "stopped",
    "stale": "error",
    "error": "error",
    "retired": "completed",  # an old epoch's batch, handed over for good
}


def protocol_status(status: str) -> str:
    """A batch status in the notes' set (unknown words: `error`)."""
    return PROTOCOL_STATUS.get(status, "error")


# Batches check_timeouts watches: served, or dispatched and waiting for a consumer.
SERVING = (BatchStatus.RUNNING, BatchStatus.PENDING)
# A consumer subscribed to its source: while one of a task's batches is, the task beats.
LIVE = (BatchStatus.RUNNING, BatchStatus.HANDING_OVER)


class OutboxStatus(StrEnum):
    PENDING = "pending"  # to send (now, or at `next_attempt_at`)
    SENDING = "sending"  # claimed by a worker until `claimed_until`
    SENT = "sent"
    FAILED = "failed"  # permanently, or after the last attempt (`last_error`)
    RETRACTED = "retracted"  # not sent: a chain re-org withdrew the alert's trade


class NotifyStatus(StrEnum):
    """An alert's roll-up of its notifications."""

    NONE = "none"  # its config names no channel
    PENDING = "pending"
    SENT = "sent"  # every notification sent
    FAILED = "failed"  # none left to try, and one failed
    RETRACTED = "retracted"  # none sent: a chain re-org withdrew the trade before


class Health(StrEnum):
    """A monitor task's health, as check_timeouts records it."""

    OK = "ok"
    FAILED = "failed"  # no heartbeat for `task_timeout_s`; still served
