"""Source adapters: where a batch's live subscription comes from.

A source yields `SwapEvent`s for the batch's tokens, and `None` whenever `tick_s` passes with no
frame, so the consumer can flush and refresh its heartbeat. It reconnects by itself and only
returns when `stop` is set. This module holds what every adapter shares; `registry.open_source`
picks the adapter of a batch (`feed`, `evm`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from kakarot_workers.events import SwapEvent, event_key


@dataclass(frozen=True)
class BatchPlan:
    """What one stream consumer serves: a batch's tokens, with the task's chain and source."""

    batch_id: int
    task_id: int
    epoch: int
    chain: str
    source: str | None
    tokens: list[str]
    status: str
    task_type: str = "batch"
    # CA → its pair address, where the target names one (EVM sources)
    pairs: dict[str, str] = field(default_factory=dict)
    # when the batch was created (ms): a first consumer covers it from there where it can
    created_ms: int | None = None


@dataclass
class SourceStats:
    frames: int = 0
    frames_rejected: int = 0
    reconnects: int = 0
    live: bool = False  # subscribed and receiving: the batch is covered
    # from when (ms) the source covers the batch: set once, at the first subscription (a feed)
    # or the first block it reads (a back-fill)
    since_ms: int | None = None
    # frames refused since the consumer last took them, by reason (a field, `frame`, `log`)
    rejects: Counter[str] = field(default_factory=Counter)
    # how many of the batch's tokens the source says it covers (a feed's `subscribed {count}`);
    # None: it does not say
    covered: int | None = None

    def progress(self, tokens: int) -> int:
        """What a backend heartbeat calls a batch's progress: the share (%) of its tokens the
        live source covers; 100 when live and the source does not count; 0 when not live."""
        if not self.live:
            return 0
        if self.covered is None or tokens <= 0:
            return 100
        return max(0, min(100, round(100 * self.covered / tokens)))

    def went_live(self) -> None:
        """Subscribed and receiving; the first time, the batch is covered from now on."""
        self.live = True
        if self.since_ms is None:
            self.since_ms = int(time.time() * 1000)

    def reject(self, reason: str) -> None:
        self.frames_rejected += 1
        self.rejects[reason] += 1

    def take_rejects(self) -> Counter[str]:
        """The rejects by reason since the last call (the consumer counts them durably)."""
        taken, self.rejects = self.rejects, Counter()
        return taken


@dataclass(frozen=True)
class Retraction:
    """A swap withdrawn by a chain re-org (a `removed: true` log): it must not alert."""

    chain: str
    tx_hash: str
    log_index: int
    block_number: int | None
    ca: str = ""  # the batch's token it traded, where the source knows it

    @property
    def key(self) -> str:
        return event_key(self.chain, self.tx_hash, self.log_index)


class Source(Protocol):
    stats: SourceStats

    def events(self, stop: threading.Event) -> Iterator[SwapEvent | Retraction | None]: ...


SOURCE_KINDS = ("feed", "simulator", "evm")
