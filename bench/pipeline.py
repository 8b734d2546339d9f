"""Alert-pool benchmark: events/s through the pool and latency to the committed alert row.

    .venv/bin/python bench/pipeline.py [--events 100000] [--naive-events 3000] \
        [--rate 1000] [--latency-s 10] [--trials 3] [--events-per-message 200]

On 127.0.0.1, real parts: an embedded Redis (broker, windows, cooldowns), a SQLite database,
alert workers as Celery subprocesses laid out as the README deploys them: one process per core,
each with the threads pool and 2 slots (while one slot waits on Redis or the database, the other
computes; prefork's parent-to-child hand-off cost more). Events come as the stream side sends
them: micro-batches of 200 of one task, packed in one `evaluate_events` message (`events.pack`);
`--events-per-message` sets another size (a real fleet's micro-batches of 50 ms carry fewer).
Ten tasks on 100 tokens each judge them with a layer-1 gate, a volume window and a price-change
window, and default cooldowns.

1. Throughput of the pool with 1 and 2 worker processes: the messages are queued at once and
   the clock runs until the pool has judged every event. `--trials` runs of each, alternating
   (1, 2, 1, 2, …) so a slow spell of the machine hits both alike, each on fresh windows and
   cooldowns; the median is reported, and the range.
2. Baselines in the same run, same events:
   - naive: one Celery task per event, a DB session and Redis calls per event (`bench/naive.py`);
   - ceiling: raw Redis LPUSH/BRPOP of the same payloads by 2 processes, `json.loads` only;
     run after each trial of 2 processes (so in the same spells), the median reported.
3. Latency at a fixed offered load (`--rate` events/s for `--latency-s`, sent every 10 ms), 2
   processes, a task where every event alerts: event creation → alert row written (its
   `create_time` is taken in the transaction, just before the commit). p50/p95/p99.
Goals (2 cores): ≥ 10,000 events/s with 2 processes, ≥ 20× naive, ≥ 0.25 of the ceiling; at
1,000 events/s p95 ≤ 50 ms, p95 ≤ 5 × p50 and p99 ≤ 10 × p50.

The machine's speed is printed too, before and after: a fixed pure-Python loop, timed, and a Redis
PING's round trip. On a shared VM either can change by half within minutes, and every figure above
moves with them; the round trip moves the ratio to the ceiling as well (the pool waits on several
per message, the ceiling on two).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import round_trip_us, speed_reference_ms, use_local_services  # noqa: E402
from kakarot_workers.tools.embedded_redis import EmbeddedRedis  # noqa: E402

EVENTS_PER_MESSAGE = 200
THREADS = 2  # slots (threads) per alert worker process
TASKS = 10
TOKENS_PER_TASK = 100
GOAL_EVENTS_S = 10_000
GOAL_NAIVE_RATIO = 20
GOAL_P95_MS = 50
GOAL_CEILING_RATIO = 0.25  # #19


def make_tasks() -> tuple[list[tuple[int, list[str]]], int]:
    """The throughput tasks (id, CAs), and the latency task (every event alerts)."""
    from kakarot_workers.db.session import upgrade_schema
    from tests.support.scenario import create_task_with

    upgrade_schema(os.environ["KAKAROT_DATABASE_URL"])
    tasks = []
    for t in range(TASKS):
        cas = [f"0x{t:08x}{i:032x}" for i in range(TOKENS_PER_TASK)]
        task_id = create_task_with(
            cas,
            min_transaction_usd=2000,
            events_config={
                "volume": {"min_usd": 50_000, "window": "5m"},
                "price_change": {"threshold_pct": 5, "window": "1m", "direction": "both"},
            },
        )
        tasks.append((task_id, cas))
    latency_cas = [f"0x{0xFFFF:08x}{i:032x}" for i in range(TOKENS_PER_TASK)]
    latency_task = create_task_with(
        latency_cas,
        min_transaction_usd=1,
        events_config={"cooldown": {"seconds": 0}, "volume": {"min_usd": 1, "window": "5m"}},
    )
    return tasks, latency_task


def make_events(tasks, count: int, run: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    start = int(time.time() * 1000)
    events = []
    for n in range(count):
        task_id, cas = rng.choice(tasks)
        events.append(
            {
                "chain": "bsc",
                "ca": rng.choice(cas),
                "tx_hash": f"0x{run:08x}{n:056x}",
                "log_index": n % 4,
                "ts_ms": start + n,
                "side": rng.choice(("buy", "sell")),
                "amount_usd": round(rng.uniform(10, 2500), 2),
                "price_usd": round(rng.uniform(0.9, 1.1), 6),
                "symbol": "BENCH",
                "market_cap_usd": rng.choice((5e5, 5e6, 5e7)),
                "top10_holders_pct": 30.0,
                "task_id": task_id,
            }
        )
    return events


def messages(events: list[dict], size: int = EVENTS_PER_MESSAGE) -> list[dict]:
    """`events` as the stream side sends them: packed micro-batches of up to `size`, each of one
    task's events (a consumer serves one batch of one task), in the order they came."""
    from kakarot_workers.events import SwapEvent, pack

    by_task: dict[int, list[SwapEvent]] = {}
    for event in events:  # pack takes each event's trade fields, the task once per message
        by_task.setdefault(event["task_id"], []).append(SwapEvent(**event))
    packed = []
    for task_id, task_events in by_task.items():
        for i in range(0, len(task_events), size):
            packed.append(pack(task_events[i : i + size], task_id=task_id))
    return packed


