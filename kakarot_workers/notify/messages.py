"""Alert text. Pure: an alert summary (as stored in the outbox) in, text out.

A summary carries what a trader acts on: token, symbol, CA, the rules that fired with their
values, price, change, amount, market cap, whether the data was incomplete, and the tx with a
link to the chain's explorer. Renderers: one log/terminal line, Telegram HTML, WeCom markdown,
and a digest (several alerts of one task in one message) in each form.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any, NotRequired, TypedDict


class RuleFiring(TypedDict):
    rule: str
    values: dict[str, Any]


class AlertSummary(TypedDict):
    """What a notification says about one alert: made by the alert pool (`alerts.drafts`),
    stored as JSON with each outbox row (with its `alert_id`), rendered per channel here."""

    task_id: int
    config_id: int
    chain: str
    ca: str
    symbol: str | None
    rule: str  # the rule the alert is filed under
    rules: list[RuleFiring]  # every rule that fired, with its values
    side: str
    amount_usd: float
    price_usd: float
    change_pct: float | None
    market_cap_usd: float | None
    top10_holders_pct: float | None
    incomplete: bool
    missing: list[str]
    tx_hash: str
    log_index: int
    block_number: int | None
    event_time_ms: int
    explorer_url: str | None
    alert_id: NotRequired[int]


# Renderers read with .get: a summary stored by an older version may lack a newer field.
Summary = AlertSummary

# Telegram refuses texts above 4096 characters; WeCom markdown above 4096 bytes.
TELEGRAM_MAX_CHARS = 4096
WECOM_MAX_BYTES = 4096


def short(address: str, keep: int = 6) -> str:
    """`0x1234…abcd`: enough of an address or hash to recognise it."""
    if len(address) <= 2 * keep + 1:
        return address
    return f"{address[:keep]}…{address[-4:]}"


def usd(value: float | None) -> str:
    if value is None:
        return "?"
    if value >= 1:
        return f"${value:,.2f}"
    return f"${value:.6g}"


def pct(value: float | None) -> str:
    return "?" if value is None else f"{value:+.2f}%"


def describe_firing(rule: str, values: dict[str, Any]) -> str:
    """One rule that fired, in words: `price +12.40% in 5m (≥ 10%)`."""
    if rule == "min_transaction":
        return (
            f"single {values.get('side', 'trade')} {usd(values.get('amount_usd'))} "
            f"≥ {usd(values.get('threshold_usd'))}"
        )
    if rule == "large_trade":
        return f"large trade {usd(values.get('amount_usd'))} ≥ {usd(values.get('min_usd'))}"
    if rule == "cumulative_interval":
        minutes = int(values.get("window_s", 0)) // 60
        return (
            f"{usd(values.get('volume_usd'))} traded in {minutes}m "
            f"≥ {usd(values.get('threshold_usd'))}"
        )
    if rule == "price_change":
        return (
            f"price {pct(values.get('change_pct'))} in {values.get('window')} "
            f"({values.get('direction')} ≥ {values.get('threshold_pct')}%)"
        )
    if rule == "volume":
        return (
            f"volume {usd(values.get('volume_usd'))} in {values.get('window')} "
            f"≥ {usd(values.get('min_usd'))}"
        )
    if rule == "cumulative":
        return (
            f"cumulative {values.get('side')} {usd(values.get('cumulative_usd'))} in "
            f"{values.get('window')} ≥ {usd(values.get('min_usd'))}"
        )
    details = ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
    return f"{rule} ({details})"


def _rules(summary: Summary) -> list[str]:
    return [describe_firing(f["rule"], f.get("values", {})) for f in summary.get("rules", [])]


def _facts(summary: Summary) -> list[str]:
    facts = [f"price {usd(summary.get('price_usd'))}"]
    if summary.get("change_pct") is not None:
        facts.append(f"change {pct(summary['change_pct'])}")
    facts.append(f"mcap {usd(summary.get('market_cap_usd'))}")
    if summary.get("top10_holders_pct") is not None:
        facts.append(f"top10 {summary['top10_holders_pct']:.1f}%")
    return facts


def _incomplete(summary: Summary) -> str | None:
    if not summary.get("incomplete"):
        return None
    missing = ", ".join(summary.get("missing") or ()) or "some metrics"
    return f"incomplete data: {missing} unknown"


def alert_line(summary: Summary) -> str:
    """One line: `ALERT task 3 · SIM7 0x1a2b3c…9f00 · single buy $12,345.00 ≥ … · price …`."""
    parts = [
        f"ALERT task {summary.get('task_id')}",
        f"{summary.get('symbol') or '?'} {short(summary.get('ca', ''))}",
        "; ".join(_rules(summary)),
        *_facts(summary),
    ]
    note = _incomplete(summary)
    if note:
        parts.append(note)
    if summary.get("tx_hash"):
        parts.append(summary.get("explorer_url") or f"tx {short(summary['tx_hash'], 10)}")
    return " · ".join(parts)


def _title(summary: Summary) -> str:
    return f"{summary.get('symbol') or '?'} on {summary.get('chain', '?').upper()}"


def telegram_html(summaries: Sequence[Summary]) -> str:
    """Telegram `sendMessage` text with `parse_mode=HTML` (one alert, or a digest)."""
    esc = html.escape
    blocks = []
    for summary in summaries:
        lines = [f"🚨 <b>{esc(_title(summary))}</b>", f"<code>{esc(summary.get('ca', ''))}</code>"]
        lines += [f"• {esc(rule)}" for rule in _rules(summary)]
        lines.append(esc(" · ".join(_facts(summary))))
        note = _incomplete(summary)
        if note:
            lines.append(f"<i>⚠ {esc(note)}</i>")
        url = summary.get("explorer_url")
        if url:
            lines.append(f'<a href="{esc(url, quote=True)}">tx</a>')
        elif summary.get("tx_hash"):
            lines.append(f"tx <code>{esc(summary['tx_hash'])}</code>")
        blocks.append("\n".join(lines))
    header = _digest_header(summaries, bold=("<b>", "</b>"))
    return _fit(header, blocks, lambda text: len(text) <= TELEGRAM_MAX_CHARS)


def wecom_markdown(summaries: Sequence[Summary]) -> str:
    """WeCom robot `markdown` content (one alert, or a digest)."""
    blocks = []
    for summary in summaries:
        lines = [f"### {_title(summary)}", f"`{summary.get('ca', '')}`"]
        lines += [f"> {rule}" for rule in _rules(summary)]
        lines.append(" · ".join(_facts(summary)))
        note = _incomplete(summary)
        if note:
            lines.append(f'<font color="warning">{note}</font>')
        if summary.get("explorer_url"):
            lines.append(f"[tx]({summary['explorer_url']})")
        blocks.append("\n".join(lines))
    header = _digest_header(summaries, bold=("**", "**"))
    return _fit(header, blocks, lambda text: len(text.encode()) <= WECOM_MAX_BYTES)


def _digest_header(summaries: Sequence[Summary], bold: tuple[str, str]) -> str:
    if len(summaries) < 2:
        return ""
    symbols = ", ".join(sorted({s.get("symbol") or "?" for s in summaries}))
    task = summaries[0].get("task_id")
    return f"{bold[0]}{len(summaries)} alerts of task {task}: {symbols}{bold[1]}\n\n"


def _fit(header: str, blocks: list[str], fits: Callable[[str], bool]) -> str:
    """Header and as many whole blocks as the service accepts, then `… and N more`: cutting
    inside a block would break its markup and the service would refuse the message."""
    for count in range(len(blocks), 0, -1):
        more = len(blocks) - count
        tail = f"\n\n… and {more} more" if more else ""
        text = header + "\n\n".join(blocks[:count]) + tail
        if fits(text):
            return text
    return (header + f"{len(blocks)} alerts (too long to list)").strip()
