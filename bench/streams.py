"""Stream-side benchmark: memory per held batch, and how fast one process decodes and emits.

    .venv/bin/python bench/streams.py [--batches 100] [--events 50000]

1. RSS per held batch: one streams worker process (threads pool, one slot per batch) holding
   `--batches` live batches of 10 simulated tokens each, against the same process idle.
   Goal: ≤ 3 MB per batch over the idle process.
2. Decode and emit: recorded feed frames replayed through the real consumer (frame decoding and
   checking, micro-batching, packed Celery messages to the `alerts` queue on a real Redis), in
   this process. Baseline in the same run: `json.loads` of the same frames alone, the least any
   consumer must do. `--trials` of each, alternating; prints the medians, the ratio per trial and
   the machine's speed before and after. Goal: ratio ≥ 0.35.

3. The hot standby's cost (`KAKAROT_STANDBY=true`): two streams worker processes, one owning
   `--standby-batches` live batches and the other holding their standbys (each subscribed to the
   same tokens, keeping the last 30 s of trades); RSS per batch over each process idle, and CPU
   per batch over 10 s of traffic, the standby's beside the owner's.

Everything runs on 127.0.0.1: an embedded Redis, a temporary SQLite database, the simulator.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import speed_reference_ms, use_local_services  # noqa: E402
from kakarot_workers.tools.embedded_redis import EmbeddedRedis  # noqa: E402
from kakarot_workers.tools.market import Market  # noqa: E402

RSS_GOAL_MB = 3.0
DECODE_GOAL_RATIO = 0.35  # consumer / json.loads of the same frames (#19)


def rss_per_batch(batches: int, workdir: Path) -> tuple[float, float, float]:
    """(idle MB, live MB, MB per batch) of one streams worker process."""
    import psutil

    from kakarot_workers.control.reconcile import ensure_allocated, reconcile
    from kakarot_workers.db.session import upgrade_schema
    from kakarot_workers.tools.fleet import WorkerProcess
    from kakarot_workers.tools.simulator import SimulatorServer
    from tests.support.scenario import create_task_for

    upgrade_schema(os.environ["KAKAROT_DATABASE_URL"])
    market = Market.with_tokens(seed=3, count=batches * 10)
    with SimulatorServer(market, rate=50) as sim:
        os.environ["KAKAROT_SIMULATOR_URL"] = sim.url
        task_id = create_task_for(market.tokens, threshold_usd=10**12)
        batch_ids = ensure_allocated(task_id)
        assert len(batch_ids) == batches, len(batch_ids)
        worker = WorkerProcess(
            "bench-streams", "streams", concurrency=batches, log_path=workdir / "streams.log"
        )
        with worker:
            time.sleep(2)
            process = psutil.Process(worker.pid)
            idle = process.memory_info().rss / 2**20
            reconcile()
            _wait_subscribed(sim, batches * 10)
            time.sleep(3)
            live = process.memory_info().rss / 2**20
    return idle, live, (live - idle) / batches


def standby_cost(batches: int, workdir: Path, rate: float) -> dict[str, tuple[float, float]]:
    """Per role (owner, standby): (MB per batch over the idle process, CPU % per batch)."""
    import psutil

    from kakarot_workers import runtime
    from kakarot_workers.control.reconcile import ensure_allocated, reconcile
    from kakarot_workers.db.session import upgrade_schema
    from kakarot_workers.settings import get_settings
    from kakarot_workers.tools.fleet import WorkerProcess
    from kakarot_workers.tools.simulator import SimulatorServer
    from tests.support.scenario import create_task_for

    # a database and a Redis of its own: the batches of the first part must not be served
    os.environ["KAKAROT_DATABASE_URL"] = f"sqlite:///{workdir}/standby.db"
    os.environ["KAKAROT_STANDBY"] = "true"
    get_settings.cache_clear()
    upgrade_schema(os.environ["KAKAROT_DATABASE_URL"])
    client, keys = runtime.redis_client(), runtime.keys()
    client.flushall()
    market = Market.with_tokens(seed=5, count=batches * 10)
    with SimulatorServer(market, rate=rate) as sim:
        os.environ["KAKAROT_SIMULATOR_URL"] = sim.url
        task_id = create_task_for(market.tokens, threshold_usd=10**12)
        batch_ids = ensure_allocated(task_id)
        owner = WorkerProcess(
            "bench-owner", "streams", concurrency=batches + 2, log_path=workdir / "owner.log"
        )
        keeper = WorkerProcess(
            "bench-standby", "streams", concurrency=batches + 2, log_path=workdir / "standby.log"
        )
        with owner:
            time.sleep(2)
            idle = {"owner": psutil.Process(owner.pid).memory_info().rss}
            reconcile()
            _wait_subscribed(sim, batches * 10)
            with keeper:
                time.sleep(2)
                idle["standby"] = psutil.Process(keeper.pid).memory_info().rss
                deadline = time.monotonic() + 60
                standby_keys = [keys.batch_standby(b) for b in batch_ids]
                while sum(v is not None for v in client.mget(standby_keys)) < batches:
                    if time.monotonic() > deadline:
                        raise SystemExit("the standbys never all came")
                    time.sleep(0.2)
                time.sleep(32)  # the standbys' buffers full (30 s of trades)
                processes = {
                    "owner": psutil.Process(owner.pid),
                    "standby": psutil.Process(keeper.pid),
                }
                cpu = {role: sum(p.cpu_times()[:2]) for role, p in processes.items()}
                time.sleep(10)
                result = {}
                for role, p in processes.items():
                    used = (sum(p.cpu_times()[:2]) - cpu[role]) / 10 * 100
                    mb = (p.memory_info().rss - idle[role]) / 2**20
                    result[role] = (mb / batches, used / batches)
    os.environ["KAKAROT_STANDBY"] = "false"
    return result


def _wait_subscribed(sim: Any, tokens: int, timeout_s: float = 60) -> None:
    """Until the simulator has `tokens` subscribed: every batch live."""
    deadline = time.monotonic() + timeout_s
    while len(sim.subscribed_tokens()) < tokens:
        if time.monotonic() > deadline:
            raise SystemExit("the batches never all went live")
        time.sleep(0.2)


class ReplaySource:
    """Recorded feed frames, decoded by the real feed adapter, as fast as they can go."""

    def __init__(self, frames: list[str], chain: str, tokens: list[str]) -> None:
        from kakarot_workers.sources import SourceStats
        from kakarot_workers.sources.feed import FeedSource

        self.frames = frames
        self.feed = FeedSource("ws://127.0.0.1:1", chain, tokens)
        self.stats = SourceStats(live=True)
        self.checks_events = self.feed.checks_events  # as the feed source it replays

    def events(self, stop: threading.Event) -> Iterator[object]:
        for raw in self.frames:
            self.stats.frames += 1
            event = self.feed._decode(raw)
            if event is not None:
                yield event
        stop.set()


def decode_and_emit(events: int, trials: int = 3) -> tuple[list[float], list[float]]:
    """Consumer events/s and json.loads-only events/s on the same recorded frames, `trials`
    times each, alternating (a slow spell of the machine hits both alike)."""
    market = Market.with_tokens(seed=4, count=99)
    frames = [
        json.dumps(market.next_trade().to_feed_message(int(time.time() * 1000)))
        for _ in range(events)
    ]
    tokens = [t.ca for t in market.tokens]
    consumer_rates, baseline_rates = [], []
    for _ in range(trials):
        started = time.perf_counter()
        for raw in frames:
            json.loads(raw)
        baseline_rates.append(events / (time.perf_counter() - started))
        consumer_rates.append(_consume(frames, tokens))
    return consumer_rates, baseline_rates


def _consume(frames: list[str], tokens: list[str]) -> float:
    """The real consumer over `frames` (decode, micro-batch, send to Redis): events/s."""
    from kakarot_workers import runtime
    from kakarot_workers.sources import BatchPlan
    from kakarot_workers.streams import leases
    from kakarot_workers.streams.consumer import BatchConsumer

    client, keys = runtime.redis_client(), runtime.keys()
    client.delete("alerts")
    lease = leases.Leases(client, keys).acquire(1, "bench", ttl_s=30)
    assert lease is not None
    plan = BatchPlan(1, 1, 1, "bsc", "simulator", tokens, "running")
    consumer = BatchConsumer(plan, ReplaySource(frames, "bsc", tokens), lease)  # type: ignore[arg-type]
    started = time.perf_counter()
    emitted = consumer.run(threading.Event())
    elapsed = time.perf_counter() - started
    assert emitted == len(frames), (emitted, len(frames))
    queued = sum(len(json.loads(m)["body"]) > 0 for m in client.lrange("alerts", 0, -1))
    assert queued > 0
    return emitted / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--trials", type=int, default=3, help="decode-and-emit trials")
    parser.add_argument("--standby-batches", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0, help="simulated trades/s (standby)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kakarot-bench-"))
    with EmbeddedRedis() as redis_server:
        use_local_services(workdir, redis_server.url, batch_cap=10)
        idle, live, per_batch = rss_per_batch(args.batches, workdir)
        speed_before = speed_reference_ms()
        rates, baselines = decode_and_emit(args.events, args.trials)
        speed_after = speed_reference_ms()
        cost = standby_cost(args.standby_batches, workdir, args.rate)
    print(f"RSS, one streams worker process holding {args.batches} live batches (10 tokens each)")
    print(f"  idle {idle:7.1f} MB   live {live:7.1f} MB   per batch {per_batch:5.2f} MB")
    verdict = "PASS" if per_batch <= RSS_GOAL_MB else "FAIL"
    print(f"  goal ≤ {RSS_GOAL_MB:.0f} MB per batch: {verdict}")
    print(
        f"Decode and emit, one consumer in one process, {args.events:,} recorded frames, "
        f"median of {args.trials} alternating trials (range)"
    )
    rate, baseline = statistics.median(rates), statistics.median(baselines)
    print(
        f"  consumer (decode, micro-batch, send to Redis)  {rate:10,.0f} events/s "
        f"({min(rates):,.0f}-{max(rates):,.0f})"
    )
    print(
        f"  baseline (json.loads only, same frames)        {baseline:10,.0f} events/s "
        f"({min(baselines):,.0f}-{max(baselines):,.0f})"
    )
    ratios = [r / b for r, b in zip(rates, baselines, strict=True)]
    verdict = "PASS" if statistics.median(ratios) >= DECODE_GOAL_RATIO else "FAIL"
    print(
        f"  ratio consumer / baseline, per trial {', '.join(f'{r:.2f}' for r in ratios)}; "
        f"median {statistics.median(ratios):.2f} (goal ≥ {DECODE_GOAL_RATIO}): {verdict}"
    )
    print(f"  machine speed (fixed loop) before / after: {speed_before:.0f} / {speed_after:.0f} ms")
    print(
        f"Hot standby (KAKAROT_STANDBY), {args.standby_batches} batches of 10 tokens, "
        f"{args.rate:.0f} trades/s in all, 30 s kept"
    )
    for role, (mb, cpu) in cost.items():
        print(f"  {role:8} {mb:6.2f} MB per batch   {cpu:6.2f} % CPU per batch")
    owner_mb, owner_cpu = cost["owner"]
    standby_mb, standby_cpu = cost["standby"]
    print(
        f"  standby / owner: memory {standby_mb / owner_mb:5.2f}   CPU "
        f"{standby_cpu / max(owner_cpu, 1e-9):5.2f}"
    )


if __name__ == "__main__":
    main()
