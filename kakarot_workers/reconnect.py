"""How long-lived connections come back: the jittered back-off every one of them uses (the
sources, the backend link, the config listener, tasks retried while a store is away), a
connection kept in a thread of its own, and which errors mean "the store is away"."""

from __future__ import annotations

import logging
import random
import threading
from typing import Self

import kombu.exceptions
import redis
from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)


def backoff(failures: int, max_s: float) -> float:
    """The reconnect delay after `failures` failures in a row: exponential from 0.4 s, capped
    at `max_s`, with jitter (50–100 %) so that many consumers do not reconnect in step."""
    return min(max_s, 0.2 * 2.0 ** min(failures, 10)) * random.uniform(0.5, 1.0)


# MySQL/MariaDB client and server codes of a server that is away or busy, not of bad content:
# can't connect (2002, 2003), gone away (2006), lost the connection (2013, 2055), shutting down
# (1053), too many connections (1040), lock wait timeout (1205), deadlock (1213), read-only (1290)
_MYSQL_AWAY = {1040, 1053, 1205, 1213, 1290, 2002, 2003, 2006, 2013, 2055}
_SQLITE_AWAY = ("database is locked", "database table is locked", "unable to open database")


def store_unreachable(exc: BaseException) -> bool:
    """The error says the database or Redis is away (stopped, restarting, locked, overloaded),
    not that what we asked of it is wrong: the work waits and tries again, without limit."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return True
    if isinstance(exc, kombu.exceptions.OperationalError):
        return True  # the broker away, sending a message
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True  # no connection from the pool in time / a connection found dead
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        args = getattr(exc.orig, "args", ())
        if args and isinstance(args[0], int) and args[0] in _MYSQL_AWAY:
            return True
        return any(text in str(exc.orig) for text in _SQLITE_AWAY)
    return False


class Reconnecting:
    """A connection served in a thread of its own until `stop`: `serve` runs one connection
    (it sets `failures = 0` once connected); when it fails with one of `retry_on` (or ends), the
    next one starts after `pause_s`."""

    thread_name = "reconnecting"
    retry_on: tuple[type[Exception], ...] = (OSError,)

    def __init__(self, max_backoff_s: float) -> None:
        self.max_backoff_s = max_backoff_s
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.serve()
            except self.retry_on as exc:
                self.failures += 1
                log.warning("%s: %s: %s; reconnecting", self, type(exc).__name__, exc)
            finally:
                self.disconnected()
            if self._stop.wait(self.pause_s()):
                return

    def __str__(self) -> str:
        return self.thread_name

    def pause_s(self) -> float:
        """The wait before the next connection."""
        return backoff(max(self.failures, 1), self.max_backoff_s)

    def serve(self) -> None:
        raise NotImplementedError

    def disconnected(self) -> None:
        """After each connection, whatever ended it."""
