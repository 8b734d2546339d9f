"""Operator actions on configs, tasks and targets: the core behind the CLI and the demo."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from kakarot_workers.addresses import check_chain, normalize_address
from kakarot_workers.alerts.rules import parse_events_config
from kakarot_workers.db.batches import get_task
from kakarot_workers.db.models import (
    TARGET_ACTIVE,
    TARGET_REMOVED,
    TASK_ACTIVE,
    TASK_STOPPED,
    MonitorAlertLog,
    MonitorBatch,
    MonitorConfig,
    MonitorTask,
    MonitorTaskConfig,
    MonitorTaskTarget,
)
from kakarot_workers.errors import InputError, NotFoundError
from kakarot_workers.keys import Keys
from kakarot_workers.notify.channels import parse_notify_methods
from kakarot_workers.sources import SOURCE_KINDS
from kakarot_workers.status import BatchStatus
from kakarot_workers.streams.node import reported_nodes
from kakarot_workers.validation import parse_interval

TASK_TYPES = ("smart", "batch", "block")
MAX_REPORTED_ROWS = 10


MAX_USD = 1e12  # as `events.Plausible.max_usd`: no trade is worth more
MAX_NAME = 128  # the name columns


def _check_name(label: str, name: str) -> None:
    if not name.strip() or len(name) > MAX_NAME:
        raise InputError(f"{label}: 1 to {MAX_NAME} characters, got {len(name.strip()):,}")


def create_config(
    session: Session,
    *,
    name: str,
    chain: str,
    source: str = "simulator",
    min_transaction_usd: float | None = None,
    cumulative_min_amount_usd: float | None = None,
    time_interval: str = "5m",
    events_config: str | dict[str, Any] | None = None,
    trigger_logic: str = "any",
    notify_methods: list[Any] | dict[str, Any] | str | None = None,
    top_holders_threshold: float | None = None,
) -> MonitorConfig:
    """Validate and insert a config; `events_config` errors name the field."""
    if source not in SOURCE_KINDS:
        raise InputError(f"source {source!r}: expected one of {', '.join(SOURCE_KINDS)}")
    if trigger_logic not in ("any", "all"):
        raise InputError(f"trigger_logic {trigger_logic!r}: expected 'any' or 'all'")
    try:
        parse_interval(time_interval)
    except ValueError as exc:
        raise InputError(f"time_interval: {exc}") from None
    _check_name("config name", name)
    for label, value in (
        ("min_transaction_usd", min_transaction_usd),
        ("cumulative_min_amount_usd", cumulative_min_amount_usd),
    ):
        if value is not None and not 0 <= value <= MAX_USD:
            raise InputError(f"{label}: expected a number from 0 to {MAX_USD:g}, got {value}")
    events = parse_events_config(events_config)
    notify = parse_notify_methods(notify_methods)
    config = MonitorConfig(
        config_name=name,
        chain_type=check_chain(chain),
        source=source,
        min_transaction_usd=_decimal(min_transaction_usd),
        cumulative_min_amount_usd=_decimal(cumulative_min_amount_usd),
        time_interval=time_interval,
        trigger_logic=trigger_logic,
        events_config=events.model_dump(exclude_none=True),
        notify_methods=notify.model_dump(exclude_none=True) if notify_methods else [],
        top_holders_threshold=_decimal(top_holders_threshold),
    )
    session.add(config)
    session.flush()
    return config


def _decimal(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def get_config(session: Session, config_id: int) -> MonitorConfig:
    config = session.get(MonitorConfig, config_id)
    if config is None or config.del_flag:
        raise NotFoundError(f"config {config_id} does not exist")
    return config


def create_task(
    session: Session, *, name: str, task_type: str, chain: str, config_id: int
) -> MonitorTask:
    if task_type not in TASK_TYPES:
        raise InputError(f"task type {task_type!r}: expected one of {', '.join(TASK_TYPES)}")
    _check_name("task name", name)
    get_config(session, config_id)
    task = MonitorTask(task_name=name, task_type=task_type, chain_type=check_chain(chain))
    session.add(task)
    session.flush()
    session.add(MonitorTaskConfig(task_id=task.id, config_id=config_id, config_order=0))
    return task


@dataclass(frozen=True)
class TargetRow:
    ca: str
    symbol: str | None = None
    pair: str | None = None
    name: str | None = None


def add_targets(session: Session, task_id: int, rows: list[TargetRow]) -> tuple[int, int]:
    """Add targets to a task (addresses already validated); return (added, already there)."""
    task = get_task(session, task_id)
    if task.task_type == "block":
        raise InputError(f"task {task_id} is a block task: it watches the whole chain, no targets")
    existing = set(
        session.scalars(
            select(MonitorTaskTarget.target_value).where(MonitorTaskTarget.task_id == task_id)
        )
    )
    removed = {
        t.target_value: t
        for t in session.scalars(
            select(MonitorTaskTarget).where(
                MonitorTaskTarget.task_id == task_id, MonitorTaskTarget.status == TARGET_REMOVED
            )
        )
    }
    added = 0
    for row in rows:
        if row.ca in removed:  # removed earlier: watched again
            removed.pop(row.ca).status = TARGET_ACTIVE
            added += 1
            continue
        if row.ca in existing:
            continue
        existing.add(row.ca)
        session.add(
            MonitorTaskTarget(
                task_id=task_id,
                target_value=row.ca,
                token_symbol=row.symbol,
                token_name=row.name,
                pair_address=row.pair,
            )
        )
        added += 1
    return added, len(rows) - added


def target_row(
    chain: str, ca: str, symbol: str | None = None, pair: str | None = None, name: str | None = None
) -> TargetRow:
    """Validate one target for `chain`."""
    return TargetRow(
        ca=normalize_address(chain, ca),
        symbol=(symbol or None),
        pair=normalize_address(chain, pair) if pair else None,
        name=(name or None),
    )


def parse_targets_csv(text: str, chain: str, source_name: str = "csv") -> list[TargetRow]:
    """Parse `ca,symbol,pair[,name]` rows (header required); every bad row is reported by line."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "ca" not in header:
        raise InputError(
            f"{source_name} line 1: header must name a 'ca' column "
            f"(columns: ca,symbol,pair[,name]); got {','.join(header) or 'nothing'}"
        )
    reader.fieldnames = header
    rows, errors = [], []
    for row in reader:
        line = reader.line_num
        if row.get(None):
            errors.append(f"{source_name} line {line}: more fields than the header names")
            continue
        values = {k: (v or "").strip() for k, v in row.items() if k}
        if not any(values.values()):
            continue
        try:
            rows.append(
                target_row(
                    chain,
                    values.get("ca", ""),
                    values.get("symbol"),
                    values.get("pair"),
                    values.get("name"),
                )
            )
        except InputError as exc:
            errors.append(f"{source_name} line {line}: {exc}")
    if errors:
        more = len(errors) - MAX_REPORTED_ROWS
        shown = errors[:MAX_REPORTED_ROWS] + ([f"… and {more} more"] if more > 0 else [])
        raise InputError("; ".join(shown) + " (nothing was imported)")
    return rows


