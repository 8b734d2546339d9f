"""Config hot reload: which version of each config the fleet should be judging with.

The backend publishes `{"configId": N, "version": V}` on `monitor:config:changed` after an edit.
Every worker node listens (`ConfigListener`, a thread of its main process started by the worker's
`ConfigListening` bootstep) and raises the
announced version in one Redis hash (`kakarot:config:versions`); the beat job poll_configs
raises it from the database too, so a notice lost on the way (Pub/Sub keeps nothing for a
subscriber that is not connected) is made up for within one poll interval. The hash only ever
grows: notices are idempotent and may come in any order, from any number of listeners.

Alert workers read the announced versions of their tasks' configs with every message and
reload a config whose announced version is newer than the one in force (`ProfileCache.note`),
at most once per debounce period.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import redis
from sqlalchemy import select

from kakarot_workers import runtime
from kakarot_workers.db.models import MonitorConfig, utcnow
from kakarot_workers.db.session import session_scope
from kakarot_workers.errors import ConfigError, NotFoundError
from kakarot_workers.keys import Keys
from kakarot_workers.reconnect import Reconnecting

log = logging.getLogger(__name__)

ANNOUNCE = (Path(__file__).with_name("lua") / "config_announce.lua").read_text()


def announce_versions(client: redis.Redis, keys: Keys, versions: dict[int, int]) -> list[int]:
    """Raise the announced version of each config; return the configs raised."""
    if not versions:
        return []
    args: list[int] = []
    for config_id, version in versions.items():
        args += [config_id, version]
    raised = client.register_script(ANNOUNCE)(keys=[keys.config_versions], args=args)
    return sorted(int(c) for c in raised)


def announced(client: redis.Redis, keys: Keys, config_ids: list[int]) -> dict[int, int]:
    """The announced version of each config (configs never announced are left out)."""
    if not config_ids:
        return {}
    values = client.hmget(keys.config_versions, [str(c) for c in config_ids])
    return {c: int(v) for c, v in zip(config_ids, values, strict=True) if v is not None}


def parse_notice(raw: str | bytes) -> tuple[int, int]:
    """A `monitor:config:changed` message: {"configId": int, "version": int}."""
    try:
        notice = json.loads(raw)
        config_id, version = notice["configId"], notice["version"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"config notice: expected {{configId, version}}, got {raw!r}") from exc
    for name, value in (("configId", config_id), ("version", version)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"config notice: {name} must be an integer ≥ 0, got {value!r}")
    return config_id, version


def poll_configs() -> list[int]:
    """The database's config versions → the announced versions; return the configs raised."""
    with session_scope() as session:
        versions = {
            config_id: version
            for config_id, version in session.execute(
                select(MonitorConfig.id, MonitorConfig.version).where(MonitorConfig.del_flag == 0)
            ).all()
        }
    raised = announce_versions(runtime.redis_client(), runtime.keys(), versions)
    if raised:
        log.info("poll_configs: newer versions of configs %s", raised)
    return raised


def publish_config(config_id: int) -> int:
    """Bump a config's version and publish the notice, as the backend does after an edit
    (`kakarot config publish`); return the new version."""
    with session_scope() as session:
        config = session.get(MonitorConfig, config_id)
        if config is None or config.del_flag:
            raise NotFoundError(f"config {config_id} does not exist")
        config.version += 1
        config.update_time = utcnow()
        version = config.version
    client, keys = runtime.redis_client(), runtime.keys()
    notice = json.dumps({"configId": config_id, "version": version})
    client.publish(keys.config_changed_channel, notice)
    return version


class ConfigListener(Reconnecting):
    """Subscribes to `monitor:config:changed` and raises the announced versions; reconnects
    with back-off. Malformed notices are logged and counted, never fatal."""

    thread_name = "config-listener"
    retry_on = (redis.RedisError,)

    def __init__(self, max_backoff_s: float = 10.0) -> None:
        super().__init__(max_backoff_s)
        self.subscribed = threading.Event()

    def serve(self) -> None:
        self._listen()
        self.failures = 0

    def disconnected(self) -> None:
        self.subscribed.clear()

    def pause_s(self) -> float:
        return super().pause_s() if self.failures else 0.1

    def _listen(self) -> None:
        client, keys = runtime.redis_client(), runtime.keys()
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(keys.config_changed_channel)
            self.subscribed.set()
            while not self.stopping:
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    self.handle(message["data"])
        finally:
            pubsub.close()

    def handle(self, raw: str | bytes) -> None:
        client, keys = runtime.redis_client(), runtime.keys()
        try:
            config_id, version = parse_notice(raw)
        except ConfigError as exc:
            client.incr(keys.config_notices_rejected)
            log.warning("%s", exc)
            return
        if announce_versions(client, keys, {config_id: version}):
            log.info("config %s: version %s announced", config_id, version)
