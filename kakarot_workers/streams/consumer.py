"""The long-lived consumer of one batch: source → stamped events → the `alerts` queue.

It stamps every trade with (task, batch, epoch, fencing token) and sends them to the alert pool
in micro-batches of up to `emit_max_events` events or `emit_max_ms` milliseconds. It renews the
lease every third of its TTL and stops at once when the lease is lost. On a warm shutdown it
flushes, marks the batch `stopped` and releases the lease, so another worker can take the batch
immediately (`consume_batch` in `streams.tasks` runs it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis

from kakarot_workers import backend, queues, runtime
from kakarot_workers.celery import app
from kakarot_workers.settings import get_settings
from kakarot_workers.sources import BatchPlan, Retraction, Source
from kakarot_workers.streams import leases, node
from kakarot_workers.streams.dispatch import redispatch
from kakarot_workers.streams.leases import Lease

log = logging.getLogger(__name__)

STATUS_REFRESH_S = 5.0
CONTROL_CHECK_S = 1.0
# After a graceful hand-over, the successor raises the fence this long after its source is live.
FENCE_DELAY_S = 1.0
# A leaving consumer sends its batch to the `streams` queue again when nobody has taken the
# lease this long after the last send. The first send can be swallowed by the leaving worker
# itself: a BRPOP its broker connection issued just before the warm shutdown pops the message,
# which the worker then holds unprocessed until it exits (celery/celery#4354). kombu sends that
# BRPOP with a 1 s server-side timeout, so a message sent more than 1 s into the shutdown reaches
# another worker. A duplicate is harmless: only one consumer gets the lease.
HANDOVER_RESEND_S = 2.0
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
    """Serves one batch while it holds the lease: source → stamped events → `alerts` queue."""

    def __init__(
        self, plan: BatchPlan, source: Source, lease: Lease, agent: node.NodeAgent | None = None
    ) -> None:
        settings = get_settings()
        self.plan = plan
        self.source = source
        self.lease = lease
        self.agent = agent or node.current()
        self.batch_id = plan.batch_id
        self.task_id = plan.task_id
        self.consumer_id = lease.consumer_id
        self.redis = runtime.redis_client()
        self.keys = runtime.keys()
        self.status_ttl_s = settings.batch_status_ttl_s
        self.queue_limit = settings.alerts_queue_limit
        self.queue_cap = settings.alerts_queue_cap
        self.batcher = EventBatcher(settings.emit_max_events, settings.emit_max_ms, self._emit)
        self.events_emitted = 0
        self.epoch = plan.epoch
        self.stop_reason: str | None = None
        self.lease_lost = False
        self.alerts_depth = 0
        self.handover_timeout_s = settings.handover_timeout_s
        self._checkpoint: int | None = None
        self._reconnects_seen = 0
        self._reported_status: str | None = None
        self._stop = threading.Event()
        self._shutting_down = False
        self._handing_over = False
        self._watchdog: threading.Timer | None = None
        self._live_since: float | None = None
        self._handover_sent_at = 0.0

    # --- what the node agent reads ------------------------------------------------------
    @property
    def status(self) -> str:
        if self._handing_over:
            return "handing_over"
        return "running" if self.source.stats.live else "connecting"

    @property
    def pending(self) -> int:
        return len(self.batcher.pending)

    # --- the loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> int:
        """Consume until `stop` is set, the lease is lost, the control plane retires the batch,
        or the worker shuts down (after handing the batch over); return the events emitted."""
        self._stop = stop
        status = self.status
        self._write_status(status)
        self.agent.hold(self)
        hook = runtime.on_shutdown(self.begin_shutdown)
        now = time.monotonic()
        next_refresh, next_control = now + STATUS_REFRESH_S, now
        next_renew = now + self.lease.renew_interval_s
        try:
            for event in self.source.events(stop):
                if isinstance(event, Retraction):
                    self._retract(event)
                elif event is not None:
                    self.batcher.add(
                        replace(
                            event,
                            task_id=self.task_id,
                            batch_id=self.batch_id,
                            epoch=self.epoch,
                            fencing_token=self.lease.token,
                        ).to_wire()
                    )
                self.batcher.flush_if_due()
                if self._shutting_down and not self._handing_over:
                    self._hand_over()
                now = time.monotonic()
                if not self.lease.fenced and not self._handing_over:
                    self._fence_after_hand_over(now)
                if now >= next_renew and not self._handing_over:
                    self._renew(stop)
                    if self.lease_lost:
                        break  # not ours any more: write nothing of the batch's state
                    next_renew = now + self.lease.renew_interval_s
                if now >= next_control:
                    self._read_control(stop)
                    next_control = now + CONTROL_CHECK_S
                if self.status != status or now >= next_refresh:
                    status = self.status
                    self._write_status(status)
                    next_refresh = now + STATUS_REFRESH_S
                if not self.batcher.pending:
                    self._save_checkpoint()
        finally:
            runtime.forget_shutdown_hook(hook)
            if self._watchdog is not None:
                self._watchdog.cancel()
            self.agent.let_go(self)
            self._finish()
        return self.events_emitted

    def _fence_after_hand_over(self, now: float) -> None:
        """We took the batch in a graceful hand-over: once our source has been live for
        FENCE_DELAY_S (so what the leaving consumer read before we subscribed has been emitted),
        raise the fence; the leaving consumer sees it and stops."""
        if not self.source.stats.live:
            self._live_since = None
        elif self._live_since is None:
            self._live_since = now
        elif now - self._live_since >= FENCE_DELAY_S:
            self.lease.raise_fence()
            log.info("batch %s: live; fence raised to %s", self.batch_id, self.lease.token)

    def begin_shutdown(self) -> None:
        """The worker is going down (called from its signal handler). A live consumer hands
        its batch over and serves on until the successor is live, at most `handover_timeout_s`;
        one that is not live has nothing to hand over and stops at once."""
        self._shutting_down = True
        if not self.source.stats.live or self.handover_timeout_s <= 0:
            self._stop.set()
            return
        self._watchdog = threading.Timer(self.handover_timeout_s, self._stop.set)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _hand_over(self) -> None:
        """Flush, release the lease marked as a hand-over, and dispatch the successor."""
        self._handing_over = True
        self.batcher.flush()
        self._save_checkpoint()
        if not self.lease.release(handover_s=self.handover_timeout_s):
            log.warning("batch %s: lease already lost at shutdown", self.batch_id)
            self._lose(self._stop)
            return
        self.stop_reason = "handed_over"
        redispatch(self.batch_id)
        self._handover_sent_at = time.monotonic()
        self._write_status(self.status)
        log.info("batch %s: handing over (token %s)", self.batch_id, self.lease.token)

    def _finish(self) -> None:
        """Flush what is buffered; then, unless the batch is someone else's now, say why we
        stopped and release the lease."""
        try:
            self.batcher.flush()
            self._save_checkpoint()
        except redis.RedisError as exc:
            log.error("batch %s: could not flush on stop: %s", self.batch_id, exc)
        if self.lease_lost:
            return  # the batch is someone else's now: touch nothing of it
        with contextlib.suppress(redis.RedisError):
            if self._handing_over:
                holder = leases.store().holders([self.batch_id])[self.batch_id]
                if holder is None:  # nobody came in time: say the batch is unserved
                    self._write_status("stopped")
                    self.stop_reason = None
                return
            self._write_status(self.stop_reason or "stopped")
            self.lease.release()
            if self._shutting_down and self.stop_reason is None:
                redispatch(self.batch_id)  # not live, nothing to hand over: just go

    def _renew(self, stop: threading.Event) -> None:
        try:
            ours = self.lease.renew()
        except redis.RedisError as exc:
            if self.lease.expired_locally():
                log.error(
                    "batch %s: lease not renewed for a full TTL (%s); stopping", self.batch_id, exc
                )
                self._lose(stop)
            else:
                log.warning("batch %s: lease renewal failed (%s); will retry", self.batch_id, exc)
            return
        if not ours:
            log.warning(
                "batch %s: lease lost (token %s); stopping", self.batch_id, self.lease.token
            )
            self._lose(stop)

    def _lose(self, stop: threading.Event) -> None:
        self.lease_lost = True
        self.stop_reason = "lease_lost"
        stop.set()

    def _read_control(self, stop: threading.Event) -> None:
        """Follow the control plane (a new epoch for a carried batch, or an order to stop), read
        the alerts queue depth for back-pressure and, while handing over, follow the successor."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.batch_control(self.batch_id))
        pipe.llen(queues.ALERTS)
        control, self.alerts_depth = pipe.execute()
        if control.get("epoch"):
            self.epoch = int(control["epoch"])
        if self._handing_over:
            self._follow_successor(stop)
        if control.get("stop"):
            self.stop_reason = control["stop"]
            log.info("batch %s: told to stop (%s)", self.batch_id, self.stop_reason)
            stop.set()
        reconnects = self.source.stats.reconnects
        if reconnects != self._reconnects_seen:
            self.agent.counters.add(reconnects=reconnects - self._reconnects_seen)
            self.redis.incrby(self.keys.reconnects, reconnects - self._reconnects_seen)
            self._reconnects_seen = reconnects

    def _follow_successor(self, stop: threading.Event) -> None:
        """Handing over: stop once the successor has raised the fence past our token; send the
        batch again while nobody holds its lease (see HANDOVER_RESEND_S)."""
        if self.lease.fence_passed():
            log.info("batch %s: successor is live; handed over", self.batch_id)
            stop.set()
        elif (
            time.monotonic() - self._handover_sent_at >= HANDOVER_RESEND_S
            and leases.store().holders([self.batch_id])[self.batch_id] is None
        ):
            log.warning(
                "batch %s: no successor took it within %.0fs; sending it again",
                self.batch_id,
                HANDOVER_RESEND_S,
            )
            redispatch(self.batch_id)
            self._handover_sent_at = time.monotonic()
            self.redis.incr(self.keys.handovers_resent)

    def _emit(self, events: list[WireEvent]) -> None:
        counters = self.agent.counters
        if self.alerts_depth > self.queue_limit:
            counters.add(backpressure_count=1)
            if self.queue_cap and self.alerts_depth >= self.queue_cap:
                counters.add(dropped_events=len(events))
                log.warning(
                    "batch %s: alerts queue at %d ≥ cap %d: %d events dropped",
                    self.batch_id,
                    self.alerts_depth,
                    self.queue_cap,
                    len(events),
                )
                return
        app.send_task(queues.EVALUATE_EVENTS, args=[events])
        self.events_emitted += len(events)
        counters.add(total_events=len(events))
        status_key = self.keys.batch_status(self.batch_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.incrby(self.keys.events_total, len(events))
        pipe.hincrby(status_key, "events", len(events))
        pipe.hset(status_key, "last_event_ms", events[-1]["ts_ms"])
        pipe.execute()

    def _retract(self, gone: Retraction) -> None:
        """A re-org removed a swap: drop it if it is still buffered (it never alerts), else
        record the retraction (`kakarot:retracted`, counter `events_retracted`)."""
        identity = (gone.tx_hash, gone.log_index)
        before = len(self.batcher.pending)
        self.batcher.pending = [
            e for e in self.batcher.pending if (e["tx_hash"], e["log_index"]) != identity
        ]
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(self.keys.events_retracted)
        if len(self.batcher.pending) == before:
            member = f"{gone.chain}:{gone.tx_hash}:{gone.log_index}"
            pipe.hset(self.keys.retracted, member, gone.block_number or "")
            log.warning("batch %s: re-org retracted %s after it was emitted", self.batch_id, member)
        pipe.execute()

    def _save_checkpoint(self) -> None:
        """Everything the source has yielded is emitted: its progress is the checkpoint."""
        block = getattr(self.source, "progress_block", None)
        if block is not None and block != self._checkpoint and not self.lease_lost:
            self.redis.set(self.keys.batch_checkpoint(self.batch_id), block)
            self._checkpoint = block

    def _write_status(self, status: str) -> None:
        if self.lease_lost:
            return
        key = self.keys.batch_status(self.batch_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(
            key,
            mapping={
                "status": status,
                "consumer_id": self.consumer_id,
                "node_id": self.agent.node_id,
                "token": self.lease.token,
                "epoch": self.epoch,
                "task_id": self.task_id,
                "frames": self.source.stats.frames,
                "frames_rejected": self.source.stats.frames_rejected,
                "reconnects": self.source.stats.reconnects,
                "updated_ms": int(time.time() * 1000),
                "pid": os.getpid(),
            },
        )
        pipe.expire(key, self.status_ttl_s)
        pipe.execute()
        if status != self._reported_status:  # the backend hears of changes only
            self._reported_status = status
            backend.send_event(
                "batch_status",
                {
                    "batch_id": self.batch_id,
                    "task_id": self.task_id,
                    "status": status,
                    "message": f"{self.consumer_id} epoch {self.epoch}",
                },
            )
