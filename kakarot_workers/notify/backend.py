"""The admin backend's WebSocket: an `alert` push (SPEC §7, message format from the notes).

`{"type": "alert", "data": {"alertId", "alertType", "alertData", "timestamp"}, "timestamp"}`,
one per alert (a digest sends each), in the notes' vocabulary (`alert_type`, `alert_data`;
docs/backend-protocol.md), on a connection of this process's own that talks like any client of the
backend: it waits for `connected`, registers (`register {consumer_id}`, this process's
`hostname-pid-alerts`) and sends nothing before `registered`.

A write to a socket the backend has closed (a restart, an idle timeout) succeeds locally and is
lost, so an alert counts as delivered only on evidence that the backend read it: its
`alert_ack {alertId}` when the backend acknowledges alerts (`KAKAROT_BACKEND_ALERT_ACKS`:
exactly once by alert id, if the backend drops an id it has seen), else a `pong` to a `ping`
sent after the alerts (the backend answers in order: at least once). Without that evidence
within `notify_timeout_s` the connection is dropped and the delivery fails as retryable; when
the connection was an old one (it may have died idle), it is tried once more at once on a new
one. The outbox sends a failed delivery again later.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import websocket
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from kakarot_workers import runtime
from kakarot_workers.backend import auth_header, close_quietly
from kakarot_workers.db.models import MonitorTaskTarget
from kakarot_workers.db.session import session_scope
from kakarot_workers.errors import NotifyError
from kakarot_workers.notify.delivery import Delivery
from kakarot_workers.notify.messages import Summary

log = logging.getLogger(__name__)

# The alert push registers as `hostname-pid-alerts`: the process's node link already holds
# `hostname-pid`, and a backend keeps one session per consumer id.
PUSH_SLOT = "alerts"

# What is read and ignored while waiting for one frame at most (a backend's broadcasts).
MAX_FRAMES_SKIPPED = 1_000


# The notes' alert types (`000`, `push_alert`): price_change, holder_change, volume_change,
# block_event. The fleet's rules map onto them; the rule itself stays in `alertData.rule`.
ALERT_TYPES = {
    "price_change": "price_change",
    "volume": "volume_change",
    "cumulative": "volume_change",
    "cumulative_interval": "volume_change",
    "large_trade": "volume_change",
    "min_transaction": "volume_change",
    "top_holders": "holder_change",
}
NAMES_TTL_S = 300.0
_names: dict[tuple[int, str], tuple[float, str | None]] = {}
_names_lock = threading.Lock()


def alert_type(rule: str) -> str:
    """The notes' alert type of an alert filed under `rule`."""
    return ALERT_TYPES.get(rule, "volume_change")


def alert_data(summary: Summary, names: dict[tuple[int, str], str | None]) -> dict[str, Any]:
    """`alertData` as the notes name it (`000` appendix C 5: tokenName, tokenSymbol, ca,
    priceChange, volume, marketCap), then the rest of the alert in camelCase."""
    task_id, ca = int(summary.get("task_id") or 0), str(summary.get("ca") or "")
    return {
        "tokenName": names.get((task_id, ca)),
        "tokenSymbol": summary.get("symbol"),
        "ca": ca,
        "priceChange": summary.get("change_pct"),
        "volume": summary.get("amount_usd"),
        "marketCap": summary.get("market_cap_usd"),
        "chain": summary.get("chain"),
        "rule": summary.get("rule"),
        "rules": summary.get("rules", []),
        "side": summary.get("side"),
        "priceUsd": summary.get("price_usd"),
        "top10HolderPct": summary.get("top10_holders_pct"),
        "incomplete": summary.get("incomplete", False),
        "txHash": summary.get("tx_hash"),
        "logIndex": summary.get("log_index"),
        "blockNumber": summary.get("block_number"),
        "eventTime": summary.get("event_time_ms"),
        "explorerUrl": summary.get("explorer_url"),
        "taskId": task_id,
    }