def send(message: dict) -> None:
    from kakarot_workers.celery import send_packed

    send_packed("kakarot.alerts.evaluate_events", [message], queue="alerts", argsrepr="[…]")


def forget_windows() -> None:
    """Delete every window and cooldown, so each trial starts from the same state."""
    from kakarot_workers import runtime

    client, prefix = runtime.redis_client(), runtime.keys().prefix
    for pattern in ("kakarot:win:*", "kakarot:cooldown:*"):
        batch = list(client.scan_iter(f"{prefix}{pattern}", count=1000))
        for i in range(0, len(batch), 1000):
            client.delete(*batch[i : i + 1000])


@contextlib.contextmanager
def alert_pool(
    workdir: Path, name: str, processes: int, **options: object
) -> Iterator[list[object]]:
    """The alert pool as the README deploys it: `processes` worker processes, each with the
    threads pool and THREADS slots; started (ready), and stopped on leaving."""
    from kakarot_workers.tools.fleet import WorkerProcess

    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(
                WorkerProcess(
                    f"{name}-{n}",
                    "alerts",
                    pool="threads",
                    concurrency=THREADS,
                    log_path=workdir / f"{name}-{n}.log",
                    **options,  # type: ignore[arg-type]
                )
            )
            for n in range(processes)
        ]


def pool_throughput(
    workdir: Path, processes: int, events: list[dict], size: int = EVENTS_PER_MESSAGE
) -> float:
    """Events/s through `evaluate_events` with `processes` alert worker processes."""
    from kakarot_workers import runtime

    client, keys = runtime.redis_client(), runtime.keys()
    counter = keys.alert_stat("evaluated")
    client.delete(counter)
    forget_windows()
    with alert_pool(workdir, f"bench-alerts-{processes}", processes):
        packed = messages(events, size)
        started = time.perf_counter()
        for message in packed:
            send(message)
        _wait(lambda: int(client.get(counter) or 0) >= len(events), 600, "the pool")
        elapsed = time.perf_counter() - started
    return len(events) / elapsed


def naive_throughput(workdir: Path, events: list[dict]) -> float:
    from bench.naive import DONE_KEY
    from kakarot_workers import runtime
    from kakarot_workers.celery import app

    client = runtime.redis_client()
    client.delete(DONE_KEY)
    with alert_pool(
        workdir,
        "bench-naive",
        2,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        extra_args=["--include", "bench.naive"],
    ):
        started = time.perf_counter()
        for event in events:
            app.send_task("bench.naive.evaluate_one", args=[event], queue="alerts")
        _wait(lambda: int(client.get(DONE_KEY) or 0) >= len(events), 600, "the naive pool")
        elapsed = time.perf_counter() - started
    return len(events) / elapsed


