"""Worker processes as objects: start `celery -A kakarot_workers worker`, wait until it answers
a ping, stop it warmly (SIGTERM) or kill it. Used by `kakarot demo` and by the test fixtures.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from kakarot_workers.celery_app import app
from kakarot_workers.errors import KakarotError

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: own process group, and SIGTERM if the parent dies (Linux)."""
    os.setsid()
    with contextlib.suppress(OSError):  # not Linux: no parent-death signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class WorkerProcess:
    """One Celery worker subprocess serving `queues`."""

    def __init__(
        self,
        name: str,
        queues: str,
        *,
        pool: str | None = None,
        concurrency: int | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.name = name
        self.nodename = f"{name}@{socket.gethostname()}"
        self.queues = queues
        self.pool = pool
        self.concurrency = concurrency
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None
        self._log = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, wait: bool = True) -> WorkerProcess:
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "kakarot_workers",
            "worker",
            "-Q",
            self.queues,
            "-n",
            self.nodename,
            "--loglevel",
            "INFO",
            "--without-mingle",
            *self.extra_args,
        ]
        if self.pool is not None:
            command += ["--pool", self.pool]
        if self.concurrency is not None:
            command += ["--concurrency", str(self.concurrency)]
        output = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
            output = self._log
        self.process = subprocess.Popen(
            command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until the worker answers a broker ping (so it consumes its queues)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise KakarotError(
                    f"worker {self.nodename} exited during start-up "
                    f"(code {self.process.returncode if self.process else '?'}); "
                    f"see {self.log_path or 'its output'}"
                )
            replies = app.control.ping(destination=[self.nodename], timeout=0.5)
            if any(self.nodename in reply for reply in replies):
                return
        raise KakarotError(f"worker {self.nodename} did not answer a ping in {timeout_s:.0f}s")

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Warm shutdown (SIGTERM); SIGKILL if it has not exited after `timeout_s`."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()
        return process.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group (the worker and its pool children)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
