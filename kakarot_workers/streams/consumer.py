"""The long-lived consumer of one batch: source → stamped events → the `alerts` queue.

It sends its trades to the alert pool in micro-batches of up to `emit_max_events` events or
`emit_max_ms` milliseconds, each one message packed with (task, batch, epoch, fencing token, send
time) once (`events.pack`). It renews the lease every third of its TTL and stops at once when the
lease is lost; it follows the control plane (a new epoch, an order to stop) and the depth of the
alerts queue. On a warm shutdown it hands the batch over (`handover`). What it reports goes
through `reporter`; `consume_batch` in `streams.tasks` runs it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import kombu.exceptions
import redis

from kakarot_workers import degrade, logs, metrics, queues, runtime
from kakarot_workers.celery import app, send_packed
from kakarot_workers.errors import EventError
from kakarot_workers.events import SwapEvent, check, pack
from kakarot_workers.settings import get_settings
from kakarot_workers.sources import BatchPlan, Retraction, Source
from kakarot_workers.status import BatchStatus
from kakarot_workers.streams import leases, node, standby
from kakarot_workers.streams.dispatch import redispatch
from kakarot_workers.streams.emitter import (
    BROKER_DOWN,
    Emitter,
    EventBatcher,
    LeaseUnconfirmed,
)
from kakarot_workers.streams.handover import Handover, Phase
from kakarot_workers.streams.leases import Lease
from kakarot_workers.streams.reporter import StatusReporter

log = logging.getLogger(__name__)

STATUS_REFRESH_S = 5.0
CONTROL_CHECK_S = 1.0
# While Redis does not answer, the lease is tried again this often.
OUTAGE_RENEW_S = 0.5
# What a consumer meets while Redis (its state, and the broker) is away.
STORE_DOWN = (redis.RedisError, kombu.exceptions.OperationalError)
# A retraction reaches the pool this long after it: an evaluation of the trade under way then
# has recorded what it will (`alerts.retract`).
RETRACT_DELAY_S = 5.0
# On a busy stream, what the loop does besides taking events (the micro-batch's deadline, the
# lease, the control hash, the status, the checkpoint) runs at most this often, not per event.
CHORES_S = 0.002
# What was sent is counted in Redis (the fleet's and the batch's counters) this often, not per
# micro-batch: a round trip per send cost a busy consumer a tenth of its time.
REPORT_S = 0.2


_degradations: dict[tuple[int, ...], degrade.Degradation] = {}


def _shared_degradation(thresholds: list[int]) -> degrade.Degradation:
    """One degradation level per process, whichever of its consumers reads the backlog."""
    key = tuple(thresholds)
    found = _degradations.get(key)
    if found is None:
        found = _degradations.setdefault(key, degrade.Degradation(thresholds, "stream consumers"))
    return found


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
        self.queue_limit = settings.alerts_queue_limit
        self.queue_cap = settings.alerts_queue_cap
        self.batcher: EventBatcher[SwapEvent] = EventBatcher(
            settings.emit_max_events, settings.emit_max_ms, self._emit
        )
        self._emit_max_events, self._emit_max_s = self.batcher.max_events, self.batcher.max_s
        self.degradation = _shared_degradation(settings.degrade_backlog)
        self.emitter: Emitter[SwapEvent] = Emitter(self._send, settings.outage_buffer_events)
        self.reporter = StatusReporter(
            self.redis,
            self.keys,
            batch_id=plan.batch_id,
            task_id=plan.task_id,
            consumer_id=lease.consumer_id,
            node_id=self.agent.node_id,
            ttl_s=settings.batch_status_ttl_s,
        )
        self.events_emitted = 0
        self._unreported = 0  # sent, not yet counted in Redis (`_report_emitted`)
        self._last_event_ms = 0
        self.epoch = plan.epoch
        # why it stopped, when that is not simply "stopped": handed_over, lease_lost, or the
        # control plane's order (retired)
        self.stop_reason: str | None = None
        self.alerts_depth = 0
        self._stop = threading.Event()
        self.handover = Handover(
            lease,
            self._stop,
            settings.handover_timeout_s,
            self.agent.successor_possible,
            self.agent.node_id,
        )
        self._told: BatchStatus | None = None
        self.plausible = settings.plausible
        self._rejects: Counter[str] = Counter()  # by reason, not yet counted in Redis
        self._checkpoint: int | None = None
        self._reconnects_seen = 0
        self._dropped_seen = 0
        self._lease_stale_logged = False
        self._redis_down_logged = False
        self._since_noted = False
        # re-org retractions (and reinstatements) not yet recorded; keys retracted after emission
        self._retractions: list[tuple[Retraction | str, bool]] = []
        self._retracted_keys: set[str] = set()
        # a hot standby for a feed batch (an EVM successor back-fills instead)
        self.standby = settings.standby and (plan.source or "").lower() != "evm"
        self._standby_asked = 0.0
        self.source_kind = (plan.source or "simulator").lower()
        # a source that builds every event with `events.from_wire` has checked it already,
        # against the same bounds (`settings.plausible`): once is enough
        self._source_checks = bool(getattr(source, "checks_events", False))
        self._sent_metric = metrics.EVENTS_SENT.labels(self.source_kind)

    # --- what the node agent reads ------------------------------------------------------
    @property
    def status(self) -> BatchStatus:
        if self.handover.phase is Phase.HANDING_OVER:
            return BatchStatus.HANDING_OVER
        return BatchStatus.RUNNING if self.source.stats.live else BatchStatus.CONNECTING

    @property
    def progress(self) -> int:
        """The share (%) of the batch's tokens its live source covers (`SourceStats.progress`)."""
        return self.source.stats.progress(len(self.plan.tokens))

    @property
    def pending(self) -> int:
        """Events read and not yet sent: in the micro-batch, and kept through an outage."""
        return len(self.batcher.pending) + self.emitter.unsent_events

    @property
    def lease_lost(self) -> bool:
        return self.handover.phase is Phase.LOST

    # --- the loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> int:
        """Consume until `stop` is set, the lease is lost, the control plane retires the batch,
        or the worker shuts down (after handing the batch over); return the events emitted.
        Its log lines carry the task, batch, consumer and epoch (JSON logs)."""
        with logs.bound(
            task_id=self.task_id,
            batch_id=self.batch_id,
            consumer_id=self.consumer_id,
            epoch=self.epoch,
        ):
            return self._run(stop)

    def _run(self, stop: threading.Event) -> int:
        self._stop = self.handover.stop = stop
        status = self.status
        self._write_status(status)
        self.agent.hold(self)
        hook = runtime.on_shutdown(self.begin_shutdown)
        now = time.monotonic()
        next_refresh, next_control = now + STATUS_REFRESH_S, now
        next_renew = now + self.lease.renew_interval_s
        next_chores = next_report = now
        try:
            for event in self.source.events(stop):
                if isinstance(event, Retraction):
                    self._retract(event)
                elif event is not None and (self._source_checks or self._plausible(event)):
                    if self._retracted_keys and event.key in self._retracted_keys:
                        self._reinstate(event.key)
                    self.batcher.add(event)
                now = time.monotonic()
                if event is not None and now < next_chores:
                    continue  # a busy stream: the rest of the loop at most every CHORES_S
                next_chores = now + CHORES_S
                self.batcher.flush_if_due()
                self.emitter.retry()
                if self._unreported and now >= next_report:
                    self._quietly(self._report_emitted)
                    next_report = now + REPORT_S
                if self._retractions:
                    self._send_retractions()
                if self.handover.phase is Phase.LEAVING:
                    self._hand_over()
                    now = time.monotonic()
                self.handover.fence_when_live(now, self.source.stats.live)
                if self.emitter.held and next_renew > now + OUTAGE_RENEW_S:
                    next_renew = now  # confirm the lease soon, before sending again
                if now >= next_renew and self.handover.renewing:
                    renewed = self._renew()
                    if self.lease_lost:
                        break  # not ours any more: write nothing of the batch's state
                    next_renew = now + (self.lease.renew_interval_s if renewed else OUTAGE_RENEW_S)
                if now >= next_control:
                    self._quietly(self._read_control, stop)
                    next_control = now + CONTROL_CHECK_S
                if self.status != status or now >= next_refresh:
                    status = self.status
                    self._write_status(status)
                    next_refresh = now + STATUS_REFRESH_S
                if not self.pending:
                    self._quietly(self._save_checkpoint)
        finally:
            runtime.forget_shutdown_hook(hook)
            self.handover.close()
            self.agent.let_go(self)
            self._finish()
        return self.events_emitted

    def _plausible(self, event: SwapEvent) -> bool:
        """Whether a source's event is one a real trade can be (`events.check`); a bad one is
        logged and counted, and dropped alone."""
        try:
            check(event, plausible=self.plausible)
        except EventError as exc:
            self._rejects[f"source:{exc.reason}"] += 1
            log.warning("batch %s: event %s rejected: %s", self.batch_id, event.log_index, exc)
            return False
        return True

    def _count_rejects(self) -> None:
        """Count the events and frames refused since the last time, durably (all, by batch, by
        reason): the source's and our own (kept for the next time if Redis does not answer)."""
        for reason, count in self.source.stats.take_rejects().items():
            self._rejects[f"source:{reason}"] += count
        if self._rejects:
            self.reporter.rejected(self._rejects)
            for reason, count in self._rejects.items():
                stage, _, why = reason.partition(":")
                metrics.EVENTS_REJECTED.labels(stage, why).inc(count)
            self._rejects = Counter()

    def begin_shutdown(self) -> None:
        """The worker is going down (called from its signal handler): hand over if live."""
        self.handover.shutdown(self.source.stats.live)

    def _hand_over(self) -> None:
        """Send what was read, then release the lease marked as a hand-over and dispatch the
        successor. With the broker or Redis away there is nothing to hand over to: stop (what
        could not be sent is not checkpointed, see `_finish`)."""
        try:
            self._send_everything()
            if self.pending:
                raise kombu.exceptions.OperationalError("the broker does not take our events")
            self._save_checkpoint()
            self.handover.release()
        except STORE_DOWN as exc:
            log.warning("batch %s: cannot hand over (%s); stopping", self.batch_id, exc)
            self.handover.stop_now()
            return
        if self.handover.phase is Phase.HANDING_OVER:
            self._write_status(self.status)

    def _send_everything(self) -> None:
        """Flush the micro-batch and try what the emitter keeps once more, now (events under
        our token are safe to send: if the batch is someone else's, the fence refuses them)."""
        self.batcher.flush()
        self.emitter.resume()
        self.emitter.retry()

    def _finish(self) -> None:
        """Send what was read; then, unless the batch is someone else's now, say why we stopped
        and release the lease. Events the broker would not take are lost with this consumer:
        the checkpoint stays before them, so a source that resumes from it reads them again."""
        phase = self.handover.phase
        try:
            if phase is not Phase.LOST:
                self._send_everything()
                if self.pending:
                    log.error(
                        "batch %s: stopping with %d events read and not sent (the broker is "
                        "away); the checkpoint stays before them",
                        self.batch_id,
                        self.pending,
                    )
                    self.agent.counters.add(dropped_events=self.pending)
                else:
                    self._save_checkpoint()
            self._report_emitted()
            self._count_rejects()
        except STORE_DOWN as exc:
            log.error("batch %s: could not flush on stop: %s", self.batch_id, exc)
        if phase is Phase.LOST:
            self.stop_reason = BatchStatus.LEASE_LOST
            return  # the batch is someone else's now: touch nothing of it
        with contextlib.suppress(*STORE_DOWN):
            if phase is Phase.HANDING_OVER:
                if self.handover.taken():
                    self.stop_reason = BatchStatus.HANDED_OVER
                    metrics.HANDOVERS.labels("handed_over").inc()
                else:  # nobody came in time: say the batch is unserved
                    self._write_status(BatchStatus.STOPPED)
                    metrics.HANDOVERS.labels("nobody_came").inc()
                return
            self.stop_reason = self._told
            self._write_status(self._told or BatchStatus.STOPPED)
            self.lease.release()
            if phase in (Phase.LEAVING, Phase.STOPPING) and self._told is None:
                redispatch(self.batch_id, exclude=self.agent.node_id)  # nothing handed over

    def _renew(self) -> bool:
        """Extend the lease; True once Redis confirmed it is ours. While Redis does not answer
        the consumer serves on and keeps what it reads (see `emitter`); when Redis is back and
        the lease expired meanwhile with nobody else holding it, it is taken again (a new
        fencing token) and what was kept goes out under it. Someone else holding it means the
        batch is theirs: the consumer stops."""
        try:
            if self.lease.renew():
                self.emitter.resume()
                return True
            retaken = self._retake()
        except redis.RedisError as exc:
            if self.lease.expired_locally() and not self._lease_stale_logged:
                self._lease_stale_logged = True
                log.error(
                    "batch %s: lease not renewed for a full TTL (%s); serving on and keeping "
                    "events until Redis answers",
                    self.batch_id,
                    exc,
                )
            return False
        if not retaken:
            log.warning(
                "batch %s: lease lost (token %s); stopping", self.batch_id, self.lease.token
            )
            metrics.LEASE_LOSSES.inc()
            self.handover.lose()
        return retaken

    def _retake(self) -> bool:
        """The lease lapsed while Redis was away: take it back if nobody holds it, with the
        same token if nobody has taken one since (what we sent before the outage and still
        waits on the queue stays valid), else with a new one (Redis lost its data)."""
        if self.handover.phase not in (Phase.SERVING, Phase.TAKING_OVER):
            return False
        if self.lease.reacquire():
            log.warning(
                "batch %s: the lease lapsed while Redis was away; taken back (token %s)",
                self.batch_id,
                self.lease.token,
            )
        else:
            lease = leases.store().acquire(self.batch_id, self.consumer_id, self.lease.ttl_s)
            if lease is None:
                return False
            log.warning(
                "batch %s: the lease was lost while Redis was away; taken again (token %s → %s)",
                self.batch_id,
                self.lease.token,
                lease.token,
            )
            self.lease = self.handover.lease = lease
            if self.handover.phase in (Phase.SERVING, Phase.TAKING_OVER):  # not leaving since
                self.handover.phase = Phase.SERVING if lease.fenced else Phase.TAKING_OVER
            # what waits to be sent goes out under this token (`_send` stamps it)
        self.emitter.resume()
        self._lease_stale_logged = False
        return True

    def _quietly(self, action: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Run a step that reads or writes the batch's state in Redis; while Redis does not
        answer, skip it (it runs again on the next turn of the loop)."""
        try:
            action(*args, **kwargs)
        except redis.RedisError as exc:
            if not self._redis_down_logged:
                self._redis_down_logged = True
                log.warning("batch %s: Redis unreachable (%s); serving on", self.batch_id, exc)
            return
        self._redis_down_logged = False

    def _read_control(self, stop: threading.Event) -> None:
        """Follow the control plane (a new epoch for a carried batch, or an order to stop), read
        the alerts queue depth for back-pressure and, while handing over, follow the successor."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.batch_control(self.batch_id))
        pipe.llen(self.keys.queue(queues.ALERTS))
        control, self.alerts_depth = pipe.execute()
        self._degrade(self.alerts_depth)
        if control.get("epoch") and int(control["epoch"]) != self.epoch:
            self.batcher.flush()  # what was read under the old epoch is sent under it
            self.epoch = int(control["epoch"])
        if control.get("move"):
            self._follow_move(control["move"])
        self.handover.follow_successor()
        if control.get("stop"):
            try:
                self._told = BatchStatus(control["stop"])
            except ValueError:
                self._told = BatchStatus.STOPPED
            log.info("batch %s: told to stop (%s)", self.batch_id, control["stop"])
            stop.set()
        self._count_rejects()
        if self.standby:
            self._ensure_standby()
        reconnects = self.source.stats.reconnects
        if reconnects != self._reconnects_seen:
            self.agent.counters.add(reconnects=reconnects - self._reconnects_seen)
            metrics.SOURCE_RECONNECTS.labels(self.source_kind).inc(
                reconnects - self._reconnects_seen
            )
            self.reporter.reconnected(reconnects - self._reconnects_seen)
            self._reconnects_seen = reconnects

    def _follow_move(self, order: str) -> None:
        """Beat's rebalance asks `consumer>node` to move the batch to that node (`rebalance`):
        ours, we take it off the hash (our successor reads the same) and start the hand-over."""
        consumer_id, _, target = order.partition(">")
        if consumer_id != self.consumer_id:
            return  # for an earlier consumer of the batch
        self.redis.hdel(self.keys.batch_control(self.batch_id), "move")
        if self.handover.move(target, self.source.stats.live):
            log.info("batch %s: moving to %s", self.batch_id, target)
        else:
            log.info("batch %s: not moved to %s (%s)", self.batch_id, target, self.handover.phase)

    def _degrade(self, backlog: int) -> None:
        """Under a deep alerts backlog, wider micro-batches (`degrade`, level 2)."""
        wide = self.degradation.update(backlog) >= 2
        factor = degrade.WIDEN if wide else 1
        self.batcher.max_events = self._emit_max_events * factor
        self.batcher.max_s = self._emit_max_s * factor

    def _ensure_standby(self) -> None:
        """While we serve a live feed batch, see that it has a hot standby (`standby`)."""
        now = time.monotonic()
        if now - self._standby_asked < standby.ENSURE_EVERY_S:
            return
        if self.handover.phase is not Phase.SERVING or not self.source.stats.live:
            return
        self._standby_asked = now
        with contextlib.suppress(*STORE_DOWN, *BROKER_DOWN):  # asked again later
            standby.ensure(self.redis, self.keys, self.batch_id, self.agent.node_id)

    def _emit(self, events: list[SwapEvent]) -> None:
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
        self.emitter.emit(events)
        if self.emitter.dropped != self._dropped_seen:
            counters.add(dropped_events=self.emitter.dropped - self._dropped_seen)
            self._dropped_seen = self.emitter.dropped

    def _send(self, events: list[SwapEvent]) -> None:
        """One message to the alert pool: the events packed under the batch's task, epoch and
        the lease's token now, dated by Redis's clock as they leave (the fence acts at that
        moment, see `leases`); raises while the broker is away (no retries here: the emitter
        keeps the events and tries again)."""
        if self.lease.expired_locally():  # kept until the lease is confirmed (or lost)
            raise LeaseUnconfirmed(f"lease of batch {self.batch_id} not confirmed for a full TTL")
        packed = pack(
            events,
            task_id=self.task_id,
            batch_id=self.batch_id,
            epoch=self.epoch,
            fencing_token=self.lease.token,
            sent_ms=self.lease.server_now_ms(),
        )
        send_packed(
            queues.EVALUATE_EVENTS,
            [packed],
            queue=queues.ALERTS,
            argsrepr=f"[<{len(events)} events of batch {self.batch_id}>]",
        )
        self._sent_metric.inc(len(events))
        if self.standby:  # right after the send: a standby takes over after this trade
            mark = standby.mark_of(events[-1]).encode()
            self._quietly(self.redis.set, self.keys.batch_sent_mark(self.batch_id), mark, ex=86_400)
        self.events_emitted += len(events)
        self.agent.counters.add(total_events=len(events))
        self._unreported += len(events)
        self._last_event_ms = events[-1].ts_ms

    def _report_emitted(self) -> None:
        """Count what was sent since the last time (the fleet's and the batch's counters)."""
        if self._unreported:
            self.reporter.emitted(self._unreported, self._last_event_ms)
            self._unreported = 0

    def _retract(self, gone: Retraction) -> None:
        """A re-org removed a swap: drop it if it is still buffered (it never alerts), else
        record the retraction (`_send_retractions`)."""
        identity = (gone.tx_hash, gone.log_index)

        def other(event: SwapEvent) -> bool:
            return (event.tx_hash, event.log_index) != identity

        before = len(self.batcher.pending)
        self.batcher.pending = [e for e in self.batcher.pending if other(e)]
        dropped = before - len(self.batcher.pending) + self.emitter.keep_only(other)
        if not dropped:
            log.warning(
                "batch %s: re-org retracted %s after it was emitted", self.batch_id, gone.key
            )
            self._retracted_keys.add(gone.key)
        self._retractions.append((gone, not dropped))
        self._send_retractions()

    def _reinstate(self, key: str) -> None:
        """A trade retracted after it was emitted is in the chain again (a re-org mined it
        again): the pool must judge it (`kakarot:retracted` loses it before it is sent)."""
        self._retracted_keys.discard(key)
        self._retractions.append((key, False))
        self._send_retractions()

    def _send_retractions(self) -> None:
        """Record the retractions (and reinstatements) in order; what Redis or the broker does
        not take now is tried again at the next turn of the loop. An emitted trade's retraction
        is written to `kakarot:retracted` (the pool does not judge it from then on) and sent to
        the pool (`retract_trade`: out of its windows, its alerts marked), `RETRACT_DELAY_S`
        later, so that an evaluation of it already under way has recorded what it will."""
        while self._retractions:
            item, emitted = self._retractions[0]
            try:
                if isinstance(item, str):
                    self.redis.hdel(self.keys.retracted, item)
                else:
                    pipe = self.redis.pipeline(transaction=False)
                    pipe.incr(self.keys.events_retracted)
                    if emitted:
                        pipe.hset(self.keys.retracted, item.key, item.block_number or "")
                    pipe.execute()
                    if emitted and item.ca:
                        args = [self.task_id, item.ca, item.chain, item.tx_hash, item.log_index]
                        app.send_task(
                            queues.RETRACT_TRADE, args=args, countdown=RETRACT_DELAY_S, retry=False
                        )
            except (*STORE_DOWN, *BROKER_DOWN) as exc:
                if not self._redis_down_logged:
                    self._redis_down_logged = True
                    log.warning(
                        "batch %s: retraction kept until Redis answers (%s)", self.batch_id, exc
                    )
                return
            self._retractions.pop(0)

    def _note_since(self, since_ms: int) -> None:
        """Since when the batch is monitored (its first consumer's word stands)."""
        self.redis.set(self.keys.batch_since(self.batch_id), since_ms, nx=True)
        self._since_noted = True

    def _save_checkpoint(self) -> None:
        """Everything the source has yielded is emitted: its progress is the checkpoint."""
        block = getattr(self.source, "progress_block", None)
        if block is not None and block != self._checkpoint and not self.lease_lost:
            self.redis.set(self.keys.batch_checkpoint(self.batch_id), block)
            self._checkpoint = block

    def _write_status(self, status: BatchStatus) -> None:
        if self.lease_lost:
            return
        since = self.source.stats.since_ms
        if since is not None and not self._since_noted:
            self._quietly(self._note_since, since)
        self._quietly(
            self.reporter.write,
            status,
            token=self.lease.token,
            epoch=self.epoch,
            stats=self.source.stats,
        )
