"""WeCom (WeChat Work) group robot webhook, markdown messages.

`POST {url}?key={key}` with `{"msgtype": "markdown", "markdown": {"content": …}}`. WeCom answers
HTTP 200 even on errors, with `{"errcode": 0, "errmsg": "ok"}` on success; `45009` (over the
robot's limit of 20 messages a minute) and `-1` (system busy) are worth retrying, others (an
invalid key: 93000, content too long: 40058) are not. The key is a secret: it is read from the
environment variable the config names (default `KAKAROT_WECOM_KEY`).
"""

from __future__ import annotations

import httpx

from kakarot_workers.errors import NotifyError
from kakarot_workers.notify.delivery import (
    Delivery,
    http_failure,
    json_body,
    network_failure,
    secret,
)
from kakarot_workers.notify.messages import wecom_markdown

RATE_LIMITED = 45009
BUSY = -1
# WeCom asks for no more than 20 messages a minute per robot: wait a good part of that minute.
RATE_LIMIT_WAIT_S = 20.0


class WeComNotifier:
    def __init__(self, client: httpx.Client, url: str) -> None:
        self.client = client
        self.url = url

    def send(self, delivery: Delivery) -> str | None:
        key = secret(delivery.destination, "wecom: the robot key variable")
        try:
            response = self.client.post(
                self.url,
                params={"key": key},
                json={
                    "msgtype": "markdown",
                    "markdown": {"content": wecom_markdown(delivery.summaries)},
                },
            )
        except httpx.HTTPError as exc:
            raise network_failure("wecom", exc) from None
        if response.status_code != 200:
            raise http_failure("wecom", response, response.text[:200].replace(key, "***"))
        body = json_body(response)
        if not isinstance(body, dict) or "errcode" not in body:
            raise NotifyError(f"wecom: unexpected answer {response.text[:200]!r}", retryable=True)
        code = body["errcode"]
        if code == 0:
            return None
        message = f"wecom: errcode {code}: {body.get('errmsg', '')}"[:480]
        if code == RATE_LIMITED:
            raise NotifyError(message, retryable=True, retry_after_s=RATE_LIMIT_WAIT_S)
        raise NotifyError(message, retryable=code == BUSY)
