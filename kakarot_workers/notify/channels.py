"""The channels of a config (`notify_methods`): where a task's alerts go.

A config's `notify_methods` names its channels. Either a list of names
(`["telegram", "wecom", "webhook", "backend"]`, each with the fleet's defaults from settings) or
an object with per-channel options (no secrets: those come from the environment):

    {"telegram": {"chat_id": "-100123"},
     "wecom": {"key_env": "KAKAROT_WECOM_KEY_OPS"},
     "webhook": {"url": "https://example.org/hook", "secret_env": "KAKAROT_HOOK_SECRET"},
     "backend": {},
     "digest": {"window": "1m"}}

With `digest`, the alerts of a task within the window go out as one message per channel.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from kakarot_workers.errors import ConfigError
from kakarot_workers.settings import Settings
from kakarot_workers.validation import WindowText, json_text, parse_interval, validate_config

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


class WebhookDestination(BaseModel):
    """Where a webhook notification goes: the URL, and the variable holding its secret."""

    model_config = ConfigDict(extra="forbid")
    url: str
    secret_env: str

    def dump(self) -> str:
        return self.model_dump_json()


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
        holding the WeCom key, the webhook's URL and secret variable (`WebhookDestination` as
        JSON), the backend URL. Secrets themselves never go into a destination."""
        found: list[tuple[Channel, str]] = []
        if self.telegram and self.telegram.enabled:
            found.append(("telegram", self.telegram.chat_id or settings.telegram_chat_id or ""))
        if self.wecom and self.wecom.enabled:
            found.append(("wecom", self.wecom.key_env or "KAKAROT_WECOM_KEY"))
        if self.webhook and self.webhook.enabled:
            url = self.webhook.url or settings.webhook_url or ""
            secret = self.webhook.secret_env or "KAKAROT_WEBHOOK_SECRET"
            found.append(("webhook", WebhookDestination(url=url, secret_env=secret).dump()))
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
