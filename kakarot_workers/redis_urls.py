"""`KAKAROT_REDIS_URL` as a client: one Redis (`redis://`, `rediss://`, `unix://`), or the
primary of a Redis Sentinel group (`sentinel://`).

A Sentinel URL lists the sentinels the way kombu's `sentinel://` transport reads it, so the
broker, RedBeat and every state client agree on one string:

    sentinel://[:password@]host:port[/db];sentinel://host:port;…

The password and the database number are the primary's (taken from the first sentinel); the
group's name is `KAKAROT_REDIS_SENTINEL_MASTER`. A client made here asks the sentinels where
the primary is, and asks again after a connection error, so it follows a failover.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "sentinel://"


@dataclass(frozen=True)
class SentinelGroup:
    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    password: str | None = None
    username: str | None = None


def sentinel_group(url: str) -> SentinelGroup | None:
    """The sentinels of a `sentinel://` URL; None for any other URL. ValueError when one of
    them has no host or port."""
    if not url.startswith(SENTINEL_SCHEME):
        return None
    sentinels = []
    db, password, username = 0, None, None
    for index, part in enumerate(p for p in url.split(";") if p.strip()):
        parsed = urlsplit(part.strip())
        if parsed.scheme != "sentinel" or not parsed.hostname or not parsed.port:
            raise ValueError("expected sentinel://host:port;sentinel://host:port…")
        sentinels.append((parsed.hostname, parsed.port))
        if index == 0:
            path = parsed.path.strip("/")
            db = int(path) if path.isdigit() else 0
            password = unquote(parsed.password) if parsed.password else None
            username = unquote(parsed.username) if parsed.username else None
    return SentinelGroup(tuple(sentinels), db, password, username)


def connect(url: str, master: str, **options: Any) -> redis.Redis:
    """A client of `url` (for a Sentinel URL: of the group's primary, wherever it is)."""
    group = sentinel_group(url)
    if group is None:
        return redis.Redis.from_url(url, **options)
    sentinel_options = {k: v for k, v in options.items() if k.startswith("socket_")}
    manager = Sentinel(list(group.sentinels), sentinel_kwargs=sentinel_options, **options)
    client: redis.Redis = manager.master_for(
        master, db=group.db, password=group.password, username=group.username
    )
    return client
