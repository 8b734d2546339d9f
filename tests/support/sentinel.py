"""A Redis Sentinel group on 127.0.0.1 from the bundled `redis-server`: a primary, a replica and
three sentinels (`redis-server sentinel.conf --sentinel`), fast to notice a dead primary."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from kakarot_workers.tools.embedded_redis import EmbeddedRedis, free_port, redis_server_binary
from kakarot_workers.tools.fleet import detach_and_die_with_parent

MASTER = "kakarot"
DOWN_AFTER_MS = 1000


class SentinelGroup:
    def __init__(self, workdir: Path, sentinels: int = 3) -> None:
        self.workdir = workdir
        self.primary = EmbeddedRedis(workdir=workdir / "primary")
        self.replica: EmbeddedRedis | None = None
        self.ports = [free_port() for _ in range(sentinels)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """The fleet's KAKAROT_REDIS_URL (KAKAROT_REDIS_SENTINEL_MASTER is MASTER)."""
        return ";".join(
            f"sentinel://127.0.0.1:{port}" + ("/0" if i == 0 else "")
            for i, port in enumerate(self.ports)
        )

    def start(self) -> SentinelGroup:
        self.primary.start()
        self.replica = EmbeddedRedis(
            workdir=self.workdir / "replica", replica_of=self.primary.port
        ).start()
        for index, port in enumerate(self.ports):
            directory = self.workdir / f"sentinel-{index}"
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / "sentinel.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"logfile {directory / 'sentinel.log'}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} 10000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
            )
            self._sentinels.append(
                subprocess.Popen(
                    [str(redis_server_binary()), str(config), "--sentinel"],
                    stdin=subprocess.DEVNULL,
                    preexec_fn=detach_and_die_with_parent,
                )
            )
        self.wait(lambda: self._replica_in_sync() and self._sentinels_agree(), 30, "sentinels up")
        return self

    def sentinel(self, index: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.ports[index], decode_responses=True)

    def primary_port(self) -> int | None:
        """Where the sentinels say the primary is (the first that answers)."""
        for index in range(len(self.ports)):
            client = self.sentinel(index)
            try:
                address = client.sentinel_get_master_addr_by_name(MASTER)
                return int(address[1]) if address else None
            except redis.RedisError:
                continue
            finally:
                client.close()
        return None

    def _replica_in_sync(self) -> bool:
        client = redis.Redis.from_url(self.primary.url, decode_responses=True)
        try:
            info = client.info("replication")
            return int(info.get("connected_slaves", 0)) >= 1
        finally:
            client.close()

    def _sentinels_agree(self) -> bool:
        for index in range(len(self.ports)):
            client = self.sentinel(index)
            try:
                master = client.sentinel_master(MASTER)
                if int(master.get("num-other-sentinels", 0)) < len(self.ports) - 1:
                    return False
                if int(master.get("num-slaves", 0)) < 1:
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        return True

    @staticmethod
    def wait(predicate, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def stop(self) -> None:
        for process in self._sentinels:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
        if self.replica is not None:
            self.replica.stop()
        self.primary.stop()
