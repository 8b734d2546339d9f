"""The one settings object: environment `KAKAROT_*`, optionally a YAML file, validated at start.

Precedence, highest first: environment variables, the YAML file named by `KAKAROT_CONFIG_FILE`,
the defaults below. Secrets (database and Redis passwords, bot tokens) belong in the environment;
`Settings.safe_dump()` masks them so they are never logged.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from kakarot_workers.errors import ConfigError
from kakarot_workers.events import Plausible
from kakarot_workers.redis_urls import SENTINEL_SCHEME, sentinel_group

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
    """Every knob of the fleet. Field `foo_bar` is read from `KAKAROT_FOO_BAR`; its description
    is the README's configuration table (`kakarot config reference`)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # --- services -------------------------------------------------------------------------
    database_url: str = Field(
        "sqlite:///var/kakarot.db",
        description="`sqlite:///path` or `mysql+pymysql://user:pass@host/db` (the password from "
        "the environment only)",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="broker and state store; `kakarot demo` starts an embedded server when unset; "
        "`sentinel://host:port;sentinel://host:port` for a Sentinel group",
    )
    redis_sentinel_master: str = Field(
        "mymaster", description="the Sentinel group's name, with a `sentinel://` Redis URL"
    )
    redis_key_prefix: str = Field("", description="prefix of every Redis key (fleets sharing one)")
    result_backend_url: str | None = Field(
        None, description="Celery result backend: nothing in the fleet reads results"
    )
    # --- celery ---------------------------------------------------------------------------
    celery_task_events: bool = Field(True, description="Celery task events (Flower shows them)")
    broker_visibility_timeout_s: int = Field(
        300, ge=5, description="an unacknowledged alert message is delivered again after this"
    )
    # --- allocation -----------------------------------------------------------------------
    batch_cap: int = Field(
        99, ge=1, le=10_000, description="targets per batch (a feed connection serves ≤ 99)"
    )
    merge_below_fill: float = Field(
        0.5, ge=0, le=1, description="batches filled below this share of the cap are merged"
    )
    epoch_grace_s: float = Field(
        600, ge=0, description="an old epoch's batch is retired at the latest this long after"
    )
    # --- stream consumers -----------------------------------------------------------------
    feed_url: str = Field(
        "ws://127.0.0.1:8765", description="market-data feed of configs with `source=feed`"
    )
    simulator_url: str = Field(
        "ws://127.0.0.1:8765", description="simulator of configs with `source=simulator`"
    )
    emit_max_events: int = Field(200, ge=1, description="events per message to the alert pool")
    emit_max_ms: int = Field(
        50, ge=1, description="a message to the alert pool is sent at the latest this old"
    )
    event_max_future_s: float = Field(
        300.0, ge=0, description="an event stamped later than this after now is refused"
    )
    event_max_age_s: float = Field(
        7 * 86_400.0,
        gt=0,
        description="an event stamped earlier than this before now is refused (back-fills "
        "reach back at most `evm_backfill_max_blocks`)",
    )
    outage_buffer_events: int = Field(
        20_000,
        ge=0,
        description="events a consumer keeps while Redis is away (beyond: dropped, counted)",
    )
    outage_retry_max_s: float = Field(
        5.0,
        gt=0,
        description="while the database or Redis is away a task retries without limit, at "
        "least this often",
    )
    source_idle_timeout_s: float = Field(
        30.0, gt=0, description="a source silent this long is taken for dead and reconnected"
    )
    reconnect_max_backoff_s: float = Field(
        10.0, gt=0, description="cap of the exponential, jittered reconnect delay"
    )
    batch_status_ttl_s: int = Field(
        30, ge=1, description="a consumer's status in Redis expires this long after its last"
    )
    lease_ttl_s: float = Field(
        6.0,
        ge=0.5,
        description="a consumer's batch lease, renewed every third of it: a dead consumer's "
        "batch is free after this",
    )
    standby: bool = Field(
        False,
        description="a hot standby per feed batch on another node: it takes over from the "
        "owner's last sent trade, with nothing lost on kill -9 or a pause",
    )
    standby_buffer_s: float = Field(
        30.0, gt=0, description="how many seconds of trades a standby keeps to take over from"
    )
    standby_check_s: float = Field(
        0.2, gt=0, description="how often a standby looks whether the batch's lease is free"
    )
    handover_timeout_s: float = Field(
        10.0,
        ge=0,
        description="on SIGTERM a live consumer serves on until its successor is live, at most "
        "this long",
    )
    dispatch_marker_ttl_s: float = Field(
        30.0, ge=1, description="a dispatched batch is not sent again for this long"
    )
    rebalance_spread: int = Field(
        1,
        ge=1,
        description="beat moves a batch while the busiest streams node serves more than this "
        "many batches more than the idlest",
    )
    rebalance_cooloff_s: float = Field(
        300.0, ge=0, description="a batch moved to even the load is not moved again for this long"
    )
    streams_pool: str = Field(
        "threads", description="pool of a streams-only worker started without `-P`"
    )
    streams_concurrency: int = Field(
        64, ge=1, description="slots (batches) of a streams-only worker started without `-c`"
    )
    worker_prefetch_multiplier: int = Field(
        4,
        ge=1,
        description="messages per pool slot a worker holds (one that consumes `streams`: none "
        "beyond its free slots)",
    )
    alerts_queue_limit: int = Field(
        10_000,
        ge=1,
        description="above this many messages in `alerts`, consumers count `backpressure_count`",
    )
    degrade_backlog: list[int] = Field(
        [20_000, 100_000, 400_000],
        description="`alerts` backlogs (messages) at which the fleet sheds, in order: metric "
        "lookups, narrow micro-batches, single notifications (digests instead); [] never",
    )
    alerts_queue_cap: int = Field(
        0,
        ge=0,
        description="above this many, events are dropped and counted in `dropped_events` (0: "
        "never)",
    )
    node_heartbeat_s: float = Field(
        10.0, gt=0, description="node heartbeat (TTL 3×) and metrics interval"
    )
    probe_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="a worker or beat serves /metrics, /health and /ready on this port (0: "
        "none; one port per process)",
    )
    probe_address: str = Field("127.0.0.1", description="the address the probes listen on")
    node_forget_s: float = Field(
        3600.0,
        ge=60,
        description="a node that stopped beating without a clean shutdown (kill -9) leaves "
        "`kakarot nodes` this long after its last beat",
    )
    db_heartbeat_s: float = Field(
        10.0, gt=0, description="interval of a node's batch rows, with `heartbeat_writer=node`"
    )
    heartbeat_writer: Literal["beat", "node", "hub", "none"] = Field(
        "beat",
        description="the one writer of batch heartbeats to `monitor_batch_v2`: `beat` (from "
        "Redis), `node` (each its own), `hub`, `none` (the Java backend writes them)",
    )
    # --- control plane (celery beat, queue `control`) -------------------------------------
    beat_allocate_s: float = Field(30.0, gt=0, description="beat: allocate changed tasks, every")
    beat_reconcile_s: float = Field(5.0, gt=0, description="beat: reconcile, every")
    beat_check_timeouts_s: float = Field(60.0, gt=0, description="beat: check_timeouts, every")
    beat_sync_heartbeats_s: float = Field(10.0, gt=0, description="beat: sync_heartbeats, every")
    beat_poll_configs_s: float = Field(5.0, gt=0, description="beat: poll_configs, every")
    beat_sweep_outbox_s: float = Field(60.0, gt=0, description="beat: sweep_outbox, every")
    beat_rebalance_s: float = Field(
        30.0, ge=0, description="beat: rebalance (at most one batch moved), every (0: never)"
    )
    beat_check_workers_s: float = Field(
        30.0, gt=0, description="beat warns of queues no live worker consumes, at most this often"
    )
    beat_lock_timeout_s: int = Field(
        30, ge=5, description="the active beat's lock (RedBeat), renewed every tick"
    )
    beat_max_interval_s: float = Field(
        5.0,
        gt=0,
        description="a beat's longest sleep: a standby takes over within it plus the lock",
    )
    batch_stale_s: float = Field(
        90.0,
        gt=0,
        description="a serving batch with an older heartbeat and no lease becomes `stale`",
    )
    task_timeout_s: float = Field(
        3600.0, gt=0, description="an active task silent this long is marked failed"
    )
    # --- config hot reload ----------------------------------------------------------------
    config_pubsub: bool = Field(
        True, description="listen on `monitor:config:changed` (off: only poll_configs)"
    )
    config_debounce_s: float = Field(
        2.0, ge=0, description="a config is re-read at most once per this many seconds"
    )
    # --- evm source -----------------------------------------------------------------------
    evm_chains: dict[str, EvmChain] = Field(
        default_factory=dict,
        description="per chain: `ws_url`, `http_url`, `factory`, `quotes`, `wrapped_native`, "
        "`reference_pair`, `native_usd` (docs/architecture.md)",
    )
    evm_backfill_chunk: int = Field(2_000, ge=1, description="blocks per `eth_getLogs` call")
    evm_backfill_max_blocks: int = Field(
        50_000, ge=1, description="the most blocks a back-fill reads"
    )
    evm_backfill_overlap_blocks: int = Field(
        20, ge=0, description="a back-fill starts this many blocks before the checkpoint"
    )
    # --- alert pool -----------------------------------------------------------------------
    config_cache_ttl_s: float = Field(
        60.0,
        ge=0,
        description="a safety net: alert workers re-read a task's config at least this often",
    )
    explorer_tx_url: dict[str, str] = Field(
        default_factory=lambda: {
            "eth": "https://etherscan.io/tx/{tx}",
            "bsc": "https://bscscan.com/tx/{tx}",
            "base": "https://basescan.org/tx/{tx}",
            "sol": "https://solscan.io/tx/{tx}",
        },
        description="per chain, the tx link of alert messages (`{tx}` is replaced)",
    )
    metrics_url: str | None = Field(
        None,
        description="token metrics for events without them: a URL with `{chain}`, `{ca}` "
        'answering `{"market_cap_usd", "top10_holders_pct"}`',
    )
    metrics_ttl_s: int = Field(300, ge=1, description="a metrics answer is cached this long")
    metrics_retry_s: int = Field(
        30, ge=1, description="a failed or partial metrics lookup is tried again after this"
    )
    metrics_timeout_s: float = Field(2.0, gt=0, description="a metrics request times out after")
    # --- notifications --------------------------------------------------------------------
    telegram_api_url: str = Field("https://api.telegram.org", description="Telegram Bot API")
    telegram_bot_token: SecretStr | None = Field(None, description="Telegram bot token")
    telegram_chat_id: str | None = Field(None, description="the chat of configs that name none")
    wecom_webhook_url: str = Field(
        "https://qyapi.weixin.qq.com/cgi-bin/webhook/send",
        description="WeCom group robot webhook",
    )
    wecom_key: SecretStr | None = Field(
        None, description="WeCom robot key (a config may name another variable: `key_env`)"
    )
    webhook_url: str | None = Field(None, description="the JSON webhook of configs that name none")
    webhook_secret: SecretStr | None = Field(
        None, description="webhook signing secret (a config may name another: `secret_env`)"
    )
    backend_ws_url: str | None = Field(
        None, description="the admin backend's WebSocket (node link and `alert` pushes)"
    )
    backend_token: SecretStr | None = Field(None, description="the backend's bearer token")
    backend_alert_acks: bool = Field(
        False,
        description="the backend answers each `alert` with `alert_ack {alertId}`: an alert "
        "counts as pushed on its ack (else on a pong after it)",
    )
    backend_heartbeat_s: float = Field(
        30.0, gt=0, description="a node's heartbeat (and ping) to the backend, every"
    )
    hub_token: SecretStr | None = Field(
        None, description="`kakarot hub`: the bearer token it requires (none: open)"
    )
    flower_user: str | None = Field(
        None, description="`kakarot flower`: its basic-auth user (it refuses to start without)"
    )
    flower_password: SecretStr | None = Field(
        None, description="`kakarot flower`: its basic-auth password"
    )
    hub_epoch_poll_s: float = Field(
        2.0, gt=0, description="`kakarot hub` reads the tasks' epochs this often"
    )
    notify_timeout_s: float = Field(
        10.0, gt=0, description="a notification request times out after"
    )
    notify_max_attempts: int = Field(
        8, ge=1, description="attempts before a notification is recorded as failed"
    )
    notify_max_backoff_s: float = Field(
        60.0, gt=0, description="cap of the back-off between attempts (429: Retry-After)"
    )
    notify_claim_s: float = Field(
        30.0, gt=0, description="a dead worker's claim on a notification expires after this"
    )
    # --- operations -----------------------------------------------------------------------
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL")
    json_logs: bool = Field(False, description="one JSON object per log line")

    @field_validator("degrade_backlog")
    @classmethod
    def _ascending(cls, value: list[int]) -> list[int]:
        if len(value) > 3 or any(v <= 0 for v in value) or value != sorted(set(value)):
            raise ValueError(
                "expected up to three ascending positive backlogs, e.g. [20000, 100000]"
            )
        return value

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
            if not value.startswith(SENTINEL_SCHEME):
                raise ValueError(
                    "expected redis://host:port/db, rediss://…, unix:///path or "
                    "sentinel://host:port;sentinel://host:port"
                )
            sentinel_group(value)  # a ValueError names what is wrong
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

    @property
    def plausible(self) -> Plausible:
        """What a real event looks like, for `events.check`."""
        return Plausible(
            max_future_ms=int(self.event_max_future_s * 1000),
            max_age_ms=int(self.event_max_age_s * 1000),
        )

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
    except SettingsError as exc:  # a value that is not even JSON (a list, a mapping)
        match = re.search(r'field "([a-z_0-9]+)"', str(exc))
        where = f"{ENV_PREFIX}{match.group(1).upper()}" if match else "a KAKAROT_* variable"
        raise ConfigError(f"invalid settings: {where}: not valid JSON") from None
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


# `KAKAROT_*` variables that are not settings but are read by name
NOT_SETTINGS = ("KAKAROT_CONFIG_FILE",)


def unknown_variables(environ: dict[str, str]) -> list[str]:
    """Each `KAKAROT_*` variable that is no setting, with the setting it may have meant: a typo
    is silently ignored otherwise."""
    import difflib

    known = [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields]
    said = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known or name in NOT_SETTINGS:
            continue
        if name.startswith(f"{ENV_PREFIX}TEST_"):
            continue  # the test suite's own switches
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        said.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return said


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
