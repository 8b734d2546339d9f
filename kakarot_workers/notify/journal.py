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

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import redis

from kakarot_workers.keys import Keys

# A week: far longer than any database outage a fleet is expected to ride out.
KEEP_S = 7 * 24 * 3600


class Sent(NamedTuple):
    """One message the service accepted: `message` is its first row's id (the rows of a
    digest share it), `reference` the service's message reference."""

    message: int
    reference: str | None


def remember(client: redis.Redis, keys: Keys, ids: Sequence[int], reference: str | None) -> None:
    """These rows were sent as one message with `reference`."""
    value = f"{ids[0]}\n{reference or ''}"
    pipe = client.pipeline(transaction=False)
    for outbox_id in ids:
        pipe.set(keys.notify_sent(outbox_id), value, ex=KEEP_S)
    pipe.execute()


def recall(client: redis.Redis, keys: Keys, ids: Sequence[int]) -> dict[int, Sent]:
    """The rows of `ids` already sent, by outbox id."""
    values: list[str | None] = client.mget([keys.notify_sent(i) for i in ids])  # type: ignore[assignment]
    found = {}
    for outbox_id, value in zip(ids, values, strict=True):
        if value is not None:
            message, _, reference = value.partition("\n")
            found[outbox_id] = Sent(int(message), reference or None)
    return found


def forget(client: redis.Redis, keys: Keys, ids: Iterable[int]) -> None:
    """These rows are recorded as sent in the database."""
    names = [keys.notify_sent(i) for i in ids]
    if names:
        client.delete(*names)
