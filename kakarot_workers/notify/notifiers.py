"""This process's notifiers, one per channel, sharing one pooled HTTP client."""

from __future__ import annotations

import os
import threading

import httpx

from kakarot_workers.errors import NotifyError
from kakarot_workers.notify.backend import BackendNotifier
from kakarot_workers.notify.channels import Channel
from kakarot_workers.notify.delivery import Notifier
from kakarot_workers.notify.telegram import TelegramNotifier
from kakarot_workers.notify.webhook import WebhookNotifier
from kakarot_workers.notify.wecom import WeComNotifier
from kakarot_workers.settings import get_settings

_http: dict[int, httpx.Client] = {}
_notifiers: dict[tuple[int, str], Notifier] = {}
_lock = threading.Lock()


def http_client() -> httpx.Client:
    """This process's pooled HTTP client (keep-alive connections shared by every notifier)."""
    pid = os.getpid()
    with _lock:
        client = _http.get(pid)
        if client is None:
            settings = get_settings()
            client = _http[pid] = httpx.Client(
                timeout=settings.notify_timeout_s,
                limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
                headers={"User-Agent": "kakarot-workers"},
            )
    return client


def notifier(channel: Channel) -> Notifier:
    """This process's notifier for `channel`, built from the settings on first use."""
    key = (os.getpid(), channel)
    with _lock:
        found = _notifiers.get(key)
    if found is not None:
        return found
    settings = get_settings()
    made: Notifier
    if channel == "telegram":
        made = TelegramNotifier(
            http_client(), settings.telegram_api_url, settings.telegram_bot_token
        )
    elif channel == "wecom":
        made = WeComNotifier(http_client(), settings.wecom_webhook_url)
    elif channel == "webhook":
        made = WebhookNotifier(http_client())
    elif channel == "backend":
        made = BackendNotifier(
            settings.backend_token, settings.notify_timeout_s, acks=settings.backend_alert_acks
        )
    else:
        raise NotifyError(f"unknown channel {channel!r}", retryable=False)
    with _lock:
        return _notifiers.setdefault(key, made)


def reset(close: bool = True) -> None:
    """Forget the clients and notifiers made so far: closed at shutdown and between tests;
    only forgotten after a fork (the parent still uses their sockets)."""
    with _lock:
        if close:
            for client in _http.values():
                client.close()
            for made in _notifiers.values():
                closer = getattr(made, "close", None)
                if closer is not None:
                    closer()
        _http.clear()
        _notifiers.clear()
