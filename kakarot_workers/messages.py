"""Alert text: one readable line per alert (log, terminal) . Pure."""

from __future__ import annotations

from typing import Any


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


def describe_firing(rule: str, values: dict[str, Any]) -> str:
    if rule == "min_transaction":
        return (
            f"single {values.get('side', 'trade')} {usd(values.get('amount_usd'))} "
            f"≥ {usd(values.get('threshold_usd'))}"
        )
    details = ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
    return f"{rule} ({details})"


def alert_line(
    *,
    task_id: int,
    symbol: str | None,
    ca: str,
    rule: str,
    values: dict[str, Any],
    price_usd: float | None,
    tx_hash: str | None,
    explorer_url: str | None,
) -> str:
    """One line: `ALERT task 3 · SIM7 0x1a2b3c…9f00 · single buy $12,345.00 ≥ $5,000.00 · …`."""
    parts = [
        f"ALERT task {task_id}",
        f"{symbol or '?'} {short(ca)}",
        describe_firing(rule, values),
        f"price {usd(price_usd)}",
    ]
    if tx_hash:
        parts.append(explorer_url or f"tx {short(tx_hash, 10)}")
    return " · ".join(parts)
