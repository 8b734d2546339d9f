"""Alert rows are inserted once per de-duplication key, on SQLite and MariaDB."""

from sqlalchemy import func, select

from kakarot_workers.alert_log import dedup_key, record_alerts
from kakarot_workers.db.models import MonitorAlertLog, MonitorBatch
from kakarot_workers.db.session import dispose_engines, session_scope


def _row(tx: str, rule: str = "min_transaction", batch_id: int | None = None) -> dict:
    return {
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
    }


def test_same_rows_twice_insert_once(any_db_url):
    rows = [_row("0x01"), _row("0x02"), _row("0x01", rule="other_rule")]
    try:
        with session_scope(any_db_url) as session:
            batch = MonitorBatch(task_id=1, batch_no=1, epoch=1)
            session.add(batch)
            session.flush()
            batch_id = batch.id
        rows = [{**r, "batch_id": batch_id} for r in rows]
        with session_scope(any_db_url) as session:
            assert len(record_alerts(session, rows)) == 3
        with session_scope(any_db_url) as session:  # a re-delivered message
            assert record_alerts(session, rows + [_row("0x03", batch_id=batch_id)]) == [
                {**_row("0x03"), "batch_id": batch_id}
            ]
        with session_scope(any_db_url) as session:
            assert session.scalar(select(func.count(MonitorAlertLog.id))) == 4
            assert session.get(MonitorBatch, batch_id).total_alerts == 4
            stored = session.scalars(
                select(MonitorAlertLog).where(MonitorAlertLog.tx_hash == "0x02")
            ).one()
            assert stored.alert_data == {"amount_usd": 9000.5}
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
