"""A trade a chain re-org withdrew (`removed: true`), after its consumer sent it: it leaves its
token's windows, and its alerts are marked `retracted`, their notifications not yet sent (or
being sent) are not sent (`retract_trade`, queue `alerts`, sent `RETRACT_DELAY_S` after the
re-org so that an evaluation of the trade under way has recorded what it will). One the pool has
not judged yet is never judged: the consumer also writes it to `kakarot:retracted`, which
`evaluate.screen` reads. A trade mined again later is judged again (its consumer removes it from
`kakarot:retracted`): its windows count it, and its alert rows come back (`alert_log`).
"""

from __future__ import annotations

import logging
from typing import Any, cast

from sqlalchemy import CursorResult, select, update

from kakarot_workers import runtime
from kakarot_workers.alerts.alert_log import dedup_key
from kakarot_workers.alerts.evaluate import stores
from kakarot_workers.alerts.rules import RULE_ORDER
from kakarot_workers.db.models import MonitorAlertLog, MonitorAlertOutbox
from kakarot_workers.db.session import session_scope
from kakarot_workers.events import event_key
from kakarot_workers.notify.outbox import roll_up
from kakarot_workers.status import OutboxStatus

log = logging.getLogger(__name__)


def retract(task_id: int, ca: str, chain: str, tx_hash: str, log_index: int) -> tuple[bool, int]:
    """Withdraw the trade from the task's windows and its alerts; (it was in the windows, how
    many alert rows were marked)."""
    key = event_key(chain, tx_hash, log_index)
    left = stores()[0].retract(task_id, ca, key)
    # the trade's rows, one per rule at most: by their de-duplication keys (the unique index)
    keys = [dedup_key(task_id, chain, tx_hash, log_index, rule) for rule in RULE_ORDER]
    with session_scope() as session:
        ids = list(
            session.scalars(select(MonitorAlertLog.id).where(MonitorAlertLog.dedup_key.in_(keys)))
        )
        unsent = 0
        if ids:
            session.execute(
                update(MonitorAlertLog).where(MonitorAlertLog.id.in_(ids)).values(retracted=1)
            )
            # not sent yet, or being sent (a failed attempt is not tried again)
            result = session.execute(
                update(MonitorAlertOutbox)
                .where(
                    MonitorAlertOutbox.alert_id.in_(ids),
                    MonitorAlertOutbox.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING)),
                )
                .values(status=OutboxStatus.RETRACTED, claimed_until=None)
            )
            unsent = cast(CursorResult[Any], result).rowcount
            roll_up(session, set(ids))
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
