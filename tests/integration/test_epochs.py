"""Applying allocations as epochs, and retiring old epochs, on SQLite and MariaDB."""

from datetime import timedelta

import pytest
from sqlalchemy import event, select

from kakarot_workers.control.allocation import AllocationParams
from kakarot_workers.control.epochs import apply_allocation, current_assignment, retire_old_epochs
from kakarot_workers.db.models import (
    MonitorBatch,
    MonitorBatchItem,
    MonitorTask,
    MonitorTaskTarget,
    utcnow,
)
from kakarot_workers.db.session import dispose_engines, get_engine, session_scope
from kakarot_workers.keys import Keys
from kakarot_workers.tools.admin import add_targets, create_config, create_task, target_row

PARAMS = AllocationParams(cap=10, merge_below=0.5)
KEYS = Keys()


def cas(start: int, stop: int) -> list[str]:
    return [f"0x{i:040x}" for i in range(start, stop)]


@pytest.fixture
def task(any_db_url):
    with session_scope(any_db_url) as session:
        config = create_config(session, name="c", chain="bsc")
        task = create_task(session, name="t", task_type="batch", chain="bsc", config_id=config.id)
        task_id = task.id
    yield any_db_url, task_id
    dispose_engines()


def add(url: str, task_id: int, targets: list[str]) -> None:
    with session_scope(url) as session:
        add_targets(session, task_id, [target_row("bsc", ca) for ca in targets])


def remove(url: str, task_id: int, targets: list[str]) -> None:
    with session_scope(url) as session:
        for target in session.scalars(
            select(MonitorTaskTarget).where(
                MonitorTaskTarget.task_id == task_id, MonitorTaskTarget.target_value.in_(targets)
            )
        ):
            target.status = 0


def allocate(url: str, task_id: int):
    with session_scope(url) as session:
        return apply_allocation(session, task_id, PARAMS)


def batches(url: str, task_id: int) -> dict[int, MonitorBatch]:
    with session_scope(url) as session:
        return {
            b.id: b
            for b in session.scalars(select(MonitorBatch).where(MonitorBatch.task_id == task_id))
        }


def target_updates(url: str):
    """Count the target rows written by UPDATE statements (parameter sets)."""
    written = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE monitor_task_target_v2"):
            written.append(len(parameters) if executemany else 1)

    engine = get_engine(url)
    event.listen(engine, "before_cursor_execute", count)
    return written, lambda: event.remove(engine, "before_cursor_execute", count)


def test_first_allocation_writes_epoch_one(task):
    url, task_id = task
    add(url, task_id, cas(0, 25))
    report = allocate(url, task_id)
    assert (report.epoch_before, report.epoch_after, report.batches_after) == (0, 1, 3)
    rows = batches(url, task_id)
    assert sorted((b.batch_no, b.item_count, b.epoch, b.status) for b in rows.values()) == [
        (1, 10, 1, "pending"),
        (2, 10, 1, "pending"),
        (3, 5, 1, "pending"),
    ]
    with session_scope(url) as session:
        assert session.get(MonitorTask, task_id).current_epoch == 1
        mirror = {
            t.target_value: (t.batch_id, t.batch_order)
            for t in session.scalars(select(MonitorTaskTarget))
        }
        items = {
            (i.batch_id, i.batch_order): i.target_id
            for i in session.scalars(select(MonitorBatchItem))
        }
        assert len(items) == 25
        assert current_assignment(session, session.get(MonitorTask, task_id)) == {
            bid: [ca for ca, (b, _) in sorted(mirror.items(), key=lambda kv: kv[1]) if b == bid]
            for bid in rows
        }


def test_same_targets_do_not_bump_the_epoch(task):
    url, task_id = task
    add(url, task_id, cas(0, 25))
    allocate(url, task_id)
    written, stop = target_updates(url)
    report = allocate(url, task_id)
    stop()
    assert report.epoch_after == report.epoch_before == 1
    assert not report.diff.membership_changed and written == []
    assert len(batches(url, task_id)) == 3


def test_changed_batches_get_new_rows_and_kept_ones_carry(task):
    url, task_id = task
    add(url, task_id, cas(0, 25))
    allocate(url, task_id)
    before = batches(url, task_id)
    partial = next(b.id for b in before.values() if b.item_count == 5)
    add(url, task_id, cas(100, 103))  # fits in the batch of 5
    written, stop = target_updates(url)
    report = allocate(url, task_id)
    stop()
    assert report.epoch_after == 2
    assert report.diff.changed == {partial} and not report.diff.new and not report.diff.moved
    after = batches(url, task_id)
    carried = set(before) - {partial}
    assert set(report.carried_batch_ids) == carried
    assert all(after[b].epoch == 2 for b in carried)  # same rows, next epoch
    (new_id,) = report.new_batch_ids
    assert (after[new_id].epoch, after[new_id].item_count, after[new_id].batch_no) == (
        2,
        8,
        before[partial].batch_no,
    )
    assert (after[partial].epoch, after[partial].status) == (1, "pending")  # old row stays
    assert sum(written) == 8  # only the 8 targets of the changed batch were written
    with session_scope(url) as session:
        assert session.get(MonitorTask, task_id).current_epoch == 2
        moved = session.scalars(
            select(MonitorTaskTarget).where(MonitorTaskTarget.batch_id == new_id)
        ).all()
        assert len(moved) == 8


def test_removed_targets_leave_the_mirror(task):
    url, task_id = task
    add(url, task_id, cas(0, 12))
    allocate(url, task_id)
    remove(url, task_id, cas(10, 12))  # the whole second batch
    report = allocate(url, task_id)
    assert len(report.diff.retired) == 1 and report.epoch_after == 2
    with session_scope(url) as session:
        gone = session.scalars(select(MonitorTaskTarget).where(MonitorTaskTarget.status == 0)).all()
        assert [t.batch_id for t in gone] == [None, None]


def test_old_epoch_retires_only_once_the_new_owners_are_live(task, redis_client):
    url, task_id = task
    add(url, task_id, cas(0, 15))
    allocate(url, task_id)
    add(url, task_id, cas(100, 102))
    report = allocate(url, task_id)
    (old,) = report.diff.changed
    (new,) = report.new_batch_ids

    def retire(now=None):
        with session_scope(url) as session:
            return retire_old_epochs(
                session, redis_client, KEYS, task_id=task_id, grace_s=600, now=now
            )

    assert retire() == []  # the new owner is not subscribed yet
    redis_client.hset(KEYS.batch_status(new), "status", "connecting")
    assert retire() == []
    redis_client.hset(KEYS.batch_status(new), "status", "running")
    assert retire() == [old]
    assert batches(url, task_id)[old].status == "retired"
    assert redis_client.hget(KEYS.batch_control(old), "stop") == "retired"
    assert retire() == []  # once


def test_old_epoch_retires_at_the_end_of_grace(task, redis_client):
    url, task_id = task
    add(url, task_id, cas(0, 15))
    allocate(url, task_id)
    remove(url, task_id, cas(0, 1))
    report = allocate(url, task_id)
    (old,) = report.diff.changed
    with session_scope(url) as session:
        assert retire_old_epochs(session, redis_client, KEYS, task_id=task_id, grace_s=600) == []
    with session_scope(url) as session:
        later = utcnow() + timedelta(seconds=601)
        assert retire_old_epochs(
            session, redis_client, KEYS, task_id=task_id, grace_s=600, now=later
        ) == [old]
