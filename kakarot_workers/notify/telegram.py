"""Telegram Bot API `sendMessage` (HTML parse mode).

`POST {api}/bot{token}/sendMessage` with `{"chat_id", "text", "parse_mode": "HTML"}`. Telegram
answers `{"ok": true, "result": {"message_id": …}}`, or `{"ok": false, "error_code": 429,
"parameters": {"retry_after": N}}` when rate limited, 400 for a bad chat or markup, 401/403 for a
bad token or a bot removed from the chat (not retried).
"""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from kakarot_workers.errors import NotifyError
from kakarot_workers.notify.delivery import Delivery, http_failure, json_body, network_failure
from kakarot_workers.notify.messages import telegram_html


class TelegramNotifier:
    def __init__(self, client: httpx.Client, api_url: str, token: SecretStr | None) -> None:
        self.client = client
        self.api_url = api_url.rstrip("/")
        self.token = token

    def send(self, delivery: Delivery) -> str | None:
        if self.token is None or not self.token.get_secret_value():
            raise NotifyError("telegram: KAKAROT_TELEGRAM_BOT_TOKEN is not set", retryable=False)
        if not delivery.destination:
            raise NotifyError(
                "telegram: no chat_id "
                "(notify_methods.telegram.chat_id or KAKAROT_TELEGRAM_CHAT_ID)",
                retryable=False,
            )
        secret = self.token.get_secret_value()
        try:
            response = self.client.post(
                f"{self.api_url}/bot{secret}/sendMessage",
                json={
                    "chat_id": delivery.destination,
                    "text": telegram_html(delivery.summaries),
                    "parse_mode": "HTML",
                    "disable_web_page_preview": True,
                },
            )
        except httpx.HTTPError as exc:
            raise _hide(network_failure("telegram", exc), secret) from None
        body = json_body(response)
        if response.status_code == 200 and isinstance(body, dict) and body.get("ok"):
            result = body.get("result") or {}
            return str(result.get("message_id")) if isinstance(result, dict) else None
        detail = body.get("description", "") if isinstance(body, dict) else response.text[:200]
        raise _hide(http_failure("telegram", response, str(detail)), secret)


def _hide(error: NotifyError, secret: str) -> NotifyError:
    """The bot token is part of the URL: make sure no error text carries it."""
    text = str(error)
    if secret and secret in text:
        return NotifyError(
            text.replace(secret, "***"),
            retryable=error.retryable,
            retry_after_s=error.retry_after_s,
        )
    return error