def import_targets_file(session: Session, task_id: int, path: Path) -> tuple[int, int]:
    task = get_task(session, task_id)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    return add_targets(session, task_id, parse_targets_csv(text, task.chain_type, path.name))


def list_tasks(session: Session) -> list[dict[str, Any]]:
    counts = dict(
        session.execute(
            select(MonitorTaskTarget.task_id, func.count())
            .where(MonitorTaskTarget.status == 1)
            .group_by(MonitorTaskTarget.task_id)
        ).all()
    )
    tasks = session.scalars(
        select(MonitorTask).where(MonitorTask.del_flag == 0).order_by(MonitorTask.id)
    ).all()
    return [
        {
            "id": t.id,
            "name": t.task_name,
            "type": t.task_type,
            "chain": t.chain_type,
            "status": t.status,
            "epoch": t.current_epoch,
            "targets": counts.get(t.id, 0),
            "last_heartbeat": t.last_heartbeat,
            "health": t.health,
            "health_reason": t.health_reason,
        }
        for t in tasks
    ]


def list_batches(session: Session, task_id: int | None = None) -> list[dict[str, Any]]:
    """The batches of undeleted tasks that are not retired (one task's with `task_id`)."""
    query = (
        select(MonitorBatch)
        .join(MonitorTask, MonitorTask.id == MonitorBatch.task_id)
        .where(MonitorBatch.status != BatchStatus.RETIRED, MonitorTask.del_flag == 0)
        .order_by(MonitorBatch.task_id, MonitorBatch.epoch, MonitorBatch.batch_no)
    )
    if task_id is not None:
        query = query.where(MonitorBatch.task_id == task_id)
    return [
        {
            "id": b.id,
            "task_id": b.task_id,
            "batch_no": b.batch_no,
            "epoch": b.epoch,
            "item_count": b.item_count,
            "status": b.status,
            "consumer_id": b.consumer_id,
            "worker_id": b.worker_id,
            "worker_pid": b.worker_pid,
            "last_heartbeat": b.last_heartbeat,
            "total_alerts": b.total_alerts,
        }
        for b in session.scalars(query)
    ]


