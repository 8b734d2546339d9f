from collections.abc import Mapping

import hypothesis
import pytest
from hypothesis import strategies as st

from kakarot_workers.alerts.rules import (
    CooldownOverride,
    RuleSet,
    WindowStats,
    cooldown_seconds,
    judge,
    parse_events_config,
    parse_interval,
    reads_windows,
)
from kakarot_workers.errors import ConfigError
from kakarot_workers.events import SwapEvent


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
        ({"market_cap": {"min_usd": 10, "max_usd": 5}}, "events_config.market_cap"),
        ({"cooldown": {"seconds": -1}}, "events_config.cooldown.seconds"),
        ({"cumulative": {"min_usd": 1, "side": "up"}}, "events_config.cumulative.side"),
        ("[1, 2]", "events_config: expected a JSON object"),
    ],
)
def test_invalid_events_config_names_the_field(raw, field):
    with pytest.raises(ConfigError) as error:
        parse_events_config(raw)
    assert field in str(error.value)


def _event(amount_usd: float = 100.0, **fields) -> SwapEvent:
    values = {
        "chain": "bsc",
        "ca": "0x" + "a" * 40,
        "tx_hash": "0x" + "b" * 64,
        "log_index": 0,
        "ts_ms": 1,
        "side": "buy",
        "amount_usd": amount_usd,
        "price_usd": 1.0,
        "market_cap_usd": 5e6,
        "top10_holders_pct": 30.0,
    }
    values.update(fields)
    return SwapEvent(**values)


def _rules(
    min_usd: float | None = None,
    *,
    cumulative_usd: float | None = None,
    events: dict | None = None,
    logic: str = "any",
    top_holders_threshold: float | None = None,
) -> RuleSet:
    return RuleSet(
        task_id=1,
        config_id=1,
        config_version=1,
        chain="bsc",
        min_transaction_usd=min_usd,
        cumulative_min_amount_usd=cumulative_usd,
        time_interval_s=300,
        trigger_logic=logic,
        events=parse_events_config(events),
        top_holders_threshold=top_holders_threshold,
    )


def _window(seconds=300, volume=0.0, buys=0.0, sells=0.0, open_price=1.0, last_price=1.0):
    return {
        seconds: WindowStats(seconds, volume, buys, sells, 3, open_price, last_price),
    }


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
    verdict = judge(_rules(min_usd), _event(amount))
    assert verdict.alert is fires
    if fires:
        assert verdict.primary == "min_transaction"
        assert verdict.firings[0].values["amount_usd"] == round(amount, 2)
        assert verdict.firings[0].values["threshold_usd"] == min_usd


@pytest.mark.parametrize("volume, fires", [(999.99, False), (1000, True), (5000, True)])
def test_layer1_cumulative_in_the_interval(volume, fires):
    rules = _rules(cumulative_usd=1000)
    verdict = judge(rules, _event(10), _window(300, volume=volume))
    assert verdict.alert is fires
    if fires:
        assert verdict.primary == "cumulative_interval"
        assert verdict.firings[0].values["volume_usd"] == volume


def test_layer1_is_a_gate_for_layer2():
    # price up 20% in 1m, but the trade is below the single-trade minimum: no alert
    rules = _rules(500, events={"price_change": {"threshold_pct": 10, "window": "1m"}})
    up = _window(60, open_price=1.0, last_price=1.2)
    assert judge(rules, _event(499), up).rejected_by == "layer1"
    verdict = judge(rules, _event(500), up)
    assert verdict.alert and verdict.primary == "price_change"
    assert [f.rule for f in verdict.firings] == ["price_change", "min_transaction"]


@pytest.mark.parametrize(
    "direction, open_price, last_price, fires",
    [
        ("up", 1.0, 1.1, True),
        ("up", 1.0, 1.0999, False),
        ("up", 1.0, 0.8, False),
        ("down", 1.0, 0.9, True),
        ("down", 1.0, 1.5, False),
        ("both", 1.0, 0.9, True),
        ("both", 1.0, 1.1, True),
        ("both", 1.0, 1.05, False),
    ],
)
def test_price_change(direction, open_price, last_price, fires):
    rules = _rules(
        events={"price_change": {"threshold_pct": 10, "window": "1m", "direction": direction}}
    )
    verdict = judge(rules, _event(), _window(60, open_price=open_price, last_price=last_price))
    assert verdict.alert is fires
    if fires:
        assert verdict.firings[0].values["change_pct"] == round((last_price - 1) * 100, 2)


