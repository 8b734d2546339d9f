"""Beat's scheduler: RedBeat, riding out a Redis outage instead of exiting.

RedBeat keeps the schedule in Redis and holds a lock there, so a second beat waits as a
standby. As it ships, a beat started while Redis is away exits (its schedule is set up when the
scheduler is made), the lock is taken by a blocking call at start-up (a standby never ticks),
a Redis error in a tick (reading the schedule, extending the lock, sending a job) ends the beat
process, and a lock lost while Redis was away (expired, or gone with a restart that lost the
data) ends it at the next tick. This scheduler waits instead: the schedule is set up at the
first tick that reaches Redis; while Redis does not answer, each tick sleeps
`beat_max_interval_s` and tries again; the lock is tried without blocking at every tick (a
standby ticks too, and says so in its heartbeat; `worker` disconnects RedBeat's start-up
lock). After an outage or a lost lock the schedule is set up again (idempotent; a Redis
restarted without its data has lost it, and RedBeat would then send nothing). `celeryconfig`
names it as `beat_scheduler`.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import kombu.exceptions
import redis
from redbeat import RedBeatScheduler
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, get_redis
from redis.exceptions import LockError

from kakarot_workers import metrics, probes, queues, runtime
from kakarot_workers.settings import get_settings
from kakarot_workers.streams.node import queues_without_workers

log = logging.getLogger(__name__)

REDIS_DOWN = (redis.RedisError, kombu.exceptions.OperationalError, ConnectionError, OSError)


class Scheduler(RedBeatScheduler):
    _down = False
    _unserved_checked = 0.0
    _schedule_ready = False

    def setup_schedule(self) -> None:
        """Deferred to the first tick that reaches Redis (see the module's docstring)."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            if self.lock_key and not self._hold_lock():
                self._beat("standby")
                return float(self.max_interval)  # a standby: another beat holds the lock
            if not self._schedule_ready:
                super().setup_schedule()
                self._schedule_ready = True
            interval = float(super().tick(*args, **kwargs))
            self._beat("leader")
            self._warn_of_unserved_queues()
        except LockError:
            log.warning("beat: lost the lock (Redis expired or lost it); taking it again")
            self.lock = None
            self._schedule_ready = False  # Redis may have lost the schedule with it
            return float(self.max_interval)
        except REDIS_DOWN as exc:
            self._schedule_ready = False  # Redis may come back without its data
            if not self._down:
                self._down = True
                log.warning(
                    "beat: Redis unreachable (%s); trying again every %ss",
                    str(exc)[:200],
                    self.max_interval,
                )
            return float(self.max_interval)
        if self._down:
            self._down = False
            log.warning("beat: Redis answers again; scheduling")
        return interval

    def close(self) -> None:
        try:
            super().close()
        except REDIS_DOWN as exc:  # the lock lapses by itself
            log.warning("beat: could not release the lock (%s)", str(exc)[:200])

    def _beat(self, role: str) -> None:
        """This beat's heartbeat (`kakarot health beat` reads it): alive and reaching Redis."""
        probes.note_tick()
        metrics.BEAT_TICKS.labels(role).inc()
        ttl_ms = int(3 * 1000 * float(self.max_interval))
        runtime.redis_client().set(
            runtime.keys().beat_heartbeat(socket.gethostname(), role), int(time.time()), px=ttl_ms
        )

    def _warn_of_unserved_queues(self) -> None:
        """Jobs that wait on a queue no live worker consumes never run: say so, naming the
        worker to start (a fleet started without `-Q control` allocates nothing, silently)."""
        now = time.monotonic()
        if now - self._unserved_checked < get_settings().beat_check_workers_s:
            return
        self._unserved_checked = now
        unserved = queues_without_workers(runtime.redis_client(), runtime.keys(), queues.ALL)
        for name, waiting in sorted(unserved.items()):
            if waiting:
                log.warning(
                    "beat: %d message(s) wait on queue %s and no live worker consumes it: "
                    "start one (celery -A kakarot_workers worker -Q %s)",
                    waiting,
                    name,
                    name,
                )

    def _hold_lock(self) -> bool:
        """Whether this beat holds the lock, taking it when it is free (never waiting)."""
        if self.lock is not None:
            return True
        client = get_redis(self.app)
        lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
        lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
        if not lock.acquire(blocking=False):
            return False
        log.info("beat: Acquired lock")
        self.lock = lock
        return True
