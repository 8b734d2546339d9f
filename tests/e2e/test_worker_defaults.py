"""What a worker does with no flags beyond its queues, as real `celery worker` processes: a
stream worker takes a message only when a slot is free (its tasks hold a slot for hours), other
workers prefetch so their millisecond tasks never wait on the broker between two messages."""

import os
import subprocess
import sys

from kakarot_workers.celery import app


def _inspect(worker) -> tuple[dict, dict]:
    inspect = app.control.inspect(destination=[worker.nodename], timeout=5)
    conf, stats = inspect.conf(), inspect.stats()
    return conf[worker.nodename], stats[worker.nodename]


def test_only_workers_that_consume_streams_turn_prefetch_off(db_url, workers):
    streams = workers("streams")
    mixed = workers("streams,alerts", pool="solo")
    alerts = workers("alerts,notify", concurrency=2)
    conf, stats = _inspect(streams)
    assert conf["worker_disable_prefetch"] is True
    assert stats["pool"]["max-concurrency"] == 64  # threads, KAKAROT_STREAMS_CONCURRENCY
    assert _inspect(mixed)[0]["worker_disable_prefetch"] is True
    conf, stats = _inspect(alerts)
    assert conf["worker_disable_prefetch"] is False
    assert stats["prefetch_count"] == 2 * 4  # slots × KAKAROT_WORKER_PREFETCH_MULTIPLIER


def test_a_worker_with_no_queues_serves_all_but_the_stream_consumers_and_says_so(db_url, workers):
    plain = workers("")  # `celery -A kakarot_workers worker`, as a reader of a card starts it
    active = app.control.inspect(destination=[plain.nodename], timeout=5).active_queues()
    assert sorted(q["name"] for q in active[plain.nodename]) == ["alerts", "control", "notify"]
    assert "no -Q given: this worker serves alerts, notify, control" in plain.log_text()


def test_a_worker_that_would_serve_streams_on_prefork_refuses_with_one_line(db_url, tmp_path):
    for flags, env in (
        (["-Q", "streams,alerts"], {}),  # prefork is Celery's default pool
        (["-Q", "streams"], {"KAKAROT_STREAMS_POOL": "prefork"}),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "kakarot_workers", "worker", *flags],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert lines == [
            "error: this worker would serve `streams` on the prefork pool, where a stream "
            "consumer cannot hand its batch over on shutdown: run the consumers on their own "
            "worker (celery -A kakarot_workers worker -Q streams) or give this one -P threads"
        ]
        assert "Traceback" not in result.stderr
