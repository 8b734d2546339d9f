"""The Celery application: configuration, task modules, and the worker's pool defaults.

`celery -A kakarot_workers …` finds `app` here. Importing this module creates the app and
imports no stage: the task modules and `worker` (signals and bootsteps) are listed in `include`,
which a worker or beat imports when it starts.

A worker that consumes `streams` takes a message only when a pool slot is free (stream tasks
hold their slot for hours); other workers prefetch (`KAKAROT_WORKER_PREFETCH_MULTIPLIER`).
A worker that consumes only the `streams` queue and was started without `-P`/`-c` gets the
threads pool with `KAKAROT_STREAMS_CONCURRENCY` slots (default 64): each stream consumer holds
one slot for as long as it serves its batch, so `celery -A kakarot_workers worker -Q streams`
holds 64 batches. Other workers keep Celery's defaults (prefork, one child per core).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from celery import Celery, Task
from celery.apps.worker import Worker
from celery.concurrency import get_implementation
from celery.concurrency.prefork import TaskPool as PreforkPool
from kombu.utils.objects import cached_property

from kakarot_workers import deadletters, queues
from kakarot_workers.settings import get_settings

TASK_MODULES = (
    "kakarot_workers.streams.tasks",
    "kakarot_workers.alerts.tasks",
    "kakarot_workers.notify.tasks",
    "kakarot_workers.control.tasks",
)


def _names(queue_names: Any) -> set[str]:
    if isinstance(queue_names, str):
        queue_names = queue_names.split(",")
    return {q.strip() for q in queue_names or ()}


# What a worker started with no `-Q` serves: everything but the stream consumers, whose tasks
# hold a pool slot for hours and would starve the rest (they get a worker of their own).
PLAIN_QUEUES = (queues.ALERTS, queues.NOTIFY, queues.CONTROL)
STREAMS_ON_PREFORK = (
    "this worker would serve `streams` on the prefork pool, where a stream consumer cannot hand "
    "its batch over on shutdown: run the consumers on their own worker (celery -A "
    "kakarot_workers worker -Q streams) or give this one -P threads"
)


def serves_only_streams(queue_names: Any) -> bool:
    return _names(queue_names) == {queues.STREAMS}


def serves_streams(queue_names: Any, excluded: Any = None) -> bool:
    """The worker consumes `streams` (a worker with no `-Q` does not: see PLAIN_QUEUES)."""
    return queues.STREAMS in _names(queue_names) - _names(excluded)


class KakarotWorker(Worker):
    """Celery's worker, with the fleet's defaults: a streams-only worker gets the threads pool
    and its slots; a worker with no `-Q` serves PLAIN_QUEUES (and says so); a worker that would
    serve `streams` on the prefork pool refuses to start, with the flags to use."""

    pool_cls: Any
    concurrency: Any
    plain = False

    def prepare_args(self, **kwargs: Any) -> Any:
        # Gossip (workers watching each other's events) is of no use to the fleet, and Celery
        # fails to restart it after the broker comes back (an error and a traceback each time)
        kwargs = {**kwargs, "without_gossip": True}
        if not kwargs.get("queues"):
            kwargs["queues"] = ",".join(PLAIN_QUEUES)
        return super().prepare_args(**kwargs)

    def setup_defaults(self, *args: Any, **kwargs: Any) -> None:
        super().setup_defaults(*args, **kwargs)
        self.plain = not kwargs.get("queues")
        streams = serves_streams(kwargs.get("queues"), kwargs.get("exclude_queues"))
        if streams:
            # Before the consumer starts: it reads this when it sets up its QoS.
            self.app.conf.worker_disable_prefetch = True
        if serves_only_streams(kwargs.get("queues")):
            settings = get_settings()
            # `-P` defaults to prefork on the command line, so prefork here means "not chosen".
            if self.pool_cls in (PreforkPool, "prefork") and settings.streams_pool != "prefork":
                self.pool_cls = get_implementation(settings.streams_pool)
            if not self.concurrency:
                self.concurrency = settings.streams_concurrency
        if streams and self.pool_cls in (PreforkPool, "prefork"):
            raise SystemExit(f"error: {STREAMS_ON_PREFORK}")

    def on_consumer_ready(self, consumer: Any) -> None:
        super().on_consumer_ready(consumer)
        if self.plain:
            logging.getLogger(__name__).warning(
                "no -Q given: this worker serves %s; stream consumers need a worker of their "
                "own: celery -A kakarot_workers worker -Q streams",
                ", ".join(PLAIN_QUEUES),
            )


class KakarotTask(Task):
    """A task of ours: a message whose arguments do not fit the task, or that the task finds
    of the wrong shape (`poison`), goes to the queue's dead letters instead of failing with a
    traceback or being retried."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            _signature(self).bind(*args, **kwargs)
        except TypeError as exc:
            self.poison(f"arguments that do not fit {self.name}: {exc}", args, kwargs)
            return None
        return super().__call__(*args, **kwargs)

    def poison(self, reason: str, args: Any = None, kwargs: Any = None) -> None:
        """Move this message aside (its task, arguments and `reason`)."""
        request = self.request
        deadletters.put(
            queue_of(self.name),
            reason,
            task=self.name,
            args=list(request.args or ()) if args is None else list(args),
            kwargs=dict(request.kwargs or {}) if kwargs is None else dict(kwargs),
        )


_signatures: dict[type, inspect.Signature] = {}


def _signature(task: Task) -> inspect.Signature:
    """The arguments a task takes (its `run`, without `self` when it is bound), by task class."""
    found = _signatures.get(type(task))
    if found is None:
        found = _signatures[type(task)] = inspect.signature(task.run)
    return found


def queue_of(task_name: str) -> str:
    """The queue a task of ours goes to: `kakarot.<queue>.<name>`."""
    parts = task_name.split(".")
    return parts[1] if len(parts) == 3 and parts[1] in queues.ALL else queues.CONTROL


class KakarotCelery(Celery):
    task_cls = KakarotTask

    @cached_property
    def Worker(self) -> type[Worker]:  # noqa: N802 (Celery's name)
        return self.subclass_with_self(KakarotWorker)  # type: ignore[no-any-return]


app = KakarotCelery(
    "kakarot_workers",
    include=[*TASK_MODULES, "kakarot_workers.worker"],
    task_cls=KakarotTask,
)
app.config_from_object("kakarot_workers.celeryconfig")
