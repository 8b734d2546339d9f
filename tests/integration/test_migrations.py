"""The schema is created by the Alembic migrations, on SQLite and MariaDB alike."""

from sqlalchemy import inspect, text

from kakarot_workers.db.models import Base
from kakarot_workers.db.session import (
    current_revision,
    downgrade_schema,
    make_engine,
    upgrade_schema,
)

HEAD = "0003"


def test_upgrade_creates_every_table_with_its_columns(empty_db_url):
    assert current_revision(empty_db_url) is None
    upgrade_schema(empty_db_url)
    assert current_revision(empty_db_url) == HEAD
    engine = make_engine(empty_db_url)
    try:
        inspector = inspect(engine)
        for table in Base.metadata.sorted_tables:
            columns = {c["name"] for c in inspector.get_columns(table.name)}
            assert columns == {c.name for c in table.columns}, table.name
        uniques = {u["name"] for u in inspector.get_unique_constraints("monitor_alert_log_v2")}
        indexes = {
            i["name"] for i in inspector.get_indexes("monitor_alert_log_v2") if i.get("unique")
        }
        assert "uq_alert_dedup" in uniques | indexes
        task_indexes = {
            i["name"]: i["column_names"] for i in inspector.get_indexes("monitor_task_v2")
        }
        assert task_indexes["idx_task_heartbeat"] == ["last_heartbeat"]
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op_and_downgrade_round_trips(empty_db_url):
    upgrade_schema(empty_db_url)
    upgrade_schema(empty_db_url)
    assert current_revision(empty_db_url) == HEAD
    downgrade_schema(empty_db_url, "base")
    engine = make_engine(empty_db_url)
    try:
        assert not set(inspect(engine).get_table_names()) & set(Base.metadata.tables)
    finally:
        engine.dispose()
    upgrade_schema(empty_db_url)
    assert current_revision(empty_db_url) == HEAD


def test_rows_written_by_another_client_get_server_defaults(any_db_url):
    """The Java backend inserts with its own SQL; omitted columns must take the defaults."""
    engine = make_engine(any_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO monitor_task_v2 (task_name, task_type, chain_type) "
                    "VALUES ('java', 'batch', 'bsc')"
                )
            )
            row = conn.execute(
                text(
                    "SELECT status, del_flag, current_epoch, create_time, "
                    "update_time, last_heartbeat FROM monitor_task_v2"
                )
            ).one()
        assert (row.status, row.del_flag, row.current_epoch) == (1, 0, 0)
        assert row.create_time is not None and row.update_time is not None
        assert row.last_heartbeat is None
    finally:
        engine.dispose()
