"""The JSON market-data feed: one WebSocket per batch, up to 99 tokens per connection.

Protocol: the client sends `{"op": "subscribe", "tokens": [CA, …]}`; the feed answers
`{"type": "subscribed", "count": n}` and then pushes one frame per trade:

| feed field      | SwapEvent field     | notes                              |
|-----------------|---------------------|------------------------------------|
| token           | ca                  | contract address                   |
| txHash, logIndex| tx_hash, log_index  | the event's identity               |
| blockNumber     | block_number        | optional                           |
| timestamp       | ts_ms               | milliseconds since the epoch       |
| side            | side                | "buy" or "sell"                    |
| priceUsd        | price_usd           |                                    |
| volumeUsd       | amount_usd          | the trade's value in USD           |
| amount          | amount_token        | optional                           |
| marketCapUsd    | market_cap_usd      | optional (missing → unknown)       |
| top10HolderPct  | top10_holders_pct   | optional (missing → unknown)       |
| symbol, pair    | symbol, pair        | optional                           |
| chain           | chain               | optional; defaults to the task's   |

The batch counts as live (covered) from the `subscribed` answer or the first trade frame, until
the connection drops. `{"type": "error", "message": …}` frames are logged. A frame that fails to
parse is counted, logged with a short excerpt, and skipped; the stream goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import websocket

from kakarot_workers.errors import EventError
from kakarot_workers.events import (
    PLAUSIBLE,
    Address,
    Amount,
    ChainName,
    Count,
    Index,
    Pair,
    Plausible,
    Share,
    Side,
    SwapEvent,
    Symbol,
    TxHash,
    from_wire,
    within_bounds,
)
from kakarot_workers.reconnect import backoff
from kakarot_workers.sources import SourceStats

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
TICK_S = 0.05
EXCERPT_CHARS = 120
_FIELD_MAP = {
    "token": "ca",
    "txHash": "tx_hash",
    "logIndex": "log_index",
    "blockNumber": "block_number",
    "timestamp": "ts_ms",
    "side": "side",
    "priceUsd": "price_usd",
    "volumeUsd": "amount_usd",
    "amount": "amount_token",
    "marketCapUsd": "market_cap_usd",
    "top10HolderPct": "top10_holders_pct",
    "symbol": "symbol",
    "pair": "pair",
    "chain": "chain",
}


class _Frame(
    msgspec.Struct,
    frozen=True,
    rename={ours: theirs for theirs, ours in _FIELD_MAP.items()},  # the feed's names
):
    """A feed frame as the fast path reads it: the fields of `_FIELD_MAP` under SwapEvent's
    names, typed and bounded as a clean trade has them (SwapEvent's own field types); anything
    else ignored. A frame that does not fit goes the slow way."""

    type: str | None = None
    ca: Address | None = None
    tx_hash: TxHash | None = None
    log_index: Index | None = None
    block_number: Count | None = None
    ts_ms: Count | None = None
    side: Side | None = None
    price_usd: Amount | None = None
    amount_usd: Amount | None = None
    amount_token: Amount | None = None
    market_cap_usd: Amount | None = None
    top10_holders_pct: Share | None = None
    symbol: Symbol | None = None
    pair: Pair | None = None
    chain: ChainName | None = None


_FRAMES = msgspec.json.Decoder(_Frame)


def typed_trade(
    raw: str | bytes, default_chain: str, plausible: Plausible = PLAUSIBLE
) -> SwapEvent | None:
    """The trade of a clean `trade` frame, decoded, typed and checked in one step (msgspec, then
    `events.within_bounds`); None when the frame is anything else or not clean (a missing field,
    a number as a string, a negative amount, a timestamp too old, …): `parse_trade` then says
    what is wrong, or accepts what `from_wire` accepts. The event is the one `parse_trade`
    makes of the same frame (a hypothesis test holds the two to it)."""
    try:
        frame = _FRAMES.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError is a DecodeError
        return None
    if (
        frame.type != "trade"
        or frame.ca is None
        or frame.tx_hash is None
        or frame.log_index is None
        or frame.ts_ms is None
        or frame.side is None
        or not frame.price_usd  # zero or missing: the slow path decides
        or not frame.amount_usd
    ):
        return None
    event = SwapEvent(
        chain=frame.chain if frame.chain is not None else default_chain,
        ca=frame.ca,
        tx_hash=frame.tx_hash,
        log_index=frame.log_index,
        ts_ms=frame.ts_ms,
        side=frame.side,
        amount_usd=frame.amount_usd,
        price_usd=frame.price_usd,
        amount_token=frame.amount_token if frame.amount_token is not None else 0.0,
        block_number=frame.block_number,
        symbol=frame.symbol if frame.symbol is not None else "",
        pair=frame.pair if frame.pair is not None else "",
        market_cap_usd=frame.market_cap_usd,
        top10_holders_pct=frame.top10_holders_pct,
    )
    return event if within_bounds(event, None, plausible) else None


def parse_trade(
    message: dict[str, Any], default_chain: str, plausible: Plausible = PLAUSIBLE
) -> SwapEvent:
    """Map one `trade` frame to a SwapEvent; raise EventError naming the bad field."""
    wire = {
        ours: message[theirs]
        for theirs, ours in _FIELD_MAP.items()
        if message.get(theirs) is not None
    }
    wire.setdefault("chain", default_chain)
    return from_wire(wire, plausible=plausible)


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def excerpt(raw: str | bytes) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


def _close(conn: websocket.WebSocket) -> None:
    # close() does nothing once the peer has closed (connected is already False), leaving the
    # socket open; shutdown() closes it in every case.
    try:
        conn.close(timeout=1)
    finally:
        conn.shutdown()


class FeedSource:
    """A batch's subscription to a JSON trade feed, with reconnects (exponential, jittered)."""

    def __init__(
        self,
        url: str,
        chain: str,
        tokens: list[str],
        *,
        idle_timeout_s: float = 30.0,
        max_backoff_s: float = 10.0,
        tick_s: float = TICK_S,
        plausible: Plausible = PLAUSIBLE,
    ) -> None:
        self.url = url
        self.plausible = plausible
        # every event is made by `from_wire` under `plausible`: the consumer need not check
        # it again (`streams.consumer`)
        self.checks_events = True
        self.chain = chain
        self.tokens = list(tokens)
        self.idle_timeout_s = idle_timeout_s
        self.max_backoff_s = max_backoff_s
        self.tick_s = tick_s
        self.stats = SourceStats()
        self._wanted = set(tokens)

    def events(self, stop: threading.Event) -> Iterator[SwapEvent | None]:
        failures = 0
        while not stop.is_set():
            try:
                conn = self._connect()
            except (OSError, websocket.WebSocketException) as exc:
                failures += 1
                delay = backoff(failures, self.max_backoff_s)
                log.warning("feed %s: connect failed (%s); retry in %.1fs", self.url, exc, delay)
                self.stats.reconnects += 1
                if stop.wait(delay):
                    return
                continue
            failures = 0
            try:
                yield from self._read(conn, stop)
            except (OSError, websocket.WebSocketException) as exc:
                log.warning("feed %s: connection lost (%s); reconnecting", self.url, exc)
            finally:
                self.stats.live = False
                _close(conn)
            if not stop.is_set():
                self.stats.reconnects += 1
                if stop.wait(backoff(1, self.max_backoff_s)):
                    return

    def _connect(self) -> websocket.WebSocket:
        conn = websocket.create_connection(self.url, timeout=CONNECT_TIMEOUT_S)
        try:
            conn.send(json.dumps({"op": "subscribe", "tokens": self.tokens}))
            conn.settimeout(self.tick_s)
        except BaseException:
            _close(conn)
            raise
        return conn

    def _read(self, conn: websocket.WebSocket, stop: threading.Event) -> Iterator[SwapEvent | None]:
        last_frame = time.monotonic()
        while not stop.is_set():
            try:
                raw = conn.recv()
            except websocket.WebSocketTimeoutException:
                if time.monotonic() - last_frame > self.idle_timeout_s:
                    log.warning(
                        "feed %s: nothing for %.0fs; treating as dead",
                        self.url,
                        self.idle_timeout_s,
                    )
                    return
                yield None
                continue
            if not raw:  # closed by the server
                return
            last_frame = time.monotonic()
            self.stats.frames += 1
            event = self._decode(raw)
            if event is not None:
                yield event

    def _decode(self, raw: str | bytes) -> SwapEvent | None:
        try:
            event = typed_trade(raw, self.chain, self.plausible)
            if event is not None:
                self.stats.went_live()
                return event if event.ca in self._wanted else None
            message = json.loads(raw)
            if not isinstance(message, dict):
                raise EventError("frame is not a JSON object")
            kind = message.get("type")
            if kind == "trade":
                self.stats.went_live()
                event = parse_trade(message, self.chain, self.plausible)
                return event if event.ca in self._wanted else None
            if kind == "subscribed":
                self.stats.went_live()
                count = message.get("count")
                if type(count) is int:  # noqa: E721 (a bool is no count)
                    self.stats.covered = count
            elif kind == "error":
                log.warning("feed %s says: %s", self.url, excerpt(str(message.get("message"))))
            return None
        except (ValueError, EventError, RecursionError) as exc:
            # RecursionError: JSON nested too deep for the parser
            self.stats.reject(exc.reason if isinstance(exc, EventError) else "frame")
            log.warning(
                "feed %s: rejected frame (%s): %s", self.url, _first_line(exc), excerpt(raw)
            )
            return None
