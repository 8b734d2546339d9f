"""Which real errors of the stores mean "away, wait and retry" (`store_unreachable`) and which
mean "what we asked is wrong" (retried a few times, then a dead letter)."""

from __future__ import annotations

import socket
import sqlite3

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError

from kakarot_workers.reconnect import store_unreachable


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_redis_refusing_connections_is_away():
    client = redis.Redis(port=_closed_port(), socket_connect_timeout=1)
    with pytest.raises(redis.RedisError) as caught:
        client.ping()
    assert store_unreachable(caught.value)


def test_a_redis_command_refused_is_not_away(redis_client):
    redis_client.set("kakarot:test:text", "x")
    with pytest.raises(redis.RedisError) as caught:
        redis_client.incr("kakarot:test:text")  # not an integer
    assert not store_unreachable(caught.value)


def test_mariadb_stopped_is_away():
    engine = sa.create_engine(f"mysql+pymysql://root:@127.0.0.1:{_closed_port()}/x")
    with pytest.raises(OperationalError) as caught, engine.connect():
        pass
    assert store_unreachable(caught.value)


@pytest.mark.mysql
def test_a_duplicate_key_on_mariadb_is_not_away(mariadb_server):
    url = mariadb_server.create_database("kakarot_store_errors")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INT PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    assert not store_unreachable(caught.value)


def test_sqlite_locked_by_another_writer_is_away(tmp_path):
    path = tmp_path / "locked.db"
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    locker.execute("BEGIN EXCLUSIVE")
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
    try:
        with pytest.raises(OperationalError) as caught, engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        assert store_unreachable(caught.value)
    finally:
        locker.execute("ROLLBACK")
        locker.close()


def test_a_missing_table_is_not_away(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/empty.db")
    with pytest.raises(OperationalError) as caught, engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM nowhere"))
    assert not store_unreachable(caught.value)
