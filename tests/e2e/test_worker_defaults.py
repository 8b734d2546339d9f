"""What a worker does with no flags beyond its queues, as real `celery worker` processes: a
stream worker takes a message only when a slot is free (its tasks hold a slot for hours), other
workers prefetch so their millisecond tasks never wait on the broker between two messages."""

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
