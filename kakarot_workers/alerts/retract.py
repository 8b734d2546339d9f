"""A trade a chain re-org withdrew (`removed: true`), after its consumer sent it: it leaves its
token's windows, and its alerts are marked `retracted`, their notifications not yet sent are not
sent (`retract_trade`, queue `alerts`). One the pool has not judged yet is never judged: the
consumer also writes it to `kakarot:retracted`, which `evaluate.screen` reads.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from sqlalchemy import CursorResult, select, update

from kakarot_workers import runtime
from kakarot_workers.alerts.evaluate import stores
from kakarot_workers.db.models import MonitorAlertLog, MonitorAlertOutbox
from kakarot_workers.db.session import session_scope
from kakarot_workers.events import event_key
from kakarot_workers.status import OutboxStatus

log = logging.getLogger(__name__)


def retract(task_id: int, ca: str, chain: str, tx_hash: str, log_index: int) -> tuple[bool, int]:
    """Withdraw the trade from the task's windows and its alerts; (it was in the windows, how
    many alert rows were marked)."""
    key = event_key(chain, tx_hash, log_index)
    left = stores()[0].retract(task_id, ca, key)
    with session_scope() as session:
        ids = list(
            session.scalars(
                select(MonitorAlertLog.id).where(
                    MonitorAlertLog.task_id == task_id,
                    MonitorAlertLog.chain_type == chain,
                    MonitorAlertLog.tx_hash == tx_hash,
                    MonitorAlertLog.log_index == log_index,
                )
            )
        )
        unsent = 0
        if ids:
            session.execute(
                update(MonitorAlertLog).where(MonitorAlertLog.id.in_(ids)).values(retracted=1)
            )
            result = session.execute(
                update(MonitorAlertOutbox)
                .where(
                    MonitorAlertOutbox.alert_id.in_(ids),
                    MonitorAlertOutbox.status == OutboxStatus.PENDING,
                )
                .values(status=OutboxStatus.RETRACTED)
            )
            unsent = cast(CursorResult[Any], result).rowcount
    runtime.redis_client().incrby(runtime.keys().alert_stat("retracted"), len(ids))
    log.warning(
        "re-org withdrew %s (task %s): %s its windows; %d alert(s) marked retracted, %d "
        "notification(s) not sent",
        key,
        task_id,
        "taken out of" if left else "not in",
        len(ids),
        unsent,
    )
    return left, len(ids)
