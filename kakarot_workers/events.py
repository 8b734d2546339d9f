"""The swap event: one trade of one token, as every source produces it and the alert pool reads it.

Pure: no I/O. On the wire (Celery JSON messages) an event is a flat dict made by `to_wire`;
`from_wire` validates it and says which field is wrong.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

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
    # Routing: which task/batch/epoch saw it, and the consumer's fencing token.
    task_id: int = 0
    batch_id: int = 0
    epoch: int = 0
    fencing_token: int = 0

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

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


_REQUIRED = ("chain", "ca", "tx_hash", "log_index", "ts_ms", "side", "amount_usd", "price_usd")
_FIELD_NAMES = frozenset(f.name for f in fields(SwapEvent))
_INT_FIELDS = (
    "log_index",
    "ts_ms",
    "task_id",
    "batch_id",
    "epoch",
    "fencing_token",
    "block_number",
)
_NUMBER_FIELDS = ("amount_usd", "price_usd", "amount_token", "market_cap_usd", "top10_holders_pct")
_OPTIONAL = frozenset(("block_number", "market_cap_usd", "top10_holders_pct"))


def from_wire(data: Any) -> SwapEvent:
    """Validate a wire dict and build the event; raise EventError naming the bad field."""
    if not isinstance(data, dict):
        raise EventError(f"event: expected an object, got {type(data).__name__}")
    missing = [name for name in _REQUIRED if data.get(name) in (None, "")]
    if missing:
        raise EventError(f"event: missing field(s) {', '.join(missing)}")
    unknown = sorted(set(data) - _FIELD_NAMES)
    if unknown:
        raise EventError(f"event: unknown field(s) {', '.join(unknown)}")
    if data["side"] not in ("buy", "sell"):
        raise EventError(f"event.side: expected 'buy' or 'sell', got {data['side']!r}")
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
    return SwapEvent(**values)


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise EventError(f"event.{name}: expected an integer, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise EventError(f"event.{name}: expected an integer, got {value!r}") from None


def _as_number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise EventError(f"event.{name}: expected a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise EventError(f"event.{name}: expected a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise EventError(f"event.{name}: expected a finite non-negative number, got {value!r}")
    return number
