"""A task's rules as the alert pool sees them: loaded from its config, cached per process."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.orm import Session

from kakarot_workers.batches import get_task, task_config
from kakarot_workers.errors import ConfigError, NotFoundError
from kakarot_workers.rules import EventsConfig, RuleSet, parse_events_config, parse_interval

log = logging.getLogger(__name__)


def build_rule_set(session: Session, task_id: int, last_valid: RuleSet | None = None) -> RuleSet:
    """Read the task's config into a RuleSet.

    An invalid `events_config` keeps the last valid rules of the same config in force; with none
    cached, layer 1 alone applies. Either way the error is logged with the field named.
    """
    task = get_task(session, task_id)
    config = task_config(session, task_id)
    if config is None:
        raise NotFoundError(f"task {task_id} has no config")
    try:
        events = parse_events_config(config.events_config)
    except ConfigError as exc:
        if last_valid is not None and last_valid.config_id == config.id:
            log.error(
                "config %s v%s refused (%s); v%s stays in force",
                config.id,
                config.version,
                exc,
                last_valid.config_version,
            )
            return last_valid
        log.error(
            "config %s v%s refused (%s); applying layer 1 only", config.id, config.version, exc
        )
        events = EventsConfig()
    try:
        interval_s = parse_interval(config.time_interval or "5m")
    except ValueError:
        interval_s = 300
    return RuleSet(
        task_id=task.id,
        config_id=config.id,
        config_version=config.version,
        chain=task.chain_type,
        min_transaction_usd=_float(config.min_transaction_usd),
        cumulative_min_amount_usd=_float(config.cumulative_min_amount_usd),
        time_interval_s=interval_s,
        trigger_logic="all" if config.trigger_logic == "all" else "any",
        events=events,
    )


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


class RuleSetCache:
    """Rule sets by task id, re-read after `ttl_s` (hot reload by Pub/Sub comes later)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[int, tuple[float, RuleSet]] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, task_id: int) -> RuleSet:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(task_id)
        if entry is not None and now - entry[0] < self.ttl_s:
            return entry[1]
        rules = build_rule_set(session, task_id, entry[1] if entry else None)
        with self._lock:
            self._entries[task_id] = (now, rules)
        return rules
