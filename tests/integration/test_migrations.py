"""The schema is created by the Alembic migrations, on SQLite and MariaDB alike."""

from sqlalchemy import inspect, text

from kakarot_workers.db.models import Base
from kakarot_workers.db.session import (
    current_revision,
    downgrade_schema,
    make_engine,
    upgrade_schema,
)

HEAD = "0005"


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


def test_pending_webhook_notifications_of_the_old_format_are_carried_to_json(empty_db_url):
    """Before 0004 a webhook destination was "SECRET_ENV url"; rows still pending at the upgrade
    must be delivered after it, so 0004 rewrites them (and nothing else)."""
    from kakarot_workers.notify.channels import WebhookDestination

    upgrade_schema(empty_db_url, "0003")
    engine = make_engine(empty_db_url)
    long_url = "https://hooks.example.org/" + "x" * 204  # with its variable, 250 characters:
    # it fitted the old column, and as JSON it is longer than that column
    rows = [
        (1, "webhook", f"KAKAROT_HOOK_SECRET {long_url}"),
        (2, "telegram", "-100123"),
        (3, "webhook", None),
    ]
    try:
        with engine.begin() as conn:
            for row_id, channel, destination in rows:
                conn.execute(
                    text(
                        "INSERT INTO monitor_alert_outbox_v2 "
                        "(id, dedup_key, alert_id, task_id, channel, destination, payload) "
                        "VALUES (:id, :key, 1, 1, :channel, :destination, '{}')"
                    ),
                    {
                        "id": row_id,
                        "key": f"k{row_id}",
                        "channel": channel,
                        "destination": destination,
                    },
                )
        upgrade_schema(empty_db_url)
        with engine.connect() as conn:
            found = dict(
                conn.execute(text("SELECT id, destination FROM monitor_alert_outbox_v2")).all()
            )
        assert WebhookDestination.model_validate_json(found[1]) == WebhookDestination(
            url=long_url, secret_env="KAKAROT_HOOK_SECRET"
        )
        assert (found[2], found[3]) == ("-100123", None)

        downgrade_schema(empty_db_url, "0003")
        with engine.connect() as conn:
            back = conn.execute(
                text("SELECT destination FROM monitor_alert_outbox_v2 WHERE id = 1")
            ).scalar_one()
        assert back == f"KAKAROT_HOOK_SECRET {long_url}"
    finally:
        engine.dispose()
