"""Rule configuration (`events_config`) and rule evaluation. Pure: no Redis, no DB.

A task's config becomes a `RuleSet`: layer 1 from the config columns (single trade ≥
`min_transaction_usd`) plus the layer-2 rules of `events_config`. The schema is validated here so
that an operator's typo is refused with the field named, instead of silently disabling a rule.
Rules are data that judge: each trigger of layer 2 says whether it fired on an event (`fire`,
given the token's windows, which the alert pool keeps in Redis), each condition whether it holds
(`holds`, None when its metric is unknown), and `judge` combines them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from kakarot_workers.errors import ConfigError
from kakarot_workers.events import SwapEvent
from kakarot_workers.validation import WindowText, json_text, parse_interval, validate_config


@dataclass(frozen=True)
class Firing:
    """One rule that fired on an event, with the values that made it fire."""

    rule: str
    values: dict[str, Any]


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


Windows = Mapping[int, WindowStats]  # by window length in seconds


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True


class _WindowRule(_Rule):
    window: WindowText = "5m"

    @cached_property
    def seconds(self) -> int:
        """The window's length, parsed once."""
        return parse_interval(self.window)


# --- layer 2 triggers: each says whether it fired on an event, and with which values --------


class PriceChangeRule(_WindowRule):
    name: ClassVar[str] = "price_change"
    threshold_pct: float = Field(gt=0)
    direction: Literal["up", "down", "both"] = "up"

    def fire(self, event: SwapEvent, windows: Windows) -> Firing | None:
        stats = windows.get(self.seconds)
        if stats is None:
            return None
        change = round(stats.change_pct, 9)  # rounded: 0.9 vs 1.0 is -10%, not -9.999999999%
        moved = {"up": change, "down": -change, "both": abs(change)}[self.direction]
        if moved < self.threshold_pct:
            return None
        return Firing(
            self.name,
            {
                "change_pct": round(change, 2),
                "threshold_pct": self.threshold_pct,
                "direction": self.direction,
                "window": self.window,
                "open_price": stats.open_price,
                "last_price": stats.last_price,
            },
        )


class VolumeRule(_WindowRule):
    name: ClassVar[str] = "volume"
    min_usd: float = Field(gt=0)

    def fire(self, event: SwapEvent, windows: Windows) -> Firing | None:
        stats = windows.get(self.seconds)
        if stats is None or stats.volume_usd < self.min_usd:
            return None
        return Firing(
            self.name,
            {
                "volume_usd": round(stats.volume_usd, 2),
                "min_usd": self.min_usd,
                "window": self.window,
                "trades": stats.trades,
            },
        )


class CumulativeRule(_WindowRule):
    """USD traded on one side (default: buys, i.e. accumulation) within the window."""

    name: ClassVar[str] = "cumulative"
    min_usd: float = Field(gt=0)
    side: Literal["buy", "sell", "both"] = "buy"

    def fire(self, event: SwapEvent, windows: Windows) -> Firing | None:
        stats = windows.get(self.seconds)
        total = 0.0
        if stats is not None:
            total = {"buy": stats.buy_usd, "sell": stats.sell_usd, "both": stats.volume_usd}[
                self.side
            ]
        if total < self.min_usd:
            return None
        return Firing(
            self.name,
            {
                "cumulative_usd": round(total, 2),
                "min_usd": self.min_usd,
                "side": self.side,
                "window": self.window,
            },
        )


class LargeTradeRule(_Rule):
    name: ClassVar[str] = "large_trade"
    min_usd: float = Field(gt=0)

    def fire(self, event: SwapEvent, windows: Windows) -> Firing | None:
        if event.amount_usd < self.min_usd:
            return None
        return Firing(
            self.name, {"amount_usd": round(event.amount_usd, 2), "min_usd": self.min_usd}
        )


Trigger = PriceChangeRule | VolumeRule | CumulativeRule | LargeTradeRule


# --- conditions: each must hold; None when the metric it reads is unknown -------------------


class SideRule(_Rule):
    name: ClassVar[str] = "side"
    metric: ClassVar[str | None] = None
    sides: list[Literal["buy", "sell"]] = Field(min_length=1)

    def holds(self, event: SwapEvent) -> bool | None:
        return event.side in self.sides


