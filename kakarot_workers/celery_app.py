"""The Celery application: configuration from `celeryconfig`, task modules, process signals.

A worker that consumes `streams` takes a message only when a pool slot is free (stream tasks
hold their slot for hours); other workers prefetch (`KAKAROT_WORKER_PREFETCH_MULTIPLIER`).

A worker that consumes only the `streams` queue and was started without `-P`/`-c` gets the
threads pool with `KAKAROT_STREAMS_CONCURRENCY` slots (default 64): each stream consumer holds
one slot for as long as it serves its batch, so `celery -A kakarot_workers worker -Q streams`
holds 64 batches. Other workers keep Celery's defaults (prefork, one child per core).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from celery.apps.worker import Worker
from celery.concurrency import get_implementation
from celery.concurrency.prefork import TaskPool as PreforkPool
from kombu.utils.objects import cached_property

from kakarot_workers import logs, node, notify, runtime
from kakarot_workers.db.session import dispose_engines
from kakarot_workers.settings import get_settings

STREAMS_QUEUE = "streams"


def _names(queues: Any) -> set[str]:
    if isinstance(queues, str):
        queues = queues.split(",")
    return {q.strip() for q in queues or ()}


def serves_only_streams(queues: Any) -> bool:
    return _names(queues) == {STREAMS_QUEUE}


def serves_streams(queues: Any, excluded: Any = None) -> bool:
    """The worker consumes `streams` (no `-Q`: every queue, `streams` among them)."""
    return STREAMS_QUEUE in (_names(queues) or {STREAMS_QUEUE}) - _names(excluded)


class KakarotWorker(Worker):  # type: ignore[misc]
    """Celery's worker, with stream-friendly pool defaults for a streams-only worker."""

    def setup_defaults(self, *args: Any, **kwargs: Any) -> None:
        super().setup_defaults(*args, **kwargs)
        if serves_streams(kwargs.get("queues"), kwargs.get("exclude_queues")):
            # Before the consumer starts: it reads this when it sets up its QoS.
            self.app.conf.worker_disable_prefetch = True
        if not serves_only_streams(kwargs.get("queues")):
            return
        settings = get_settings()
        # `-P` defaults to prefork on the command line, so prefork here means "not chosen".
        if self.pool_cls in (PreforkPool, "prefork") and settings.streams_pool != "prefork":
            self.pool_cls = get_implementation(settings.streams_pool)
        if not self.concurrency:
            self.concurrency = settings.streams_concurrency


class KakarotCelery(Celery):  # type: ignore[misc]
    @cached_property
    def Worker(self) -> type[Worker]:  # noqa: N802 (Celery's name)
        return self.subclass_with_self(KakarotWorker)  # type: ignore[no-any-return]


app = KakarotCelery(
    "kakarot_workers",
    include=[
        "kakarot_workers.stream",
        "kakarot_workers.alerts",
        "kakarot_workers.delivery",
        "kakarot_workers.jobs",
    ],
)
app.config_from_object("celeryconfig")

log = logging.getLogger(__name__)


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    logs.configure()


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A forked pool child must not reuse the parent's sockets.
    dispose_engines()
    runtime.forget_inherited_clients()
    notify.reset(close=False)


@signals.worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    # The node: heartbeat, metrics and the DB rows of the batches this process serves.
    queues = ",".join(sorted(sender.app.amqp.queues.consume_from)) if sender else ""
    node_id = getattr(sender, "hostname", None) or runtime.consumer_id()
    node.start(node_id, queues)
    log.info("node %s up (queues %s)", node_id, queues)
    if "notify" in queues.split(","):
        # Notifications left behind by a worker that died between two steps.
        sender.app.send_task("kakarot.notify.sweep_outbox")


@signals.worker_shutting_down.connect
def _on_shutting_down(sig: str = "", how: str = "", **_: Any) -> None:
    # Sent in the main process on SIGTERM/SIGINT; stream consumers (threads) see the flag,
    # flush their pending events, release their leases and return, so the warm shutdown can
    # complete and another worker can take their batches at once.
    log.info("worker shutting down (%s %s): stopping stream consumers", how, sig)
    runtime.request_shutdown()


@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    node.stop()
    dispose_engines()
