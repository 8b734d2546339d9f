"""The Celery application: configuration, task modules, and the worker's pool defaults.

`celery -A kakarot_workers …` finds `app` here. Importing this module creates the app and
imports no stage: the task modules and `worker` (signals and bootsteps) are listed in `include`,
which a worker or beat imports when it starts.

A worker that consumes `streams` takes a message only when a pool slot is free (stream tasks
hold their slot for hours); other workers prefetch (`KAKAROT_WORKER_PREFETCH_MULTIPLIER`).
A worker that consumes only the `streams` queue and was started without `-P`/`-c` gets the
threads pool with `KAKAROT_STREAMS_CONCURRENCY` slots (default 64): each stream consumer holds
one slot for as long as it serves its batch, so `celery -A kakarot_workers worker -Q streams`
holds 64 batches. It also consumes a queue of its own, `streams.<node name>`, where the batches
placed on it arrive (`streams.placement`). Other workers keep Celery's defaults (prefork, one
child per core).
"""

from __future__ import annotations

import inspect
import logging
import uuid
from typing import Any, NoReturn

import kombu.exceptions
import msgspec
import redis
from celery import Celery, Task
from celery.apps.worker import Worker
from celery.concurrency import get_implementation
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.exceptions import Reject
from kombu.entity import Queue
from kombu.utils.objects import cached_property
from sqlalchemy.exc import SQLAlchemyError

from kakarot_workers import deadletters, queues
from kakarot_workers.reconnect import backoff, store_unreachable
from kakarot_workers.settings import get_settings

log = logging.getLogger(__name__)

# A failure of a store that is not an outage (see KakarotTask): retried this many times, the
# back-off capped at this; then the message goes to the dead letters.
STORE_ERROR_RETRIES = 40
STORE_ERROR_MAX_BACKOFF_S = 30.0
STORE_ERRORS = (SQLAlchemyError, redis.RedisError, kombu.exceptions.OperationalError)

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

    def setup_queues(self, include: Any, exclude: Any = None) -> None:
        super().setup_queues(include, exclude)
        if queues.STREAMS in self.app.amqp.queues.consume_from:
            # its own queue too: the batches placed on this node (`streams.placement`)
            self.app.amqp.queues.select_add(Queue(queues.node_queue(self.hostname)))

    def on_consumer_ready(self, consumer: Any) -> None:
        super().on_consumer_ready(consumer)
        if self.plain:
            log.warning(
                "no -Q given: this worker serves %s; stream consumers need a worker of their "
                "own: celery -A kakarot_workers worker -Q streams",
                ", ".join(PLAIN_QUEUES),
            )


class KakarotTask(Task):
    """A task of ours: a message whose arguments do not fit the task, or that the task finds
    of the wrong shape (`poison`), goes to the queue's dead letters instead of failing with a
    traceback or being retried.

    A task declared with `retry_store_errors=True` retries when the database or Redis fails:
    while the store is away (`reconnect.store_unreachable`: stopped, restarting, locked) without
    limit, the back-off capped at `KAKAROT_OUTAGE_RETRY_MAX_S`, so that the work catches up
    within seconds of the store coming back; after any other store error up to `max_retries`
    times, then the message goes to the dead letters with the error (never dropped).

    A periodic job declared with `skip_while_store_away=True` does nothing while the store is
    away (beat sends it again at its next tick). Either way a worker says once that a store is
    away, not once per message, and once that it answers again."""

    retry_store_errors = False
    skip_while_store_away = False
    max_retries = STORE_ERROR_RETRIES

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            _signature(self).bind(*args, **kwargs)
        except TypeError as exc:
            self.poison(f"arguments that do not fit {self.name}: {exc}", args, kwargs)
            return None
        handles = self.retry_store_errors or self.skip_while_store_away
        if not handles or self.request.called_directly:
            return super().__call__(*args, **kwargs)
        try:
            result = super().__call__(*args, **kwargs)
        except STORE_ERRORS as exc:
            return self._after_store_error(exc, args, kwargs)
        _stores_answer()
        return result

    def _after_store_error(self, exc: Exception, args: Any, kwargs: Any) -> None:
        attempts = self.request.retries
        if store_unreachable(exc):
            _store_away(exc)
            if self.skip_while_store_away:
                return None
            wait_s = backoff(attempts, get_settings().outage_retry_max_s)
            self._retry(exc, countdown=wait_s, max_retries=attempts + 1)
        if not self.retry_store_errors:
            raise exc
        if attempts >= (self.max_retries or 0):
            reason = f"gave up after {attempts + 1} attempts: {type(exc).__name__}: {exc}"
            self.poison(reason[:500], args, kwargs)
            return None
        self._retry(exc, countdown=backoff(attempts, STORE_ERROR_MAX_BACKOFF_S))
        return None

    def _retry(self, exc: Exception, **options: Any) -> NoReturn:
        """`Task.retry`; when the retry cannot be sent (the broker is away too), Celery would
        reject the message for good: it goes back to its queue instead (and while Redis does not
        take even that, it stays unacknowledged and comes back after the visibility timeout)."""
        try:
            raise self.retry(exc=exc, **options)
        except Reject as rejected:
            raise Reject(rejected.reason, requeue=True) from exc

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


# The stores this worker process found away ("Redis", "the database"): said once, until a task
# completes again.
_away: set[str] = set()


def _store_away(exc: Exception) -> None:
    store = (
        "Redis"
        if isinstance(exc, redis.RedisError | kombu.exceptions.OperationalError)
        else ("the database")
    )
    if store not in _away:
        _away.add(store)
        log.warning(
            "%s unreachable (%s); tasks wait and retry until it answers",
            store,
            str(exc).splitlines()[0][:200],
        )


def _stores_answer() -> None:
    if _away:
        log.warning("%s answer(s) again", " and ".join(sorted(_away)))
        _away.clear()


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


_encode_json = msgspec.json.Encoder().encode


def send_packed(name: str, args: list[Any], *, queue: str, argsrepr: str) -> None:
    """Send task `name` with `args` to `queue`: the same Celery message `app.send_task` makes
    (protocol 2, JSON, read by any worker), made for a hot path. Its body is encoded by msgspec
    (a tenth of the standard library's cost for a micro-batch of numbers), and no `task-sent`
    event goes with it (Flower sees the task when a worker receives it: one publish, not two).
    No retries: raises while the broker is away, like `send_task(retry=False)`."""
    message = app.amqp.create_task_message(
        str(uuid.uuid4()), name, args, {}, argsrepr=argsrepr, kwargsrepr="{}"
    )
    body = _encode_json(message.body)  # (args, kwargs, embed): what the json serializer writes
    with app.producer_or_acquire() as producer:
        app.amqp.send_task_message(
            producer,
            name,
            message._replace(body=body),
            queue=queue,
            retry=False,
            content_type="application/json",  # kombu sends a body it is given typed as-is
            content_encoding="utf-8",
        )
