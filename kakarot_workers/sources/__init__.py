"""Source adapters: where a batch's live subscription comes from.

A source yields `SwapEvent`s for the batch's tokens, and `None` whenever `tick_s` passes with no
frame, so the consumer can flush and refresh its heartbeat. It reconnects by itself and only
returns when `stop` is set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from kakarot_workers.errors import ConfigError
from kakarot_workers.events import SwapEvent
from kakarot_workers.settings import Settings


@dataclass
class SourceStats:
    frames: int = 0
    frames_rejected: int = 0
    reconnects: int = 0
    live: bool = False  # subscribed and receiving: the batch is covered


class Source(Protocol):
    stats: SourceStats

    def events(self, stop: threading.Event) -> Iterator[SwapEvent | None]: ...


SOURCE_KINDS = ("feed", "simulator")


def open_source(kind: str | None, chain: str, tokens: list[str], settings: Settings) -> Source:
    """The adapter for a task's `source` (config column); the simulator speaks the feed protocol."""
    from kakarot_workers.sources.feed import FeedSource

    name = (kind or "simulator").lower()
    if name == "feed":
        url = settings.feed_url
    elif name == "simulator":
        url = settings.simulator_url
    else:
        raise ConfigError(
            f"source {kind!r} is not supported: expected one of {', '.join(SOURCE_KINDS)}"
        )
    return FeedSource(
        url,
        chain,
        tokens,
        idle_timeout_s=settings.source_idle_timeout_s,
        max_backoff_s=settings.reconnect_max_backoff_s,
    )
