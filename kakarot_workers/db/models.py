"""SQLAlchemy models of the `monitor_*_v2` tables (SPEC §2).

Table and column names are the ones the Java admin backend reads and writes; do not rename them.
All times are naive UTC (MySQL DATETIME). Schema changes go through Alembic migrations in
`kakarot_workers/db/migrations/versions/`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# BIGINT in MySQL, INTEGER in SQLite (only INTEGER PRIMARY KEY auto-increments there).
BigId = BigInteger().with_variant(Integer(), "sqlite")
Usd = Numeric(30, 8)

TASK_ACTIVE = 1
TASK_STOPPED = 0
TARGET_ACTIVE = 1
TARGET_REMOVED = 0
CONFIG_ACTIVE = 1


def utcnow() -> datetime:
    """Naive UTC now, the form every DATETIME column stores."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


def table(model: type[Base]) -> Table:
    """The Core table of a model, for bulk statements (executemany with bind parameters)."""
    return cast(Table, model.__table__)


class _Timestamps:
    create_time: Mapped[datetime] = mapped_column(
        DateTime, default=utcnow, nullable=False, server_default=func.now()
    )
    update_time: Mapped[datetime] = mapped_column(
        DateTime, default=utcnow, onupdate=utcnow, nullable=False, server_default=func.now()
    )


class MonitorConfig(_Timestamps, Base):
    __tablename__ = "monitor_config_v2"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    config_name: Mapped[str] = mapped_column(String(128))
    config_category: Mapped[str | None] = mapped_column(String(32))
    chain_type: Mapped[str] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(32))
    market_type: Mapped[str | None] = mapped_column(String(32))
    min_transaction_usd: Mapped[Decimal | None] = mapped_column(Usd)
    cumulative_min_amount_usd: Mapped[Decimal | None] = mapped_column(Usd)
    time_interval: Mapped[str] = mapped_column(String(8), default="5m", server_default="5m")
    top_holders_threshold: Mapped[Decimal | None] = mapped_column(Numeric(8, 4))
    events_config: Mapped[Any | None] = mapped_column(JSON)
    trigger_logic: Mapped[str] = mapped_column(String(8), default="any", server_default="any")
    notify_methods: Mapped[Any | None] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    status: Mapped[int] = mapped_column(SmallInteger, default=CONFIG_ACTIVE, server_default="1")
    del_flag: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")

    __table_args__ = (Index("idx_config_update_time", "update_time"),)


class MonitorTask(_Timestamps, Base):
    __tablename__ = "monitor_task_v2"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_name: Mapped[str] = mapped_column(String(128))
    task_type: Mapped[str] = mapped_column(String(16))  # smart | batch | block
    chain_type: Mapped[str] = mapped_column(String(16))
    status: Mapped[int] = mapped_column(SmallInteger, default=TASK_ACTIVE, server_default="1")
    del_flag: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    current_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_heartbeat: Mapped[datetime | None] = mapped_column(DateTime)
    # Health as check_timeouts sees it: NULL (never judged), `ok`, or `failed` (no heartbeat for
    # the timeout) with the reason and when. A failed task keeps being served: reconcile goes on.
    health: Mapped[str | None] = mapped_column(String(16))
    health_reason: Mapped[str | None] = mapped_column(String(500))
    health_time: Mapped[datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("idx_task_heartbeat", "last_heartbeat"),)


class MonitorTaskConfig(Base):
    __tablename__ = "monitor_task_config_v2"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(BigInteger, index=True)
    config_id: Mapped[int] = mapped_column(BigInteger, index=True)
    config_order: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (UniqueConstraint("task_id", "config_id", name="uq_task_config"),)


class MonitorTaskTarget(_Timestamps, Base):
    __tablename__ = "monitor_task_target_v2"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(BigInteger)
    target_type: Mapped[str] = mapped_column(String(16), default="token", server_default="token")
    target_value: Mapped[str] = mapped_column(String(128))  # the CA
    token_name: Mapped[str | None] = mapped_column(String(128))
    token_symbol: Mapped[str | None] = mapped_column(String(64))
    market_cap: Mapped[Decimal | None] = mapped_column(Usd)
    pair_address: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str | None] = mapped_column(String(32))
    batch_id: Mapped[int | None] = mapped_column(BigInteger)
    batch_order: Mapped[int | None] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    status: Mapped[int] = mapped_column(SmallInteger, default=TARGET_ACTIVE, server_default="1")

    __table_args__ = (
        UniqueConstraint("task_id", "target_value", name="uq_task_target"),
        Index("idx_target_task_status", "task_id", "status"),
    )


