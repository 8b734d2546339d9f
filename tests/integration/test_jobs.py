"""The control plane's jobs against real Redis and SQLite (the beat that sends them: e2e)."""

import base64
import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from kakarot_workers import runtime
from kakarot_workers.control import configs, reconcile, tasks, timeouts
from kakarot_workers.control.reconcile import ensure_allocated
from kakarot_workers.db.models import MonitorBatch, MonitorConfig, MonitorTask, utcnow
from kakarot_workers.db.session import session_scope
from kakarot_workers.errors import ConfigError
from kakarot_workers.streams import leases
from tests.support.scenario import create_task_with


def _cas(n: int, salt: int = 0) -> list[str]:
    return [f"0x{salt:04x}{i:036x}" for i in range(n)]


def _dispatched(client) -> list[int]:
    messages = [json.loads(m) for m in client.lrange("streams", 0, -1)]
    return sorted(json.loads(base64.b64decode(m["body"]))[0][0] for m in messages)


def _set_task(task_id: int, **values) -> None:
    with session_scope() as session:
        session.execute(update(MonitorTask).where(MonitorTask.id == task_id).values(**values))


def _task(task_id: int) -> MonitorTask:
    with session_scope() as session:
        task = session.get(MonitorTask, task_id)
        session.expunge(task)
        return task


def test_tasks_silent_past_the_timeout_fail_with_a_reason_and_others_are_untouched(
    db_url, redis_client, use_env
):
    use_env(KAKAROT_TASK_TIMEOUT_S="3600")
    now = utcnow()
    silent = create_task_with(_cas(1, 1))  # beat 2 h ago
    never = create_task_with(_cas(1, 2))  # created 2 h ago, never beat
    fresh = create_task_with(_cas(1, 3))  # beat a minute ago, created long ago
    young = create_task_with(_cas(1, 4))  # created now, never beat
    stopped = create_task_with(_cas(1, 5))  # silent, but not running
    _set_task(silent, last_heartbeat=now - timedelta(hours=2))
    _set_task(never, create_time=now - timedelta(hours=2), last_heartbeat=None)
    _set_task(fresh, create_time=now - timedelta(days=3), last_heartbeat=now - timedelta(minutes=1))
    _set_task(stopped, status=0, last_heartbeat=now - timedelta(hours=5))

    report = timeouts.check_timeouts(now)

    assert sorted(report.failed_tasks) == sorted([silent, never])
    assert "no heartbeat since" in _task(silent).health_reason
    assert "(timeout 60 min)" in _task(silent).health_reason
    assert "since its creation" in _task(never).health_reason
    assert _task(silent).status == 1, "failing a task must not switch its monitoring off"
    for untouched in (fresh, young, stopped):
        assert _task(untouched).health is None, untouched
    assert redis_client.get(runtime.keys().tasks_failed) == "2"
    # a second pass fails nobody twice; a task that beats again is ok again
    assert timeouts.check_timeouts(now).failed_tasks == []
    _set_task(silent, last_heartbeat=now)
    again = timeouts.check_timeouts(now)
    assert again.recovered_tasks == [silent] and _task(silent).health == "ok"
    assert _task(never).health == "failed"


def test_a_silent_batch_without_a_lease_goes_stale_and_is_dispatched_once(
    db_url, redis_client, use_env
):
    use_env(KAKAROT_BATCH_STALE_S="60")
    task_id = create_task_with(_cas(250, 7))
    batch_ids = ensure_allocated(task_id)
    assert len(batch_ids) == 3
    silent, held, fresh = batch_ids
    now = utcnow()
    with session_scope() as session:
        for batch_id, beat in ((silent, 120), (held, 120), (fresh, 5)):
            session.execute(
                update(MonitorBatch)
                .where(MonitorBatch.id == batch_id)
                .values(status="running", last_heartbeat=now - timedelta(seconds=beat))
            )
    # a live consumer whose database heartbeat lags (the writer is behind) is not stale
    assert leases.Leases(redis_client, runtime.keys()).acquire(held, "alive", ttl_s=30) is not None

    report = timeouts.check_timeouts(now)

    assert report.stale_batches == [silent] and report.redispatched == [silent]
    with session_scope() as session:
        statuses = dict(session.execute(select(MonitorBatch.id, MonitorBatch.status)).all())
    assert (statuses[silent], statuses[held], statuses[fresh]) == ("stale", "running", "running")
    assert _dispatched(redis_client) == [silent]
    assert redis_client.get(runtime.keys().batches_stale) == "1"
    # while the dispatch is on its way, another pass sends nothing more
    assert timeouts.check_timeouts(now).redispatched == []
    assert _dispatched(redis_client) == [silent]


