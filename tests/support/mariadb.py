"""A private MariaDB server for the tests: temporary datadir, 127.0.0.1, stopped at teardown."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

EXTRA_PATH = "/usr/sbin:/usr/local/sbin"
START_TIMEOUT_S = 30.0


def find_binaries() -> tuple[str, str] | None:
    """(mariadb-install-db, mariadbd) if the mariadb-server package is installed."""
    path = f"{EXTRA_PATH}:/usr/bin:/usr/local/bin"
    install = shutil.which("mariadb-install-db", path=path)
    server = shutil.which("mariadbd", path=path) or shutil.which("mysqld", path=path)
    return (install, server) if install and server else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MariaDBServer:
    def __init__(self, install_db: str, server: str) -> None:
        self.install_db = install_db
        self.server = server
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kakarot-mariadb-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MariaDBServer:
        subprocess.run(
            [
                self.install_db,
                "--no-defaults",
                f"--datadir={self.dir / 'data'}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self.launch()

    def launch(self) -> MariaDBServer:
        """Start the server on its data directory and port (again, after `kill`)."""
        self.process = subprocess.Popen(
            [
                self.server,
                "--no-defaults",
                f"--datadir={self.dir / 'data'}",
                "--user=root",
                "--bind-address=127.0.0.1",
                f"--port={self.port}",
                f"--socket={self.dir}/sock",
                f"--pid-file={self.dir}/pid",
                "--skip-name-resolve",
                f"--log-error={self.dir}/err.log",
                "--innodb-buffer-pool-size=64M",
                "--innodb-flush-log-at-trx-commit=2",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                self.connect().close()
                return self
            except pymysql.err.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (
                        (self.dir / "err.log").read_text()[-800:]
                        if (self.dir / "err.log").exists()
                        else ""
                    )
                    self.stop()
                    raise RuntimeError(f"MariaDB did not start: {log}") from None
                time.sleep(0.1)

    def kill(self) -> None:
        """kill -9 the server, keeping its data (a crash; `launch` brings it back)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def connect(self, database: str | None = None) -> pymysql.Connection:
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user="root",
            password="",
            database=database,
            connect_timeout=2,
        )

    def create_database(self, name: str) -> str:
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        finally:
            conn.close()
        return f"mysql+pymysql://root:@127.0.0.1:{self.port}/{name}?charset=utf8mb4"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
