"""A process's HTTP probes: `/metrics`, `/health` and `/ready` on `KAKAROT_PROBE_PORT`.

Every worker and beat serves them when `KAKAROT_PROBE_PORT` is set (0, the default: none), on
`KAKAROT_PROBE_ADDRESS` (127.0.0.1); several processes on one host take one port each (the
Procfile's do). A port already taken is said in one line and the process runs on without them.

- `/metrics`: the process's Prometheus series (`metrics`), plus, read from Redis as it is
  scraped, the depth of every queue and of every dead-letter list (the same in every process:
  aggregate with `max`). With `PROMETHEUS_MULTIPROC_DIR` set (a prefork pool), the children's.
- `/health`: the process is alive and answers (200). For a liveness probe: never restart a
  process because Redis or the database is away (it rides that out, `reconnect`).
- `/ready`: 200 when it can do its work, else 503, with a JSON body naming each check: Redis
  answers, the database answers, and (a streams worker) every batch it holds has its lease and
  its source live. For a readiness probe, and for docker-compose's healthcheck.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kakarot_workers import queues, runtime
from kakarot_workers.redis_urls import connect
from kakarot_workers.settings import get_settings

log = logging.getLogger(__name__)

Check = Callable[[], None]  # raises (anything) when the check fails
CHECK_TIMEOUT_S = 2.0


_probe_client: redis.Redis | None = None


def probe_redis() -> redis.Redis:
    """A client of its own with short timeouts: a probe never waits on a hung Redis."""
    global _probe_client
    if _probe_client is None:
        settings = get_settings()
        _probe_client = connect(
            settings.redis_url,
            settings.redis_sentinel_master,
            socket_timeout=CHECK_TIMEOUT_S,
            socket_connect_timeout=CHECK_TIMEOUT_S,
            decode_responses=True,
        )
    return _probe_client


_ticked_at = time.monotonic()  # beat: its last tick that reached Redis (a grace at start)


def note_tick() -> None:
    """Beat ticked and reached Redis (`beat.Scheduler`)."""
    global _ticked_at
    _ticked_at = time.monotonic()


def beat_ticking() -> None:
    """Raise unless this process's beat ticked lately: what beat's `/ready` checks."""
    silent = time.monotonic() - _ticked_at
    if silent > 3 * get_settings().beat_max_interval_s + 5:
        raise RuntimeError(f"no tick that reached Redis for {silent:.0f}s")


def redis_answers() -> None:
    probe_redis().ping()


def database_answers() -> None:
    from sqlalchemy import text

    from kakarot_workers.db.session import session_scope

    with session_scope() as session:
        session.execute(text("SELECT 1"))


class QueueDepths(Collector):
    """Each queue's depth and each dead-letter list's length, read from Redis when scraped."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "kakarot_queue_depth", "Messages waiting on a Celery queue", labels=["queue"]
        )
        letters = GaugeMetricFamily(
            "kakarot_deadletters", "Messages moved aside, per queue", labels=["queue"]
        )
        try:
            client, keys = probe_redis(), runtime.keys()
            pipe = client.pipeline(transaction=False)
            for name in queues.ALL:
                pipe.llen(keys.queue(name))
                pipe.llen(keys.deadletters(name))
            lengths = pipe.execute()
        except Exception:  # noqa: BLE001 - Redis away: the series are absent, /ready says why
            return
        for i, name in enumerate(queues.ALL):
            depth.add_metric([name], lengths[2 * i])
            letters.add_metric([name], lengths[2 * i + 1])
        yield depth
        yield letters


class Probes:
    """The probes server of this process; `checks` are what `/ready` runs, by name."""

    def __init__(self, port: int, address: str, checks: dict[str, Check]) -> None:
        self.port = port
        self.address = address
        self.checks = checks
        self.registry = _registry()
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}

    def start(self) -> Probes:
        handler = _handler(self)
        try:
            self._server = ThreadingHTTPServer((self.address, self.port), handler)
        except OSError as exc:
            log.error(
                "probes: cannot listen on %s:%s (%s); running without /metrics, /health, /ready",
                self.address,
                self.port,
                exc,
            )
            return self
        self.port = self._server.server_address[1]
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="probes", daemon=True).start()
        log.info("probes: /metrics, /health, /ready on http://%s:%s", self.address, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ready(self) -> tuple[bool, dict[str, str]]:
        """Each check's outcome ("ok", or why not), run side by side within CHECK_TIMEOUT_S. A
        check still running from an earlier call (a hung store) is not started again: at most
        one thread per check, whatever the probes' rate."""
        results: dict[str, str] = {}

        def run(name: str, check: Check) -> None:
            try:
                check()
                results[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure is the answer
                results[name] = _masked(f"{type(exc).__name__}: {exc}")[:300]

        started = []
        with self._lock:
            for name, check in self.checks.items():
                running = self._running.get(name)
                if running is not None and running.is_alive():
                    results[name] = "no answer yet (an earlier check still waits)"
                    continue
                thread = threading.Thread(target=run, args=(name, check), daemon=True)
                self._running[name] = thread
                started.append((name, thread))
                thread.start()
        for _, thread in started:
            thread.join(CHECK_TIMEOUT_S)
        for name, thread in started:
            if thread.is_alive():
                results.setdefault(name, f"no answer in {CHECK_TIMEOUT_S:.0f}s")
        return all(v == "ok" for v in results.values()), dict(sorted(results.items()))


_redact: Any = None


def _masked(text: str) -> str:
    """A check's failure as `/ready` shows it: no secret in it (`logs.Redact`; a password cut
    by an unescaped `@` ends up in a host name)."""
    global _redact
    if _redact is None:
        from kakarot_workers.logs import Redact, secrets_of

        _redact = Redact(secrets_of(get_settings()))
    return str(_redact.clean(text))


def clear_multiprocess_dir() -> None:
    """At a worker's start, with `PROMETHEUS_MULTIPROC_DIR`: the files of processes that are
    gone (an earlier life of the worker) go; this process's own stay."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder or not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        match = re.fullmatch(r"[a-z_]+_(\d+)\.db", name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def child_gone(pid: int | None) -> None:
    """A prefork child exits: its gauges leave the merged series (its counters stay)."""
    if pid and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


_QUEUE_DEPTHS = QueueDepths()


def _registry() -> CollectorRegistry:
    """This process's registry, or the merged one of a prefork pool's children; with the
    queue depths (registered once per registry)."""
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    with contextlib.suppress(ValueError, KeyError):  # already there
        if _QUEUE_DEPTHS not in getattr(registry, "_collector_to_names", {}):
            registry.register(_QUEUE_DEPTHS)
    return registry


def _handler(probes: Probes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(probes.registry), "text/plain; version=0.0.4")
            elif path == "/health":
                self._send(200, b"ok\n", "text/plain")
            elif path == "/ready":
                ready, checks = probes.ready()
                body = json.dumps({"ready": ready, "checks": checks}).encode()
                self._send(200 if ready else 503, body, "application/json")
            else:
                self._send(404, b"not found: /metrics, /health, /ready\n", "text/plain")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:  # one line per scrape is noise
            pass

    return Handler


def serve(checks: dict[str, Check]) -> Probes | None:
    """Start this process's probes if `KAKAROT_PROBE_PORT` is set."""
    settings = get_settings()
    if not settings.probe_port:
        return None
    return Probes(settings.probe_port, settings.probe_address, checks).start()
