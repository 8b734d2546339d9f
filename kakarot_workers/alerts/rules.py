"""Rule configuration (`events_config`) and rule evaluation. Pure: no Redis, no DB.

A task's config becomes a `RuleSet`: layer 1 from the config columns (single trade ≥
`min_transaction_usd`) plus the layer-2 rules of `events_config`. The schema is validated here so
that an operator's typo is refused with the field named, instead of silently disabling a rule.
Window rules (price change, volume, cumulative) need state and are evaluated by the alert pool
against Redis windows; this module evaluates the stateless ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, NamedTuple, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from kakarot_workers.errors import ConfigError
from kakarot_workers.events import SwapEvent
from kakarot_workers.validation import WindowText, json_text, parse_interval, validate_config

ModelT = TypeVar("ModelT", bound=BaseModel)


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True


class _WindowRule(_Rule):
    window: WindowText = "5m"


class PriceChangeRule(_WindowRule):
    threshold_pct: float = Field(gt=0)
    direction: Literal["up", "down", "both"] = "up"


class VolumeRule(_WindowRule):
    min_usd: float = Field(gt=0)


class CumulativeRule(_WindowRule):
    """USD traded on one side (default: buys, i.e. accumulation) within the window."""

    min_usd: float = Field(gt=0)
    side: Literal["buy", "sell", "both"] = "buy"


class LargeTradeRule(_Rule):
    min_usd: float = Field(gt=0)


class MarketCapRule(_Rule):
    min_usd: float | None = Field(default=None, ge=0)
    max_usd: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> MarketCapRule:
        if self.min_usd is not None and self.max_usd is not None and self.min_usd > self.max_usd:
            raise ValueError(f"min_usd {self.min_usd} is above max_usd {self.max_usd}")
        return self


class TopHoldersRule(_Rule):
    max_pct: float = Field(gt=0, le=100)


class SideRule(_Rule):
    sides: list[Literal["buy", "sell"]] = Field(min_length=1)


class CooldownOverride(BaseModel):
    """Per-config cooldown: one flat `seconds` (0 turns cooldown off), or tiers by market cap."""

    model_config = ConfigDict(extra="forbid")
    seconds: int | None = Field(default=None, ge=0)
    large_cap_s: int | None = Field(default=None, ge=0)
    mid_cap_s: int | None = Field(default=None, ge=0)
    small_cap_s: int | None = Field(default=None, ge=0)


class EventsConfig(BaseModel):
    """The JSON in `monitor_config_v2.events_config`. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    price_change: PriceChangeRule | None = None
    volume: VolumeRule | None = None
    cumulative: CumulativeRule | None = None
    large_trade: LargeTradeRule | None = None
    market_cap: MarketCapRule | None = None
    top_holders: TopHoldersRule | None = None
    side: SideRule | None = None
    cooldown: CooldownOverride | None = None


def parse_events_config(raw: str | dict[str, Any] | None) -> EventsConfig:
    """Validate `events_config` (JSON text or dict); raise ConfigError naming the bad field."""
    data = json_text(raw, "events_config")
    if data is None:
        return EventsConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"events_config: expected a JSON object, got {type(data).__name__}")
    return validate_config(EventsConfig, data, "events_config")


# --- cooldown tiers -------------------------------------------------------------------------

LARGE_CAP_USD = 10_000_000.0
SMALL_CAP_USD = 1_000_000.0
COOLDOWN_LARGE_CAP_S = 180
COOLDOWN_MID_CAP_S = 300
COOLDOWN_SMALL_CAP_S = 600


def cooldown_seconds(market_cap_usd: float | None, override: CooldownOverride | None) -> int:
    """How long a token stays quiet after alerting a task: > $10 M 3 min, $1–10 M 5 min,
    < $1 M 10 min, unless the config overrides. An unknown market cap takes the middle tier:
    a missing metric must neither silence a token for long nor let it spam."""
    if override is not None and override.seconds is not None:
        return override.seconds
    large = COOLDOWN_LARGE_CAP_S
    mid = COOLDOWN_MID_CAP_S
    small = COOLDOWN_SMALL_CAP_S
    if override is not None:
        large = override.large_cap_s if override.large_cap_s is not None else large
        mid = override.mid_cap_s if override.mid_cap_s is not None else mid
        small = override.small_cap_s if override.small_cap_s is not None else small
    if market_cap_usd is None:
        return mid
    if market_cap_usd > LARGE_CAP_USD:
        return large
    if market_cap_usd >= SMALL_CAP_USD:
        return mid
    return small


