"""The reconnect policy every long-lived connection shares (sources, the backend link, the
config listener)."""

from __future__ import annotations

import random


def backoff(failures: int, max_s: float) -> float:
    """The reconnect delay after `failures` failures in a row: exponential from 0.4 s, capped
    at `max_s`, with jitter (50–100 %) so that many consumers do not reconnect in step."""
    return min(max_s, 0.2 * 2.0 ** min(failures, 10)) * random.uniform(0.5, 1.0)
