"""The one settings object: environment `KAKAROT_*`, optionally a YAML file, validated at start.

Precedence, highest first: environment variables, the YAML file named by `KAKAROT_CONFIG_FILE`,
the defaults below. Secrets (database and Redis passwords, bot tokens) belong in the environment;
`Settings.safe_dump()` masks them so they are never logged.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from kakarot_workers.errors import ConfigError

ENV_PREFIX = "KAKAROT_"
CONFIG_FILE_ENV = "KAKAROT_CONFIG_FILE"


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by KAKAROT_CONFIG_FILE; its keys are the field names."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._data = _read_yaml(os.environ.get(CONFIG_FILE_ENV))

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


def _read_yaml(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{CONFIG_FILE_ENV}: no such file: {path}")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{CONFIG_FILE_ENV}: {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{CONFIG_FILE_ENV}: {path} must hold a mapping of settings")
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"{CONFIG_FILE_ENV}: {path}: unknown setting(s): {', '.join(unknown)}")
    return data


class EvmChain(BaseModel):
    """One EVM chain's endpoints and pricing references (addresses are checksummed or lower)."""

    model_config = ConfigDict(extra="forbid")

    ws_url: str
    http_url: str | None = None
    factory: str | None = None
    # quote token address → its USD price (1.0 for a stablecoin), or None for the wrapped native
    quotes: dict[str, float | None] = Field(default_factory=dict)
    wrapped_native: str | None = None
    reference_pair: str | None = None
    native_usd: float | None = None

    @field_validator("ws_url")
    @classmethod
    def _ws(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("expected ws://host:port or wss://…")
        return value

    @property
    def backfill_url(self) -> str:
        if self.http_url:
            return self.http_url
        return "http" + self.ws_url[2:]


class Settings(BaseSettings):
    """Every knob of the fleet. Field `foo_bar` is read from `KAKAROT_FOO_BAR`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- services -------------------------------------------------------------------------
    database_url: str = "sqlite:///var/kakarot.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_key_prefix: str = ""
    # Nothing in the fleet reads task results; set this only if you want them stored.
    result_backend_url: str | None = None
    # --- celery ---------------------------------------------------------------------------
    celery_task_events: bool = True
    # Alert tasks are acknowledged late; an unacknowledged message is re-delivered after this.
    broker_visibility_timeout_s: int = Field(default=300, ge=5)
    # --- allocation -----------------------------------------------------------------------
    batch_cap: int = Field(default=99, ge=1, le=10_000)
    # batches filled below this share of the cap are merged (fewest moves first)
    merge_below_fill: float = Field(default=0.5, ge=0, le=1)
    # an old epoch's batch is retired at the latest this long after the switch
    epoch_grace_s: float = Field(default=600, ge=0)
    # --- stream consumers -----------------------------------------------------------------
    feed_url: str = "ws://127.0.0.1:8765"
    simulator_url: str = "ws://127.0.0.1:8765"
    emit_max_events: int = Field(default=200, ge=1)
    emit_max_ms: int = Field(default=50, ge=1)
    source_idle_timeout_s: float = Field(default=30.0, gt=0)
    reconnect_max_backoff_s: float = Field(default=10.0, gt=0)
    batch_status_ttl_s: int = Field(default=30, ge=1)
    # A consumer owns its batch through a Redis lease of this length, renewed every third of it.
    lease_ttl_s: float = Field(default=6.0, ge=0.5)
    # On a warm shutdown a live consumer serves on until its successor is live, at most this long.
    handover_timeout_s: float = Field(default=10.0, ge=0)
    # How long a dispatched `consume_batch` may wait in the queue before reconcile sends another.
    dispatch_marker_ttl_s: float = Field(default=30.0, ge=1)
    # A streams-only worker started with no -P/-c uses this pool with this many slots (batches).
    streams_pool: str = "threads"
    streams_concurrency: int = Field(default=64, ge=1)
    # Messages a worker that does not consume `streams` keeps per pool slot (see celeryconfig).
    worker_prefetch_multiplier: int = Field(default=4, ge=1)
    # Back-pressure: above this many messages in the `alerts` queue, consumers count it.
    alerts_queue_limit: int = Field(default=10_000, ge=1)
    # Above this many, events are dropped and counted (`dropped_events`); 0: never drop.
    alerts_queue_cap: int = Field(default=0, ge=0)
    # Node heartbeat (`heartbeat:node:{id}`, TTL 3×) and metrics interval; DB heartbeat writes.
    node_heartbeat_s: float = Field(default=10.0, gt=0)
    db_heartbeat_s: float = Field(default=10.0, gt=0)
    # Who writes batch heartbeats to `monitor_batch_v2`: `beat` (the sync_heartbeats job copies
    # the consumers' Redis status in bulk), `node` (each worker writes its own batches' rows), or
    # `hub` (`kakarot hub`, from the heartbeats nodes send it). One writer, never two.
    heartbeat_writer: Literal["beat", "node", "hub"] = "beat"
    # --- control plane (celery beat, queue `control`) -------------------------------------
    beat_allocate_s: float = Field(default=30.0, gt=0)
    beat_reconcile_s: float = Field(default=5.0, gt=0)
    beat_check_timeouts_s: float = Field(default=60.0, gt=0)
    beat_sync_heartbeats_s: float = Field(default=10.0, gt=0)
    beat_poll_configs_s: float = Field(default=5.0, gt=0)
    beat_sweep_outbox_s: float = Field(default=60.0, gt=0)
    # The active beat holds a Redis lock of this length (RedBeat), renewed every tick; a standby
    # tries every `beat_max_interval_s`, so it takes over within the sum of the two.
    beat_lock_timeout_s: int = Field(default=30, ge=5)
    beat_max_interval_s: float = Field(default=5.0, gt=0)
    # A running batch whose heartbeat is older than this (and has no live lease) becomes `stale`.
    batch_stale_s: float = Field(default=90.0, gt=0)
    # A running task with no heartbeat this long (since its creation, without one) is failed.
    task_timeout_s: float = Field(default=3600.0, gt=0)
    # --- config hot reload ----------------------------------------------------------------
    # Workers listen on `monitor:config:changed`; off, only the poll_configs job tells them.
    config_pubsub: bool = True
    # A config is reloaded at most once per this many seconds (later versions wait for it).
    config_debounce_s: float = Field(default=2.0, ge=0)
    # --- evm source -----------------------------------------------------------------------
    # Per chain: {"ws_url", "http_url" (back-fill; defaults to ws_url's HTTP twin), "factory",
    # "quotes": {address: usd price or null for the wrapped native}, "wrapped_native",
    # "reference_pair" (wrapped native / stablecoin), "native_usd" (fixed price, for tests)}
    evm_chains: dict[str, EvmChain] = Field(default_factory=dict)
    evm_backfill_chunk: int = Field(default=2_000, ge=1)
    evm_backfill_max_blocks: int = Field(default=50_000, ge=1)
    # Back-fill starts this many blocks before the checkpoint: events still in the alerts queue
    # when the owner died are fenced off there, and come back through here (de-duplicated).
    evm_backfill_overlap_blocks: int = Field(default=20, ge=0)
    # --- alert pool -----------------------------------------------------------------------
    # Changes arrive through the versions the control plane announces; this re-read is a
    # safety net (a version bumped without a notice and before the next poll).
    config_cache_ttl_s: float = Field(default=60.0, ge=0)
    explorer_tx_url: dict[str, str] = Field(
        default_factory=lambda: {
            "eth": "https://etherscan.io/tx/{tx}",
            "bsc": "https://bscscan.com/tx/{tx}",
            "base": "https://basescan.org/tx/{tx}",
            "sol": "https://solscan.io/tx/{tx}",
        }
    )
    # Token metrics (market cap, top-10 holders share) for events whose source lacks them: a
    # URL template with {chain} and {ca} answering {"market_cap_usd": …, "top10_holders_pct": …}.
    # Answers are cached `metrics_ttl_s`; a failed or empty lookup is retried after
    # `metrics_retry_s` (a short back-off: a missing metric never silences a token for long).
    metrics_url: str | None = None
    metrics_ttl_s: int = Field(default=300, ge=1)
    metrics_retry_s: int = Field(default=30, ge=1)
    metrics_timeout_s: float = Field(default=2.0, gt=0)
    # --- notifications --------------------------------------------------------------------
    # Secrets come from the environment only: KAKAROT_TELEGRAM_BOT_TOKEN, KAKAROT_WECOM_KEY,
    # KAKAROT_WEBHOOK_SECRET (or the variables a config names in `key_env` / `secret_env`).
    telegram_api_url: str = "https://api.telegram.org"
    telegram_bot_token: SecretStr | None = None
    telegram_chat_id: str | None = None
    wecom_webhook_url: str = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
    wecom_key: SecretStr | None = None
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    backend_ws_url: str | None = None
    backend_token: SecretStr | None = None
    # The node's heartbeat (and ping) to the backend WebSocket.
    backend_heartbeat_s: float = Field(default=30.0, gt=0)
    # `kakarot hub`: its bearer token (none: open, for loopback use) and how often it reads
    # the tasks' epochs to send batch_reload.
    hub_token: SecretStr | None = None
    hub_epoch_poll_s: float = Field(default=2.0, gt=0)
    notify_timeout_s: float = Field(default=10.0, gt=0)
    # A notification is tried this many times (429 honours Retry-After, 5xx and network errors
    # back off exponentially up to `notify_max_backoff_s`), then recorded as failed.
    notify_max_attempts: int = Field(default=8, ge=1)
    notify_max_backoff_s: float = Field(default=60.0, gt=0)
    # A delivery claimed by a worker that died is taken over after this long.
    notify_claim_s: float = Field(default=30.0, gt=0)
    # --- operations -----------------------------------------------------------------------
    log_level: str = "INFO"
    json_logs: bool = False

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "mysql+pymysql:", "mysql:", "mariadb+pymysql:")):
            raise ValueError("expected sqlite:///path or mysql+pymysql://user:pass@host/db")
        return value

    @field_validator("redis_url")
    @classmethod
    def _known_redis(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://", "redis+socket://")):
            raise ValueError("expected redis://host:port/db, rediss://… or unix:///path")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))

    def safe_dump(self) -> dict[str, Any]:
        """The settings with passwords in URLs masked, fit for logs and `kakarot config show`."""
        return {
            k: "***"
            if isinstance(getattr(self, k), SecretStr)
            else _mask_url(v)
            if isinstance(v, str)
            else v
            for k, v in self.model_dump().items()
        }


def _mask_url(value: str) -> str:
    if "://" in value and "@" in value:
        scheme, rest = value.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return value


def load_settings(**overrides: Any) -> Settings:
    """Build and validate the settings; a validation error becomes one line naming each variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            where = f"{ENV_PREFIX}{field.upper()}" + (
                "." + ".".join(map(str, err["loc"][1:])) if len(err["loc"]) > 1 else ""
            )
            got = err.get("input")
            shown = (
                "" if field.endswith(("url", "token", "secret", "password")) else f" (got {got!r})"
            )
            problems.append(f"{where}: {err['msg']}{shown}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
