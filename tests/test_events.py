import json
import time

import hypothesis
import msgspec
import pytest
from hypothesis import strategies as st

from kakarot_workers.errors import EventError
from kakarot_workers.events import (
    PLAUSIBLE,
    Plausible,
    SwapEvent,
    _from_wire_slowly,
    from_wire,
    pack,
    unpack,
)

NOW_MS = int(time.time() * 1000)
DAY_MS = 86_400_000
GOOD = {
    "chain": "bsc",
    "ca": "0x" + "a" * 40,
    "tx_hash": "0x" + "b" * 64,
    "log_index": 2,
    "ts_ms": NOW_MS,
    "side": "sell",
    "amount_usd": 12.5,
    "price_usd": 0.01,
}


def test_round_trip():
    event = from_wire({**GOOD, "market_cap_usd": 1e6, "task_id": 3, "batch_id": 4})
    assert from_wire(event.to_wire()) == event
    assert event.identity == ("bsc", GOOD["tx_hash"], 2)


def test_optional_metrics_may_be_null_and_integers_are_numbers():
    event = from_wire(
        {**GOOD, "market_cap_usd": None, "block_number": None, "amount_usd": 12, "epoch": 0}
    )
    assert event.market_cap_usd is None and event.block_number is None
    assert event.amount_usd == 12.0 and isinstance(event.amount_usd, float)


def test_numbers_as_strings_are_accepted():
    event = from_wire({**GOOD, "log_index": "7", "amount_usd": "1.5"})
    assert event.log_index == 7 and event.amount_usd == 1.5


@pytest.mark.parametrize(
    "change, message",
    [
        ({"side": "hold"}, "event.side"),
        ({"amount_usd": "lots"}, "event.amount_usd"),
        ({"amount_usd": float("nan")}, "event.amount_usd"),
        ({"amount_usd": -3}, "event.amount_usd"),
        ({"log_index": 1.5}, "event.log_index"),
        ({"log_index": True}, "event.log_index"),
        ({"task_id": None}, "event.task_id"),
        ({"amount_token": None}, "event.amount_token"),
        ({"price_usd": float("inf")}, "event.price_usd"),
        ({"amount_usd": -0.5}, "event.amount_usd"),
        ({"market_cap_usd": False}, "event.market_cap_usd"),
        ({"tx_hash": ""}, "missing field(s) tx_hash"),
        ({"colour": "red"}, "unknown field(s) colour"),
    ],
)
def test_malformed_events_say_which_field(change, message):
    with pytest.raises(EventError) as error:
        from_wire({**GOOD, **change})
    assert message in str(error.value)


def test_not_an_object():
    with pytest.raises(EventError, match="expected an object"):
        from_wire(["x"])


def test_missing_required_fields_are_listed():
    with pytest.raises(EventError, match="ca, tx_hash"):
        from_wire({k: v for k, v in GOOD.items() if k not in ("ca", "tx_hash")})


def test_event_is_immutable():
    event = SwapEvent(**GOOD)
    with pytest.raises(AttributeError):
        event.amount_usd = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "change, reason, message",
    [
        ({"log_index": 10**30}, "log_index", "event.log_index: "),
        ({"log_index": -1}, "log_index", "out of range"),
        ({"ts_ms": 10**18}, "ts_ms", "days after now"),
        ({"ts_ms": NOW_MS - 8 * DAY_MS}, "ts_ms", "8 days before now"),
        ({"ts_ms": NOW_MS + 301_000}, "ts_ms", "301 s after now"),
        ({"tx_hash": 12345}, "tx_hash", "expected a string, got 12345"),
        ({"tx_hash": ["0xab"]}, "tx_hash", "expected a string, got a list of 1"),
        ({"ca": {"nested": 1}}, "ca", "expected a string, got a dict of 1"),
        ({"symbol": ["PEPE"]}, "symbol", "event.symbol: expected a string"),
        ({"symbol": "X" * 1_000_000}, "symbol", "1,000,000 characters, more than the 64"),
        ({"ca": "0x" + "a" * 200}, "ca", "more than the 128 that fit"),
        ({"chain": "mars"}, "chain", "unknown chain 'mars'"),
        ({"amount_usd": 1e300}, "amount_usd", "above 1e+12"),
        ({"price_usd": 2e12}, "price_usd", "above 1e+12"),
        ({"market_cap_usd": 1e16}, "market_cap_usd", "above 1e+15"),
        ({"top10_holders_pct": 100.5}, "top10_holders_pct", "above 100"),
        ({"amount_usd": "1e999"}, "amount_usd", "finite"),
        ({"amount_usd": 10**400}, "amount_usd", "expected a number"),
        ({"epoch": 2**31}, "epoch", "out of range"),
        ({"batch_id": 2**63}, "batch_id", "out of range"),
        ({"side": ["buy"]}, "side", "event.side"),
    ],
)
def test_implausible_or_oversized_fields_are_refused_with_their_reason(change, reason, message):
    with pytest.raises(EventError) as error:
        from_wire({**GOOD, **change}, now_ms=NOW_MS)
    assert message in str(error.value)
    assert error.value.reason == reason
    assert len(str(error.value)) < 200, "an error line never carries the bad value whole"


def test_the_time_bounds_are_the_settings_and_an_old_event_within_them_passes():
    week_old = {**GOOD, "ts_ms": NOW_MS - 6 * DAY_MS}
    assert from_wire(week_old).ts_ms == week_old["ts_ms"]
    tight = Plausible(max_future_ms=1_000, max_age_ms=60_000)
    with pytest.raises(EventError, match="ts_ms"):
        from_wire(week_old, plausible=tight)
    assert from_wire({**GOOD, "ts_ms": 5_000}, now_ms=10_000, plausible=tight).ts_ms == 5_000


