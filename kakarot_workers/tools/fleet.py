"""Worker and beat processes as objects: start `celery -A kakarot_workers worker` (and wait
until it answers a ping) or `… beat`, stop them warmly (SIGTERM) or kill them. Used by
`kakarot demo`, the benchmarks and the test fixtures.
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
from typing import Any, BinaryIO

from kakarot_workers.celery import app
from kakarot_workers.errors import KakarotError

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
_PR_SET_PDEATHSIG = 1


_PRCTL: Any = None
with contextlib.suppress(OSError):  # loaded here, not between fork and exec; not Linux: none
    _PRCTL = ctypes.CDLL("libc.so.6", use_errno=True).prctl


def detach_and_die_with_parent() -> None:
    """In the child, before exec: own process group, and SIGTERM if the parent dies (Linux;
    the parent's thread that started it, strictly). A parent already gone: exit at once."""
    parent = os.getppid()
    os.setsid()
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)


class CeleryProcess:
    """A `celery -A kakarot_workers …` subprocess in its own process group, its output in a log
    file; stopped warmly (SIGTERM), or killed with its children."""

    def __init__(self, env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        raise NotImplementedError

    def spawn(self) -> None:
        output: int | BinaryIO = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
            output = self._log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "kakarot_workers", *self.command()],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=detach_and_die_with_parent,
        )

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

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
        """SIGKILL the whole process group (the process and its pool children)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class WorkerProcess(CeleryProcess):
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
        super().__init__(env, log_path)
        self.name = name
        self.nodename = f"{name}@{socket.gethostname()}"
        self.queues = queues
        self.pool = pool
        self.concurrency = concurrency
        self.extra_args = extra_args or []

    def command(self) -> list[str]:
        command = ["worker", *(["-Q", self.queues] if self.queues else []), "-n", self.nodename]
        command += ["--loglevel", "INFO", "--without-mingle", *self.extra_args]
        if self.pool is not None:
            command += ["--pool", self.pool]
        if self.concurrency is not None:
            command += ["--concurrency", str(self.concurrency)]
        return command

    def start(self, wait: bool = True) -> WorkerProcess:
        self.spawn()
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

    def __enter__(self) -> WorkerProcess:
        return self.start()


class BeatProcess(CeleryProcess):
    """One `celery -A kakarot_workers beat` (RedBeat): the active one holds the lock, a second
    waits as a standby and takes over when the lock lapses."""

    def __init__(
        self, name: str, *, env: dict[str, str] | None = None, log_path: Path | None = None
    ) -> None:
        super().__init__(env, log_path)
        self.name = name

    def command(self) -> list[str]:
        return ["beat", "--loglevel", "INFO"]

    def start(self) -> BeatProcess:
        self.spawn()
        return self

    @property
    def active(self) -> bool:
        """It holds the beat lock (it said so, and it still runs)."""
        running = self.process is not None and self.process.poll() is None
        return running and "beat: Acquired lock" in self.log_text()

    def __enter__(self) -> BeatProcess:
        return self.start()
