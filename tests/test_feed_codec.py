"""The feed's fast path (msgspec, `typed_trade`) against its slow path (`json.loads` +
`parse_trade`, which `from_wire` validates): on any frame, the fast path either steps aside (the
slow path then decides, and names what is wrong) or makes the very event the slow path makes."""

from __future__ import annotations

import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from kakarot_workers.errors import EventError
from kakarot_workers.events import check
from kakarot_workers.sources.feed import parse_trade, typed_trade

NOW_MS = int(time.time() * 1000)

anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)


def mostly(clean: st.SearchStrategy, *odd: st.SearchStrategy) -> st.SearchStrategy:
    """`clean` 19 times in 20, else one of `odd` or anything at all (so that about half the
    frames of 14 fields are clean, and the rest differ in a field or two)."""
    return st.integers(0, 19).flatmap(lambda n: clean if n else st.one_of(*odd, anything))


amounts = mostly(
    st.floats(min_value=0, max_value=1e13, allow_nan=False),
    st.integers(min_value=-5, max_value=10**12),
    st.sampled_from(["12.5", "", "x", 0, 0.0, -1.5]),
)
frames = st.fixed_dictionaries(
    {
        "type": mostly(st.just("trade"), st.sampled_from(["subscribed", "error"])),
        "token": mostly(st.just("0x" + "a" * 40), st.just("")),
        "txHash": mostly(st.just("0x" + "b" * 64), st.just("0x" + "c" * 200)),
        "logIndex": mostly(st.integers(min_value=0, max_value=100), st.integers(-2, 2**32)),
        "timestamp": mostly(
            st.integers(min_value=NOW_MS - 60_000, max_value=NOW_MS + 60_000),
            st.integers(min_value=NOW_MS - 10**10, max_value=NOW_MS + 10**10),
        ),
        "side": mostly(st.sampled_from(["buy", "sell"]), st.just("hold")),
        "priceUsd": amounts,
        "volumeUsd": amounts,
    },
    optional={
        "chain": mostly(st.sampled_from(["bsc", "eth"]), st.sampled_from(["mars", ""])),
        "blockNumber": mostly(st.integers(min_value=0, max_value=2**40), st.just(-1)),
        "amount": amounts,
        "marketCapUsd": mostly(st.floats(min_value=0, max_value=1e16), st.none()),
        "top10HolderPct": mostly(st.floats(min_value=0, max_value=150), st.none()),
        "symbol": mostly(st.text(max_size=70), st.none()),
        "pair": mostly(st.just("0x" + "d" * 40), st.none()),
        "extra": anything,
    },
)


def _slow(raw: str):
    message = json.loads(raw)
    try:
        return parse_trade(message, "bsc")
    except EventError as exc:
        return str(exc)


@settings(max_examples=1500, deadline=None)
@given(frames)
def test_the_fast_path_makes_the_slow_paths_event_or_steps_aside(frame):
    raw = json.dumps(frame)
    event = typed_trade(raw, "bsc")
    if event is None:
        return  # the slow path decides alone
    check(event)  # what the fast path lets through passes the whole check
    assert _slow(raw) == event


def test_a_clean_trade_takes_the_fast_path():
    frame = {
        "type": "trade",
        "token": "0x" + "a" * 40,
        "txHash": "0x" + "b" * 64,
        "logIndex": 3,
        "timestamp": NOW_MS,
        "side": "buy",
        "priceUsd": 0.5,
        "volumeUsd": 1200,
        "marketCapUsd": None,
    }
    event = typed_trade(json.dumps(frame), "bsc")
    assert event is not None and event == parse_trade(frame, "bsc")
    assert event.amount_usd == 1200.0 and type(event.amount_usd) is float


def test_progress_is_the_share_of_the_batchs_tokens_the_live_feed_covers():
    from kakarot_workers.sources import SourceStats
    from kakarot_workers.sources.feed import FeedSource

    feed = FeedSource("ws://127.0.0.1:1", "bsc", ["0x" + "a" * 40] * 4)
    assert feed.stats.progress(4) == 0  # not live
    feed._decode(json.dumps({"type": "subscribed", "count": 3}))
    assert feed.stats.live and feed.stats.progress(4) == 75
    feed._decode(json.dumps({"type": "subscribed", "count": 4}))
    assert feed.stats.progress(4) == 100
    live = SourceStats(live=True)  # a source that does not count what it covers
    assert live.progress(99) == 100
