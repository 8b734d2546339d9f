"""Where targets become batches. Pure: no I/O.

This is the plain split of the walking skeleton: targets ordered by a stable hash and cut every
`cap`. The sticky consistent-hash allocator with epochs replaces it (issue 3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SALT = "kakarot_v2_2025"
SLOTS = 256


def target_hash(task_id: int, ca: str, salt: str = HASH_SALT) -> int:
    """md5(task_id:CA:salt) as an integer: the same CA lands in the same place on every node."""
    return int(hashlib.md5(f"{task_id}:{ca}:{salt}".encode()).hexdigest(), 16)


def plain_split(task_id: int, cas: Sequence[str], cap: int) -> list[list[str]]:
    """Order `cas` by hash and cut into batches of at most `cap`; input order does not matter."""
    if cap < 1:
        raise ValueError("cap must be at least 1")
    ordered = sorted(set(cas), key=lambda ca: (target_hash(task_id, ca), ca))
    return [ordered[i : i + cap] for i in range(0, len(ordered), cap)]
