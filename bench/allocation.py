"""Allocation benchmark: speed, and churn against the notes' baseline, measured in one run.

    .venv/bin/python bench/allocation.py [--sizes 6000,100000,1000000] [--seed 1]

Churn is what an allocation costs the fleet: every surviving target that changes batch is two
resubscriptions, and every batch touched (changed, new or retired) is one subscription remade.
The baseline is the allocator of the design notes: sort by hash, cut every 99 (batch n = the
n-th slice), measured on the same targets.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kakarot_workers.control.allocation import AllocationParams, allocate, plain_split  # noqa: E402

TASK_ID = 1
BASE = 6000
SCENARIOS = [
    ("+100", 100, 0),
    ("-100", 0, 100),
    ("+1,000", 1000, 0),
    ("-1,000", 0, 1000),
    ("+3,000", 3000, 0),
    ("10% replaced", 600, 600),
]


def addresses(rnd: random.Random, count: int) -> list[str]:
    return [f"0x{rnd.getrandbits(160):040x}" for _ in range(count)]


def with_ids(batches: dict[int, tuple[str, ...]]) -> dict[int, tuple[str, ...]]:
    next_id = max([0, *batches]) + 1
    out = {}
    for key, cas in sorted(
        batches.items(), key=lambda kv: (kv[0] < 0, -kv[0] if kv[0] < 0 else kv[0])
    ):
        if key < 0:
            key, next_id = next_id, next_id + 1
        out[key] = cas
    return out


def baseline_churn(before: Sequence[str], after: Sequence[str], cap: int) -> tuple[int, int, int]:
    """(surviving targets moved, batches touched, survivors) for sort-by-hash-cut-every-cap."""
    old = plain_split(TASK_ID, before, cap)
    new = plain_split(TASK_ID, after, cap)
    old_at = {ca: i for i, batch in enumerate(old) for ca in batch}
    new_at = {ca: i for i, batch in enumerate(new) for ca in batch}
    survivors = old_at.keys() & new_at.keys()
    moved = sum(1 for ca in survivors if old_at[ca] != new_at[ca])
    touched = sum(
        1
        for i in range(max(len(old), len(new)))
        if i >= len(old) or i >= len(new) or set(old[i]) != set(new[i])
    )
    return moved, touched, len(survivors)


def time_it(fn, repeat: int = 1) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="6000,100000,1000000")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    params = AllocationParams()
    goals: list[tuple[str, bool]] = []

    print("== allocation time (first allocation from nothing; then +1% on top), best of 3 ==")
    header = ("targets", 10), ("batches", 8), ("sticky", 9), ("baseline", 9), ("ratio", 6)
    print(" ".join(f"{name:>{width}}" for name, width in header), f"{'+1% sticky':>11}")
    for size in (int(s) for s in args.sizes.split(",")):
        cas = addresses(rnd, size)
        repeat = 1 if size >= 1_000_000 else 3
        first = allocate(TASK_ID, {}, cas, params)
        ours = time_it(lambda cas=cas: allocate(TASK_ID, {}, cas, params), repeat)
        base = time_it(lambda cas=cas: plain_split(TASK_ID, cas, params.cap), repeat)
        current = with_ids(dict(first.batches))
        more = cas + addresses(rnd, max(1, size // 100))
        incremental = time_it(lambda c=current, m=more: allocate(TASK_ID, c, m, params), repeat)
        print(
            f"{size:>10,} {len(first.batches):>8,} {ours:>8.3f}s {base:>8.3f}s "
            f"{ours / base:>5.2f}x {incremental:>10.3f}s"
        )
        if size == 100_000:
            goals.append((f"100k targets allocated in ≤ 1 s (took {ours:.3f} s)", ours <= 1.0))

    print()
    print(f"== churn on {BASE:,} targets: surviving targets moved, batches touched ==")
    print(
        f"{'scenario':<14} {'moved (sticky)':>15} {'moved (baseline)':>17} "
        f"{'touched (sticky)':>17} {'touched (baseline)':>19} {'merges':>7}"
    )
    base_cas = addresses(rnd, BASE)
    current = with_ids(dict(allocate(TASK_ID, {}, base_cas, params).batches))
    for name, add, remove in SCENARIOS:
        gone = set(rnd.sample(base_cas, remove))
        after = [ca for ca in base_cas if ca not in gone] + addresses(rnd, add)
        diff = allocate(TASK_ID, current, after, params).diff
        survivors = BASE - remove
        b_moved, b_touched, _ = baseline_churn(base_cas, after, params.cap)
        print(
            f"{name:<14} {len(diff.moved):>6} ({100 * len(diff.moved) / survivors:5.1f}%) "
            f"{b_moved:>7} ({100 * b_moved / survivors:5.1f}%) {diff.touched:>17} "
            f"{b_touched:>19} {len(diff.merged):>7}"
        )
        if not diff.merged:
            goals.append(
                (f"{name}: 0% of surviving targets moved (moved {len(diff.moved)})", not diff.moved)
            )
        if name == "+100":
            goals.append(
                (f"+100 on 6,000 touches ≤ 3 batches (touched {diff.touched})", diff.touched <= 3)
            )

    print()
    print("== goals ==")
    for text, ok in goals:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
    return 0 if all(ok for _, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
