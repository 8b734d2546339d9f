"""Where targets become batches: the sticky allocator. Pure: no I/O, no Celery, no database.

Every batch is one live subscription, so every target that changes batch costs two
resubscriptions. `allocate()` therefore moves as little as possible:

1. Surviving targets stay in their batch, in their order; removed targets just leave.
2. A batch over the cap (the cap was lowered) keeps its first `cap` targets; the rest are placed
   again (a split).
3. New targets (and split-off ones) are placed in ring order — 256 fixed slots from
   `md5(task_id:CA:salt)`, then the full hash — first into batches that change anyway, then into
   an unchanged batch only if it can absorb as many as a new batch would, else into new batches.
4. Batches filled below `merge_below × cap` are merged, smallest first, into the batch that costs
   the fewest extra changes, until no such merge fits (a fixed point, so a second call with the
   same targets changes nothing).

Existing batches are keyed by their id; new batches get keys -1, -2, … until the database gives
them ids. The result depends only on the current assignment and the target set, not on the
order in which either is given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

HASH_SALT = "kakarot_v2_2025"
SLOTS = 256
DEFAULT_CAP = 99
DEFAULT_MERGE_BELOW = 0.5


def target_hash(task_id: int, ca: str, salt: str = HASH_SALT) -> int:
    """md5(task_id:CA:salt) as an integer: the same CA lands in the same place on every node."""
    return int(hashlib.md5(f"{task_id}:{ca}:{salt}".encode()).hexdigest(), 16)


def slot_of(task_id: int, ca: str, salt: str = HASH_SALT) -> int:
    """The CA's slot among the 256 fixed slots of the ring (the hash's top byte)."""
    return target_hash(task_id, ca, salt) >> 120


def ring_order(task_id: int, cas: Iterable[str], salt: str = HASH_SALT) -> list[str]:
    """`cas` in ring order: by slot, then by the full hash (the slot is its top byte), then CA."""
    return sorted(set(cas), key=lambda ca: (target_hash(task_id, ca, salt), ca))


def plain_split(task_id: int, cas: Sequence[str], cap: int) -> list[list[str]]:
    """The notes' allocator, kept as the benchmark baseline: ring order, cut every `cap`."""
    if cap < 1:
        raise ValueError("cap must be at least 1")
    ordered = ring_order(task_id, cas)
    return [ordered[i : i + cap] for i in range(0, len(ordered), cap)]


@dataclass(frozen=True)
class AllocationParams:
    cap: int = DEFAULT_CAP
    merge_below: float = DEFAULT_MERGE_BELOW  # merge batches filled below this share of the cap
    salt: str = HASH_SALT

    def __post_init__(self) -> None:
        if self.cap < 1:
            raise ValueError("cap must be at least 1")
        if not 0 <= self.merge_below <= 1:
            raise ValueError("merge_below must be between 0 and 1")


@dataclass(frozen=True)
class AllocationDiff:
    """What changed between the current assignment and the new one."""

    kept: frozenset[int]  # existing batches whose membership is unchanged
    changed: frozenset[int]  # existing batches whose membership changed
    new: tuple[int, ...]  # keys of new batches (-1, -2, …)
    retired: frozenset[int]  # existing batches left with no target
    added: frozenset[str]
    removed: frozenset[str]
    moved: Mapping[str, tuple[int, int]]  # surviving CA → (old batch, new batch)
    merged: Mapping[int, int]  # batch dissolved by a merge → the batch that took its targets
    split: frozenset[int]  # batches that were over the cap

    @property
    def membership_changed(self) -> bool:
        return bool(self.changed or self.new or self.retired)

    @property
    def touched(self) -> int:
        """Batches whose subscription must be (re)made or dropped."""
        return len(self.changed) + len(self.new) + len(self.retired)


@dataclass(frozen=True)
class Allocation:
    batches: Mapping[int, tuple[str, ...]]  # key → targets in batch order (no empty batch)
    diff: AllocationDiff

    def batch_of(self) -> dict[str, int]:
        return {ca: key for key, cas in self.batches.items() for ca in cas}


@dataclass
class _Batch:
    key: int
    targets: list[str]
    original: frozenset[str] = field(default_factory=frozenset)
    existed: bool = True

    @property
    def size(self) -> int:
        return len(self.targets)

    @property
    def changed(self) -> bool:
        return not self.existed or set(self.targets) != self.original