# --- evaluation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSet:
    """Everything the alert pool needs to judge a task's events, read from one config version."""

    task_id: int
    config_id: int
    config_version: int
    chain: str
    min_transaction_usd: float | None
    cumulative_min_amount_usd: float | None
    time_interval_s: int
    trigger_logic: Literal["any", "all"]
    events: EventsConfig = field(default_factory=EventsConfig)
    top_holders_threshold: float | None = None

    @cached_property
    def window_lengths(self) -> tuple[int, ...]:
        """The sliding windows (seconds) this rule set reads, each kept once per token."""
        lengths = set()
        if _positive(self.cumulative_min_amount_usd):
            lengths.add(self.time_interval_s)
        for rule in (self.events.price_change, self.events.volume, self.events.cumulative):
            if rule is not None and rule.enabled:
                lengths.add(parse_interval(rule.window))
        return tuple(sorted(lengths))

    @property
    def max_top_holders_pct(self) -> float | None:
        rule = self.events.top_holders
        if rule is not None:
            return rule.max_pct if rule.enabled else None
        return self.top_holders_threshold


class WindowStats(NamedTuple):
    """One token's trades within a sliding window, as of the newest trade seen (cents exact).

    A named tuple: the pool builds two or three per event, and a tuple is built in a fraction of
    a frozen dataclass's time."""

    seconds: int
    volume_usd: float
    buy_usd: float
    sell_usd: float
    trades: int
    open_price: float
    last_price: float

    @property
    def change_pct(self) -> float:
        if self.open_price <= 0:
            return 0.0
        return (self.last_price - self.open_price) / self.open_price * 100


@dataclass(frozen=True)
class Firing:
    """One rule that fired on an event, with the values that made it fire."""

    rule: str
    values: dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    """What the rules say about one event: alert or not, why, and on how complete data."""

    alert: bool
    firings: tuple[Firing, ...] = ()
    incomplete: bool = False
    missing: tuple[str, ...] = ()
    rejected_by: str | None = None

    @property
    def primary(self) -> str:
        """The rule the alert is filed under (stable for a given event and windows)."""
        return self.firings[0].rule


# The order alerts are filed under when several rules fire: the most specific first.
RULE_ORDER = (
    "price_change",
    "volume",
    "cumulative",
    "large_trade",
    "cumulative_interval",
    "min_transaction",
)


def judge(
    rules: RuleSet, event: SwapEvent, windows: Mapping[int, WindowStats] | None = None
) -> Verdict:
    """Judge one event. Pure.

    Layer 1 (config columns) is an amount gate: the trade alone reaches `min_transaction_usd`,
    or the token's USD within `time_interval` reaches `cumulative_min_amount_usd`; with neither
    configured every trade passes. Layer 2 triggers (`events_config`: price change, volume,
    cumulative, large trade) are combined by `trigger_logic` (any/all); with none configured the
    passing layer-1 rules are the alert. Conditions (market-cap range, top-holders share, side)
    must all hold; an unknown metric does not block the alert but marks it incomplete.
    """
    windows = windows or {}
    layer1 = _layer1(rules, event, windows)
    gated = _positive(rules.min_transaction_usd) or _positive(rules.cumulative_min_amount_usd)
    if gated and not layer1:
        return Verdict(False, rejected_by="layer1")

    triggers = _layer2_triggers(rules, event, windows)
    if triggers:
        fired = [firing for firing in triggers.values() if firing is not None]
        passed = all(triggers.values()) if rules.trigger_logic == "all" else bool(fired)
        if not passed:
            return Verdict(False, rejected_by="layer2")
    else:
        fired = []
        if not layer1:
            return Verdict(False, rejected_by="no_rules")

    missing: list[str] = []
    for name, holds in _conditions(rules, event, missing):
        if not holds:
            return Verdict(False, rejected_by=name)
    firings = sorted([*fired, *layer1], key=lambda f: RULE_ORDER.index(f.rule))
    return Verdict(True, tuple(firings), incomplete=bool(missing), missing=tuple(missing))


