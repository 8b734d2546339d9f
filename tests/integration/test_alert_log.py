"""Alert rows and their outbox rows are inserted once per de-duplication key, in one
transaction, on SQLite and MariaDB."""

from sqlalchemy import func, select

from kakarot_workers.alerts.alert_log import AlertDraft, dedup_key, record_alerts
from kakarot_workers.db.models import MonitorAlertLog, MonitorAlertOutbox, MonitorBatch
from kakarot_workers.db.session import dispose_engines, session_scope


def _draft(tx: str, rule: str = "min_transaction", batch_id: int | None = None) -> AlertDraft:
    row = {
        "dedup_key": dedup_key(1, "bsc", tx, 0, rule),
        "task_id": 1,
        "chain_type": "bsc",
        "ca": "0x" + "a" * 40,
        "alert_type": rule,
        "alert_data": {"amount_usd": 9000.5},
        "tx_hash": tx,
        "log_index": 0,
        "batch_id": batch_id,
        "amount_usd": 9000.5,
        "notify_status": "pending",
    }
    summary = {"tx_hash": tx, "rule": rule}
    return AlertDraft(row, summary, [("telegram", "-1001"), ("webhook", "S http://h")])


def test_same_alerts_twice_insert_once_with_their_outbox(any_db_url):
    try:
        with session_scope(any_db_url) as session:
            batch = MonitorBatch(task_id=1, batch_no=1, epoch=1)
            session.add(batch)
            session.flush()
            batch_id = batch.id
        drafts = [
            _draft("0x01", batch_id=batch_id),
            _draft("0x02", batch_id=batch_id),
            _draft("0x01", rule="other_rule", batch_id=batch_id),
        ]
        with session_scope(any_db_url) as session:
            first = record_alerts(session, drafts)
        assert len(first.new_rows) == 3
        # one notification per event and channel: the second rule of 0x01 adds none
        assert len(first.pending) == 4
        with session_scope(any_db_url) as session:  # a re-delivered message, plus one new
            again = record_alerts(session, [*drafts, _draft("0x03", batch_id=batch_id)])
        assert [r["tx_hash"] for r in again.new_rows] == ["0x03"]
        assert {p[0] for p in first.pending} < {p[0] for p in again.pending}
        assert len(again.pending) == 6
        with session_scope(any_db_url) as session:
            assert session.scalar(select(func.count(MonitorAlertLog.id))) == 4
            assert session.scalar(select(func.count(MonitorAlertOutbox.id))) == 6
            assert session.get(MonitorBatch, batch_id).total_alerts == 4
            stored = session.scalars(
                select(MonitorAlertLog).where(MonitorAlertLog.tx_hash == "0x02")
            ).one()
            assert stored.alert_data == {"amount_usd": 9000.5}
            outbox = session.scalars(
                select(MonitorAlertOutbox).where(MonitorAlertOutbox.alert_id == stored.id)
            ).all()
            assert {o.channel for o in outbox} == {"telegram", "webhook"}
            assert all(
                o.payload == {"tx_hash": "0x02", "rule": "min_transaction", "alert_id": stored.id}
                for o in outbox
            )
    finally:
        dispose_engines()


def test_dedup_key_depends_on_every_part():
    base = dedup_key(1, "bsc", "0xAB", 0, "r")
    assert base == dedup_key(1, "bsc", "0xab", 0, "r")  # tx hash case does not matter
    assert (
        len(
            {
                base,
                dedup_key(2, "bsc", "0xab", 0, "r"),
                dedup_key(1, "eth", "0xab", 0, "r"),
                dedup_key(1, "bsc", "0xac", 0, "r"),
                dedup_key(1, "bsc", "0xab", 1, "r"),
                dedup_key(1, "bsc", "0xab", 0, "s"),
            }
        )
        == 6
    )
