"""The swap event: one trade of one token, as every source produces it and the alert pool reads it.

Pure: no I/O. On the wire (Celery JSON messages) an event is a flat dict made by `to_wire`;
`from_wire` validates it and says which field is wrong. Every event is checked on its own, at
the source and again in the pool (`check`): types, finite and plausible ranges, a timestamp near
now, a known chain, strings that fit the alert log's columns. A bad event is rejected alone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Any, Literal

from kakarot_workers.addresses import KNOWN_CHAINS
from kakarot_workers.errors import EventError

Side = Literal["buy", "sell"]


@dataclass(frozen=True, slots=True)
class SwapEvent:
    """One trade. Identity is (chain, tx_hash, log_index); the rest is what rules look at."""

    chain: str
    ca: str
    tx_hash: str
    log_index: int
    ts_ms: int
    side: Side
    amount_usd: float
    price_usd: float
    amount_token: float = 0.0
    block_number: int | None = None
    symbol: str = ""
    pair: str = ""
    market_cap_usd: float | None = None
    top10_holders_pct: float | None = None
    # Routing: which task/batch/epoch saw it, the consumer's fencing token, and when the
    # consumer sent it, by Redis's clock (ms; the fence acts at that moment, see `leases`).
    task_id: int = 0
    batch_id: int = 0
    epoch: int = 0
    fencing_token: int = 0
    sent_ms: int = 0

    def to_wire(self) -> dict[str, Any]:
        """The flat dict of every field (what `dataclasses.asdict` gives, at a tenth of its
        cost: every field is a scalar, nothing to copy deeply)."""
        return {
            "chain": self.chain,
            "ca": self.ca,
            "tx_hash": self.tx_hash,
            "log_index": self.log_index,
            "ts_ms": self.ts_ms,
            "side": self.side,
            "amount_usd": self.amount_usd,
            "price_usd": self.price_usd,
            "amount_token": self.amount_token,
            "block_number": self.block_number,
            "symbol": self.symbol,
            "pair": self.pair,
            "market_cap_usd": self.market_cap_usd,
            "top10_holders_pct": self.top10_holders_pct,
            "task_id": self.task_id,
            "batch_id": self.batch_id,
            "epoch": self.epoch,
            "fencing_token": self.fencing_token,
            "sent_ms": self.sent_ms,
        }

    @property
    def identity(self) -> tuple[str, str, int]:
        return (self.chain, self.tx_hash, self.log_index)

    @property
    def key(self) -> str:
        """The trade's identity as one string, `chain:tx_hash:log_index`: how cooldowns,
        windows and the re-org retractions name it."""
        return event_key(self.chain, self.tx_hash, self.log_index)


def event_key(chain: str, tx_hash: str, log_index: int) -> str:
    """`chain:tx_hash:log_index`, the string form of a trade's identity (`SwapEvent.key`)."""
    return f"{chain}:{tx_hash}:{log_index}"


@dataclass(frozen=True, slots=True)
class Plausible:
    """What a real trade can look like (the settings `event_max_future_s`/`event_max_age_s`
    set the time bounds; a back-fill reaches back at most `evm_backfill_max_blocks`)."""

    max_future_ms: int = 300_000
    max_age_ms: int = 7 * 86_400_000
    max_usd: float = 1e12  # one trade, one price
    max_market_cap_usd: float = 1e15


PLAUSIBLE = Plausible()
# Sizes of the alert log's columns (db/models.py) and of its integers.
_MAX_CHARS = {"chain": 16, "ca": 128, "tx_hash": 128, "symbol": 64, "pair": 128}
_MAX_INT = {"log_index": 2**31 - 1, "epoch": 2**31 - 1}
_MAX_BIGINT = 2**63 - 1
_NON_EMPTY = ("chain", "ca", "tx_hash")

_REQUIRED = ("chain", "ca", "tx_hash", "log_index", "ts_ms", "side", "amount_usd", "price_usd")
_FIELD_NAMES = frozenset(f.name for f in fields(SwapEvent))
_INT_FIELDS = (
    "log_index",
    "ts_ms",
    "task_id",
    "batch_id",
    "epoch",
    "fencing_token",
    "sent_ms",
    "block_number",
)
_NUMBER_FIELDS = ("amount_usd", "price_usd", "amount_token", "market_cap_usd", "top10_holders_pct")
_OPTIONAL = frozenset(("block_number", "market_cap_usd", "top10_holders_pct"))


