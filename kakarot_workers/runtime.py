"""Process-wide resources: the Redis client, the key names, and the shutdown flag.

Each is made once per process (and made again after a fork); the worker's signals
(`kakarot_workers.worker`) reset them at the right moments, so task code simply calls these.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

import redis

from kakarot_workers.keys import Keys
from kakarot_workers.redis_urls import connect
from kakarot_workers.settings import get_settings

# Set when the worker begins a shutdown. Each stream consumer registers a hook that decides how
# to leave: hand its batch over if it is live, stop at once otherwise.
shutdown_requested = threading.Event()

_shutdown_hooks: dict[int, Callable[[], None]] = {}
_clients: dict[int, redis.Redis] = {}
_lock = threading.Lock()


def redis_client() -> redis.Redis:
    """This process's Redis client (thread-safe connection pool), strings decoded; with a
    Sentinel URL, of the group's primary wherever it is (`redis_urls`)."""
    pid = os.getpid()
    client = _clients.get(pid)
    if client is None:
        with _lock:
            client = _clients.get(pid)
            if client is None:
                settings = get_settings()
                client = connect(
                    settings.redis_url,
                    settings.redis_sentinel_master,
                    decode_responses=True,
                    health_check_interval=30,
                )
                _clients[pid] = client
    return client


def forget_inherited_clients() -> None:
    """Drop clients made by a parent process; their sockets must not be shared after fork."""
    pid = os.getpid()
    for other in [p for p in _clients if p != pid]:
        _clients.pop(other, None)


def request_shutdown() -> None:
    """Tell every stream consumer of this process that the worker is going down."""
    shutdown_requested.set()
    with _lock:
        hooks = list(_shutdown_hooks.values())
    for hook in hooks:
        hook()


def on_shutdown(hook: Callable[[], None]) -> int:
    """Register `hook` to run when the worker shuts down (at once if it already is); returns a
    handle for `forget_shutdown_hook`."""
    handle = id(hook)
    with _lock:
        _shutdown_hooks[handle] = hook
    if shutdown_requested.is_set():
        hook()
    return handle


def forget_shutdown_hook(handle: int) -> None:
    with _lock:
        _shutdown_hooks.pop(handle, None)


def keys() -> Keys:
    return Keys(get_settings().redis_key_prefix)


def consumer_id(slot: str | int | None = None) -> str:
    """`hostname-pid`: this process's identity towards the backend (the notes' consumer id: the
    protocol's `register`, the batch rows' `consumer_id`). With a slot, `hostname-pid-slot`:
    one stream consumer of the process, where several must be told apart (its lease, its
    status hash, its log lines)."""
    base = f"{socket.gethostname()}-{os.getpid()}"
    return f"{base}-{slot}" if slot is not None else base


def worker_id(node_name: str, pid: int | None = None) -> str:
    """`pid@nodename`: a worker process, as the batch rows' `worker_id` names it (the notes)."""
    return f"{os.getpid() if pid is None else pid}@{node_name}"


def row_identity(
    consumer: str | None, pid: int | None, node_name: str | None
) -> tuple[str | None, str | None]:
    """The batch rows' (consumer_id, worker_id) of a stream consumer known by its own id
    (`hostname-pid-slot`), pid and node: `hostname-pid` and `pid@nodename`."""
    process = consumer.rsplit("-", 1)[0] if consumer and consumer.count("-") >= 2 else consumer
    worker = worker_id(node_name, pid) if node_name and pid else node_name
    return process, worker
