"""The whole fleet through database faults: MariaDB killed and restarted a minute later, and
SQLite locked by another writer for 30 s.

Alert messages wait and retry meanwhile, without limit and at least every 5 s; the consumers
are not affected (they do not write the database on the hot path). After the fault: the alert
pool has caught up within 10 s, no process exited, no alert row and no delivery is doubled, and
every trade the simulator delivered at or above the threshold alerts once.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
from sqlalchemy import make_url

from kakarot_workers.settings import get_settings
from tests.faults.conftest import (
    Fleet,
    Shape,
    assert_exact_after_more_traffic,
    caught_up_s,
)

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("fleet", [Shape(database="mariadb")], indirect=True, ids=str)
def test_mariadb_killed_and_restarted_after_a_minute(fleet: Fleet):
    assert fleet.mariadb is not None
    time.sleep(3)
    fleet.mariadb.kill()
    time.sleep(60)
    assert not fleet.exited(), fleet.exited()
    fleet.mariadb.launch()
    recovered_s = caught_up_s(fleet, "the alert pool to catch up")
    print(f"caught up {recovered_s:.1f}s after MariaDB came back")
    assert fleet.batches_live_since(0)
    assert_exact_after_more_traffic(fleet)


def test_sqlite_locked_for_30s(fleet: Fleet):
    path = make_url(get_settings().database_url).database
    time.sleep(3)
    # When another process holds SQLite's write lock for 30 s
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        time.sleep(30)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    recovered_s = caught_up_s(fleet, "the alert pool to catch up")
    print(f"caught up {recovered_s:.1f}s after the lock was released")
    assert fleet.batches_live_since(0)
    assert_exact_after_more_traffic(fleet)