def test_the_largest_values_that_fit_are_accepted():
    event = from_wire(
        {
            **GOOD,
            "log_index": 2**31 - 1,
            "block_number": 2**63 - 1,
            "symbol": "S" * 64,
            "amount_usd": 1e12,
            "top10_holders_pct": 100,
        }
    )
    assert event.log_index == 2**31 - 1 and event.symbol == "S" * 64


def test_a_packed_micro_batch_reads_back_as_the_same_events_under_its_routing():
    events = [
        SwapEvent(**{**GOOD, "log_index": 1, "block_number": 7, "market_cap_usd": 1e6}),
        SwapEvent(**{**GOOD, "log_index": 2, "symbol": "TKN", "top10_holders_pct": 12.5}),
    ]
    routing = {"task_id": 3, "batch_id": 4, "epoch": 5, "fencing_token": 6, "sent_ms": 8}
    packed = json.loads(json.dumps(pack(events, **routing)))  # as the pool receives it
    assert [from_wire(w) for w in unpack(packed)] == [
        msgspec.structs.replace(e, **routing) for e in events
    ]
    many = events * 100
    as_dicts = [{**e.to_wire(), **routing} for e in many]
    assert len(json.dumps(pack(many, **routing))) < 0.6 * len(json.dumps(as_dicts))
    assert unpack([GOOD]) == [GOOD], "a list of wire dicts is still read"


def test_a_packed_row_that_does_not_fit_is_rejected_alone_and_a_bad_envelope_says_so():
    packed = json.loads(json.dumps(pack([SwapEvent(**GOOD)] * 2, task_id=1)))
    width = len(packed["fields"])
    packed["rows"] = [packed["rows"][0][:3], packed["rows"][1], {"ca": "0x1"}]
    short, good, not_a_row = unpack(packed)
    with pytest.raises(
        EventError, match=f"packed row: 3 value\\(s\\) where `fields` names {width}"
    ):
        from_wire(short)
    assert from_wire(good).task_id == 1
    with pytest.raises(EventError, match=f"expected a list of {width} values, got a dict"):
        from_wire(not_a_row)
    with pytest.raises(EventError, match="packed version 2 unknown"):
        unpack({**packed, "v": 2})
    with pytest.raises(EventError, match="got a str"):
        unpack("junk")
    with pytest.raises(EventError, match="`rows` is not a list"):
        unpack({**packed, "rows": 3})


wire_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and infinities too: Python's json reads them
    st.sampled_from(["", "12.5", "x", "bsc", "buy"]),
)


def _mostly(clean: st.SearchStrategy, *odd: st.SearchStrategy) -> st.SearchStrategy:
    """`clean` 19 times in 20, else one of `odd` or anything (about half the events clean)."""
    return st.integers(0, 19).flatmap(lambda n: clean if n else st.one_of(*odd, wire_values))


wire_events = st.fixed_dictionaries(
    {
        "chain": _mostly(st.sampled_from(["bsc", "eth"]), st.sampled_from(["mars", "b" * 17])),
        "ca": _mostly(st.just("0x" + "a" * 40), st.just("a" * 129)),
        "tx_hash": _mostly(st.just("0x" + "b" * 64)),
        "log_index": _mostly(st.integers(0, 2**31 - 1), st.sampled_from([-1, 2**31, "7"])),
        "ts_ms": _mostly(
            st.integers(NOW_MS - 7 * DAY_MS, NOW_MS + 300_000),
            st.sampled_from([NOW_MS - 7 * DAY_MS - 1, NOW_MS + 300_001, float(NOW_MS)]),
        ),
        "side": _mostly(st.sampled_from(["buy", "sell"]), st.just("hold")),
        "amount_usd": _mostly(st.floats(0, 1e12), st.sampled_from([-0.5, 1e12 + 1, 3, True])),
        "price_usd": _mostly(st.floats(0, 1e12), st.sampled_from([-0.5, 2e12, "0.5"])),
    },
    optional={
        "amount_token": _mostly(st.floats(0, 1e300), st.sampled_from([-1.0, 7])),
        "block_number": _mostly(st.integers(0, 2**63 - 1), st.sampled_from([-1, 2**63, None])),
        "symbol": _mostly(st.text(max_size=64), st.just("S" * 65)),
        "pair": _mostly(st.just("0x" + "d" * 40), st.just("p" * 129)),
        "market_cap_usd": _mostly(st.floats(0, 1e15), st.sampled_from([None, 2e15])),
        "top10_holders_pct": _mostly(st.floats(0, 100), st.sampled_from([None, 100.5])),
        "task_id": _mostly(st.integers(0, 2**63 - 1), st.just(2**63)),
        "epoch": _mostly(st.integers(0, 2**31 - 1), st.just(2**31)),
        "fencing_token": _mostly(st.integers(0, 2**53), st.just(-3)),
        "extra": wire_values,
    },
)


def _outcome(read, data):
    try:
        return read(data)
    except EventError as exc:
        return str(exc)


@hypothesis.settings(max_examples=1500, deadline=None)
@hypothesis.given(wire_events)
def test_from_wires_fast_path_makes_the_slow_paths_event_or_steps_aside(data):
    """`from_wire` converts a clean event in one step (msgspec) and leaves the rest to the slow
    path: on any wire dict, the outcome (the event, or the error line) is the slow path's."""
    fast = _outcome(lambda d: from_wire(d, now_ms=NOW_MS), data)
    slow = _outcome(lambda d: _from_wire_slowly(d, NOW_MS, PLAUSIBLE), data)
    assert fast == slow
    if isinstance(fast, SwapEvent):
        assert all(type(getattr(fast, n)) is float for n in ("amount_usd", "price_usd"))
