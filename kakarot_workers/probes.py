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

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kakarot_workers import queues, runtime
from kakarot_workers.settings import get_settings

log = logging.getLogger(__name__)

Check = Callable[[], None]  # raises (anything) when the check fails
CHECK_TIMEOUT_S = 2.0


def redis_answers() -> None:
    runtime.redis_client().ping()


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
            client, keys = runtime.redis_client(), runtime.keys()
            pipe = client.pipeline(transaction=False)
            for name in queues.ALL:
                pipe.llen(name)
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
        """Each check's outcome ("ok", or why not), run side by side within CHECK_TIMEOUT_S."""
        results: dict[str, str] = {name: "no answer in time" for name in self.checks}

        def run(name: str, check: Check) -> None:
            try:
                check()
                results[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure is the answer
                results[name] = f"{type(exc).__name__}: {exc}"[:300]

        threads = [
            threading.Thread(target=run, args=item, daemon=True) for item in self.checks.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(CHECK_TIMEOUT_S)
        return all(v == "ok" for v in results.values()), dict(results)


def clear_multiprocess_dir() -> None:
    """At a worker's start, with `PROMETHEUS_MULTIPROC_DIR`: the counts of an earlier life go."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder and os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.endswith(".db"):
                os.unlink(os.path.join(folder, name))


def child_gone(pid: int | None) -> None:
    """A prefork child exits: its gauges leave the merged series (its counters stay)."""
    if pid and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _registry() -> CollectorRegistry:
    """This process's registry, or the merged one of a prefork pool's children."""
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(QueueDepths())
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