def _layer1(rules: RuleSet, event: SwapEvent, windows: Mapping[int, WindowStats]) -> list[Firing]:
    firings = []
    threshold = rules.min_transaction_usd
    if _positive(threshold) and event.amount_usd >= threshold:  # type: ignore[operator]
        firings.append(
            Firing(
                "min_transaction",
                {
                    "amount_usd": round(event.amount_usd, 2),
                    "threshold_usd": threshold,
                    "side": event.side,
                },
            )
        )
    cumulative = rules.cumulative_min_amount_usd
    stats = windows.get(rules.time_interval_s)
    if _positive(cumulative) and stats is not None and stats.volume_usd >= cumulative:  # type: ignore[operator]
        firings.append(
            Firing(
                "cumulative_interval",
                {
                    "volume_usd": round(stats.volume_usd, 2),
                    "threshold_usd": cumulative,
                    "window_s": stats.seconds,
                    "trades": stats.trades,
                },
            )
        )
    return firings


def _layer2_triggers(
    rules: RuleSet, event: SwapEvent, windows: Mapping[int, WindowStats]
) -> dict[str, Firing | None]:
    """Each enabled layer-2 trigger → its firing, or None when it did not fire."""
    config = rules.events
    triggers: dict[str, Firing | None] = {}
    if config.large_trade is not None and config.large_trade.enabled:
        rule = config.large_trade
        triggers["large_trade"] = (
            Firing(
                "large_trade", {"amount_usd": round(event.amount_usd, 2), "min_usd": rule.min_usd}
            )
            if event.amount_usd >= rule.min_usd
            else None
        )
    if config.price_change is not None and config.price_change.enabled:
        pc = config.price_change
        stats = windows.get(parse_interval(pc.window))
        # rounded: 0.9 vs 1.0 is -10%, not -9.999999999999998%
        change = round(stats.change_pct, 9) if stats is not None else 0.0
        hit = {
            "up": change >= pc.threshold_pct,
            "down": -change >= pc.threshold_pct,
            "both": abs(change) >= pc.threshold_pct,
        }[pc.direction]
        triggers["price_change"] = (
            Firing(
                "price_change",
                {
                    "change_pct": round(change, 2),
                    "threshold_pct": pc.threshold_pct,
                    "direction": pc.direction,
                    "window": pc.window,
                    "open_price": stats.open_price,
                    "last_price": stats.last_price,
                },
            )
            if hit and stats is not None
            else None
        )
    if config.volume is not None and config.volume.enabled:
        vol = config.volume
        stats = windows.get(parse_interval(vol.window))
        triggers["volume"] = (
            Firing(
                "volume",
                {
                    "volume_usd": round(stats.volume_usd, 2),
                    "min_usd": vol.min_usd,
                    "window": vol.window,
                    "trades": stats.trades,
                },
            )
            if stats is not None and stats.volume_usd >= vol.min_usd
            else None
        )
    if config.cumulative is not None and config.cumulative.enabled:
        cum = config.cumulative
        stats = windows.get(parse_interval(cum.window))
        total = 0.0
        if stats is not None:
            total = {"buy": stats.buy_usd, "sell": stats.sell_usd, "both": stats.volume_usd}[
                cum.side
            ]
        triggers["cumulative"] = (
            Firing(
                "cumulative",
                {
                    "cumulative_usd": round(total, 2),
                    "min_usd": cum.min_usd,
                    "side": cum.side,
                    "window": cum.window,
                },
            )
            if total >= cum.min_usd
            else None
        )
    return triggers


def _conditions(rules: RuleSet, event: SwapEvent, missing: list[str]) -> list[tuple[str, bool]]:
    """(condition, holds) for each enabled condition; unknown metrics hold and are noted."""
    config = rules.events
    results = []
    if config.side is not None and config.side.enabled:
        results.append(("side", event.side in config.side.sides))
    cap = config.market_cap
    if cap is not None and cap.enabled:
        if event.market_cap_usd is None:
            missing.append("market_cap_usd")
        else:
            value = event.market_cap_usd
            holds = (cap.min_usd is None or value >= cap.min_usd) and (
                cap.max_usd is None or value <= cap.max_usd
            )
            results.append(("market_cap", holds))
    max_pct = rules.max_top_holders_pct
    if max_pct is not None:
        if event.top10_holders_pct is None:
            missing.append("top10_holders_pct")
        else:
            results.append(("top_holders", event.top10_holders_pct <= max_pct))
    return results


def _positive(value: float | None) -> bool:
    return value is not None and value > 0
