"""What an alert says: the summary a message is made of, and the row of the alert log."""

from __future__ import annotations

from datetime import UTC, datetime

from kakarot_workers.alerts.alert_log import AlertData, AlertDraft, AlertRow, dedup_key
from kakarot_workers.alerts.profiles import TaskProfile
from kakarot_workers.alerts.rules import Verdict, Windows
from kakarot_workers.events import SwapEvent
from kakarot_workers.notify.messages import AlertSummary
from kakarot_workers.settings import get_settings
from kakarot_workers.status import NotifyStatus


def summarise(
    profile: TaskProfile, event: SwapEvent, verdict: Verdict, windows: Windows
) -> AlertSummary:
    """What a notification says about an alert (stored in the outbox, rendered per channel)."""
    template = get_settings().explorer_tx_url.get(event.chain)
    change = None
    pc = profile.rules.events.price_change
    stats = windows.get(pc.seconds) if pc else None
    if stats is None and windows:
        stats = windows[min(windows)]
    if stats is not None:
        change = round(stats.change_pct, 2)
    return AlertSummary(
        task_id=profile.rules.task_id,
        config_id=profile.rules.config_id,
        chain=event.chain,
        ca=event.ca,
        symbol=event.symbol or None,
        rule=verdict.primary,
        rules=[{"rule": f.rule, "values": f.values} for f in verdict.firings],
        side=event.side,
        amount_usd=round(event.amount_usd, 2),
        price_usd=event.price_usd,
        change_pct=change,
        market_cap_usd=event.market_cap_usd,
        top10_holders_pct=event.top10_holders_pct,
        incomplete=verdict.incomplete,
        missing=list(verdict.missing),
        tx_hash=event.tx_hash,
        log_index=event.log_index,
        block_number=event.block_number,
        event_time_ms=event.ts_ms,
        explorer_url=template.format(tx=event.tx_hash) if template else None,
    )


def draft(profile: TaskProfile, event: SwapEvent, verdict: Verdict, windows: Windows) -> AlertDraft:
    """The alert row and notifications for one alerting event."""
    rules = profile.rules
    summary = summarise(profile, event, verdict, windows)
    targets = profile.notify.targets(get_settings())
    row = AlertRow(
        dedup_key=dedup_key(
            rules.task_id, event.chain, event.tx_hash, event.log_index, verdict.primary
        ),
        task_id=rules.task_id,
        config_id=rules.config_id,
        config_version=rules.config_version,
        batch_id=event.batch_id or None,
        epoch=event.epoch or None,
        chain_type=event.chain,
        ca=event.ca,
        token_symbol=event.symbol or None,
        alert_type=verdict.primary,
        alert_data=AlertData(
            rules=summary["rules"],
            side=summary["side"],
            amount_usd=summary["amount_usd"],
            price_usd=summary["price_usd"],
            change_pct=summary["change_pct"],
            market_cap_usd=summary["market_cap_usd"],
            top10_holders_pct=summary["top10_holders_pct"],
            missing=summary["missing"],
        ),
        tx_hash=event.tx_hash,
        log_index=event.log_index,
        block_number=event.block_number,
        event_time=datetime.fromtimestamp(event.ts_ms / 1000, UTC).replace(tzinfo=None),
        price_usd=event.price_usd,
        amount_usd=event.amount_usd,
        incomplete_data=int(verdict.incomplete),
        notify_status=NotifyStatus.PENDING if targets else NotifyStatus.NONE,
    )
    return AlertDraft(row, summary, targets, profile.notify.digest_s)
