"""Where a batch goes: the healthy streams node with the fewest batches (the notes'
`select_node_for_portfolio`).

Every streams worker consumes the shared `streams` queue and a queue of its own,
`streams.<node id>` (`celery.KakarotWorker`). Dispatching a batch picks, among the nodes whose
heartbeat is fresh, that serve `streams`, are not going down and have a free slot, the one with
the fewest batches (then the lowest CPU, then the name), and sends the batch to its queue; with
no such node known the batch goes to the shared queue, where the first free slot takes it.

A node's count is its metrics hash (`portfolio_count`, refreshed whenever it takes or drops a
batch, see `node.NodeAgent.hold`) plus the batches on their way to it: a dispatch marker holds
the node it was sent to until the consumer takes the lease, so several batches placed in a row,
by one reconcile pass or by several, spread instead of piling on the node that looked idlest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from kakarot_workers.keys import Keys
from kakarot_workers.streams.node import live_nodes, serves_streams

# A dispatch marker's value when the batch went to the shared queue.
ANY_NODE = "*"


@dataclass(frozen=True)
class NodeLoad:
    """A streams node as placement sees it."""

    node_id: str
    batches: int  # batches it serves
    used: int  # slots taken: batches and hot standbys
    slots: int  # 0: it does not say
    cpu: float

    def free(self, planned: int = 0) -> bool:
        return self.slots == 0 or self.used + planned < self.slots


def node_loads(client: redis.Redis, keys: Keys, *, full: bool = False) -> list[NodeLoad]:
    """Every live streams node that could take a batch (`full`: and those with no free slot),
    not going down, with its load."""
    loads = [
        NodeLoad(
            node_id=node_id,
            batches=int(metrics.get("batch_count") or 0),
            used=int(metrics.get("batch_count") or 0) + int(metrics.get("standby_count") or 0),
            slots=int(metrics.get("slots") or 0),
            cpu=float(metrics.get("cpu_usage") or 0.0),
        )
        for node_id, metrics in live_nodes(client, keys).items()
        if serves_streams(metrics)
    ]
    return loads if full else [n for n in loads if n.free()]


def in_flight(client: redis.Redis, keys: Keys, batch_ids: Iterable[int]) -> Counter[str]:
    """Batches dispatched to each node and not taken yet (their markers name the node)."""
    ids = list(batch_ids)
    if not ids:
        return Counter()
    values = client.mget([keys.batch_dispatch(b) for b in ids])
    return Counter(str(v) for v in values if v is not None and v not in (ANY_NODE, "1"))


def choose(
    loads: Iterable[NodeLoad], planned: Counter[str], exclude: Iterable[str] = ()
) -> str | None:
    """The node with the fewest batches counting `planned` ones (ties: lower CPU, then the
    name) that has a free slot; None when there is none."""
    skip = set(exclude)
    fits = [n for n in loads if n.node_id not in skip and n.free(planned[n.node_id])]
    if not fits:
        return None
    best = min(fits, key=lambda n: (n.batches + planned[n.node_id], n.cpu, n.node_id))
    return best.node_id
