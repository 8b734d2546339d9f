"""Process-wide resources: the Redis client, the key names, and the shutdown flag.

Each is made once per process (and made again after a fork); Celery signals in `celery_app`
reset them at the right moments, so task code simply calls these functions.
"""

from __future__ import annotations

import os
import socket
import threading

import redis

from kakarot_workers.keys import Keys
from kakarot_workers.settings import get_settings

# Set when the worker begins a warm shutdown: long-running stream consumers watch it,
# flush what they hold, and return so the pool can stop.
shutdown_requested = threading.Event()

_consumer_stops: set[threading.Event] = set()
_clients: dict[int, redis.Redis] = {}
_lock = threading.Lock()


def redis_client() -> redis.Redis:
    """This process's Redis client (thread-safe connection pool), strings decoded."""
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        with _lock:
            client = _clients.get(pid)
            if client is None:
                client = redis.Redis.from_url(
                    get_settings().redis_url, decode_responses=True, health_check_interval=30
                )
                _clients[pid] = client
    return client


def forget_inherited_clients() -> None:
    """Drop clients made by a parent process; their sockets must not be shared after fork."""
    pid = os.getpid()
    for other in [p for p in _clients if p != pid]:
        _clients.pop(other, None)


def request_shutdown() -> None:
    """Ask every stream consumer of this process to flush and return."""
    shutdown_requested.set()
    with _lock:
        for event in _consumer_stops:
            event.set()


def consumer_stop_event() -> threading.Event:
    """A stop flag for one consumer, set by `request_shutdown` or by its own control plane."""
    event = threading.Event()
    with _lock:
        _consumer_stops.add(event)
    if shutdown_requested.is_set():
        event.set()
    return event


def release_stop_event(event: threading.Event) -> None:
    with _lock:
        _consumer_stops.discard(event)


def keys() -> Keys:
    return Keys(get_settings().redis_key_prefix)


def consumer_id(slot: str | int | None = None) -> str:
    """`hostname-pid` (plus the slot), the identity of one stream consumer."""
    base = f"{socket.gethostname()}-{os.getpid()}"
    return f"{base}-{slot}" if slot is not None else base
