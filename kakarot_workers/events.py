"""The swap event: one trade of one token, as every source produces it and the alert pool reads it.

Pure: no I/O. On the wire (Celery JSON messages) an event is a flat dict made by `to_wire`;
`from_wire` validates it and says which field is wrong. A stream consumer sends its events in
micro-batches packed by `pack` (the routing fields once, each trade as a row of values); `unpack`
turns such a message, or a plain list of wire dicts, back into wire dicts. Every event is checked
on its own, at the source and again in the pool (`check`): types, finite and plausible ranges, a
timestamp near now, a known chain, strings that fit the alert log's columns. A bad event is
rejected alone.

`SwapEvent` is a msgspec Struct: its field types carry the fixed limits (`Meta`), so a clean
event is decoded or converted and validated in one step in C (`from_wire`'s usual case, the feed's
frames); what is not clean goes the slow way, which names the first bad field.
"""

from __future__ import annotations

import math
import operator
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from kakarot_workers.addresses import KNOWN_CHAINS
from kakarot_workers.errors import EventError

Side = Literal["buy", "sell"]

# Sizes of the alert log's columns (db/models.py) and of its integers.
_MAX_CHARS = {"chain": 16, "ca": 128, "tx_hash": 128, "symbol": 64, "pair": 128}
_MAX_INT = {"log_index": 2**31 - 1, "epoch": 2**31 - 1}
_MAX_BIGINT = 2**63 - 1
_NON_EMPTY = ("chain", "ca", "tx_hash")

# The fixed limits as types (enforced when msgspec decodes or converts, not by the constructor;
# `check` holds an event made in code to the same ones, and to those that depend on settings).
ChainName = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_CHARS["chain"])]
Address = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_CHARS["ca"])]
TxHash = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_CHARS["tx_hash"])]
Symbol = Annotated[str, msgspec.Meta(max_length=_MAX_CHARS["symbol"])]
Pair = Annotated[str, msgspec.Meta(max_length=_MAX_CHARS["pair"])]
Index = Annotated[int, msgspec.Meta(ge=0, le=_MAX_INT["log_index"])]
Count = Annotated[int, msgspec.Meta(ge=0, le=_MAX_BIGINT)]
Amount = Annotated[float, msgspec.Meta(ge=0, le=sys.float_info.max)]  # finite, not negative
Share = Annotated[float, msgspec.Meta(ge=0, le=100)]


class SwapEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One trade. Identity is (chain, tx_hash, log_index); the rest is what rules look at."""

    chain: ChainName
    ca: Address
    tx_hash: TxHash
    log_index: Index
    ts_ms: Count
    side: Side
    amount_usd: Amount
    price_usd: Amount
    amount_token: Amount = 0.0
    block_number: Count | None = None
    symbol: Symbol = ""
    pair: Pair = ""
    market_cap_usd: Amount | None = None
    top10_holders_pct: Share | None = None
    # Routing: which task/batch/epoch saw it, the consumer's fencing token, and when the
    # consumer sent it, by Redis's clock (ms; the fence acts at that moment, see `leases`).
    task_id: Count = 0
    batch_id: Count = 0
    epoch: Index = 0
    fencing_token: Count = 0
    sent_ms: Count = 0

    def to_wire(self) -> dict[str, Any]:
        """The flat dict of every field."""
        return msgspec.structs.asdict(self)

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


# A micro-batch on the wire: `{"v": 1, <ROUTING_FIELDS>, "fields": TRADE_FIELDS, "rows": [[…], …]}`.
# The routing fields are the same for every event a consumer sends at once (its task, batch,
# epoch, lease token and send time), so they travel once; each trade is a row of values in the
# order `fields` names (a reader maps them by these names, not by position).
# About half the size of the same events as dicts, and a tenth of the cost to encode.
PACKED_VERSION = 1
ROUTING_FIELDS = ("task_id", "batch_id", "epoch", "fencing_token", "sent_ms")
TRADE_FIELDS = tuple(
    f.name for f in msgspec.structs.fields(SwapEvent) if f.name not in ROUTING_FIELDS
)
trade_values = operator.attrgetter(*TRADE_FIELDS)
"""The values of an event's `TRADE_FIELDS`, as a tuple (one row of a packed micro-batch)."""


