"""Shared fixtures: a real Redis server, SQLite and MariaDB databases, worker processes.

The Redis URL and a default database URL are put in the environment before anything reads the
settings, so the Celery app in this process and every worker subprocess agree on them.
"""

from __future__ import annotations

import itertools
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

for _name in [
    n for n in os.environ if n.startswith("KAKAROT_") and not n.startswith("KAKAROT_TEST_")
]:
    del os.environ[_name]
with socket.socket() as _sock:
    _sock.bind(("127.0.0.1", 0))
    REDIS_PORT = _sock.getsockname()[1]
TEST_DIR = Path(tempfile.mkdtemp(prefix="kakarot-tests-"))
os.environ["KAKAROT_REDIS_URL"] = f"redis://127.0.0.1:{REDIS_PORT}/0"
os.environ["KAKAROT_DATABASE_URL"] = f"sqlite:///{TEST_DIR}/default.db"

import redis  # noqa: E402

from kakarot_workers.db.session import dispose_engines, upgrade_schema  # noqa: E402
from kakarot_workers.settings import get_settings  # noqa: E402
from kakarot_workers.tools.embedded_redis import EmbeddedRedis  # noqa: E402
from tests.support.mariadb import MariaDBServer, find_binaries  # noqa: E402

_db_counter = itertools.count(1)
E2E_DIR = Path(__file__).parent / "e2e"
E2E_TIMEOUT_S = 180
FAULTS_DIR = Path(__file__).parent / "faults"
FAULTS_TIMEOUT_S = 400


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/e2e are whole-fleet scenarios: marked `e2e`, with a longer timeout
    than the 20 s every other test gets (pyproject.toml); tests/faults (`make faults`) longer."""
    for item in items:
        parents = Path(item.fspath).parents
        if E2E_DIR in parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))
        elif FAULTS_DIR in parents:
            item.add_marker(pytest.mark.timeout(FAULTS_TIMEOUT_S))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(port=REDIS_PORT) as server:
        yield server


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client of the session's Redis, flushed before the test (and what this process
    remembers of the fleet on it forgotten)."""
    from kakarot_workers.streams.dispatch import forget_recent

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    forget_recent()
    yield client
    client.close()


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    binaries = find_binaries()
    if binaries is None:
        if os.environ.get("KAKAROT_TEST_REQUIRE_MARIADB"):
            pytest.fail(
                "MariaDB is required here (KAKAROT_TEST_REQUIRE_MARIADB) but "
                "mariadb-server is not installed"
            )
        pytest.skip(
            "mariadb-server is not installed (apt-get install mariadb-server; .ci/run does it)"
        )
    server = MariaDBServer(*binaries).start()
    yield server
    server.stop()


def _fresh_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/kakarot.db"
    server: MariaDBServer = request.getfixturevalue("mariadb_server")
    return server.create_database(f"kakarot_test_{next(_db_counter)}")


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mysql)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on SQLite and on MariaDB."""
    return _fresh_url(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mysql)])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database with the schema, on SQLite and on MariaDB."""
    url = _fresh_url(request.param, request, tmp_path)
    upgrade_schema(url)
    return url


@pytest.fixture
def use_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """`use_env(KAKAROT_X="…")`: set variables for this process (and children) for one test."""

    def apply(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()
    dispose_engines()


@pytest.fixture
def db_url(use_env, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    """A fresh SQLite database with the schema, made this process's (and workers') default."""
    from kakarot_workers.alerts import evaluate as alerts
    from kakarot_workers.notify import notifiers as notify

    url = f"sqlite:///{tmp_path}/kakarot.db"
    upgrade_schema(url)
    use_env(KAKAROT_DATABASE_URL=url)
    alerts.reset_caches()
    notify.reset()
    return url


@pytest.fixture
def workers(redis_client, tmp_path: Path) -> Iterator[object]:
    """`workers("streams", pool="threads", concurrency=8)`: a real worker subprocess, ready to
    consume; every one started is stopped (warm, then killed) at teardown."""
    from kakarot_workers.tools.fleet import WorkerProcess

    started: list[WorkerProcess] = []

    def start(queues: str, **options: object) -> WorkerProcess:
        name = f"test-{queues.replace(',', '-') or 'plain'}-{len(started)}"
        worker = WorkerProcess(name, queues, log_path=tmp_path / f"{name}.log", **options)  # type: ignore[arg-type]
        started.append(worker)
        return worker.start()

    yield start
    for worker in reversed(started):
        worker.stop(timeout_s=15)


@pytest.fixture(scope="session")
def anvil_binary() -> str:
    from tests.support.anvil import find_anvil

    binary = find_anvil()
    if binary is None:
        reason = (
            "anvil and @uniswap/v2-core are not installed (`make test` installs them with npm; "
            "node and npm are needed)"
        )
        if os.environ.get("KAKAROT_TEST_REQUIRE_EVM"):
            pytest.fail(f"the EVM tests are required here (KAKAROT_TEST_REQUIRE_EVM) but {reason}")
        print(f"\nSKIP EVM tests: {reason}")
        pytest.skip(reason)
    return binary


@pytest.fixture
def anvil(anvil_binary: str) -> Iterator[object]:
    """A fresh local EVM node on 127.0.0.1 (anvil), stopped after the test."""
    from tests.support.anvil import Anvil

    node = Anvil(anvil_binary).start()
    yield node
    node.stop()
