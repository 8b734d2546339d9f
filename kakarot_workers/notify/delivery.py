"""One message to send, and what every notifier shares: the `send` contract, the HTTP failure
rules (429 and 5xx are retried, Retry-After honoured), and secrets read from the environment.

Every notifier is `send(delivery) -> message reference`, raising `NotifyError` (retryable or not).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

from kakarot_workers.errors import NotifyError
from kakarot_workers.notify.channels import Channel
from kakarot_workers.notify.messages import Summary
from kakarot_workers.settings import ENV_PREFIX, get_settings


@dataclass(frozen=True)
class Delivery:
    """One message to send: an outbox row, or a digest of several (`ids`)."""

    ids: tuple[int, ...]
    channel: Channel
    destination: str
    summaries: tuple[Summary, ...]


class Notifier(Protocol):
    def send(self, delivery: Delivery) -> str | None:
        """Deliver; return the service's message reference; raise NotifyError."""


def retry_after_s(response: httpx.Response, body: Any = None) -> float | None:
    """The wait a 429 asked for: Telegram's `parameters.retry_after`, else `Retry-After`."""
    if isinstance(body, dict):
        parameters = body.get("parameters")
        if isinstance(parameters, dict) and isinstance(parameters.get("retry_after"), int | float):
            return float(parameters["retry_after"])
    header = response.headers.get("Retry-After")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            return None
    return None


def secret(env_name: str, what: str) -> str:
    """The secret held by the environment variable `env_name`: through the settings when it is
    one of them (so the YAML file works too), else from the environment. NotifyError (not
    retryable) naming the variable when it is unset."""
    field = env_name.removeprefix(ENV_PREFIX).lower() if env_name.startswith(ENV_PREFIX) else ""
    setting = getattr(get_settings(), field, None) if field else None
    if isinstance(setting, SecretStr):
        value = setting.get_secret_value()
    else:
        value = os.environ.get(env_name, "")
    if not value:
        raise NotifyError(f"{what} {env_name} is not set", retryable=False)
    return value


def json_body(response: httpx.Response) -> Any:
    """The answer's JSON, or None when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return None


def http_failure(service: str, response: httpx.Response, detail: str) -> NotifyError:
    """The NotifyError for a non-success HTTP answer: 429 and 5xx are retryable."""
    status = response.status_code
    retryable = status == 429 or status >= 500
    body = json_body(response)
    wait = retry_after_s(response, body) if status == 429 else None
    return NotifyError(
        f"{service}: HTTP {status}: {detail}"[:480], retryable=retryable, retry_after_s=wait
    )


def network_failure(service: str, exc: Exception) -> NotifyError:
    return NotifyError(f"{service}: {type(exc).__name__}: {exc}"[:480], retryable=True)
