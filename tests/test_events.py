import pytest

from kakarot_workers.errors import EventError
from kakarot_workers.events import SwapEvent, from_wire

GOOD = {
    "chain": "bsc",
    "ca": "0x" + "a" * 40,
    "tx_hash": "0x" + "b" * 64,
    "log_index": 2,
    "ts_ms": 1_700_000_000_000,
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
