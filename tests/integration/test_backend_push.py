"""The alert push to the backend's WebSocket speaks the notes' vocabulary (its delivery across
backend restarts and idle closes: tests/faults/test_backend_restart.py)."""

from __future__ import annotations

import time

from kakarot_workers.db.session import session_scope
from kakarot_workers.notify.backend import BackendNotifier
from kakarot_workers.notify.delivery import Delivery
from kakarot_workers.tools.admin import add_targets, create_config, create_task, target_row
from tests.support.notify_servers import BackendServer


def test_an_alert_push_speaks_the_notes_vocabulary(db_url):
    """`alertType` in the notes' set; `alertData` with the notes' camelCase names, the token's
    name from its target row; milliseconds."""
    ca = "0x" + "ab" * 20
    with session_scope() as session:
        config = create_config(session, name="c", chain="bsc", source="simulator")
        task = create_task(session, name="t", task_type="batch", chain="bsc", config_id=config.id)
        add_targets(session, task.id, [target_row("bsc", ca, "TKN", name="Token Name")])
        task_id = task.id
    summary = {
        "alert_id": 9,
        "task_id": task_id,
        "chain": "bsc",
        "ca": ca,
        "symbol": "TKN",
        "rule": "large_trade",
        "rules": [{"rule": "large_trade", "values": {}}],
        "side": "buy",
        "amount_usd": 25_000.0,
        "price_usd": 0.5,
        "change_pct": 12.5,
        "market_cap_usd": 5e6,
        "top10_holders_pct": None,
        "tx_hash": "0x" + "c" * 64,
        "log_index": 1,
        "event_time_ms": int(time.time() * 1000),
    }
    with BackendServer() as stand_in:
        notifier = BackendNotifier(None, timeout_s=2.0, acks=True)
        notifier.send(Delivery((9,), "backend", stand_in.url, (summary,)))  # type: ignore[arg-type]
        notifier.close()
    (frame,) = stand_in.alerts
    data = frame["data"]
    assert data["alertId"] == 9 and data["alertType"] == "volume_change"
    assert abs(data["timestamp"] - time.time() * 1000) < 60_000
    alert = data["alertData"]
    assert {k: alert[k] for k in ("tokenName", "tokenSymbol", "ca", "priceChange", "volume")} == {
        "tokenName": "Token Name",
        "tokenSymbol": "TKN",
        "ca": ca,
        "priceChange": 12.5,
        "volume": 25_000.0,
    }
    assert alert["marketCap"] == 5e6 and alert["rule"] == "large_trade"
    assert all("_" not in key for key in alert), "camelCase names only"
