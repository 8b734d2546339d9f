"""`consume_batch`: the task that serves one batch for as long as it holds the batch's lease.

Stream tasks are acknowledged early (on receipt). Celery's Redis broker re-delivers an
unacknowledged message after `visibility_timeout`, so a task that runs for hours with late
acknowledgement would be started a second time while the first still runs. Ownership of a batch
is the lease, not the broker: a dead consumer's lease expires and reconcile dispatches the batch
again.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from kakarot_workers import queues, runtime
from kakarot_workers.celery import app
from kakarot_workers.db.batches import set_batch_status
from kakarot_workers.db.session import session_scope
from kakarot_workers.errors import KakarotError, NotFoundError
from kakarot_workers.settings import get_settings
from kakarot_workers.sources import BatchPlan, Source
from kakarot_workers.sources.registry import open_source
from kakarot_workers.status import BatchStatus
from kakarot_workers.streams import leases, node, standby
from kakarot_workers.streams.consumer import BatchConsumer
from kakarot_workers.streams.dispatch import redispatch
from kakarot_workers.streams.leases import Lease
from kakarot_workers.streams.plan import load_batch_plan

log = logging.getLogger(__name__)

_slots = itertools.count(1)  # consumer ids: hostname-pid-slot


def _is_id(value: Any) -> bool:
    return type(value) is int and value > 0  # noqa: E721 (a bool is no id)


def read_checkpoint(batch_id: int) -> int | None:
    value = runtime.redis_client().get(runtime.keys().batch_checkpoint(batch_id))
    return int(value) if value is not None else None


@app.task(name=queues.CONSUME_BATCH, bind=True, acks_late=False, ignore_result=True)
def consume_batch(self: Any, batch_id: int) -> int:
    """Serve batch `batch_id` until the worker shuts down, the lease is lost or the batch is
    retired. Returns at once if another consumer holds the batch."""
    if not _is_id(batch_id):
        self.poison(f"a batch id is a positive integer, not {batch_id!r}"[:200])
        return 0
    settings = get_settings()
    client, keys = runtime.redis_client(), runtime.keys()
    cid = runtime.consumer_id(next(_slots))
    if runtime.shutdown_requested.is_set():
        # received while this worker goes down (early ack): pass it on untouched
        redispatch(batch_id, exclude=node.current().node_id)
        return 0
    try:
        with session_scope() as session:
            plan = load_batch_plan(session, batch_id)
    except NotFoundError as exc:  # deleted since it was dispatched
        log.warning("batch %s not consumed: %s", batch_id, exc)
        client.delete(keys.batch_dispatch(batch_id))
        return 0
    if plan.status == BatchStatus.RETIRED:
        log.info("batch %s is retired; not consuming it", batch_id)
        client.delete(keys.batch_dispatch(batch_id))
        return 0
    if settings.standby and client.exists(keys.batch_standby(batch_id)):
        # the batch's hot standby takes it over from where its owner stopped (`standby`)
        client.delete(keys.batch_dispatch(batch_id))
        log.info("batch %s has a standby; it takes the batch over", batch_id)
        return 0
    lease = leases.store().acquire(batch_id, cid, settings.lease_ttl_s)
    client.delete(keys.batch_dispatch(batch_id))
    if lease is None:
        log.info(
            "batch %s is served by %s; nothing to do",
            batch_id,
            client.get(keys.batch_lease(batch_id)),
        )
        return 0
    return _serve(
        self.request,
        plan,
        lease,
        lambda: open_source(plan, settings, checkpoint=read_checkpoint(batch_id)),
    )


def _serve(
    request: Any,
    plan: BatchPlan,
    lease: Lease,
    source_of: Callable[[], Source],
    stop: threading.Event | None = None,
) -> int:
    """Serve the batch under `lease` with the source `source_of()` opens, until the consumer
    stops; keep its row's status; return the events emitted. `stop`: the event the source
    already runs under (a standby's), so that the consumer's stop ends it."""
    batch_id, cid = plan.batch_id, lease.consumer_id
    agent = node.current()
    worker = getattr(request, "hostname", None) or agent.node_id
    with session_scope() as session:
        set_batch_status(
            session,
            batch_id,
            BatchStatus.RUNNING,
            consumer_id=runtime.consumer_id(),
            worker_id=runtime.worker_id(worker),
            worker_pid=os.getpid(),
        )
    log.info(
        "batch %s (task %s, epoch %s): %d tokens, consumer %s, token %s",
        batch_id,
        plan.task_id,
        plan.epoch,
        len(plan.tokens),
        cid,
        lease.token,
    )
    stop = stop or threading.Event()
    consumer: BatchConsumer | None = None
    try:
        consumer = BatchConsumer(plan, source_of(), lease, agent)
        emitted = consumer.run(stop)
    except KakarotError as exc:
        log.error("batch %s stopped: %s", batch_id, exc)
        with session_scope() as session:
            set_batch_status(session, batch_id, BatchStatus.ERROR, error=str(exc))
        if consumer is None:
            lease.release()
        return 0
    if consumer.stop_reason is None:  # retired, lost or handed over: not ours to set
        with session_scope() as session:
            set_batch_status(session, batch_id, BatchStatus.STOPPED)
    log.info(
        "batch %s %s after %d events",
        batch_id,
        consumer.stop_reason or BatchStatus.STOPPED,
        emitted,
    )
    return emitted


@app.task(name=queues.STAND_BY, bind=True, acks_late=False, ignore_result=True)
def stand_by(self: Any, batch_id: int, owner_node: str, passes: int = 0) -> int:
    """Be the hot standby of feed batch `batch_id` (served from `owner_node`): keep its recent
    trades until its lease is free, then serve it from where its owner stopped (`standby`).
    Received on the owner's own node, it is passed on (at most `MAX_PASSES` times)."""
    if not _is_id(batch_id) or not isinstance(owner_node, str) or not _is_count(passes):
        self.poison(f"expected (batch id, node id, passes), got {batch_id!r}, {owner_node!r}"[:200])
        return 0
    settings = get_settings()
    agent = node.current()
    if not settings.standby or runtime.shutdown_requested.is_set():
        return 0
    if agent.node_id == owner_node:
        if passes < standby.MAX_PASSES:
            app.send_task(queues.STAND_BY, args=[batch_id, owner_node, passes + 1], countdown=1)
        else:
            log.info("batch %s: no other node took its standby", batch_id)
        return 0
    with session_scope() as session:
        try:
            plan = load_batch_plan(session, batch_id)
        except NotFoundError:
            return 0
    if plan.status == BatchStatus.RETIRED or (plan.source or "").lower() == "evm":
        return 0  # retired, or an EVM batch: its successor back-fills
    cid = runtime.consumer_id(next(_slots))
    keeper = standby.Standby(batch_id, cid, open_source(plan, settings))
    if not keeper.claim():
        return 0
    log.info("batch %s: standby %s on %s for owner %s", batch_id, cid, agent.node_id, owner_node)
    stop = threading.Event()
    hook = runtime.on_shutdown(stop.set)
    agent.standing_by(+1)
    try:
        taken = keeper.wait(stop)
    finally:
        agent.standing_by(-1)
        runtime.forget_shutdown_hook(hook)
    if taken is None:
        log.info("batch %s: standby %s stops", batch_id, cid)
        return 0
    lease, source = taken
    return _serve(self.request, plan, lease, lambda: source, stop)


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0  # noqa: E721 (a bool is no count)
