"""`kakarot demo`: the whole fleet in one command on embedded defaults.

Embedded Redis (unless KAKAROT_REDIS_URL is set), the configured database (SQLite by default),
the simulator, a demo task with N tokens, a streams worker and an alerts worker as real
subprocesses, and a reconcile pass that dispatches every batch. Shows live progress and every
alert as its row is committed. Stops cleanly after `duration` seconds or on Ctrl-C: simulator
paused, consumers flushed, the alert queue drained, workers stopped, Redis stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.text import Text
from sqlalchemy import func, select, update

from kakarot_workers import runtime
from kakarot_workers.celery import app
from kakarot_workers.control.reconcile import ensure_allocated, reconcile
from kakarot_workers.db.models import TASK_ACTIVE, TASK_STOPPED, MonitorAlertLog, MonitorTask
from kakarot_workers.db.session import session_scope, upgrade_schema
from kakarot_workers.notify.messages import AlertSummary, alert_line
from kakarot_workers.settings import get_settings
from kakarot_workers.status import BatchStatus
from kakarot_workers.tools.admin import add_targets, create_config, create_task, target_row
from kakarot_workers.tools.embedded_redis import EmbeddedRedis
from kakarot_workers.tools.fleet import BeatProcess, WorkerProcess
from kakarot_workers.tools.market import Market
from kakarot_workers.tools.simulator import SimulatorServer

POLL_S = 0.5
PLAIN_PROGRESS_EVERY_S = 5.0
DRAIN_TIMEOUT_S = 20.0
DEMO_TASK_PREFIX = "demo "


@dataclass(frozen=True)
class DemoOptions:
    tokens: int = 200
    rate: float = 50.0
    duration: float | None = None
    seed: int = 7
    min_usd: float = 5_000.0
    chain: str = "bsc"


@dataclass
class DemoResult:
    task_id: int
    events: int
    alerts: int
    database_url: str
    log_dir: Path


def _use_redis(url: str) -> None:
    """Point this process (settings, Celery) and its children at `url`."""
    os.environ["KAKAROT_REDIS_URL"] = url
    get_settings.cache_clear()
    app.conf.update(broker_url=url)


def run_demo(options: DemoOptions, console: Console | None = None) -> DemoResult:
    console = console or Console()
    log_dir = Path(tempfile.mkdtemp(prefix="kakarot-demo-"))
    # Ctrl-C, whenever it comes (starting, running), asks for the orderly stop below: the
    # workers drain and stop, then Redis; the demo exits 0
    interrupted = threading.Event()
    with contextlib.ExitStack() as stack:
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
            stack.callback(signal.signal, signal.SIGINT, previous)
        if not os.environ.get("KAKAROT_REDIS_URL"):
            redis_server = stack.enter_context(EmbeddedRedis())
            console.print(f"[dim]embedded Redis on {redis_server.url}[/dim]")
            _use_redis(redis_server.url)
        settings = get_settings()
        upgrade_schema()
        console.print(
            f"[dim]database {settings.safe_dump()['database_url']} (schema up to date)[/dim]"
        )

        market = Market.with_tokens(options.seed, options.tokens, chain=options.chain)
        simulator = stack.enter_context(SimulatorServer(market, options.rate))
        os.environ["KAKAROT_SIMULATOR_URL"] = simulator.url
        get_settings.cache_clear()
        console.print(
            f"[dim]simulator on {simulator.url}: {options.tokens} tokens, "
            f"{options.rate:g} trades/s, seed {options.seed}[/dim]"
        )

        _stop_demo_tasks()  # a demo that crashed left its task active: beat would serve it
        task_id = _create_demo_task(market, options)
        batch_ids = ensure_allocated(task_id)
        console.print(
            f"task {task_id}: {options.tokens} targets in {len(batch_ids)} batches; "
            f"alert on single trades ≥ ${options.min_usd:,.0f}"
        )

        streams = WorkerProcess(
            "demo-streams",
            "streams",
            pool="threads",
            concurrency=max(8, len(batch_ids) + 2),
            log_path=log_dir / "streams.log",
            # the demo has one streams worker: on stop there is nobody to hand batches over to
            env={"KAKAROT_HANDOVER_TIMEOUT_S": "0"},
        )
        alerts = WorkerProcess(
            "demo-alerts",
            "alerts,notify",
            pool="threads",
            concurrency=2,
            log_path=log_dir / "alerts.log",
        )
        # the control plane: beat schedules its jobs (reconcile, timeouts, heartbeats, …)
        control = WorkerProcess(
            "demo-control", "control", pool="solo", log_path=log_dir / "control.log"
        )
        beat = BeatProcess("demo-beat", log_path=log_dir / "beat.log")
        for process in (beat, control, alerts, streams):
            stack.callback(process.kill)
        console.print("[dim]starting workers and beat …[/dim]")
        for worker in (streams, alerts, control):
            worker.start(wait=False)
        beat.start()
        for worker in (streams, alerts, control):
            worker.wait_ready()
        progress = _Progress(console, task_id, settings.explorer_tx_url.get(options.chain))
        reconcile(task_id)  # live at once; beat's reconcile keeps it so from here
        until = "Ctrl-C" if options.duration is None else f"{options.duration:g}s or Ctrl-C"
        console.print(f"[green]running[/green] until {until}")
        progress.follow(options.duration, interrupted)
        if interrupted.is_set():
            console.print("[yellow]stopping …[/yellow]")
        simulator.pause()
        streams.stop()
        _wait_queue_empty("alerts", DRAIN_TIMEOUT_S)
        alerts.stop()
        beat.stop()
        control.stop()
        _stop_demo_tasks()
        progress.poll_alerts()
        result = DemoResult(
            task_id, progress.events(), progress.alerts_seen, settings.database_url, log_dir
        )
    console.print(
        f"done: {result.events} events, {result.alerts} alerts for task {task_id} "
        f"in {result.database_url} (monitor_alert_log_v2); worker logs in {log_dir}"
    )
    return result


def _stop_demo_tasks() -> None:
    """Switch off the tasks of earlier demo runs: the fleet serves every active task."""
    with session_scope() as session:
        session.execute(
            update(MonitorTask)
            .where(MonitorTask.task_name.like(f"{DEMO_TASK_PREFIX}%"))
            .where(MonitorTask.status == TASK_ACTIVE)
            .values(status=TASK_STOPPED)
        )


def _create_demo_task(market: Market, options: DemoOptions) -> int:
    with session_scope() as session:
        config = create_config(
            session,
            name=f"demo seed {options.seed}",
            chain=options.chain,
            source="simulator",
            min_transaction_usd=options.min_usd,
            time_interval="5m",
        )
        task = create_task(
            session,
            name=f"{DEMO_TASK_PREFIX}{time.strftime('%Y-%m-%d %H:%M:%S')}",
            task_type="batch",
            chain=options.chain,
            config_id=config.id,
        )
        add_targets(
            session,
            task.id,
            [target_row(options.chain, t.ca, t.symbol, t.pair) for t in market.tokens],
        )
        return task.id


def _wait_queue_empty(queue: str, timeout_s: float) -> None:
    client = runtime.redis_client()
    deadline = time.monotonic() + timeout_s
    while client.llen(runtime.keys().queue(queue)) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)


class _Progress:
    """Prints each new alert row and a status line: events, alerts, batches live."""

    def __init__(self, console: Console, task_id: int, explorer: str | None) -> None:
        self.console = console
        self.task_id = task_id
        self.explorer = explorer
        self.last_alert_id = 0
        self.alerts_seen = 0
        self.started = time.monotonic()
        self.redis = runtime.redis_client()
        self.keys = runtime.keys()
        self._events_before = self._events_total()  # a shared Redis may hold earlier runs' counts

    def _events_total(self) -> int:
        return int(self.redis.get(self.keys.events_total) or 0)

    def events(self) -> int:
        return self._events_total() - self._events_before

    def batches_live(self) -> int:
        live = 0
        for key in self.redis.scan_iter(match=self.keys.batch_status_pattern, count=500):
            if self.redis.hget(key, "status") == BatchStatus.RUNNING:
                live += 1
        return live

    def status(self) -> Text:
        elapsed = time.monotonic() - self.started
        events = self.events()
        return Text(
            f"  {elapsed:5.0f}s · events {events:,} ({events / max(elapsed, 1):,.0f}/s) "
            f"· alerts {self.alerts_seen:,} · batches live {self.batches_live()}",
            style="bold cyan",
        )

    def poll_alerts(self) -> None:
        with session_scope() as session:
            rows = session.scalars(
                select(MonitorAlertLog)
                .where(
                    MonitorAlertLog.task_id == self.task_id, MonitorAlertLog.id > self.last_alert_id
                )
                .order_by(MonitorAlertLog.id)
            ).all()
            self.alerts_seen = (
                session.scalar(
                    select(func.count(MonitorAlertLog.id)).where(
                        MonitorAlertLog.task_id == self.task_id
                    )
                )
                or 0
            )
        for row in rows:
            self.last_alert_id = row.id
            url = self.explorer.format(tx=row.tx_hash) if self.explorer and row.tx_hash else None
            data = row.alert_data or {}
            summary = AlertSummary(
                task_id=row.task_id,
                config_id=row.config_id or 0,
                chain=row.chain_type,
                ca=row.ca,
                symbol=row.token_symbol,
                rule=row.alert_type,
                rules=data.get("rules", []),
                side=data.get("side", ""),
                amount_usd=float(row.amount_usd or 0),
                price_usd=float(row.price_usd or 0),
                change_pct=data.get("change_pct"),
                market_cap_usd=data.get("market_cap_usd"),
                top10_holders_pct=data.get("top10_holders_pct"),
                incomplete=bool(row.incomplete_data),
                missing=data.get("missing", []),
                tx_hash=row.tx_hash or "",
                log_index=row.log_index or 0,
                block_number=row.block_number,
                event_time_ms=int(row.event_time.replace(tzinfo=UTC).timestamp() * 1000)
                if row.event_time
                else 0,
                explorer_url=url,
            )
            self.console.print(
                alert_line(summary),
                highlight=False,
                soft_wrap=True,
            )

    def follow(self, duration: float | None, stop: threading.Event) -> None:
        """Show the progress until `duration` has passed or `stop` is set (Ctrl-C)."""
        deadline = None if duration is None else time.monotonic() + duration

        def going() -> bool:
            return not stop.is_set() and (deadline is None or time.monotonic() < deadline)

        if self.console.is_terminal:
            with Live(self.status(), console=self.console, refresh_per_second=4) as live:
                while going():
                    self.poll_alerts()
                    live.update(self.status())
                    stop.wait(POLL_S)
            return
        next_line = time.monotonic()
        while going():
            self.poll_alerts()
            if time.monotonic() >= next_line:
                self.console.print(self.status())
                next_line += PLAIN_PROGRESS_EVERY_S
            stop.wait(POLL_S)
