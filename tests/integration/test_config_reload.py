"""Reloads of a config in the alert pool's cache: by announced version, debounced, idempotent."""

import time

from sqlalchemy import update

from kakarot_workers.alerts.profiles import ProfileCache
from kakarot_workers.db.models import MonitorConfig
from kakarot_workers.db.session import session_scope
from tests.support.scenario import create_task_with


def _bump(config_id: int, threshold: float) -> None:
    with session_scope() as session:
        session.execute(
            update(MonitorConfig)
            .where(MonitorConfig.id == config_id)
            .values(version=MonitorConfig.version + 1, min_transaction_usd=threshold)
        )


def _profile(cache: ProfileCache, task_id: int):
    with session_scope() as session:
        return cache.get(session, task_id)


def _until_debounced(cache: ProfileCache, reloaded_at: float) -> None:
    """The debounce period is what is under test: let it run out, counted from the reload
    (`reloaded_at`, taken just after the `note` that reloaded)."""
    time.sleep(max(0.0, reloaded_at + cache.debounce_s - time.monotonic()))


def test_a_newer_version_reloads_once_per_debounce_period_and_repeats_change_nothing(db_url):
    task_id = create_task_with(["0x" + "a" * 40], min_transaction_usd=100)
    cache = ProfileCache(ttl_s=3600, debounce_s=0.5)
    first = _profile(cache, task_id)
    config_id = first.rules.config_id
    assert first.rules.config_version == 1
    assert cache.note({config_id: 1}) == set()  # the version in force: nothing to do
    assert cache.note({config_id + 1: 9}) == set()  # a config no cached task uses

    _bump(config_id, 200)  # version 2
    assert cache.note({config_id: 2}) == {config_id}
    reloaded_at = time.monotonic()
    assert cache.fresh(task_id) is None  # the next message re-reads it
    second = _profile(cache, task_id)
    assert (second.rules.config_version, second.rules.min_transaction_usd) == (2, 200)
    assert cache.note({config_id: 2}) == set()  # the same notice again: idempotent

    _bump(config_id, 300)  # version 3, within the debounce period of the last reload
    assert cache.note({config_id: 3}) == set()
    assert cache.fresh(task_id).rules.config_version == 2  # still in force, for now
    _until_debounced(cache, reloaded_at)
    assert cache.note({config_id: 3}) == {config_id}
    assert _profile(cache, task_id).rules.min_transaction_usd == 300


def test_a_version_announced_before_its_row_is_readable_is_read_again_later(db_url):
    task_id = create_task_with(["0x" + "b" * 40], min_transaction_usd=100)
    cache = ProfileCache(ttl_s=3600, debounce_s=0.3)
    config_id = _profile(cache, task_id).rules.config_id
    # the notice of version 2 arrives before the row says so (a replica behind, say)
    assert cache.note({config_id: 2}) == {config_id}
    reloaded_at = time.monotonic()
    assert _profile(cache, task_id).rules.config_version == 1
    assert cache.note({config_id: 2}) == set()  # debounced, not re-read on every message
    _bump(config_id, 250)
    _until_debounced(cache, reloaded_at)
    assert cache.note({config_id: 2}) == {config_id}
    assert _profile(cache, task_id).rules.min_transaction_usd == 250
