"""The Celery application: configuration from `celeryconfig`, task modules, process signals."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from kakarot_workers import logs, runtime
from kakarot_workers.db.session import dispose_engines

app = Celery("kakarot_workers", include=["kakarot_workers.stream", "kakarot_workers.alerts"])
app.config_from_object("celeryconfig")

log = logging.getLogger(__name__)


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    logs.configure()


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # A forked pool child must not reuse the parent's sockets.
    dispose_engines()
    runtime.forget_inherited_clients()


@signals.worker_shutting_down.connect
def _on_shutting_down(sig: str = "", how: str = "", **_: Any) -> None:
    # Sent in the main process on SIGTERM/SIGINT; stream consumers (threads) see the flag,
    # flush their pending events and return, so the warm shutdown can complete.
    log.info("worker shutting down (%s %s): stopping stream consumers", how, sig)
    runtime.request_shutdown()


@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    dispose_engines()
