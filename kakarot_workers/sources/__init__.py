"""Source adapters: where a batch's live subscription comes from.

A source yields `SwapEvent`s for the batch's tokens, and `None` whenever `tick_s` passes with no
frame, so the consumer can flush and refresh its heartbeat. It reconnects by itself and only
returns when `stop` is set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from kakarot_workers.errors import ConfigError
from kakarot_workers.events import SwapEvent, event_key
from kakarot_workers.settings import Settings


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


@dataclass
class SourceStats:
    frames: int = 0
    frames_rejected: int = 0
    reconnects: int = 0
    live: bool = False  # subscribed and receiving: the batch is covered


@dataclass(frozen=True)
class Retraction:
    """A swap withdrawn by a chain re-org (a `removed: true` log): it must not alert."""

    chain: str
    tx_hash: str
    log_index: int
    block_number: int | None

    @property
    def key(self) -> str:
        return event_key(self.chain, self.tx_hash, self.log_index)


class Source(Protocol):
    stats: SourceStats

    def events(self, stop: threading.Event) -> Iterator[SwapEvent | Retraction | None]: ...


SOURCE_KINDS = ("feed", "simulator", "evm")


def open_source(plan: BatchPlan, settings: Settings, checkpoint: int | None = None) -> Source:
    """The adapter for a batch: the config's `source` column (the simulator speaks the feed
    protocol). `checkpoint` is the last block the batch's previous owner emitted (EVM)."""
    name = (plan.source or "simulator").lower()
    if name == "evm":
        from kakarot_workers.sources.evm import open_evm_source

        return open_evm_source(plan, settings, checkpoint)
    if name == "feed":
        url = settings.feed_url
    elif name == "simulator":
        url = settings.simulator_url
    else:
        raise ConfigError(
            f"source {plan.source!r} of task {plan.task_id} is not supported: "
            f"expected one of {', '.join(SOURCE_KINDS)}"
        )
    from kakarot_workers.sources.feed import FeedSource

    return FeedSource(
        url,
        plan.chain,
        plan.tokens,
        idle_timeout_s=settings.source_idle_timeout_s,
        max_backoff_s=settings.reconnect_max_backoff_s,
    )