def list_nodes(client: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """Every node that left metrics in Redis, online while its heartbeat key lives (TTL)."""
    nodes = []
    for node_id, (metrics, beat) in reported_nodes(client, keys).items():
        last = beat or metrics.get("updated_at")
        nodes.append(
            {
                "node_id": node_id,
                "online": beat is not None,
                "batches": int(metrics.get("portfolio_count") or 0),
                "queue_size": int(metrics.get("queue_size") or 0),
                "cpu_pct": float(metrics.get("cpu_usage") or 0),
                "memory_mib": float(metrics.get("memory_usage") or 0),
                "queues": metrics.get("queues", ""),
                "last_heartbeat": datetime.fromisoformat(last) if last else None,
            }
        )
    return nodes


def ago(then: datetime | None, now: datetime | None = None) -> str:
    """'25s ago', '3m ago', '2h ago', '4d ago'; '-' for never."""
    if then is None:
        return "-"
    now = now or datetime.now(UTC)
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def config_as_dict(config: MonitorConfig) -> dict[str, Any]:
    return {
        "id": config.id,
        "name": config.config_name,
        "chain": config.chain_type,
        "source": config.source,
        "version": config.version,
        "min_transaction_usd": _num(config.min_transaction_usd),
        "cumulative_min_amount_usd": _num(config.cumulative_min_amount_usd),
        "time_interval": config.time_interval,
        "trigger_logic": config.trigger_logic,
        "events_config": config.events_config,
        "notify_methods": config.notify_methods,
    }


def _num(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def load_json_arg(value: str | None, label: str) -> Any:
    """A JSON argument given inline or as `@path`."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except OSError as exc:
            raise InputError(f"{label}: cannot read {value[1:]}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{label}: not valid JSON: {exc}") from None


# --- task and target life cycle --------------------------------------------------------------
def set_task_running(
    session: Session, client: redis.Redis, keys: Keys, task_id: int, on: bool
) -> list[int]:
    """Stop a task (its consumers are told to stop, nothing serves it until it is started) or
    start it again (the orders to stop are taken back; reconcile dispatches its batches).
    Returns its current batches."""
    task = get_task(session, task_id)
    task.status = TASK_ACTIVE if on else TASK_STOPPED
    batch_ids = list(
        session.scalars(
            select(MonitorBatch.id).where(
                MonitorBatch.task_id == task_id, MonitorBatch.status != BatchStatus.RETIRED
            )
        )
    )
    pipe = client.pipeline(transaction=False)
    for batch_id in batch_ids:
        control = keys.batch_control(batch_id)
        if on:
            pipe.hdel(control, "stop")
        else:
            pipe.hset(control, "stop", BatchStatus.STOPPED)
    pipe.execute()
    return batch_ids


def list_targets(session: Session, task_id: int) -> list[dict[str, Any]]:
    """A task's targets, watched or removed, in the order they were added."""
    get_task(session, task_id)
    return [
        {
            "ca": t.target_value,
            "symbol": t.token_symbol,
            "pair": t.pair_address,
            "watched": t.status == TARGET_ACTIVE,
            "batch_id": t.batch_id,
        }
        for t in session.scalars(
            select(MonitorTaskTarget)
            .where(MonitorTaskTarget.task_id == task_id)
            .order_by(MonitorTaskTarget.id)
        )
    ]


def remove_targets(session: Session, task_id: int, cas: list[str]) -> tuple[int, list[str]]:
    """Stop watching these CAs (the next allocation moves them out of their batches); return
    (how many were removed, the CAs the task does not watch)."""
    get_task(session, task_id)
    found = {
        t.target_value: t
        for t in session.scalars(
            select(MonitorTaskTarget).where(
                MonitorTaskTarget.task_id == task_id,
                MonitorTaskTarget.target_value.in_(cas),
                MonitorTaskTarget.status == TARGET_ACTIVE,
            )
        )
    }
    for target in found.values():
        target.status = TARGET_REMOVED
    return len(found), [ca for ca in cas if ca not in found]


def recent_alerts(
    session: Session, task_id: int | None = None, after_id: int = 0, limit: int = 20
) -> list[MonitorAlertLog]:
    """The newest alerts (of one task), newest first; with `after_id`, only those after it."""
    query = select(MonitorAlertLog).where(MonitorAlertLog.id > after_id)
    if task_id is not None:
        query = query.where(MonitorAlertLog.task_id == task_id)
    return list(session.scalars(query.order_by(MonitorAlertLog.id.desc()).limit(limit)))


@dataclass
class FleetStatus:
    """The fleet on one screen (`kakarot status`): what runs, and what is wrong with what to do."""

    nodes_online: list[str]
    nodes_offline: list[str]
    batches_expected: int
    batches_live: int
    batches_not_live: list[int]
    queue_depths: dict[str, int]
    unserved_queues: dict[str, int]
    dead_letters: dict[str, int]
    beats: dict[str, str]  # host:role → "ticking"
    problems: list[tuple[str, str]]  # (what is wrong, what to do)


def fleet_status(session: Session, client: redis.Redis, keys: Keys) -> FleetStatus:
    from kakarot_workers import deadletters, queues
    from kakarot_workers.db.batches import current_batch_ids_of_active_tasks
    from kakarot_workers.status import LIVE
    from kakarot_workers.streams.node import queues_without_workers

    nodes = list_nodes(client, keys)
    online = sorted(n["node_id"] for n in nodes if n["online"])
    offline = sorted(n["node_id"] for n in nodes if not n["online"])
    expected = current_batch_ids_of_active_tasks(session)
    pipe = client.pipeline(transaction=False)
    for batch_id in expected:
        pipe.hget(keys.batch_status(batch_id), "status")
    for name in queues.ALL:
        pipe.llen(keys.queue(name))
    replies = pipe.execute()
    statuses, depths = replies[: len(expected)], replies[len(expected) :]
    not_live = [b for b, s in zip(expected, statuses, strict=True) if s not in LIVE]
    depth = dict(zip(queues.ALL, (int(d) for d in depths), strict=True))
    unserved = queues_without_workers(client, keys, queues.ALL)
    letters = deadletters.queues_with_letters(client, keys)
    prefix = keys.beat_heartbeat("", "")[: -len(":")]
    beats = {
        str(k)[len(prefix) :]: "ticking"
        for k in client.scan_iter(match=keys.beat_heartbeat("*", "*"), count=100)
    }
    problems: list[tuple[str, str]] = []
    for name, waiting in unserved.items():
        problems.append(
            (
                f"no live worker consumes queue {name} ({waiting} waiting)",
                f"start one: celery -A kakarot_workers worker -Q {name}",
            )
        )
    if not any(k.endswith(":leader") for k in beats):
        problems.append(("no beat leads the fleet", "start one: celery -A kakarot_workers beat"))
    if not_live:
        shown = ", ".join(map(str, not_live[:10])) + (" …" if len(not_live) > 10 else "")
        problems.append(
            (
                f"{len(not_live)} of {len(expected)} batches not live ({shown})",
                "kakarot batches shows each one's status and worker; a streams worker with free "
                "slots takes them at the next reconcile",
            )
        )
    for name, count in letters.items():
        problems.append((f"{count} dead letter(s) on {name}", f"kakarot deadletter list {name}"))
    return FleetStatus(
        online,
        offline,
        len(expected),
        len(expected) - len(not_live),
        not_live,
        depth,
        unserved,
        letters,
        beats,
        problems,
    )