def test_price_change_without_a_window_does_not_fire():
    rules = _rules(events={"price_change": {"threshold_pct": 1, "window": "1m"}})
    assert not judge(rules, _event(), {}).alert


@pytest.mark.parametrize("volume, fires", [(9999, False), (10000, True)])
def test_volume(volume, fires):
    rules = _rules(events={"volume": {"min_usd": 10000, "window": "5m"}})
    assert judge(rules, _event(), _window(300, volume=volume)).alert is fires


@pytest.mark.parametrize(
    "side, buys, sells, fires",
    [
        ("buy", 2000, 0, True),
        ("buy", 1999, 5000, False),
        ("sell", 0, 2000, True),
        ("both", 1000, 1000, True),
        ("both", 1000, 999, False),
    ],
)
def test_cumulative_by_side(side, buys, sells, fires):
    rules = _rules(events={"cumulative": {"min_usd": 2000, "window": "5m", "side": side}})
    window = _window(300, volume=buys + sells, buys=buys, sells=sells)
    assert judge(rules, _event(), window).alert is fires


@pytest.mark.parametrize("amount, fires", [(4999, False), (5000, True)])
def test_large_trade(amount, fires):
    rules = _rules(events={"large_trade": {"min_usd": 5000}})
    assert judge(rules, _event(amount)).alert is fires


def test_trigger_logic_any_and_all():
    events = {
        "large_trade": {"min_usd": 5000},
        "volume": {"min_usd": 10000, "window": "5m"},
    }
    busy = _window(300, volume=20000)
    quiet = _window(300, volume=100)
    any_rules = _rules(events=events, logic="any")
    all_rules = _rules(events=events, logic="all")
    assert judge(any_rules, _event(6000), quiet).alert
    assert judge(any_rules, _event(100), busy).alert
    assert not judge(any_rules, _event(100), quiet).alert
    assert not judge(all_rules, _event(6000), quiet).alert
    assert not judge(all_rules, _event(100), busy).alert
    verdict = judge(all_rules, _event(6000), busy)
    assert verdict.alert and [f.rule for f in verdict.firings] == ["volume", "large_trade"]


def test_a_disabled_rule_is_ignored():
    rules = _rules(events={"large_trade": {"min_usd": 5000, "enabled": False}})
    assert judge(rules, _event(1e9)).rejected_by == "no_rules"


@pytest.mark.parametrize(
    "cap, low, high, fires",
    [(5e6, 1e6, 1e7, True), (5e5, 1e6, 1e7, False), (2e7, 1e6, 1e7, False), (1e6, 1e6, None, True)],
)
def test_market_cap_range_is_a_condition(cap, low, high, fires):
    rules = _rules(1000, events={"market_cap": {"min_usd": low, "max_usd": high}})
    verdict = judge(rules, _event(2000, market_cap_usd=cap))
    assert verdict.alert is fires
    if not fires:
        assert verdict.rejected_by == "market_cap"


@pytest.mark.parametrize("share, fires", [(30.0, True), (50.0, True), (50.01, False)])
def test_top_holders_share(share, fires):
    from_config = _rules(1000, events={"top_holders": {"max_pct": 50}})
    from_column = _rules(1000, top_holders_threshold=50)
    for rules in (from_config, from_column):
        assert judge(rules, _event(2000, top10_holders_pct=share)).alert is fires


@pytest.mark.parametrize(
    "threshold, share, fires", [(0.0, 0.0, True), (0.0, 0.01, False), (150.0, 99.0, True)]
)
def test_the_top_holders_column_is_taken_as_written(threshold, share, fires):
    """The column is the backend's (Numeric(8,4)): a value the `top_holders` rule would refuse
    (0, over 100) still judges, rather than failing the whole message."""
    rules = _rules(1000, top_holders_threshold=threshold)
    assert judge(rules, _event(2000, top10_holders_pct=share)).alert is fires