def test_sync_heartbeats_copies_the_consumers_redis_status_in_bulk(db_url, redis_client):
    task_id = create_task_with(_cas(150, 9))
    first, second = ensure_allocated(task_id)
    keys = runtime.keys()
    at_ms = int(time.time() * 1000) - 3_000
    for batch_id, status in ((first, "running"), (second, "error")):
        redis_client.hset(
            keys.batch_status(batch_id),
            mapping={
                "status": status,
                "consumer_id": f"node-a-{batch_id}",
                "node_id": "node-a",
                "pid": 4242,
                "task_id": task_id,
                "updated_ms": at_ms,
            },
        )
    redis_client.hset(keys.batch_status(999), mapping={"status": "running"})  # half-written

    assert tasks.sync_heartbeats() == 2

    with session_scope() as session:
        rows = {b.id: b for b in session.scalars(select(MonitorBatch))}
        task = session.get(MonitorTask, task_id)
    assert (rows[first].status, rows[second].status) == ("running", "error")
    # the notes' identities: worker_id = pid@nodename, consumer_id = hostname-pid (the slot of
    # the consumer's own id is dropped)
    assert rows[first].worker_id == "4242@node-a" and rows[first].worker_pid == 4242
    assert rows[first].consumer_id == "node-a"
    beat = rows[first].last_heartbeat
    assert abs((beat - (utcnow() - timedelta(seconds=3))).total_seconds()) < 1.5
    assert task.last_heartbeat == beat, "the task beats while one of its batches serves"
    # an older status never moves a heartbeat back
    redis_client.hset(keys.batch_status(first), "updated_ms", at_ms - 60_000)
    tasks.sync_heartbeats()
    with session_scope() as session:
        assert session.get(MonitorBatch, first).last_heartbeat == beat


@pytest.mark.parametrize("writer", ["hub", "none"])
def test_sync_heartbeats_writes_nothing_when_another_writer_is_named(
    db_url, redis_client, use_env, writer
):
    """`hub`: the hub writes them; `none`: the Java backend does (the notes)."""
    use_env(KAKAROT_HEARTBEAT_WRITER=writer)
    task_id = create_task_with(_cas(10, 11))
    (batch_id,) = ensure_allocated(task_id)
    redis_client.hset(
        runtime.keys().batch_status(batch_id),
        mapping={"status": "running", "task_id": task_id, "updated_ms": int(time.time() * 1000)},
    )
    assert tasks.sync_heartbeats() == 0
    with session_scope() as session:
        assert session.get(MonitorBatch, batch_id).last_heartbeat is None


def test_allocate_runs_only_for_tasks_whose_targets_changed(db_url, redis_client):
    from kakarot_workers.tools.admin import add_targets, target_row

    a = create_task_with(_cas(120, 12))
    b = create_task_with(_cas(30, 13))
    assert sorted(reconcile.allocate_changed()) == [a, b]
    assert _task(a).current_epoch == 1 and _task(b).current_epoch == 1
    assert reconcile.allocate_changed() == []
    with session_scope() as session:
        add_targets(session, b, [target_row("bsc", ca, "NEW") for ca in _cas(5, 14)])
    assert reconcile.allocate_changed() == [b]
    assert _task(a).current_epoch == 1 and _task(b).current_epoch == 2


def test_announced_versions_only_rise_and_poll_configs_reads_the_database(db_url, redis_client):
    keys = runtime.keys()
    client = runtime.redis_client()
    create_task_with(_cas(1, 15))
    with session_scope() as session:
        config = session.scalars(select(MonitorConfig)).one()
        config_id, version = config.id, config.version
    assert configs.poll_configs() == [config_id]  # never announced: the database's
    assert configs.poll_configs() == []  # nothing new
    published = configs.publish_config(config_id)
    assert published == version + 1
    assert configs.poll_configs() == [config_id]
    assert configs.announced(client, keys, [config_id, 999]) == {config_id: published}
    # notices raise, never lower; repeated and stale ones change nothing
    assert configs.announce_versions(client, keys, {config_id: published + 3}) == [config_id]
    assert configs.announce_versions(client, keys, {config_id: published + 1}) == []
    assert configs.announce_versions(client, keys, {config_id: published + 3}) == []
    assert configs.poll_configs() == []
    assert configs.announced(client, keys, [config_id]) == {config_id: published + 3}


@pytest.mark.parametrize(
    "raw, message",
    [
        ("not json", "expected {configId, version}"),
        ('{"configId": 3}', "expected {configId, version}"),
        ("[1, 2]", "expected {configId, version}"),
        ('{"configId": "3", "version": 2}', "configId must be an integer"),
        ('{"configId": 3, "version": -1}', "version must be an integer"),
        ('{"configId": 3, "version": true}', "version must be an integer"),
    ],
)
def test_malformed_config_notices_are_refused_with_the_reason(raw, message):
    with pytest.raises(ConfigError) as error:
        configs.parse_notice(raw)
    assert message in str(error.value)
    assert configs.parse_notice('{"configId": 3, "version": 7}') == (3, 7)
