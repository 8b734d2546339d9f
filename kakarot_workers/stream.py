"""Where a batch becomes a stream: the long-lived consumer of one batch (queue `streams`).

`consume_batch(batch_id)` opens the batch's source, stamps every trade with (task, batch, epoch),
and sends them to the alert pool in micro-batches of up to `emit_max_events` events or
`emit_max_ms` milliseconds. It returns when the worker begins a warm shutdown, after flushing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from kakarot_workers import runtime
from kakarot_workers.batches import BatchPlan, load_batch_plan, set_batch_status
from kakarot_workers.celery_app import app
from kakarot_workers.db.session import session_scope
from kakarot_workers.errors import KakarotError
from kakarot_workers.settings import get_settings
from kakarot_workers.sources import Source, open_source

log = logging.getLogger(__name__)

EVALUATE_TASK = "kakarot.alerts.evaluate_events"
STATUS_REFRESH_S = 5.0
CONTROL_CHECK_S = 1.0

WireEvent = dict[str, Any]


class EventBatcher:
    """Collects events and hands them on in groups: full at `max_events`, due after `max_ms`."""

    def __init__(
        self,
        max_events: int,
        max_ms: int,
        send: Callable[[list[WireEvent]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_events = max_events
        self.max_s = max_ms / 1000
        self.send = send
        self.clock = clock
        self.pending: list[WireEvent] = []
        self._first_at = 0.0

    def add(self, event: WireEvent) -> None:
        if not self.pending:
            self._first_at = self.clock()
        self.pending.append(event)
        if len(self.pending) >= self.max_events:
            self.flush()

    def flush_if_due(self) -> None:
        if self.pending and self.clock() - self._first_at >= self.max_s:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            events, self.pending = self.pending, []
            self.send(events)


class BatchConsumer:
    """Serves one batch: source → stamped events → micro-batches on the `alerts` queue."""

    def __init__(self, plan: BatchPlan, source: Source, consumer_id: str) -> None:
        settings = get_settings()
        self.plan = plan
        self.source = source
        self.consumer_id = consumer_id
        self.redis = runtime.redis_client()
        self.keys = runtime.keys()
        self.status_ttl_s = settings.batch_status_ttl_s
        self.batcher = EventBatcher(settings.emit_max_events, settings.emit_max_ms, self._emit)
        self.events_emitted = 0
        self.epoch = plan.epoch
        self.stop_reason: str | None = None

    def run(self, stop: threading.Event) -> int:
        """Consume until `stop` is set or the control plane retires the batch; return the
        number of events emitted. The status is `running` only while the source is subscribed."""
        status = self._status()
        self._write_status(status)
        now = time.monotonic()
        next_refresh, next_control = now + STATUS_REFRESH_S, now
        try:
            for event in self.source.events(stop):
                if event is not None:
                    stamped = replace(
                        event,
                        task_id=self.plan.task_id,
                        batch_id=self.plan.batch_id,
                        epoch=self.epoch,
                    )
                    self.batcher.add(stamped.to_wire())
                self.batcher.flush_if_due()
                now = time.monotonic()
                if now >= next_control:
                    self._read_control(stop)
                    next_control = now + CONTROL_CHECK_S
                if self._status() != status or now >= next_refresh:
                    status = self._status()
                    self._write_status(status)
                    next_refresh = now + STATUS_REFRESH_S
        finally:
            self.batcher.flush()
            self._write_status(self.stop_reason or "stopped")
        return self.events_emitted

    def _status(self) -> str:
        return "running" if self.source.stats.live else "connecting"

    def _read_control(self, stop: threading.Event) -> None:
        """Follow the control plane: a new epoch for a carried batch, or an order to stop."""
        control = self.redis.hgetall(self.keys.batch_control(self.plan.batch_id))
        if control.get("epoch"):
            self.epoch = int(control["epoch"])
        if control.get("stop"):
            self.stop_reason = control["stop"]
            log.info("batch %s: told to stop (%s)", self.plan.batch_id, self.stop_reason)
            stop.set()

    def _emit(self, events: list[WireEvent]) -> None:
        app.send_task(EVALUATE_TASK, args=[events])
        self.events_emitted += len(events)
        status_key = self.keys.batch_status(self.plan.batch_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.incrby(self.keys.events_total, len(events))
        pipe.hincrby(status_key, "events", len(events))
        pipe.hset(status_key, "last_event_ms", events[-1]["ts_ms"])
        pipe.execute()

    def _write_status(self, status: str) -> None:
        key = self.keys.batch_status(self.plan.batch_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(
            key,
            mapping={
                "status": status,
                "consumer_id": self.consumer_id,
                "epoch": self.epoch,
                "task_id": self.plan.task_id,
                "frames_rejected": self.source.stats.frames_rejected,
                "reconnects": self.source.stats.reconnects,
                "updated_ms": int(time.time() * 1000),
            },
        )
        pipe.expire(key, self.status_ttl_s)
        pipe.execute()


# Stream tasks are acknowledged early (on receipt). Celery's Redis broker re-delivers an
# unacknowledged message after `visibility_timeout`, so a task that runs for hours with late
# acknowledgement would be started a second time while the first still runs. Ownership of a
# batch is therefore not the broker's business: a dead consumer's batch is dispatched again.
@app.task(name="kakarot.streams.consume_batch", bind=True, acks_late=False, ignore_result=True)
def consume_batch(self: Any, batch_id: int) -> int:
    """Serve batch `batch_id` until the worker shuts down or the batch is retired."""
    cid = runtime.consumer_id(threading.get_ident() % 10_000)
    worker = getattr(self.request, "hostname", None) or "unknown"
    with session_scope() as session:
        plan = load_batch_plan(session, batch_id)
        if plan.status == "retired":
            log.info("batch %s is retired; not consuming it", batch_id)
            return 0
        set_batch_status(
            session, batch_id, "running", consumer_id=cid, worker_id=worker, worker_pid=os.getpid()
        )
    log.info(
        "batch %s (task %s, epoch %s): %d tokens, consumer %s",
        batch_id,
        plan.task_id,
        plan.epoch,
        len(plan.tokens),
        cid,
    )
    stop = runtime.consumer_stop_event()
    try:
        source = open_source(plan.source, plan.chain, plan.tokens, get_settings())
        consumer = BatchConsumer(plan, source, cid)
        emitted = consumer.run(stop)
    except KakarotError as exc:
        log.error("batch %s stopped: %s", batch_id, exc)
        with session_scope() as session:
            set_batch_status(session, batch_id, "error", error=str(exc))
        return 0
    finally:
        runtime.release_stop_event(stop)
    if consumer.stop_reason is None:  # a retired batch keeps the status the control plane set
        with session_scope() as session:
            set_batch_status(session, batch_id, "stopped")
    log.info("batch %s %s after %d events", batch_id, consumer.stop_reason or "stopped", emitted)
    return emitted
