import dataclasses
import time

import pytest

from kakarot_workers.errors import EventError
from kakarot_workers.events import Plausible, SwapEvent, from_wire

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


def test_the_wire_form_is_every_field_as_asdict_gives_it():
    """`to_wire` is written out field by field (asdict's deep copy cost the consumer most of
    its time): it must stay every field, by name, with its value."""
    event = SwapEvent(
        **{
            **GOOD,
            "block_number": 7,
            "market_cap_usd": 1e6,
            "top10_holders_pct": 12.5,
            "task_id": 3,
            "batch_id": 4,
            "epoch": 5,
            "fencing_token": 6,
            "sent_ms": 8,
            "symbol": "TKN",
            "pair": "0x" + "b" * 40,
            "amount_token": 2.5,
        }
    )
    assert event.to_wire() == dataclasses.asdict(event)
    assert list(event.to_wire()) == [f.name for f in dataclasses.fields(SwapEvent)]
