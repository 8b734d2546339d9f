"""The queues and the task names: how the stages reach each other.

A stage sends work to another by task name (`app.send_task(EVALUATE_EVENTS, …)`), never by
importing its task: the queue is the boundary. `celeryconfig` routes each name to its queue.
"""

from __future__ import annotations

from typing import Final

STREAMS: Final = "streams"
ALERTS: Final = "alerts"
NOTIFY: Final = "notify"
CONTROL: Final = "control"
ALL: Final = (STREAMS, ALERTS, NOTIFY, CONTROL)


def node_queue(node_id: str) -> str:
    """The queue only one streams node consumes (besides `streams`): a batch placed on that
    node is sent there (`streams.placement`)."""
    return f"{STREAMS}.{node_id}"


# queue `streams`: one long-lived consumer per batch, and its hot standby (KAKAROT_STANDBY)
CONSUME_BATCH: Final = "kakarot.streams.consume_batch"
STAND_BY: Final = "kakarot.streams.stand_by"
# queue `alerts`: a micro-batch of swap events to judge; a trade a chain re-org withdrew
EVALUATE_EVENTS: Final = "kakarot.alerts.evaluate_events"
RETRACT_TRADE: Final = "kakarot.alerts.retract_trade"
# queue `notify`: the outbox's deliveries
DELIVER: Final = "kakarot.notify.deliver"
FLUSH_DIGEST: Final = "kakarot.notify.flush_digest"
SWEEP_OUTBOX: Final = "kakarot.notify.sweep_outbox"
# queue `control`: beat's jobs
ALLOCATE: Final = "kakarot.control.allocate"
RECONCILE: Final = "kakarot.control.reconcile"
CHECK_TIMEOUTS: Final = "kakarot.control.check_timeouts"
SYNC_HEARTBEATS: Final = "kakarot.control.sync_heartbeats"
POLL_CONFIGS: Final = "kakarot.control.poll_configs"
REBALANCE: Final = "kakarot.control.rebalance"

# Celery routes by pattern: every `kakarot.<queue>.*` task goes to that queue.
ROUTES: Final = {f"kakarot.{queue}.*": {"queue": queue} for queue in ALL}
