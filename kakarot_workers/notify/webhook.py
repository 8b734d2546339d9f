"""A generic JSON webhook, signed.

`POST {url}` with the alert (or a digest) as JSON and headers:
- `X-Kakarot-Signature: sha256=<hex HMAC-SHA256 of "{timestamp}.{body}" with the secret>`
- `X-Kakarot-Timestamp: <unix seconds>` (receivers refuse old ones: no replay)
- `X-Kakarot-Delivery: <outbox id(s)>` (the same on every retry: receivers can de-duplicate)
Any 2xx is success; 429 (Retry-After honoured) and 5xx are retried; other 4xx are not.
The secret comes from the environment (`KAKAROT_WEBHOOK_SECRET` or the config's `secret_env`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
from pydantic import ValidationError

from kakarot_workers.errors import NotifyError
from kakarot_workers.notify.channels import WebhookDestination
from kakarot_workers.notify.delivery import Delivery, http_failure, network_failure, secret


def signature(key: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` over `{timestamp}.{body}`: what a receiver recomputes to verify."""
    mac = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookNotifier:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def send(self, delivery: Delivery) -> str | None:
        try:
            destination = WebhookDestination.model_validate_json(delivery.destination)
        except ValidationError:
            raise NotifyError(
                f"webhook: the destination is not a webhook's: {delivery.destination[:100]!r}",
                retryable=False,
            ) from None
        url, secret_env = destination.url, destination.secret_env
        if not url:
            raise NotifyError(
                "webhook: no URL (notify_methods.webhook.url or KAKAROT_WEBHOOK_URL)",
                retryable=False,
            )
        key = secret(secret_env, "webhook: the signing secret")
        summaries = list(delivery.summaries)
        document = (
            {"type": "alert", "alert": summaries[0]}
            if len(summaries) == 1
            else {"type": "digest", "alerts": summaries}
        )
        body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Kakarot-Timestamp": timestamp,
            "X-Kakarot-Signature": signature(key, timestamp, body),
            "X-Kakarot-Delivery": ",".join(map(str, delivery.ids)),
        }
        try:
            response = self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise network_failure("webhook", exc) from None
        if 200 <= response.status_code < 300:
            return None
        raise http_failure("webhook", response, response.text[:200])