def token_names(summaries: Iterable[Summary]) -> dict[tuple[int, str], str | None]:
    """The target rows' `token_name` of the alerts' tokens (cached for NAMES_TTL_S; a database
    that does not answer leaves them unnamed rather than holding the push)."""
    wanted = {(int(s.get("task_id") or 0), str(s.get("ca") or "")) for s in summaries}
    now = time.monotonic()
    with _names_lock:
        known = {k: v for k, (at, v) in _names.items() if k in wanted and now - at < NAMES_TTL_S}
    missing = wanted - known.keys()
    if missing:
        try:
            with session_scope() as session:
                rows = session.execute(
                    select(
                        MonitorTaskTarget.task_id,
                        MonitorTaskTarget.target_value,
                        MonitorTaskTarget.token_name,
                    ).where(
                        MonitorTaskTarget.task_id.in_({t for t, _ in missing}),
                        MonitorTaskTarget.target_value.in_({c for _, c in missing}),
                    )
                ).all()
        except SQLAlchemyError as exc:
            log.warning("backend push: token names not read (%s)", str(exc).splitlines()[0])
            return {**dict.fromkeys(missing), **known}
        found: dict[tuple[int, str], str | None] = dict.fromkeys(missing)
        found |= {(task, ca): name for task, ca, name in rows if (task, ca) in missing}
        with _names_lock:
            _names.update({k: (now, v) for k, v in found.items()})
        known |= found
    return known


class NoEvidence(Exception):
    """The backend did not answer as it should in time (or closed the connection)."""


class BackendNotifier:
    def __init__(self, token: SecretStr | None, timeout_s: float, *, acks: bool = False) -> None:
        self.token = token
        self.timeout_s = timeout_s
        self.acks = acks
        self._socket: websocket.WebSocket | None = None
        self._url: str | None = None
        self._lock = threading.Lock()

    def send(self, delivery: Delivery) -> str | None:
        if not delivery.destination:
            raise NotifyError("backend: KAKAROT_BACKEND_WS_URL is not set", retryable=False)
        names = token_names(delivery.summaries)
        now = int(time.time() * 1000)
        alerts: list[dict[str, Any]] = [
            {
                "type": "alert",
                "data": {
                    "alertId": summary.get("alert_id"),
                    "alertType": alert_type(str(summary.get("rule") or "")),
                    "alertData": alert_data(summary, names),
                    "timestamp": now,
                },
                "timestamp": now,
            }
            for summary in delivery.summaries
        ]
        with self._lock:
            for attempt in (1, 2):
                reused = self._socket is not None and self._url == delivery.destination
                try:
                    socket = self._connect(delivery.destination)
                    for alert in alerts:
                        socket.send(json.dumps(alert))
                    self._confirm(socket, [a["data"]["alertId"] for a in alerts])
                    return None
                except (OSError, websocket.WebSocketException, NoEvidence, ValueError) as exc:
                    self._close()
                    if attempt == 1 and reused:
                        continue  # it may have died idle: once more on a new connection
                    raise NotifyError(
                        f"backend: {type(exc).__name__}: {exc}"[:480], retryable=True
                    ) from None
        return None

    def _confirm(self, socket: websocket.WebSocket, alert_ids: Iterable[Any]) -> None:
        """Wait for the evidence that the backend read what was sent (see the module)."""
        if self.acks:
            waiting = set(alert_ids)
            while waiting:
                frame = self._read(socket, "alert_ack")
                waiting.discard((frame.get("data") or frame).get("alertId"))
        else:
            socket.send(json.dumps({"type": "ping", "timestamp": int(time.time() * 1000)}))
            self._read(socket, "pong")

    def _read(self, socket: websocket.WebSocket, kind: str) -> dict[str, Any]:
        """The next frame of type `kind`, skipping others, within `timeout_s`."""
        deadline = time.monotonic() + self.timeout_s
        for _ in range(MAX_FRAMES_SKIPPED):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            socket.settimeout(left)
            raw = socket.recv()
            if not raw:
                raise NoEvidence(f"the backend closed the connection (waiting for {kind})")
            frame = json.loads(raw)
            if isinstance(frame, dict) and frame.get("type") == kind:
                return frame
            if isinstance(frame, dict) and frame.get("type") == "error":
                raise NoEvidence(f"the backend says: {str(frame.get('message'))[:200]}")
        raise NoEvidence(f"no {kind} within {self.timeout_s:g}s")

    def _connect(self, url: str) -> websocket.WebSocket:
        if self._socket is not None and self._url == url and self._socket.connected:
            return self._socket
        self._close()
        token = self.token.get_secret_value() if self.token is not None else None
        socket = websocket.create_connection(url, timeout=self.timeout_s, header=auth_header(token))
        try:
            self._read(socket, "connected")
            # not the process's own id: its node link (same process) is registered under it
            consumer_id = runtime.consumer_id(PUSH_SLOT)
            socket.send(json.dumps({"type": "register", "consumer_id": consumer_id}))
            self._read(socket, "registered")
        except BaseException:
            close_quietly(socket)
            raise
        self._socket, self._url = socket, url
        return socket

    def _close(self) -> None:
        if self._socket is not None:
            close_quietly(self._socket)
        self._socket = None

    def close(self) -> None:
        with self._lock:
            self._close()
