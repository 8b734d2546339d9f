"""Each process's probes (`KAKAROT_PROBE_PORT`): `/metrics` series move in a simulator run, and
`/ready` flips when Redis or the database stops while `/health` stays up."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kakarot_workers.control.reconcile import ensure_allocated, reconcile
from kakarot_workers.db.session import upgrade_schema
from kakarot_workers.tools.embedded_redis import EmbeddedRedis
from kakarot_workers.tools.fleet import BeatProcess, WorkerProcess
from kakarot_workers.tools.market import Market
from kakarot_workers.tools.simulator import SimulatorServer
from tests.e2e.test_ownership import live_by
from tests.support.mariadb import MariaDBServer, find_binaries
from tests.support.scenario import create_task_for, wait_for


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _series(port: int) -> dict[str, float]:
    """`name{labels}` → value, from the process's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    found = {}
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def _ready(port: int) -> tuple[int, dict]:
    answer = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10)
    return answer.status_code, json.loads(answer.text)


def test_the_metrics_of_each_process_move_in_a_simulator_run(
    db_url, redis_client, workers, use_env, tmp_path
):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    market = Market.with_tokens(seed=41, count=20)
    with SimulatorServer(market, rate=200) as sim:
        use_env(KAKAROT_SIMULATOR_URL=sim.url)
        task_id = create_task_for(market.tokens, threshold_usd=1_000.0)
        (batch_id,) = ensure_allocated(task_id)
        ports = {"streams": _port(), "alerts": _port()}
        streams = workers("streams", env={"KAKAROT_PROBE_PORT": str(ports["streams"])})
        workers(
            "alerts,notify",
            pool="prefork",
            concurrency=2,
            env={
                "KAKAROT_PROBE_PORT": str(ports["alerts"]),
                # the pool's children count in files the main process merges
                "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
            },
        )
        reconcile()
        wait_for(lambda: live_by(redis_client, [batch_id], streams.pid), 20, "live")
        before = _series(ports["alerts"])
        time.sleep(3)
        pool, consumer = _series(ports["alerts"]), _series(ports["streams"])
        status, body = _ready(ports["streams"])
        assert status == 200, body
        assert body["checks"] == {"redis": "ok", "database": "ok", "node": "ok", "batches": "ok"}
    # beat too: its ticks, and ready while Redis answers
    beat_port = _port()
    beat = BeatProcess(
        "probed-beat", env={"KAKAROT_PROBE_PORT": str(beat_port)}, log_path=tmp_path / "beat.log"
    ).start()
    try:

        def ticking() -> bool:
            try:
                return _series(beat_port).get('kakarot_beat_ticks_total{role="leader"}', 0) > 0
            except httpx.HTTPError:  # not listening yet
                return False

        wait_for(ticking, 30, "beat's ticks in its /metrics")
        assert _ready(beat_port) == (
            200,
            {"ready": True, "checks": {"redis": "ok", "ticking": "ok"}},
        )
    finally:
        beat.stop()
    # the feed gone, the batch is not live: the streams worker is not ready
    wait_for(lambda: _ready(ports["streams"])[0] == 503, 10, "not ready without its source")
    assert "batch(es) not live: 1" in _ready(ports["streams"])[1]["checks"]["batches"]

    assert consumer['kakarot_events_sent_total{source="simulator"}'] > 100
    assert consumer["kakarot_leases_held"] == 1
    assert consumer['kakarot_queue_depth{queue="alerts"}'] >= 0
    judged = "kakarot_events_judged_total"
    assert pool[judged] > before.get(judged, 0) + 100, "the pool's series move"
    assert pool['kakarot_pool_step_seconds_count{step="windows"}'] > 0
    assert pool["kakarot_db_seconds_count"] > 0
    assert pool['kakarot_gc_pause_seconds_count{generation="0"}'] > 0, "GC pauses observed"
    assert sum(v for k, v in pool.items() if k.startswith("kakarot_alerts_total{")) > 0
    assert (
        sum(v for k, v in pool.items() if k.startswith("kakarot_trade_to_alert_seconds_count")) > 0
    )
    tasks = 'kakarot_tasks_total{result="success",task="kakarot.alerts.evaluate_events"}'
    assert pool[tasks] > 10


def test_ready_flips_when_redis_or_the_database_stops_and_health_stays_up(tmp_path):
    binaries = find_binaries()
    if binaries is None:
        if os.environ.get("KAKAROT_TEST_REQUIRE_MARIADB"):
            pytest.fail("MariaDB is required here (KAKAROT_TEST_REQUIRE_MARIADB)")
        pytest.skip("mariadb-server is not installed")
    mariadb = MariaDBServer(*binaries).start()
    server = EmbeddedRedis(workdir=tmp_path / "redis").start()
    port = _port()
    try:
        url = mariadb.create_database("kakarot_probes")
        upgrade_schema(url)
        env = {
            "KAKAROT_DATABASE_URL": url,
            "KAKAROT_REDIS_URL": server.url,
            "KAKAROT_PROBE_PORT": str(port),
        }
        worker = WorkerProcess("probed", "control", env=env, log_path=tmp_path / "w.log")
        try:
            worker.start(wait=False)
            wait_for(lambda: " ready." in worker.log_text(), 30, "the worker ready")
            wait_for(lambda: _ready(port)[0] == 200, 10, "ready")

            kakarot = [str(Path(sys.executable).with_name("kakarot"))]
            healthy = subprocess.run(
                [*kakarot, "health", "ready", "--port", str(port)], capture_output=True, text=True
            )
            assert healthy.returncode == 0
            assert healthy.stdout.strip() == "ready: database, node, redis"

            server.kill()
            wait_for(lambda: _ready(port)[0] == 503, 10, "not ready without Redis")
            sick = subprocess.run(
                [*kakarot, "health", "ready", "--port", str(port)], capture_output=True, text=True
            )
            assert sick.returncode == 1 and sick.stderr.startswith("unhealthy: redis:"), sick
            status, body = _ready(port)
            assert body["checks"]["database"] == "ok" and body["checks"]["redis"] != "ok"
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
            server.start()
            wait_for(lambda: _ready(port)[0] == 200, 15, "ready again with Redis")

            mariadb.kill()
            wait_for(lambda: _ready(port)[0] == 503, 15, "not ready without the database")
            assert _ready(port)[1]["checks"]["redis"] == "ok"
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
            mariadb.launch()
            wait_for(lambda: _ready(port)[0] == 200, 20, "ready again with the database")
        finally:
            worker.stop()
    finally:
        server.stop()
        mariadb.stop()
