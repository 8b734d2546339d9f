"""Which adapter serves a batch: the config's `source` column (the simulator speaks the feed
protocol)."""

from __future__ import annotations

from kakarot_workers.errors import ConfigError
from kakarot_workers.settings import Settings
from kakarot_workers.sources import SOURCE_KINDS, BatchPlan, Source
from kakarot_workers.sources.feed import FeedSource


def open_source(plan: BatchPlan, settings: Settings, checkpoint: int | None = None) -> Source:
    """The adapter for a batch: the config's `source` column (the simulator speaks the feed
    protocol). `checkpoint` is the last block the batch's previous owner emitted (EVM)."""
    name = (plan.source or "simulator").lower()
    if name == "evm":
        # imported here: eth-abi and pycryptodome add ~7 MB to a worker that serves no EVM batch
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
    return FeedSource(
        url,
        plan.chain,
        plan.tokens,
        idle_timeout_s=settings.source_idle_timeout_s,
        max_backoff_s=settings.reconnect_max_backoff_s,
        plausible=settings.plausible,
    )
