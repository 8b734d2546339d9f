"""Logging set-up: readable lines by default, one JSON object per line with KAKAROT_JSON_LOGS
(python-json-logger), carrying the fields a stream consumer binds (`bound`: task, batch,
consumer, epoch) and the id of the Celery task running (`celery_task_id`).

No secret reaches a log line or a traceback: every handler carries `Redact`, which replaces the
values of the secret settings, of every environment variable whose name says it holds one (a
config may name its own: `key_env`, `secret_env`), and the passwords of the database, Redis and
result-backend URLs, with `***`, in the message and in the exception text. httpx logs each
request's URL (a Telegram bot token is part of it) at INFO: it logs at WARNING here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from pydantic import SecretStr
from pythonjsonlogger import json as json_logger

from kakarot_workers.settings import Settings, get_settings, unknown_variables

MASK = "***"
# Celery logs two INFO lines per task message (received, succeeded); for these tasks, thousands a
# minute, they go to DEBUG, and `Summary` says at INFO every minute what they did.
HOT_TASKS = ("kakarot.alerts.evaluate_events", "kakarot.notify.deliver")
TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")
# Environment variables whose values are secrets, by name.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|(^|_)KEY($|_)|APIKEY|CREDENTIAL", re.I)
MIN_SECRET_CHARS = 4  # shorter values would mask ordinary words
MIN_KEY_CHARS = 16  # a URL path segment or query value this long is taken for an API key


def _ordinary(value: str) -> bool:
    """A value no secret is: a boolean, a number, a path."""
    text = value.strip().lower()
    return (
        text in {"true", "false", "yes", "no", "on", "off"}
        or text.isdigit()
        or (text.startswith(("/", "./", "~/")))
    )


QUIET_LOGGERS = ("httpx", "httpcore")


def secrets_of(settings: Settings, environ: dict[str, str] | None = None) -> list[str]:
    """Every secret value this process knows, longest first (each also URL-quoted)."""
    found: set[str] = set()
    plain = {f"KAKAROT_{name.upper()}" for name, v in settings.__dict__.items()}
    for name, value in settings.__dict__.items():
        if isinstance(value, SecretStr):
            found.add(value.get_secret_value())
            plain.discard(f"KAKAROT_{name.upper()}")
    for name, value in (os.environ if environ is None else environ).items():
        if SECRET_NAME.search(name) and name not in plain and not _ordinary(value):
            found.add(value)
    # an API key in a node's or a provider's URL (…/v2/<key>, ?apikey=<key>)
    urls = [settings.metrics_url or "", settings.backend_ws_url or ""]
    for chain in settings.evm_chains.values():
        urls += [chain.ws_url, chain.http_url or ""]
    for url in urls:
        parts = urlsplit(url)
        pieces = parts.path.split("/") + re.split(r"[&=]", parts.query)
        found.update(p for p in pieces if len(p) >= MIN_KEY_CHARS)
    for store in (settings.database_url, settings.redis_url, settings.result_backend_url):
        password = urlsplit(store).password if store else None
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

    def clean_value(self, value: object, depth: int = 0) -> object:
        """A record's extra field, cleaned: strings, and those inside dicts, lists, tuples."""
        if isinstance(value, str):
            return self.clean(value)
        if depth > 4:
            return value
        if isinstance(value, dict):
            return {k: self.clean_value(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.clean_value(v, depth + 1) for v in value)
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call: the handler reports it
            return True
        cleaned = self.clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info:
            record.exc_text = self.clean(self._traceback.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self.clean(record.stack_info)
        for name, value in list(record.__dict__.items()):  # extras (Celery's `data`, …)
            if name not in _STANDARD and not name.startswith("_"):
                record.__dict__[name] = self.clean_value(value)
        return True


# What every record has: the rest are extras a logging call passed
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class HotTasksToDebug(logging.Filter):
    """Celery's per-message INFO lines about `HOT_TASKS` become DEBUG lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call: the handler reports it
            return True
        if any(t in message for t in HOT_TASKS):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


_context: ContextVar[tuple[tuple[str, object], ...]] = ContextVar("kakarot_log_context", default=())


@contextlib.contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Every log line of this thread (and its context) within carries `fields` (JSON logs):
    a stream consumer binds its task, batch, consumer and epoch."""
    token = _context.set((*_context.get(), *fields.items()))
    try:
        yield
    finally:
        _context.reset(token)


class Context(logging.Filter):
    """Puts the bound fields, and the Celery task id of the task running, on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get():
            setattr(record, name, value)  # the innermost binding last: it wins
        if not hasattr(record, "celery_task_id"):
            task = _current_celery_task()
            if task is not None:
                record.celery_task_id = task
        return True


def _current_celery_task() -> str | None:
    celery_state = sys.modules.get("celery._state")  # only where Celery runs
    task = celery_state.get_current_task() if celery_state is not None else None
    request = getattr(task, "request", None)
    task_id = getattr(request, "id", None)
    return str(task_id) if task_id else None


class JsonFormatter(json_logger.JsonFormatter):
    """One JSON object per line: ts, level, logger, message, the context fields, exc."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.fromtimestamp(record.created, UTC).isoformat()

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message)
        if "exc_info" in log_data:
            log_data["exc"] = log_data.pop("exc_info")
        elif record.exc_text:  # masked by `Redact`
            log_data["exc"] = record.exc_text


def configure() -> None:
    settings = get_settings()
    handler = logging.StreamHandler(sys.stderr)
    if settings.json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
        )
    handler.addFilter(Context())
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