def from_wire(
    data: Any, *, now_ms: int | None = None, plausible: Plausible = PLAUSIBLE
) -> SwapEvent:
    """Validate a wire dict and build the event; raise EventError naming the bad field."""
    if not isinstance(data, dict):
        raise EventError(f"event: expected an object, got {type(data).__name__}")
    missing = [name for name in _REQUIRED if data.get(name) in (None, "")]
    if missing:
        raise EventError(f"event: missing field(s) {', '.join(missing)}", field=missing[0])
    unknown = sorted(set(data) - _FIELD_NAMES)
    if unknown:
        raise EventError(f"event: unknown field(s) {', '.join(unknown)}")
    side = data["side"]
    if not isinstance(side, str) or side not in ("buy", "sell"):
        raise EventError(f"event.side: expected 'buy' or 'sell', got {_shown(side)}", field="side")
    values = dict(data)
    for name in _INT_FIELDS:
        if name in values:
            value = values[name]
            if type(value) is not int and not (value is None and name in _OPTIONAL):  # noqa: E721 (a bool is no integer here)
                values[name] = _as_int(name, value)
    for name in _NUMBER_FIELDS:
        if name in values:
            value = values[name]
            if type(value) is float and 0 <= value < math.inf:  # noqa: E721 (the usual case)
                continue
            if not (value is None and name in _OPTIONAL):
                values[name] = _as_number(name, value)
    event = SwapEvent(**values)
    check(event, now_ms=now_ms, plausible=plausible)
    return event


def check(event: SwapEvent, *, now_ms: int | None = None, plausible: Plausible = PLAUSIBLE) -> None:
    """Raise EventError naming the first field of `event` that no real trade has: a string
    that is no string or does not fit its column, an unknown chain, an integer out of its
    column's range, an amount, price or market cap beyond belief, a share over 100 %, a
    timestamp further from now than `plausible` allows."""
    for name, limit in _MAX_CHARS.items():
        value = getattr(event, name)
        if type(value) is not str:  # noqa: E721 (a str subclass is no plain string either)
            raise EventError(f"event.{name}: expected a string, got {_shown(value)}", field=name)
        if len(value) > limit:
            raise EventError(
                f"event.{name}: {len(value):,} characters, more than the {limit} that fit",
                field=name,
            )
    for name in _NON_EMPTY:
        if not getattr(event, name):
            raise EventError(f"event.{name}: empty", field=name)
    if event.chain not in KNOWN_CHAINS:
        raise EventError(
            f"event.chain: unknown chain {_shown(event.chain)} (known: "
            f"{', '.join(sorted(KNOWN_CHAINS))})",
            field="chain",
        )
    for name in _INT_FIELDS:
        integer = getattr(event, name)
        if integer is not None and not 0 <= integer <= _MAX_INT.get(name, _MAX_BIGINT):
            raise EventError(f"event.{name}: {_shown(integer)} is out of range", field=name)
    for name, ceiling in (
        ("amount_usd", plausible.max_usd),
        ("price_usd", plausible.max_usd),
        ("market_cap_usd", plausible.max_market_cap_usd),
        ("top10_holders_pct", 100.0),
    ):
        value = getattr(event, name)
        if value is not None and value > ceiling:
            raise EventError(f"event.{name}: {value:g} is above {ceiling:g}", field=name)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if not now - plausible.max_age_ms <= event.ts_ms <= now + plausible.max_future_ms:
        raise EventError(
            f"event.ts_ms: {event.ts_ms} is {_distance(event.ts_ms - now)} now (allowed: "
            f"{plausible.max_age_ms // 1000:,} s before, {plausible.max_future_ms // 1000:,} s "
            "after)",
            field="ts_ms",
        )


def _distance(delta_ms: int) -> str:
    seconds = abs(delta_ms) / 1000
    side = "after" if delta_ms > 0 else "before"
    if seconds >= 2 * 86_400:
        return f"{seconds / 86_400:,.0f} days {side}"
    return f"{seconds:,.0f} s {side}"


def _shown(value: Any) -> str:
    """A value as an error line shows it: its type when it is not a scalar, and never more
    than 60 characters."""
    if isinstance(value, dict | list | tuple | set):
        return f"a {type(value).__name__} of {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise EventError(f"event.{name}: expected an integer, got {_shown(value)}", field=name)
    try:
        return int(value)
    except ValueError:
        raise EventError(
            f"event.{name}: expected an integer, got {_shown(value)}", field=name
        ) from None


def _as_number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise EventError(f"event.{name}: expected a number, got {_shown(value)}", field=name)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise EventError(
            f"event.{name}: expected a number, got {_shown(value)}", field=name
        ) from None
    if not math.isfinite(number) or number < 0:
        raise EventError(
            f"event.{name}: expected a finite non-negative number, got {_shown(value)}",
            field=name,
        )
    return number
