"""Evening out the streams nodes: beat moves one batch at a time from the busiest node to the
idlest, with the consumers' zero-gap hand-over.

Placement (`streams.placement`) puts each new batch on the least-loaded node, but batches stay
where they are: a node that joins later, or comes back, gets nothing until something else
moves. Each `rebalance` pass (beat, every `beat_rebalance_s`):

- counts the live batches of every live streams node (the consumers' status keys: running, and
  the lease still theirs), skipping the pass while any batch is changing hands (a dispatch
  pending, a hand-over released and not taken, a successor not yet fenced) or a move ordered is
  not taken up: one move at a time, fleet-wide;
- when the busiest node serves more than `rebalance_spread` batches more than the idlest (with
  a free slot), orders one of the busiest node's live batches, not moved within
  `rebalance_cooloff_s`, to move there: a `move` field `consumer>node` in the batch's control
  hash, which only that consumer obeys (`streams.consumer`, `streams.handover`).

`kakarot rebalance --dry-run` shows the whole plan (every move the passes would make, in
order) without ordering anything.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import redis

from kakarot_workers import runtime
from kakarot_workers.keys import Keys
from kakarot_workers.settings import get_settings
from kakarot_workers.status import BatchStatus
from kakarot_workers.streams import leases, placement
from kakarot_workers.streams.reporter import read_statuses

log = logging.getLogger(__name__)

# A move's order blocks the next for the hand-over's timeout and this much more: the consumer
# reads its control hash every second.
MOVE_MARGIN_S = 2.0


@dataclass(frozen=True)
class Move:
    batch_id: int
    consumer_id: str
    source: str
    target: str


@dataclass
class RebalancePlan:
    load: dict[str, int]  # live batches per live streams node, before any move
    moves: list[Move] = field(default_factory=list)
    waiting: str = ""  # why nothing moves now, when something is changing hands

    @property
    def spread(self) -> int:
        return max(self.load.values()) - min(self.load.values()) if self.load else 0


@dataclass(frozen=True)
class _Served:
    batch_id: int
    consumer_id: str
    node_id: str


def _served(client: redis.Redis, keys: Keys) -> tuple[list[_Served], list[int]]:
    """The batches served live (running, the lease its consumer's and fenced), and those
    changing hands: dispatched and not taken yet, released as a hand-over and not taken yet,
    or taken by a successor that has not raised the fence yet."""
    statuses = read_statuses(client, keys)
    ids = [s["batch_id"] for s in statuses]
    store = leases.store()
    holders, fences = store.holders(ids), store.fences(ids)
    pipe = client.pipeline(transaction=False)
    for batch_id in ids:
        pipe.exists(keys.batch_dispatch(batch_id), keys.batch_handover(batch_id))
    pending = dict(zip(ids, pipe.execute(), strict=True))
    live, moving = [], []
    for status in statuses:
        batch_id, consumer_id = status["batch_id"], status["consumer_id"] or ""
        holder, _, token = (holders.get(batch_id) or "").rpartition(":")
        if pending.get(batch_id) or (token and int(token) > fences[batch_id]):
            moving.append(batch_id)
        elif status["status"] == BatchStatus.RUNNING and holder == consumer_id:
            live.append(_Served(batch_id, consumer_id, status["worker_id"] or ""))
    return live, sorted(moving)


def plan(client: redis.Redis, keys: Keys, *, whole: bool = False) -> RebalancePlan:
    """The next move (or, `whole`, every move until the spread is within bounds)."""
    settings = get_settings()
    nodes = {n.node_id: n for n in placement.node_loads(client, keys, full=True)}
    live, moving = _served(client, keys)
    load = Counter({node_id: 0 for node_id in nodes})
    by_node: dict[str, list[_Served]] = {node_id: [] for node_id in nodes}
    for served in live:
        if served.node_id in nodes:
            load[served.node_id] += 1
            by_node[served.node_id].append(served)
    result = RebalancePlan(load=dict(sorted(load.items())))
    ordered = client.get(keys.rebalance_moving)
    if ordered and int(ordered) not in moving:
        if client.hexists(keys.batch_control(int(ordered)), "move"):
            moving.append(int(ordered))  # ordered, not taken up yet
        else:  # the last move is done (or was refused): the next need not wait
            client.delete(keys.rebalance_moving)
    if moving:
        result.waiting = f"batches changing hands: {', '.join(map(str, moving))}"
        if not whole:
            return result
    cooling = _cooling(client, keys, [s.batch_id for s in live])
    simulated = Counter(load)
    while len(nodes) > 1:
        busiest = max(simulated, key=lambda n: (simulated[n], n))
        idle = [n for n in nodes.values() if n.free(simulated[n.node_id] - load[n.node_id])]
        if not idle:
            break
        idlest = min(idle, key=lambda n: (simulated[n.node_id], n.cpu, n.node_id)).node_id
        if simulated[busiest] - simulated[idlest] <= settings.rebalance_spread:
            break
        movable = [s for s in by_node[busiest] if s.batch_id not in cooling]
        if not movable:
            break
        chosen = max(movable, key=lambda s: s.batch_id)  # the newest: the least history here
        by_node[busiest].remove(chosen)
        cooling.add(chosen.batch_id)
        result.moves.append(Move(chosen.batch_id, chosen.consumer_id, busiest, idlest))
        simulated[busiest] -= 1
        simulated[idlest] += 1
        if not whole:
            break
    return result


def _cooling(client: redis.Redis, keys: Keys, batch_ids: list[int]) -> set[int]:
    pipe = client.pipeline(transaction=False)
    for batch_id in batch_ids:
        pipe.exists(keys.batch_moved(batch_id))
    return {b for b, moved in zip(batch_ids, pipe.execute(), strict=True) if moved}


def rebalance(*, dry_run: bool = False) -> RebalancePlan:
    """One pass: order at most one move (none on a dry run, which plans them all)."""
    client, keys = runtime.redis_client(), runtime.keys()
    result = plan(client, keys, whole=dry_run)
    if dry_run or not result.moves:
        return result
    move = result.moves[0]
    settings = get_settings()
    cooloff_ms = max(1, int(settings.rebalance_cooloff_s * 1000))
    # the next move waits until this one is done (the batch changing hands) or timed out
    moving_ms = int((settings.handover_timeout_s + MOVE_MARGIN_S) * 1000)
    if not client.set(keys.rebalance_moving, move.batch_id, nx=True, px=moving_ms):
        return RebalancePlan(load=result.load, waiting="another pass just ordered a move")
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.batch_control(move.batch_id), "move", f"{move.consumer_id}>{move.target}")
    pipe.set(keys.batch_moved(move.batch_id), move.target, px=cooloff_ms)
    pipe.execute()
    log.info(
        "rebalance: batch %s from %s to %s (loads %s)",
        move.batch_id,
        move.source,
        move.target,
        result.load,
    )
    return result