def pack(events: Sequence[SwapEvent], **routing: int) -> dict[str, Any]:
    """`events` as one packed micro-batch under `routing` (every name of `ROUTING_FIELDS`)."""
    return {
        "v": PACKED_VERSION,
        **routing,
        "fields": TRADE_FIELDS,
        "rows": [trade_values(e) for e in events],
    }


def unpack(message: Any) -> list[Any]:
    """The wire events of an `evaluate_events` argument: a packed micro-batch (`pack`) or a
    list of wire dicts (what consumers sent before, still accepted). A row is made a dict of its
    fields and the routing fields; a row that is no list of as many values as `fields` becomes
    a `MisfitRow`, for `from_wire` to reject alone. Raise EventError when `message` is neither
    form."""
    if isinstance(message, list):
        return message
    if not isinstance(message, dict):
        raise EventError(
            f"micro-batch: expected a list of events or a packed micro-batch, got a "
            f"{type(message).__name__}"
        )
    if message.get("v") != PACKED_VERSION:
        raise EventError(
            f"micro-batch: packed version {_shown(message.get('v'))} unknown (this worker reads "
            f"version {PACKED_VERSION})"
        )
    names, rows = message.get("fields"), message.get("rows")
    if not isinstance(names, list | tuple) or not all(type(n) is str for n in names):  # noqa: E721
        raise EventError("micro-batch: `fields` is not a list of names")
    if not isinstance(rows, list):
        raise EventError(f"micro-batch: `rows` is not a list (got {_shown(rows)})")
    routing = {name: message[name] for name in ROUTING_FIELDS if name in message}
    width = len(names)
    return [
        {**dict(zip(names, row, strict=True)), **routing}
        if isinstance(row, list | tuple) and len(row) == width
        else MisfitRow(row, width)
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class MisfitRow:
    """A packed row that is no list of as many values as the micro-batch's `fields`: left in
    its place for `from_wire` to reject alone, saying what it is."""

    row: Any
    width: int

    def __str__(self) -> str:
        if isinstance(self.row, list | tuple):
            return f"packed row: {len(self.row)} value(s) where `fields` names {self.width}"
        return f"packed row: expected a list of {self.width} values, got {_shown(self.row)}"


@dataclass(frozen=True, slots=True)
class Plausible:
    """What a real trade can look like (the settings `event_max_future_s`/`event_max_age_s`
    set the time bounds; a back-fill reaches back at most `evm_backfill_max_blocks`)."""

    max_future_ms: int = 300_000
    max_age_ms: int = 7 * 86_400_000
    max_usd: float = 1e12  # one trade, one price
    max_market_cap_usd: float = 1e15


PLAUSIBLE = Plausible()

_REQUIRED = ("chain", "ca", "tx_hash", "log_index", "ts_ms", "side", "amount_usd", "price_usd")
_FIELD_NAMES = frozenset(f.name for f in msgspec.structs.fields(SwapEvent))
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


_convert = msgspec.convert


def from_wire(
    data: Any, *, now_ms: int | None = None, plausible: Plausible = PLAUSIBLE
) -> SwapEvent:
    """Validate a wire dict and build the event; raise EventError naming the bad field.

    The usual case, a clean event, is converted and held to the fixed limits in one step
    (msgspec), then to the bounds of `plausible` and now; anything else takes the slow way,
    which accepts what it can (a number as a string) and names the first bad field. Both make
    the same event of what both accept (a hypothesis test holds them to it)."""
    try:
        event = _convert(data, SwapEvent)
    except msgspec.ValidationError:
        pass
    else:
        if within_bounds(event, now_ms, plausible):
            return event
    return _from_wire_slowly(data, now_ms, plausible)


def within_bounds(event: SwapEvent, now_ms: int | None, plausible: Plausible = PLAUSIBLE) -> bool:
    """Whether an event that has the fixed limits (decoded or converted by msgspec) also has
    those of `check` that depend on settings and now: a known chain, amounts, prices and market
    cap below belief, a timestamp near now. `check` says which one fails."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    cap = event.market_cap_usd
    return (
        event.chain in KNOWN_CHAINS
        and event.amount_usd <= plausible.max_usd
        and event.price_usd <= plausible.max_usd
        and (cap is None or cap <= plausible.max_market_cap_usd)
        and now - plausible.max_age_ms <= event.ts_ms <= now + plausible.max_future_ms
    )


def _from_wire_slowly(data: Any, now_ms: int | None, plausible: Plausible) -> SwapEvent:
    if isinstance(data, MisfitRow):
        raise EventError(str(data))
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