def _drain(redis_url: str, key: str, done_key: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    while True:
        item = client.brpop([key], timeout=2)
        if item is None:
            return
        events = json.loads(item[1])["rows"]
        client.incrby(done_key, len(events))


def ceiling_throughput(events: list[dict], size: int = EVENTS_PER_MESSAGE) -> float:
    """Raw Redis: LPUSH the same payloads, 2 processes BRPOP and json.loads them."""
    from kakarot_workers import runtime

    client = runtime.redis_client()
    key, done_key = "bench:ceiling", "bench:ceiling:done"
    client.delete(key, done_key)
    context = multiprocessing.get_context("spawn")
    drainers = [
        context.Process(target=_drain, args=(os.environ["KAKAROT_REDIS_URL"], key, done_key))
        for _ in range(2)
    ]
    for process in drainers:
        process.start()
    time.sleep(1.0)  # both waiting on BRPOP
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for message in messages(events, size):
        pipe.lpush(key, json.dumps(message))
    pipe.execute()
    _wait(lambda: int(client.get(done_key) or 0) >= len(events), 120, "the drainers")
    elapsed = time.perf_counter() - started
    for process in drainers:
        process.join(10)
    return len(events) / elapsed


def latency(workdir: Path, task_id: int, rate: int, seconds: float) -> list[float]:
    """Latencies (ms) from event creation to alert row at `rate` events/s offered."""
    from sqlalchemy import select

    from kakarot_workers.db.models import MonitorAlertLog
    from kakarot_workers.db.session import session_scope

    cas = [f"0x{0xFFFF:08x}{i:032x}" for i in range(TOKENS_PER_TASK)]
    per_tick = max(rate // 100, 1)
    sent = 0
    with alert_pool(workdir, "bench-latency", 2):
        time.sleep(1.0)
        started = time.perf_counter()
        tick = 0
        while time.perf_counter() - started < seconds:
            now_ms = int(time.time() * 1000)
            message = [
                {
                    "chain": "bsc",
                    "ca": cas[(sent + i) % len(cas)],
                    "tx_hash": f"0x{0xFFFF:08x}{sent + i:056x}",
                    "log_index": 0,
                    "ts_ms": now_ms,
                    "side": "buy",
                    "amount_usd": 100.0,
                    "price_usd": 1.0,
                    "symbol": "LAT",
                    "market_cap_usd": 5e6,
                    "top10_holders_pct": 30.0,
                    "task_id": task_id,
                }
                for i in range(per_tick)
            ]
            send(messages(message)[0])
            sent += per_tick
            tick += 1
            pause = started + tick * 0.01 - time.perf_counter()
            if pause > 0:
                time.sleep(pause)

        def rows():
            with session_scope() as session:
                return session.execute(
                    select(MonitorAlertLog.event_time, MonitorAlertLog.create_time).where(
                        MonitorAlertLog.task_id == task_id
                    )
                ).all()

        _wait(lambda: len(rows()) >= sent, 120, "every latency alert")
        found = rows()
    return sorted((created - event).total_seconds() * 1000 for event, created in found)


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def _pct(values: list[float], q: float) -> float:
    return values[min(int(q * len(values)), len(values) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--naive-events", type=int, default=3_000)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--latency-s", type=float, default=10.0)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--events-per-message", type=int, default=EVENTS_PER_MESSAGE)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kakarot-bench-"))
    os.chdir(Path(__file__).resolve().parents[1])
    with EmbeddedRedis() as redis_server:
        use_local_services(workdir, redis_server.url, celery_task_events="false")
        tasks, latency_task = make_tasks()
        speed_before, trip_before = speed_reference_ms(), round_trip_us(redis_server.url)
        trials: dict[int, list[float]] = {1: [], 2: []}
        ceilings: list[float] = []
        for run, processes in enumerate([1, 2] * args.trials, start=1):
            events = make_events(tasks, args.events, run, seed=run)
            trials[processes].append(
                pool_throughput(workdir, processes, events, args.events_per_message)
            )
            if processes == 2:  # the ceiling in the same spell as the pool's trials
                events = make_events(tasks, args.events, 100 + run, seed=100 + run)
                ceilings.append(ceiling_throughput(events, args.events_per_message))
        naive = naive_throughput(workdir, make_events(tasks, args.naive_events, 9, seed=9))
        ceiling = statistics.median(ceilings)
        latencies = latency(workdir, latency_task, args.rate, args.latency_s)
        speed_after, trip_after = speed_reference_ms(), round_trip_us(redis_server.url)
    rates = {processes: statistics.median(runs) for processes, runs in trials.items()}

    print(
        f"Alert pool, {args.events:,} events in messages of {args.events_per_message} "
        f"({TASKS} tasks × {TOKENS_PER_TASK} tokens, gate + volume + price windows, cooldowns); "
        f"worker processes of {THREADS} threads each"
    )
    for processes, label in ((1, "1 process  "), (2, "2 processes")):
        runs = trials[processes]
        print(
            f"  pool, {label}          {rates[processes]:10,.0f} events/s   (median of "
            f"{len(runs)}: {min(runs):,.0f} … {max(runs):,.0f})"
        )
    print(f"  naive, 2 processes         {naive:10,.0f} events/s   ({args.naive_events:,} events)")
    print(
        f"  ceiling, raw LPUSH/BRPOP   {ceiling:10,.0f} events/s   (median of {len(ceilings)}: "
        f"{min(ceilings):,.0f} … {max(ceilings):,.0f})"
    )
    print(f"  ratio pool(2) / naive      {rates[2] / naive:10.1f}")
    print(f"  ratio pool(2) / ceiling    {rates[2] / ceiling:10.2f}")
    print(f"  ratio pool(2) / pool(1)    {rates[2] / rates[1]:10.2f}")
    print(
        f"Latency, event creation → alert row, {args.rate:,} events/s offered for "
        f"{args.latency_s:.0f} s, 2 processes, every event alerts ({len(latencies):,} rows)"
    )
    print(
        f"  p50 {_pct(latencies, 0.50):6.1f} ms   p95 {_pct(latencies, 0.95):6.1f} ms   "
        f"p99 {_pct(latencies, 0.99):6.1f} ms   max {latencies[-1]:6.1f} ms"
    )
    print(
        f"Machine speed, a fixed Python loop: {speed_before:.0f} ms before, {speed_after:.0f} ms "
        "after (lower is faster)"
    )
    print(
        f"Machine round trips, a Redis PING on 127.0.0.1: {trip_before:.0f} µs before, "
        f"{trip_after:.0f} µs after"
    )
    p50, p95, p99 = (_pct(latencies, q) for q in (0.50, 0.95, 0.99))
    goals = [
        (f"≥ {GOAL_EVENTS_S:,} events/s with 2 processes", rates[2] >= GOAL_EVENTS_S),
        (f"≥ {GOAL_NAIVE_RATIO}× naive", rates[2] / naive >= GOAL_NAIVE_RATIO),
        (
            f"pool(2) ≥ {GOAL_CEILING_RATIO} of the raw Redis ceiling",
            rates[2] / ceiling >= GOAL_CEILING_RATIO,
        ),
        (f"p95 ≤ {GOAL_P95_MS} ms at {args.rate:,}/s", p95 <= GOAL_P95_MS),
        (f"p95 ≤ 5 × p50 ({p95 / p50:.1f}×)", p95 <= 5 * p50),
        (f"p99 ≤ 10 × p50 ({p99 / p50:.1f}×)", p99 <= 10 * p50),
    ]
    for goal, met in goals:
        print(f"  goal {goal}: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
