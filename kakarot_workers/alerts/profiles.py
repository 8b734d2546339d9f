"""A task's config as the alert pool uses it: rules and channels, cached by config id + version.

Each task's config row (id, version) is re-read when a newer version is announced (`note`, at
most once per `debounce_s`; see `control.configs`), and at the latest every `ttl_s`; a version
already parsed is not parsed again. An invalid version is refused (the error names the field)
and the last valid version of the same config stays in force; with none, the task's events are
skipped until the config is fixed, rather than judged by rules nobody wrote.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from kakarot_workers.alerts.rules import RuleSet, parse_events_config
from kakarot_workers.db.batches import get_task, task_config
from kakarot_workers.db.models import MonitorConfig
from kakarot_workers.errors import ConfigError, NotFoundError
from kakarot_workers.notify.channels import NotifyMethods, parse_notify_methods
from kakarot_workers.validation import parse_interval

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskProfile:
    """Everything the alert pool needs for one task: its rules and where alerts go."""

    rules: RuleSet
    notify: NotifyMethods


def build_profile(task_id: int, chain: str, config: MonitorConfig) -> TaskProfile:
    """Parse one config version for a task; raise ConfigError naming the bad field."""
    events = parse_events_config(config.events_config)
    notify = parse_notify_methods(config.notify_methods)
    try:
        interval_s = parse_interval(config.time_interval or "5m")
    except ValueError as exc:
        raise ConfigError(f"time_interval: {exc}") from None
    rules = RuleSet(
        task_id=task_id,
        config_id=config.id,
        config_version=config.version,
        chain=chain,
        min_transaction_usd=_float(config.min_transaction_usd),
        cumulative_min_amount_usd=_float(config.cumulative_min_amount_usd),
        time_interval_s=interval_s,
        trigger_logic="all" if config.trigger_logic == "all" else "any",
        events=events,
        top_holders_threshold=_float(config.top_holders_threshold),
    )
    return TaskProfile(rules, notify)


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


class ProfileCache:
    """Task profiles, re-read when a newer config version is announced (`note`) and at the
    latest every `ttl_s`."""

    def __init__(
        self,
        ttl_s: float,
        on_reject: Callable[[str], None] | None = None,
        debounce_s: float = 2.0,
    ) -> None:
        self.ttl_s = ttl_s
        self.on_reject = on_reject
        self.debounce_s = debounce_s
        self._reloaded_at: dict[int, float] = {}  # config id → when a notice last reloaded it
        self._checked: dict[int, tuple[float, TaskProfile]] = {}
        self._valid: dict[int, TaskProfile] = {}  # config id → last valid version's profile
        self._refused: set[tuple[int, int]] = set()
        self._lock = threading.Lock()

    def fresh(self, task_id: int) -> TaskProfile | None:
        """The task's profile if checked within `ttl_s` (no database needed), else None."""
        with self._lock:
            entry = self._checked.get(task_id)
        if entry is not None and time.monotonic() - entry[0] < self.ttl_s:
            return entry[1]
        return None

    def get(self, session: Session, task_id: int) -> TaskProfile:
        """The task's profile; NotFoundError if the task has no config or no valid version."""
        now = time.monotonic()
        with self._lock:
            entry = self._checked.get(task_id)
        if entry is not None and now - entry[0] < self.ttl_s:
            return entry[1]
        task = get_task(session, task_id)
        config = task_config(session, task_id)
        if config is None:
            raise NotFoundError(f"task {task_id} has no config")
        profile = self._profile(task.id, task.chain_type, config)
        with self._lock:
            self._checked[task_id] = (now, profile)
        return profile

    def clear(self) -> None:
        """Forget everything, last valid versions included (another database)."""
        with self._lock:
            self._checked.clear()
            self._valid.clear()
            self._refused.clear()

    def invalidate(self, config_id: int | None = None) -> None:
        """Re-read on next use (every task, or the tasks of one config)."""
        with self._lock:
            if config_id is None:
                self._checked.clear()
            else:
                for task_id, (_, profile) in list(self._checked.items()):
                    if profile.rules.config_id == config_id:
                        del self._checked[task_id]

    def note(self, announced: dict[int, int]) -> set[int]:
        """Announced versions (config id → version): re-read each config whose announced
        version is newer than the one in force, unless it was re-read within the debounce
        period (then the first message after it does). Return the configs to re-read now."""
        now = time.monotonic()
        reload = set()
        with self._lock:
            in_force: dict[int, int] = {}
            for _, profile in self._checked.values():
                rules = profile.rules
                in_force[rules.config_id] = max(
                    rules.config_version, in_force.get(rules.config_id, -1)
                )
            for config_id, version in announced.items():
                if version <= in_force.get(config_id, version) or (
                    (config_id, version) in self._refused
                ):
                    continue
                if now - self._reloaded_at.get(config_id, -math.inf) < self.debounce_s:
                    continue
                self._reloaded_at[config_id] = now
                reload.add(config_id)
            for task_id, (_, profile) in list(self._checked.items()):
                if profile.rules.config_id in reload:
                    del self._checked[task_id]
        return reload

    def _profile(self, task_id: int, chain: str, config: MonitorConfig) -> TaskProfile:
        with self._lock:
            valid = self._valid.get(config.id)
        if (
            valid is not None
            and valid.rules.config_version == config.version
            and valid.rules.task_id == task_id
        ):
            return valid
        try:
            profile = build_profile(task_id, chain, config)
        except ConfigError as exc:
            self._refuse(config, exc)
            if valid is None:
                raise NotFoundError(
                    f"config {config.id} v{config.version} is invalid and no earlier version "
                    f"is known: {exc}"
                ) from None
            return TaskProfile(rules=_for_task(valid.rules, task_id, chain), notify=valid.notify)
        with self._lock:
            self._valid[config.id] = profile
        return profile

    def _refuse(self, config: MonitorConfig, exc: ConfigError) -> None:
        key = (config.id, config.version)
        with self._lock:
            first = key not in self._refused
            self._refused.add(key)
        if first:
            log.error("config %s v%s refused: %s", config.id, config.version, exc)
            if self.on_reject is not None:
                self.on_reject(str(exc))


def _for_task(rules: RuleSet, task_id: int, chain: str) -> RuleSet:
    return rules if rules.task_id == task_id else replace(rules, task_id=task_id, chain=chain)
