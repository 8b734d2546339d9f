"""Token metrics the source did not send (market cap, top-10 holders share), from a provider.

Events missing a metric are filled from a Redis cache per token; a token not cached is asked of
the provider (`KAKAROT_METRICS_URL`, a template with {chain} and {ca}). An answer is cached for
`metrics_ttl_s`; a failure, or an answer without the metric, for only `metrics_retry_s`, so the
lookup is tried again soon. Whatever stays unknown is judged on what is known and the alert is
marked incomplete (see `rules.judge`): a missing metric never silences a token.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import httpx
import msgspec
import redis

from kakarot_workers.events import SwapEvent
from kakarot_workers.keys import Keys
from kakarot_workers.settings import Settings

log = logging.getLogger(__name__)

Metrics = dict[str, float | None]


def missing_metrics(event: SwapEvent) -> bool:
    return event.market_cap_usd is None or event.top10_holders_pct is None


def enrich(
    client: redis.Redis,
    keys: Keys,
    settings: Settings,
    http: httpx.Client | None,
    events: Sequence[SwapEvent],
) -> list[SwapEvent]:
    """The events with missing metrics filled in where the cache or the provider knows them."""
    tokens = sorted({(e.chain, e.ca) for e in events if missing_metrics(e)})
    if not tokens:
        return list(events)
    cached = client.mget([keys.token_metrics(chain, ca) for chain, ca in tokens])
    known: dict[tuple[str, str], Metrics] = {}
    for token, raw in zip(tokens, cached, strict=True):
        if raw is not None:
            known[token] = _decode(raw)
        elif settings.metrics_url and http is not None:
            known[token] = _fetch(client, keys, settings, http, *token)
    if not known:
        return list(events)
    filled = []
    for event in events:
        metrics = known.get((event.chain, event.ca))
        if metrics and missing_metrics(event):
            event = msgspec.structs.replace(
                event,
                market_cap_usd=event.market_cap_usd
                if event.market_cap_usd is not None
                else metrics.get("market_cap_usd"),
                top10_holders_pct=event.top10_holders_pct
                if event.top10_holders_pct is not None
                else metrics.get("top10_holders_pct"),
            )
        filled.append(event)
    return filled


def _fetch(
    client: redis.Redis, keys: Keys, settings: Settings, http: httpx.Client, chain: str, ca: str
) -> Metrics:
    url = settings.metrics_url.format(chain=chain, ca=ca)  # type: ignore[union-attr]
    metrics: Metrics = {"market_cap_usd": None, "top10_holders_pct": None}
    try:
        response = http.get(url, timeout=settings.metrics_timeout_s)
        response.raise_for_status()
        body = response.json()
        if isinstance(body, dict):
            metrics = {name: _number(body.get(name)) for name in metrics}
    except (httpx.HTTPError, ValueError) as exc:
        log.warning(
            "metrics for %s %s unavailable (%s); retrying in %ss",
            chain,
            ca,
            exc,
            settings.metrics_retry_s,
        )
    complete = all(value is not None for value in metrics.values())
    ttl = settings.metrics_ttl_s if complete else settings.metrics_retry_s
    client.set(keys.token_metrics(chain, ca), json.dumps(metrics), ex=ttl)
    return metrics


def _decode(raw: str | bytes) -> Metrics:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {name: _number(data.get(name)) for name in ("market_cap_usd", "top10_holders_pct")}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None