class MonitorBatch(_Timestamps, Base):
    __tablename__ = "monitor_batch_v2"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(BigInteger)
    batch_no: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    item_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # pending|running|paused|stopped|completed|error|stale|retired
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    consumer_id: Mapped[str | None] = mapped_column(String(128))
    worker_id: Mapped[str | None] = mapped_column(String(128))
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    last_heartbeat: Mapped[datetime | None] = mapped_column(DateTime)
    total_alerts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_alert_time: Mapped[datetime | None] = mapped_column(DateTime)
    error_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        UniqueConstraint("task_id", "epoch", "batch_no", name="uq_batch_task_epoch_no"),
        Index("idx_batch_task_epoch", "task_id", "epoch"),
        Index("idx_batch_status_heartbeat", "status", "last_heartbeat"),
    )


class MonitorBatchItem(Base):
    __tablename__ = "monitor_batch_item_v2"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    batch_id: Mapped[int] = mapped_column(BigInteger)
    target_id: Mapped[int] = mapped_column(BigInteger, index=True)
    batch_order: Mapped[int] = mapped_column(Integer)

    __table_args__ = (UniqueConstraint("batch_id", "target_id", name="uq_batch_item"),)


class MonitorAlertLog(Base):
    __tablename__ = "monitor_alert_log_v2"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # sha256 of "task:chain:tx_hash:log_index:rule": one event can alert a task once per rule.
    dedup_key: Mapped[str] = mapped_column(String(64), nullable=False)
    task_id: Mapped[int] = mapped_column(BigInteger)
    config_id: Mapped[int | None] = mapped_column(BigInteger)
    config_version: Mapped[int | None] = mapped_column(Integer)
    batch_id: Mapped[int | None] = mapped_column(BigInteger)
    epoch: Mapped[int | None] = mapped_column(Integer)
    target_id: Mapped[int | None] = mapped_column(BigInteger)
    chain_type: Mapped[str] = mapped_column(String(16))
    ca: Mapped[str] = mapped_column(String(128))
    token_symbol: Mapped[str | None] = mapped_column(String(64))
    alert_type: Mapped[str] = mapped_column(String(32))
    alert_data: Mapped[Any | None] = mapped_column(JSON)
    tx_hash: Mapped[str | None] = mapped_column(String(128))
    log_index: Mapped[int | None] = mapped_column(Integer)
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    event_time: Mapped[datetime | None] = mapped_column(DateTime)
    price_usd: Mapped[Decimal | None] = mapped_column(Usd)
    amount_usd: Mapped[Decimal | None] = mapped_column(Usd)
    incomplete_data: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    # 1 once a chain re-org withdrew the trade (its notifications not yet sent are not sent)
    retracted: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    notify_status: Mapped[str] = mapped_column(
        String(16), default="pending", server_default="pending"
    )
    create_time: Mapped[datetime] = mapped_column(
        DateTime, default=utcnow, nullable=False, server_default=func.now()
    )

    __table_args__ = (
        UniqueConstraint("dedup_key", name="uq_alert_dedup"),
        Index("idx_alert_task_time", "task_id", "create_time"),
        Index("idx_alert_ca_time", "ca", "create_time"),
    )


class MonitorAlertOutbox(_Timestamps, Base):
    """One notification of one alert on one channel, written in the alert's transaction and
    delivered from here: `pending` → `sending` (claimed) → `sent`, or `failed` with the error."""

    __tablename__ = "monitor_alert_outbox_v2"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # sha256 of "task:chain:tx_hash:log_index:channel": one message per event and channel.
    dedup_key: Mapped[str] = mapped_column(String(64), nullable=False)
    alert_id: Mapped[int] = mapped_column(BigInteger)
    task_id: Mapped[int] = mapped_column(BigInteger)
    channel: Mapped[str] = mapped_column(String(16))  # telegram | wecom | webhook | backend
    destination: Mapped[str | None] = mapped_column(String(1024))
    payload: Mapped[Any] = mapped_column(JSON)
    # Digest window (seconds) when the task's alerts go out grouped, else null.
    digest_s: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    message_ref: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        UniqueConstraint("dedup_key", name="uq_outbox_dedup"),
        Index("idx_outbox_status_next", "status", "next_attempt_at"),
        Index("idx_outbox_alert", "alert_id"),
        Index("idx_outbox_task_channel_status", "task_id", "channel", "status"),
    )
