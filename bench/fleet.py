"""The whole fleet on the simulator, ramping the offered rate until the judged rate falls behind.

    .venv/bin/python bench/fleet.py [--tokens 1000] [--rates 500,1000,2000,3000,4000] [--step-s 12]
        [--alert-processes 1,2] [--streams-processes 1]

Real processes on 127.0.0.1: an embedded Redis, a SQLite database, the simulator in a process of
its own, one streams worker (threads; `--streams-processes N`: N of them, the batches placed on
the least loaded), a control worker and 1, then 2, alert worker processes
(threads, 2 slots each; a fresh fleet for each). At each offered rate (trades/s over all
tokens) it prints, over the step's measuring window: offered and judged trades/s, their ratio,
the `alerts` backlog, trade-to-alert latency p50/p95/p99 (each alert row's commit time minus its
trade's time), and the CPU of each process (% of one core). The saturation point is the first
rate judged below 95 % of offered, or with a backlog that grows. The baseline in the same run:
the simulator's own offered rate (what the fleet is asked to keep up with).

Goals (the issue): judged = offered up to at least 3,000 trades/s over 1,000 tokens with p95 ≤
250 ms, and nothing lost below saturation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import use_local_services  # noqa: E402
from kakarot_workers.tools.embedded_redis import EmbeddedRedis  # noqa: E402

THRESHOLD_USD = 20_000.0  # about 1 % of the simulated trades alert: the latency sample
WARM_S = 4.0


def simulator_main(tokens: int, port: int) -> None:
    """The simulator process: serves the market; reads `rate N` and `count` on stdin."""
    from kakarot_workers.tools.market import Market
    from kakarot_workers.tools.simulator import SimulatorServer

    market = Market.with_tokens(seed=17, count=tokens)
    with SimulatorServer(market, rate=1.0, port=port) as sim:
        print(sim.url, flush=True)
        for line in sys.stdin:
            command, _, value = line.strip().partition(" ")
            if command == "rate":
                sim.rate = float(value)
            elif command == "count":
                print(sim.generated, flush=True)
            elif command == "quit":
                return


class Simulator:
    def __init__(self, tokens: int, workdir: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--simulator", str(tokens), str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(workdir / "simulator.log").open("wb"),
            text=True,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().strip()

    def _say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def rate(self, rate: float) -> None:
        self._say(f"rate {rate}")

    def count(self) -> int:
        self._say("count")
        assert self.process.stdout is not None
        return int(self.process.stdout.readline())

    def close(self) -> None:
        self._say("quit")
        self.process.wait(15)


@dataclass
class Step:
    offered: float
    judged: float
    backlog_start: int
    backlog_end: int
    latency_ms: tuple[float, float, float] | None
    cpu: dict[str, float]
    backpressure: int = 0  # consumers' sends while `alerts` was over its limit, this step
    dropped: int = 0  # events dropped (by the explicit cap or an outage), this step

    @property
    def keeps_up(self) -> bool:
        """Judged ≥ 95 % of offered, no growing queue, and no growing lag before the queue (a
        consumer behind its feed shows as latency: p50 over 1 s)."""
        grows = self.backlog_end > self.backlog_start + 50
        lagging = self.latency_ms is not None and self.latency_ms[0] > 1000
        return self.judged >= 0.95 * self.offered and not grows and not lagging


def run_fleet(
    server: EmbeddedRedis,
    alert_processes: int,
    tokens: int,
    rates: list[float],
    step_s: float,
    streams_processes: int = 1,
) -> list[Step]:
    import psutil
    import redis
    from sqlalchemy import select

    from kakarot_workers import runtime
    from kakarot_workers.control.reconcile import ensure_allocated, reconcile
    from kakarot_workers.db.models import MonitorAlertLog
    from kakarot_workers.db.session import session_scope, upgrade_schema
    from kakarot_workers.settings import get_settings
    from kakarot_workers.tools.fleet import WorkerProcess
    from kakarot_workers.tools.market import Market
    from tests.support.scenario import create_task_for

    workdir = Path(tempfile.mkdtemp(prefix="kakarot-fleet-"))
    redis.Redis.from_url(server.url).flushall()  # a fleet of its own on the same server
    use_local_services(workdir, server.url)
    get_settings.cache_clear()
    runtime.forget_inherited_clients()
    upgrade_schema(os.environ["KAKAROT_DATABASE_URL"])
    simulator = Simulator(tokens, workdir)
    os.environ["KAKAROT_SIMULATOR_URL"] = simulator.url
    get_settings.cache_clear()
    market = Market.with_tokens(seed=17, count=tokens)
    task_id = create_task_for(market.tokens, THRESHOLD_USD)
    batch_ids = ensure_allocated(task_id)
    processes = {
        (name := "streams" + (f"-{i + 1}" if streams_processes > 1 else "")): WorkerProcess(
            f"fleet-{name}",
            "streams",
            pool="threads",
            concurrency=len(batch_ids) + 4,
            log_path=workdir / f"{name}.log",
        )
        for i in range(streams_processes)
    }
    processes |= {
        "control": WorkerProcess(
            "fleet-control", "control", pool="solo", log_path=workdir / "control.log"
        ),
    }
    for i in range(alert_processes):
        processes[f"alerts-{i + 1}"] = WorkerProcess(
            f"fleet-alerts-{i + 1}",
            "alerts,notify",
            pool="threads",
            concurrency=2,
            log_path=workdir / f"alerts-{i + 1}.log",
        )
    client = redis.Redis.from_url(server.url, decode_responses=True)
    steps = []
    try:
        for process in processes.values():
            process.start(wait=False)
        for process in processes.values():
            process.wait_ready()
        reconcile(task_id)
        keys = runtime.keys()
        deadline = time.monotonic() + 60
        live = 0
        while live < len(batch_ids):
            assert time.monotonic() < deadline, "the batches never all went live"
            time.sleep(0.5)
            statuses = [client.hget(keys.batch_status(b), "status") for b in batch_ids]
            live = sum(s == "running" for s in statuses)
        watched = {name: psutil.Process(p.pid) for name, p in processes.items()}
        watched["redis"] = psutil.Process(server.pid)
        watched["simulator"] = psutil.Process(simulator.process.pid)
        for rate in rates:
            simulator.rate(rate)
            time.sleep(WARM_S)
            judged_key = keys.alert_stat("evaluated")
            cpu0 = {n: sum(p.cpu_times()[:2]) for n, p in watched.items()}
            offered0, judged0 = simulator.count(), int(client.get(judged_key) or 0)
            backlog0 = client.llen("alerts")
            pressure0 = _node_counters(client, keys)
            since = _utcnow()
            started = time.monotonic()
            time.sleep(step_s)
            elapsed = time.monotonic() - started
            offered1, judged1 = simulator.count(), int(client.get(judged_key) or 0)
            backlog1 = client.llen("alerts")
            pressure1 = _node_counters(client, keys)
            cpu = {
                n: (sum(p.cpu_times()[:2]) - cpu0[n]) / elapsed * 100 for n, p in watched.items()
            }
            with session_scope() as session:
                rows = session.execute(
                    select(MonitorAlertLog.create_time, MonitorAlertLog.event_time).where(
                        MonitorAlertLog.create_time >= since
                    )
                ).all()
            latencies = sorted(
                (made - traded).total_seconds() * 1000 for made, traded in rows if traded
            )
            steps.append(
                Step(
                    (offered1 - offered0) / elapsed,
                    (judged1 - judged0) / elapsed,
                    backlog0,
                    backlog1,
                    _percentiles(latencies),
                    cpu,
                    pressure1[0] - pressure0[0],
                    pressure1[1] - pressure0[1],
                )
            )
            _print_step(steps[-1])
            if not steps[-1].keeps_up and len(steps) >= 2 and not steps[-2].keeps_up:
                break  # two steps behind: saturated
    finally:
        simulator.rate(0.001)
        for process in processes.values():
            process.kill()
        simulator.close()
        client.close()
    return steps


def _node_counters(client: object, keys: object) -> tuple[int, int]:
    """The streams nodes' `backpressure_count` and `dropped_events`, summed (their metrics
    hashes, written at each node beat)."""
    from kakarot_workers.streams.node import live_nodes

    nodes = live_nodes(client, keys).values()  # type: ignore[arg-type]
    return (
        sum(int(n.get("backpressure_count") or 0) for n in nodes),
        sum(int(n.get("dropped_events") or 0) for n in nodes),
    )


def _utcnow() -> datetime:
    from kakarot_workers.db.models import utcnow

    return utcnow()


def _percentiles(values: list[float]) -> tuple[float, float, float] | None:
    if len(values) < 5:
        return None
    cut = statistics.quantiles(values, n=100)
    return cut[49], cut[94], cut[98]


def _print_step(step: Step) -> None:
    latency = (
        "p50 {:6.0f} p95 {:6.0f} p99 {:6.0f} ms".format(*step.latency_ms)
        if step.latency_ms
        else "(too few alerts)"
    )
    cpu = "  ".join(f"{n} {c:3.0f}%" for n, c in step.cpu.items())
    print(
        f"  offered {step.offered:7,.0f}/s  judged {step.judged:7,.0f}/s  "
        f"ratio {step.judged / max(step.offered, 1):4.2f}  backlog {step.backlog_start:>5}"
        f"→{step.backlog_end:<5}  {latency}  {'ok' if step.keeps_up else 'BEHIND'}",
        flush=True,
    )
    print(f"    cpu: {cpu}  back-pressure {step.backpressure}  dropped {step.dropped}", flush=True)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--simulator":
        simulator_main(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--rates", default="500,1000,2000,3000,4000")
    parser.add_argument("--step-s", type=float, default=12.0)
    parser.add_argument("--alert-processes", default="1,2")
    parser.add_argument(
        "--streams-processes",
        type=int,
        default=1,
        help="streams workers (nodes): the batches are placed on the least loaded",
    )
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    print(f"The fleet on the simulator: {args.tokens} tokens, steps of {args.step_s:g} s")
    server = EmbeddedRedis().start()  # one for the run: this process's Celery app is bound to it
    try:
        for count in (int(c) for c in args.alert_processes.split(",")):
            print(
                f"{count} alert process(es), 2 slots each; "
                f"{args.streams_processes} streams process(es):"
            )
            steps = run_fleet(
                server, count, args.tokens, rates, args.step_s, args.streams_processes
            )
            _summary(steps)
    finally:
        server.stop()


def _summary(steps: list[Step]) -> None:
    kept = [s for s in steps if s.keeps_up]
    top = max((s.offered for s in kept), default=0.0)
    print(f"  keeps up to {top:,.0f} trades/s offered", end="")
    behind = next((s for s in steps if not s.keeps_up), None)
    print(f"; behind from {behind.offered:,.0f}/s" if behind else "; never behind", end="")
    fast = [s.offered for s in steps if s.keeps_up and s.latency_ms and s.latency_ms[1] <= 250]
    print(f"; p95 ≤ 250 ms up to {max(fast, default=0):,.0f}/s", flush=True)


if __name__ == "__main__":
    main()