def allocate(
    task_id: int,
    current: Mapping[int, Sequence[str]],
    active: Iterable[str],
    params: AllocationParams | None = None,
) -> Allocation:
    """The new assignment of `active` targets, starting from `current` (batch key → targets)."""
    params = params or AllocationParams()
    if any(key <= 0 for key in current):
        raise ValueError("existing batch keys must be positive ids")
    cap = params.cap
    wanted = set(active)

    # 1. Survivors stay where they are. A CA listed twice (corrupt state) stays in the first batch.
    batches: dict[int, _Batch] = {}
    was_in: dict[str, int] = {}
    for key in sorted(current):
        members = []
        for ca in current[key]:
            if ca not in was_in:
                was_in[ca] = key
                if ca in wanted:
                    members.append(ca)
        batches[key] = _Batch(key, members, frozenset(current[key]))
    added = wanted - was_in.keys()
    removed = was_in.keys() - wanted

    # 2. Splits: a batch over the cap keeps its first `cap` targets.
    pending: list[str] = []
    split = set()
    for batch in batches.values():
        if batch.size > cap:
            pending.extend(batch.targets[cap:])
            del batch.targets[cap:]
            split.add(batch.key)

    # 3. Placement, in ring order.
    queue = ring_order(task_id, [*added, *pending], params.salt)
    _place(queue, batches, cap)

    # 4. Merges, to a fixed point.
    merged: dict[int, int] = {}
    threshold = params.merge_below * cap
    while True:
        donor, receiver = _next_merge(batches, threshold, cap)
        if donor is None or receiver is None:
            break
        receiver.targets.extend(donor.targets)
        donor.targets.clear()
        merged[donor.key] = receiver.key
        del batches[donor.key]
        # a chain of merges (A into B, then B into C) points A at its final batch
        for source, into in merged.items():
            if into == donor.key:
                merged[source] = receiver.key

    return _result(task_id, current, batches, merged, split, added, removed, was_in, wanted)


def _place(queue: list[str], batches: dict[int, _Batch], cap: int) -> None:
    """Place `queue` (ring order): first into batches that change anyway; then into the roomiest
    unchanged batch only if it can take as many as a new batch would; else into new batches."""
    changing = sorted(
        (b for b in batches.values() if b.changed and b.size < cap), key=lambda b: (b.size, b.key)
    )
    unchanged = sorted(
        (b for b in batches.values() if not b.changed and b.size < cap),
        key=lambda b: (b.size, b.key),
    )
    position = 0

    def fill(batch: _Batch) -> None:
        nonlocal position
        take = cap - batch.size
        batch.targets.extend(queue[position : position + take])
        position += take

    for batch in changing:
        if position >= len(queue):
            return
        fill(batch)
    next_new = -1
    while position < len(queue):
        left = len(queue) - position
        if unchanged and cap - unchanged[0].size >= min(left, cap):
            fill(unchanged.pop(0))
        else:
            batch = batches[next_new] = _Batch(next_new, [], existed=False)
            next_new -= 1
            fill(batch)


def _next_merge(
    batches: dict[int, _Batch], threshold: float, cap: int
) -> tuple[_Batch | None, _Batch | None]:
    """The smallest under-filled batch that fits whole into another, and the best such other:
    one that changes anyway, then the fullest (tightest fit), then the lowest key."""
    small = sorted((b for b in batches.values() if 0 < b.size < threshold), key=_donor_order)
    for donor in small:
        fits = [b for b in batches.values() if b is not donor and b.size + donor.size <= cap]
        if fits:
            return donor, min(fits, key=lambda b: (not b.changed, -b.size, b.key))
    return None, None


def _donor_order(batch: _Batch) -> tuple[int, bool, int]:
    # smallest first; among equals a batch that is new or already changing moves first
    return (batch.size, not batch.changed, batch.key)


def _result(
    task_id: int,
    current: Mapping[int, Sequence[str]],
    batches: dict[int, _Batch],
    merged: dict[int, int],
    split: set[int],
    added: set[str],
    removed: set[str],
    was_in: dict[str, int],
    wanted: set[str],
) -> Allocation:
    live = {key: b for key, b in batches.items() if b.targets}
    # Renumber new batches -1, -2, … in the order of their first target on the ring, so keys do
    # not depend on how many were opened and then merged away.
    new_keys = sorted((k for k, b in live.items() if not b.existed), reverse=True)
    renumber = {old: -(i + 1) for i, old in enumerate(new_keys)}
    final = {renumber.get(key, key): tuple(b.targets) for key, b in live.items()}
    # only existing batches are reported as merged: a new batch merged away never existed
    merged_final = {d: renumber.get(r, r) for d, r in merged.items() if d > 0}
    location = {ca: key for key, cas in final.items() for ca in cas}
    moved = {
        ca: (old, location[ca])
        for ca, old in was_in.items()
        if ca in wanted and location[ca] != old
    }
    existing = set(current)
    kept = frozenset(k for k in existing if k in final and set(final[k]) == set(current[k]))
    changed = frozenset(k for k in existing if k in final and k not in kept)
    return Allocation(
        batches=dict(sorted(final.items())),
        diff=AllocationDiff(
            kept=kept,
            changed=changed,
            new=tuple(sorted((k for k in final if k < 0), reverse=True)),
            retired=frozenset(existing - final.keys()),
            added=frozenset(added),
            removed=frozenset(removed),
            moved=moved,
            merged=merged_final,
            split=frozenset(split),
        ),
    )
