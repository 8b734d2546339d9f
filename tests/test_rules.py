import pytest

from kakarot_workers.errors import ConfigError
from kakarot_workers.events import SwapEvent
from kakarot_workers.rules import RuleSet, evaluate_layer1, parse_events_config, parse_interval


@pytest.mark.parametrize(
    "text, seconds", [("30s", 30), ("1m", 60), ("5m", 300), ("1h", 3600), ("2d", 172800)]
)
def test_parse_interval(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "0m", "5x", "-1m", "1.5m"])
def test_parse_interval_refuses(text):
    with pytest.raises(ValueError):
        parse_interval(text)


def test_full_events_config_is_accepted():
    config = parse_events_config(
        {
            "price_change": {"threshold_pct": 5, "window": "1m", "direction": "both"},
            "volume": {"min_usd": 10000, "window": "5m"},
            "cumulative": {"min_usd": 2000, "window": "5m"},
            "large_trade": {"min_usd": 5000},
            "market_cap": {"min_usd": 1e5, "max_usd": 1e7},
            "top_holders": {"max_pct": 60},
            "side": {"sides": ["buy"]},
            "cooldown": {"seconds": 120},
        }
    )
    assert config.price_change is not None and config.price_change.direction == "both"
    assert config.side is not None and config.side.sides == ["buy"]


def test_events_config_as_json_text_and_empty():
    assert parse_events_config('{"large_trade": {"min_usd": 1}}').large_trade.min_usd == 1
    assert parse_events_config(None).price_change is None
    assert parse_events_config("").volume is None


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"price_change": {"threshold_pct": -1}}, "events_config.price_change.threshold_pct"),
        (
            {"price_change": {"threshold_pct": 5, "window": "5 minutes"}},
            "events_config.price_change.window",
        ),
        ({"volume": {}}, "events_config.volume.min_usd"),
        ({"price_chnage": {"threshold_pct": 5}}, "events_config.price_chnage"),
        ({"side": {"sides": ["hold"]}}, "events_config.side.sides.0"),
        ({"top_holders": {"max_pct": 120}}, "events_config.top_holders.max_pct"),
        ('{"volume": ', "events_config: not valid JSON"),
        ("[1, 2]", "events_config: expected a JSON object"),
    ],
)
def test_invalid_events_config_names_the_field(raw, field):
    with pytest.raises(ConfigError) as error:
        parse_events_config(raw)
    assert field in str(error.value)


def _event(amount_usd: float) -> SwapEvent:
    return SwapEvent(
        chain="bsc",
        ca="0x" + "a" * 40,
        tx_hash="0x" + "b" * 64,
        log_index=0,
        ts_ms=1,
        side="buy",
        amount_usd=amount_usd,
        price_usd=1.0,
    )


def _rules(min_usd: float | None) -> RuleSet:
    return RuleSet(
        task_id=1,
        config_id=1,
        config_version=1,
        chain="bsc",
        min_transaction_usd=min_usd,
        cumulative_min_amount_usd=None,
        time_interval_s=300,
        trigger_logic="any",
    )


@pytest.mark.parametrize(
    "min_usd, amount, fires",
    [
        (5000, 4999.99, False),
        (5000, 5000, True),
        (5000, 12000, True),
        (None, 1e9, False),
        (0, 1e9, False),
    ],
)
def test_layer1_single_trade(min_usd, amount, fires):
    firings = evaluate_layer1(_rules(min_usd), _event(amount))
    assert bool(firings) is fires
    if fires:
        assert firings[0].rule == "min_transaction"
        assert firings[0].values["amount_usd"] == round(amount, 2)
        assert firings[0].values["threshold_usd"] == min_usd
