"""Alerts pushed to the backend's WebSocket survive its restarts and its idle timeout: the
notifier counts an alert as pushed only on evidence the backend read it (an `alert_ack`, or a
`pong` after it), so a write into a connection the backend has closed is sent again, not lost.
The backend here is `kakarot hub` (restarted on the same port, closing idle connections)."""

from __future__ import annotations

import time

import pytest

from kakarot_workers.errors import NotifyError
from kakarot_workers.notify.backend import BackendNotifier
from kakarot_workers.notify.delivery import Delivery
from kakarot_workers.tools.embedded_redis import free_port
from kakarot_workers.tools.hub import Hub

ALERTS = 120
RESTARTS_AT = (40, 80)
IDLE_CLOSE_S = 0.5


def _delivery(url: str, alert_id: int) -> Delivery:
    summary = {"alert_id": alert_id, "rule": "volume", "symbol": "TKN"}
    return Delivery((alert_id,), "backend", url, (summary,))  # type: ignore[arg-type]


@pytest.mark.parametrize("acks", [True, False], ids=["acks", "pongs"])
def test_no_pushed_alert_is_lost_across_backend_restarts_and_idle_closes(db_url, acks):
    port = free_port()
    hubs = [Hub(port=port, idle_close_s=IDLE_CLOSE_S).start()]
    url = hubs[0].url
    notifier = BackendNotifier(None, timeout_s=2.0, acks=acks)
    pushed, retried = [], 0
    try:
        for alert_id in range(1, ALERTS + 1):
            if alert_id in RESTARTS_AT:
                hubs[-1].stop()  # the backend restarts: every connection to it is gone
                hubs.append(Hub(port=port, idle_close_s=IDLE_CLOSE_S).start())
            if alert_id % 15 == 0:
                time.sleep(IDLE_CLOSE_S + 0.3)  # quiet: the backend closes the idle connection
            for _ in range(20):  # the outbox sends a failed delivery again, later
                try:
                    notifier.send(_delivery(url, alert_id))
                except NotifyError:
                    retried += 1
                    time.sleep(0.1)
                    continue
                pushed.append(alert_id)
                break
    finally:
        notifier.close()
        for hub in hubs:
            hub.stop()
    received = [a for hub in hubs for a in hub.alert_ids]
    assert pushed == list(range(1, ALERTS + 1)), "a delivery never succeeded"
    assert set(received) == set(pushed), f"lost: {sorted(set(pushed) - set(received))}"
    relayed = [r["data"]["alertId"] for hub in hubs for r in hub.relayed if r["type"] == "alert"]
    print(
        f"{'acks' if acks else 'pongs'}: {ALERTS} alerts, 2 restarts and "
        f"{ALERTS // 15} idle closes: 0 lost, {retried} delivery attempt(s) failed and sent "
        f"again, {len(received) - len(set(received))} duplicate(s) received, "
        f"{len(relayed) - len(set(relayed))} relayed twice"
    )
    for hub in hubs:  # a backend that drops a repeated id hands each alert on once
        ids = [r["data"]["alertId"] for r in hub.relayed if r["type"] == "alert"]
        assert len(ids) == len(set(ids))
