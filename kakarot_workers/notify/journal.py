"""What a service accepted while the database could not record it.

A delivery marks its outbox row `sent` right after the service answers. When the database fails
at that moment (stopped, locked), the row stays claimed and, once the claim expires, would be
claimed and sent again. So the service's message reference goes to Redis first (one key per
row, kept `KEEP_S`), and the delivery that takes the row next records it as sent from there
instead of sending it again. Only a row claimed before can be in the journal, so the first
attempt of a delivery never reads it.

When Redis fails too, nothing holds the fact and the message may go twice: the log says so.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from kakarot_workers.keys import Keys

# Longer than any outage the fleet waits out before its alert messages go to the dead letters.
KEEP_S = 7 * 24 * 3600

# Stored for a reference the service did not give (Redis keeps no None).
_NO_REFERENCE = ""


def remember(client: redis.Redis, keys: Keys, ids: Iterable[int], reference: str | None) -> None:
    """These rows were sent as one message with `reference`."""
    pipe = client.pipeline(transaction=False)
    for outbox_id in ids:
        pipe.set(keys.notify_sent(outbox_id), reference or _NO_REFERENCE, ex=KEEP_S)
    pipe.execute()


def recall(client: redis.Redis, keys: Keys, ids: list[int]) -> dict[int, str | None]:
    """The rows of `ids` already sent: outbox id → the message reference (None if none)."""
    values: list[str | None] = client.mget([keys.notify_sent(i) for i in ids])  # type: ignore[assignment]
    return {i: (v or None) for i, v in zip(ids, values, strict=True) if v is not None}


def forget(client: redis.Redis, keys: Keys, ids: Iterable[int]) -> None:
    """These rows are recorded as sent in the database."""
    names = [keys.notify_sent(i) for i in ids]
    if names:
        client.delete(*names)
