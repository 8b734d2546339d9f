"""Benchmarks: each script prints figures against a baseline measured in the same run."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path


def use_local_services(workdir: Path, redis_url: str, **settings: object) -> None:
    """Point this process, and the workers it starts, at `redis_url` and a SQLite file in
    `workdir`, logging warnings only; `settings` are more KAKAROT_* values (`batch_cap=10`)."""
    os.environ["KAKAROT_REDIS_URL"] = redis_url
    os.environ["KAKAROT_DATABASE_URL"] = f"sqlite:///{workdir}/bench.db"
    os.environ["KAKAROT_LOG_LEVEL"] = "WARNING"
    for name, value in settings.items():
        os.environ[f"KAKAROT_{name.upper()}"] = str(value)


def speed_reference_ms() -> float:
    """The machine's speed now: the best of three runs of a fixed pure-Python loop (ms)."""
    best = math.inf
    for _ in range(3):
        started = time.process_time()
        total = 0
        for i in range(1_000_000):
            total += i * i % 7
        best = min(best, time.process_time() - started)
    return best * 1000


def round_trip_us(redis_url: str, count: int = 2_000) -> float:
    """The machine's round trips now: the best of three runs of `count` PINGs to the Redis at
    `redis_url` (µs each). A ratio to a bulk baseline moves with it: the alert pool waits on
    several round trips per message, the raw Redis ceiling on two, and a VM that is slow to wake
    a process slows the first more (the fixed Python loop above does not see it)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    best = math.inf
    try:
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(count):
                client.ping()
            best = min(best, time.perf_counter() - started)
    finally:
        client.close()
    return best / count * 1e6