@pytest.mark.parametrize("side, fires", [("buy", True), ("sell", False)])
def test_side(side, fires):
    rules = _rules(1000, events={"side": {"sides": ["buy"]}})
    assert judge(rules, _event(2000, side=side)).alert is fires


def test_missing_metrics_alert_on_what_is_known_and_say_so():
    rules = _rules(
        1000,
        events={"market_cap": {"min_usd": 1e6}, "top_holders": {"max_pct": 50}},
    )
    verdict = judge(rules, _event(2000, market_cap_usd=None, top10_holders_pct=None))
    assert verdict.alert and verdict.incomplete
    assert verdict.missing == ("market_cap_usd", "top10_holders_pct")
    # what is known still counts: a known market cap out of range refuses
    assert not judge(rules, _event(2000, market_cap_usd=10.0, top10_holders_pct=None)).alert
    complete = judge(rules, _event(2000))
    assert complete.alert and not complete.incomplete


def test_window_lengths_are_the_distinct_windows_read():
    rules = _rules(
        cumulative_usd=100,
        events={
            "price_change": {"threshold_pct": 5, "window": "1m"},
            "volume": {"min_usd": 1, "window": "5m"},
            "cumulative": {"min_usd": 1, "window": "1h", "enabled": False},
        },
    )
    assert rules.window_lengths == (60, 300)
    assert _rules(1000).window_lengths == ()


def test_the_enabled_rules_are_the_rule_sets_triggers_and_conditions_in_order():
    rules = _rules(
        1000,
        events={
            "large_trade": {"min_usd": 1},
            "volume": {"min_usd": 1, "window": "5m", "enabled": False},
            "price_change": {"threshold_pct": 5, "window": "1m"},
            "top_holders": {"max_pct": 50},
            "side": {"sides": ["buy"]},
        },
        top_holders_threshold=10,  # the rule in events_config wins over the column
    )
    assert [rule.name for rule in rules.triggers] == ["price_change", "large_trade"]
    assert [rule.name for rule in rules.conditions] == ["side", "top_holders"]
    assert rules.conditions[1].max_pct == 50


@pytest.mark.parametrize(
    "cap, override, seconds",
    [
        (2e7, None, 180),
        (1e7, None, 300),
        (1e6, None, 300),
        (999_999, None, 600),
        (None, None, 300),
        (2e7, CooldownOverride(seconds=0), 0),
        (5e5, CooldownOverride(seconds=42), 42),
        (5e5, CooldownOverride(small_cap_s=60), 60),
        (2e7, CooldownOverride(small_cap_s=60), 180),
    ],
)
def test_cooldown_tiers(cap, override, seconds):
    assert cooldown_seconds(cap, override) == seconds


class _Unreadable(Mapping):
    """Windows that fail the test when read."""

    def __getitem__(self, seconds):
        raise AssertionError(f"the {seconds} s window was read")

    def __iter__(self):
        raise AssertionError("the windows were listed")

    def __len__(self):
        return 1


_gates = st.one_of(st.none(), st.just(0.0), st.floats(1, 10_000))


@hypothesis.given(
    min_usd=_gates,
    cumulative_usd=_gates,
    amount=st.floats(0, 20_000),
    volume=st.floats(0, 1e6),
    open_price=st.floats(0.5, 2),
)
def test_an_event_that_reads_no_windows_is_judged_alike_without_them(
    min_usd, cumulative_usd, amount, volume, open_price
):
    """The pool asks the window script to keep and return what an event saw only when its
    rules read it (`reads_windows`); for any other event the verdict needs no window."""
    rules = _rules(
        min_usd,
        cumulative_usd=cumulative_usd,
        events={
            "price_change": {"threshold_pct": 5, "window": "1m"},
            "volume": {"min_usd": 1000, "window": "5m"},
        },
    )
    event = _event(amount)
    windows = {
        s: WindowStats(s, volume, volume / 2, volume / 2, 3, open_price, 1.0) for s in (60, 300)
    }
    if reads_windows(rules, event):
        return
    verdict = judge(rules, event, _Unreadable())
    assert not verdict.alert
    assert verdict == judge(rules, event, windows)
