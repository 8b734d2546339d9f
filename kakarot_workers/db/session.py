"""One engine per process, sessions as context managers, and schema upgrades through Alembic."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from kakarot_workers import metrics
from kakarot_workers.settings import get_settings

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 10_000

_engines: dict[tuple[int, str], Engine] = {}


def make_engine(url: str) -> Engine:
    """An engine for `url`. SQLite gets WAL and a busy timeout so several processes can share it."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kwargs.update(pool_pre_ping=True, pool_recycle=1800)
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "before_cursor_execute", _started)
    event.listen(engine, "after_cursor_execute", _timed)
    return engine


def _started(
    _conn: Any, _cursor: Any, _statement: Any, _params: Any, context: Any, _many: Any
) -> None:
    context._kakarot_started = time.perf_counter()


def _timed(
    _conn: Any, _cursor: Any, _statement: Any, _params: Any, context: Any, _many: Any
) -> None:
    started = getattr(context, "_kakarot_started", None)
    if started is not None:
        metrics.DB_SECONDS.observe(time.perf_counter() - started)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def get_engine(url: str | None = None) -> Engine:
    """The engine of this process for `url` (default: the settings'). Re-made after a fork."""
    key = (os.getpid(), url or get_settings().database_url)
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = make_engine(key[1])
    return engine


def dispose_engines() -> None:
    """Forget engines inherited from a parent process (called after fork) or on shutdown."""
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    factory = sessionmaker(bind=get_engine(url), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _alembic_config(url: str | None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url or get_settings().database_url
    return config


def upgrade_schema(url: str | None = None, revision: str = "head") -> None:
    """Create or update the schema to `revision` with the packaged Alembic migrations."""
    from alembic import command

    command.upgrade(_alembic_config(url), revision)


def downgrade_schema(url: str | None = None, revision: str = "-1") -> None:
    """Step the schema back to `revision` ("base" drops every table the migrations made)."""
    from alembic import command

    command.downgrade(_alembic_config(url), revision)


def current_revision(url: str | None = None) -> str | None:
    """The Alembic revision the database is at, or None if it was never migrated."""
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
