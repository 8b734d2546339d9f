"""Where an alert becomes a message: the channels of a config and the notifiers that deliver.

A config's `notify_methods` names its channels. Either a list of names
(`["telegram", "wecom", "webhook", "backend"]`, each with the fleet's defaults from settings) or
an object with per-channel options (no secrets: those come from the environment):

    {"telegram": {"chat_id": "-100123"},
     "wecom": {"key_env": "KAKAROT_WECOM_KEY_OPS"},
     "webhook": {"url": "https://example.org/hook", "secret_env": "KAKAROT_HOOK_SECRET"},
     "backend": {},
     "digest": {"window": "1m"}}

With `digest`, the alerts of a task within the window go out as one message per channel.
Every notifier is `send(delivery) -> message reference`, raising `NotifyError` (retryable or not).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from kakarot_workers.errors import ConfigError, NotifyError
from kakarot_workers.messages import Summary
from kakarot_workers.rules import WindowText, json_text, parse_interval, validate_config
from kakarot_workers.settings import ENV_PREFIX, Settings, get_settings

Channel = Literal["telegram", "wecom", "webhook", "backend"]
CHANNELS: tuple[Channel, ...] = ("telegram", "wecom", "webhook", "backend")
_ALIASES = {"wechat": "wecom", "wework": "wecom", "websocket": "backend", "ws": "backend"}


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True


class TelegramOptions(_Options):
    chat_id: str | None = None

    @field_validator("chat_id", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class WeComOptions(_Options):
    key_env: str | None = None


class WebhookOptions(_Options):
    url: str | None = None
    secret_env: str | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value


class BackendOptions(_Options):
    pass


class DigestOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: WindowText = "1m"


class NotifyMethods(BaseModel):
    """The JSON in `monitor_config_v2.notify_methods`."""

    model_config = ConfigDict(extra="forbid")

    telegram: TelegramOptions | None = None
    wecom: WeComOptions | None = None
    webhook: WebhookOptions | None = None
    backend: BackendOptions | None = None
    digest: DigestOptions | None = None

    @property
    def digest_s(self) -> int | None:
        return parse_interval(self.digest.window) if self.digest else None

    def targets(self, settings: Settings) -> list[tuple[Channel, str]]:
        """(channel, destination) of every enabled channel: the chat id, the env variable
        holding the WeCom key, the webhook URL, the backend URL."""
        found: list[tuple[Channel, str]] = []
        if self.telegram and self.telegram.enabled:
            found.append(("telegram", self.telegram.chat_id or settings.telegram_chat_id or ""))
        if self.wecom and self.wecom.enabled:
            found.append(("wecom", self.wecom.key_env or "KAKAROT_WECOM_KEY"))
        if self.webhook and self.webhook.enabled:
            url = self.webhook.url or settings.webhook_url or ""
            secret = self.webhook.secret_env or "KAKAROT_WEBHOOK_SECRET"
            found.append(("webhook", f"{secret} {url}"))
        if self.backend and self.backend.enabled:
            found.append(("backend", settings.backend_ws_url or ""))
        return found


def parse_notify_methods(raw: Any) -> NotifyMethods:
    """Validate `notify_methods` (JSON text, a list of channel names, or an object); raise
    ConfigError naming the bad entry."""
    data = json_text(raw, "notify_methods")
    if data is None:
        return NotifyMethods()
    if isinstance(data, list):
        named: dict[str, Any] = {}
        for index, name in enumerate(data):
            if not isinstance(name, str):
                raise ConfigError(f"notify_methods[{index}]: expected a channel name, got {name!r}")
            channel = _ALIASES.get(name.lower(), name.lower())
            if channel not in CHANNELS:
                raise ConfigError(
                    f"notify_methods[{index}]: unknown channel {name!r}; "
                    f"expected one of {', '.join(CHANNELS)}"
                )
            named[channel] = {}
        data = named
    if not isinstance(data, dict):
        raise ConfigError(
            f"notify_methods: expected a list or an object, got {type(data).__name__}"
        )
    data = {_ALIASES.get(k, k): v for k, v in data.items()}
    return validate_config(NotifyMethods, data, "notify_methods")


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
        from kakarot_workers.notify.telegram import TelegramNotifier

        made = TelegramNotifier(
            http_client(), settings.telegram_api_url, settings.telegram_bot_token
        )
    elif channel == "wecom":
        from kakarot_workers.notify.wecom import WeComNotifier

        made = WeComNotifier(http_client(), settings.wecom_webhook_url)
    elif channel == "webhook":
        from kakarot_workers.notify.webhook import WebhookNotifier

        made = WebhookNotifier(http_client())
    elif channel == "backend":
        from kakarot_workers.notify.backend import BackendNotifier

        made = BackendNotifier(settings.backend_token, settings.notify_timeout_s)
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
