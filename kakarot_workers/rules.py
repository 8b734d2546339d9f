"""Rule configuration (`events_config`) and rule evaluation. Pure: no Redis, no DB.

A task's config becomes a `RuleSet`: layer 1 from the config columns (single trade ≥
`min_transaction_usd`) plus the layer-2 rules of `events_config`. The schema is validated here so
that an operator's typo is refused with the field named, instead of silently disabling a rule.
Window rules (price change, volume, cumulative) need state and are evaluated by the alert pool
against Redis windows; this module evaluates the stateless ones.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kakarot_workers.errors import ConfigError
from kakarot_workers.events import SwapEvent

_INTERVAL = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> int:
    """`'5m'` → 300. Accepts s, m, h, d; raises ValueError otherwise."""
    match = _INTERVAL.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"expected a duration like 30s, 1m, 5m, 1h, got {text!r}")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True


class _WindowRule(_Rule):
    window: str = "5m"

    @field_validator("window")
    @classmethod
    def _valid_window(cls, value: str) -> str:
        parse_interval(value)
        return value


class PriceChangeRule(_WindowRule):
    threshold_pct: float = Field(gt=0)
    direction: Literal["up", "down", "both"] = "up"


class VolumeRule(_WindowRule):
    min_usd: float = Field(gt=0)


class CumulativeRule(_WindowRule):
    min_usd: float = Field(gt=0)


class LargeTradeRule(_Rule):
    min_usd: float = Field(gt=0)


class MarketCapRule(_Rule):
    min_usd: float | None = Field(default=None, ge=0)
    max_usd: float | None = Field(default=None, gt=0)


class TopHoldersRule(_Rule):
    max_pct: float = Field(gt=0, le=100)


class SideRule(_Rule):
    sides: list[Literal["buy", "sell"]] = Field(min_length=1)


class CooldownOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: int | None = Field(default=None, ge=0)


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
    if raw is None or raw == "":
        return EventsConfig()
    data: Any = raw
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"events_config: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"events_config: expected a JSON object, got {type(data).__name__}")
    try:
        return EventsConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"])
            problems.append(f"events_config.{where}: {err['msg']}")
        raise ConfigError("; ".join(problems)) from None


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


@dataclass(frozen=True)
class Firing:
    """One rule that fired on an event, with the values that made it fire."""

    rule: str
    values: dict[str, Any]


def evaluate_layer1(rules: RuleSet, event: SwapEvent) -> list[Firing]:
    """Layer 1, single trade: fires when the trade's USD value reaches `min_transaction_usd`."""
    threshold = rules.min_transaction_usd
    if threshold is None or threshold <= 0 or event.amount_usd < threshold:
        return []
    return [
        Firing(
            "min_transaction",
            {
                "amount_usd": round(event.amount_usd, 2),
                "threshold_usd": threshold,
                "side": event.side,
            },
        )
    ]