class MarketCapRule(_Rule):
    name: ClassVar[str] = "market_cap"
    metric: ClassVar[str | None] = "market_cap_usd"
    min_usd: float | None = Field(default=None, ge=0)
    max_usd: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> MarketCapRule:
        if self.min_usd is not None and self.max_usd is not None and self.min_usd > self.max_usd:
            raise ValueError(f"min_usd {self.min_usd} is above max_usd {self.max_usd}")
        return self

    def holds(self, event: SwapEvent) -> bool | None:
        value = event.market_cap_usd
        if value is None:
            return None
        return (self.min_usd is None or value >= self.min_usd) and (
            self.max_usd is None or value <= self.max_usd
        )


class TopHoldersRule(_Rule):
    name: ClassVar[str] = "top_holders"
    metric: ClassVar[str | None] = "top10_holders_pct"
    max_pct: float = Field(gt=0, le=100)

    def holds(self, event: SwapEvent) -> bool | None:
        if event.top10_holders_pct is None:
            return None
        return event.top10_holders_pct <= self.max_pct


Condition = SideRule | MarketCapRule | TopHoldersRule


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
    def triggers(self) -> tuple[Trigger, ...]:
        """The enabled layer-2 triggers of `events_config`."""
        config = self.events
        found = (config.price_change, config.volume, config.cumulative, config.large_trade)
        return tuple(rule for rule in found if rule is not None and rule.enabled)

    @cached_property
    def conditions(self) -> tuple[Condition, ...]:
        """The enabled conditions; the top-holders share falls back to the config column."""
        config = self.events
        found: list[Condition] = [
            rule for rule in (config.side, config.market_cap) if rule is not None and rule.enabled
        ]
        if config.top_holders is not None:
            if config.top_holders.enabled:
                found.append(config.top_holders)
        elif self.top_holders_threshold is not None:  # the column: any value, as written
            found.append(TopHoldersRule.model_construct(max_pct=self.top_holders_threshold))
        return tuple(found)

    @cached_property
    def window_lengths(self) -> tuple[int, ...]:
        """The sliding windows (seconds) this rule set reads, each kept once per token."""
        lengths = {rule.seconds for rule in self.triggers if isinstance(rule, _WindowRule)}
        if _positive(self.cumulative_min_amount_usd):
            lengths.add(self.time_interval_s)
        return tuple(sorted(lengths))


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


def judge(rules: RuleSet, event: SwapEvent, windows: Windows | None = None) -> Verdict:
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

    if rules.triggers:
        results = [rule.fire(event, windows) for rule in rules.triggers]
        fired = [firing for firing in results if firing is not None]
        passed = len(fired) == len(results) if rules.trigger_logic == "all" else bool(fired)
        if not passed:
            return Verdict(False, rejected_by="layer2")
    else:
        fired = []
        if not layer1:
            return Verdict(False, rejected_by="no_rules")

    missing: list[str] = []
    for condition in rules.conditions:
        holds = condition.holds(event)
        if holds is None and condition.metric is not None:
            missing.append(condition.metric)
        elif not holds:
            return Verdict(False, rejected_by=condition.name)
    firings = sorted([*fired, *layer1], key=lambda f: RULE_ORDER.index(f.rule))
    return Verdict(True, tuple(firings), incomplete=bool(missing), missing=tuple(missing))


def reads_windows(rules: RuleSet, event: SwapEvent) -> bool:
    """Whether `judge` reads any window to judge `event`: not when layer 1 turns it away on its
    amount alone (below the trade gate, with no cumulative gate), as it does most trades."""
    if _positive(rules.cumulative_min_amount_usd):
        return True
    threshold = rules.min_transaction_usd
    return not (_positive(threshold) and event.amount_usd < threshold)  # type: ignore[operator]


def _layer1(rules: RuleSet, event: SwapEvent, windows: Windows) -> list[Firing]:
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
    stats = windows.get(rules.time_interval_s) if _positive(cumulative) else None
    if stats is not None and stats.volume_usd >= cumulative:  # type: ignore[operator]
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


def _positive(value: float | None) -> bool:
    return value is not None and value > 0
