"""Logging set-up: readable lines by default, one JSON object per line with KAKAROT_JSON_LOGS.

No secret reaches a log line or a traceback: every handler carries `Redact`, which replaces the
values of the secret settings, of every environment variable whose name says it holds one (a
config may name its own: `key_env`, `secret_env`), and the passwords of the database, Redis and
result-backend URLs, with `***`, in the message and in the exception text. httpx logs each
request's URL (a Telegram bot token is part of it) at INFO: it logs at WARNING here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

from pydantic import SecretStr

from kakarot_workers.settings import Settings, get_settings, unknown_variables

MASK = "***"
# Celery logs two INFO lines per task message (received, succeeded); for these tasks, thousands a
# minute, they go to DEBUG, and `Summary` says at INFO every minute what they did.
HOT_TASKS = ("kakarot.alerts.evaluate_events", "kakarot.notify.deliver")
TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")
# Environment variables whose values are secrets, by name.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|(^|_)KEY($|_)|APIKEY|CREDENTIAL", re.I)
MIN_SECRET_CHARS = 4  # shorter values would mask ordinary words
QUIET_LOGGERS = ("httpx", "httpcore")


def secrets_of(settings: Settings, environ: dict[str, str] | None = None) -> list[str]:
    """Every secret value this process knows, longest first (each also URL-quoted)."""
    found: set[str] = set()
    for value in settings.__dict__.values():
        if isinstance(value, SecretStr):
            found.add(value.get_secret_value())
    for name, value in (os.environ if environ is None else environ).items():
        if SECRET_NAME.search(name):
            found.add(value)
    for url in (settings.database_url, settings.redis_url, settings.result_backend_url):
        password = urlsplit(url).password if url else None
        if password:
            # a password with an unescaped `@` is cut there by one parser or another: its
            # pieces are masked too
            pieces = re.split(r"[@:/]", password) + re.split(r"[@:/]", unquote(password))
            found.update((password, unquote(password), *pieces))
    found |= {quote(value, safe="") for value in found}
    return sorted((v for v in found if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


class Redact(logging.Filter):
    """Masks `secrets` in each record's message and exception text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = list(secrets)
        self._traceback = logging.Formatter()

    def clean(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        cleaned = self.clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info:
            record.exc_text = self.clean(self._traceback.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.clean(record.exc_text)
        return True


class HotTasksToDebug(logging.Filter):
    """Celery's per-message INFO lines about `HOT_TASKS` become DEBUG lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and any(t in record.getMessage() for t in HOT_TASKS):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def configure() -> None:
    settings = get_settings()
    handler = logging.StreamHandler(sys.stderr)
    if settings.json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
        )
    handler.addFilter(Redact(secrets_of(settings)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    for name in TASK_LOGGERS:
        logging.getLogger(name).addFilter(HotTasksToDebug())
    unknown = unknown_variables(dict(os.environ))
    if unknown:
        logging.getLogger(__name__).warning(
            "not settings, ignored (unless a config names them, as key_env or secret_env): %s",
            ", ".join(unknown),
        )
