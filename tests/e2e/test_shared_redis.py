"""Two fleets on one Redis, told apart by `KAKAROT_REDIS_KEY_PREFIX`: a task sent by one fleet
reaches only that fleet's workers, through its own prefixed queue."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from kakarot_workers.tools.fleet import WorkerProcess
from tests.support.scenario import wait_for

SEND = "from kakarot_workers.celery import app; app.send_task('kakarot.control.poll_configs')"


def _received(worker: WorkerProcess) -> int:
    return len(
        re.findall(r"Task kakarot\.control\.poll_configs\[[^\]]+\] received", worker.log_text())
    )


def _send_as(prefix: str) -> None:
    env = {**os.environ, "KAKAROT_REDIS_KEY_PREFIX": prefix}
    subprocess.run([sys.executable, "-c", SEND], env=env, check=True, timeout=60)


def test_fleets_with_different_prefixes_share_no_queue(db_url, redis_client, tmp_path):
    fleet = [
        WorkerProcess(
            f"control-{prefix}",
            "control",
            concurrency=1,
            env={"KAKAROT_REDIS_KEY_PREFIX": f"{prefix}:"},
            log_path=tmp_path / f"{prefix}.log",
        ).start(wait=False)  # (a ping would go through this process's unprefixed broker)
        for prefix in ("one", "two")
    ]
    try:
        for worker in fleet:
            wait_for(lambda w=worker: " ready." in w.log_text(), 60, f"{worker.name} ready")
        _exchange(redis_client, *fleet)
    finally:
        for worker in fleet:
            worker.stop(timeout_s=15)


def _exchange(redis_client, one: WorkerProcess, two: WorkerProcess) -> None:
    _send_as("one:")
    wait_for(lambda: _received(one) == 1, 20, "fleet one's worker to get its task")
    _send_as("one:")
    wait_for(lambda: _received(one) == 2, 20, "the second task")
    assert _received(two) == 0
    _send_as("two:")
    wait_for(lambda: _received(two) == 1, 20, "fleet two's worker to get its task")
    assert _received(one) == 2
    # the queues live under each prefix; nothing on the unprefixed one
    assert redis_client.exists("one:_kombu.binding.control", "two:_kombu.binding.control") == 2
    assert not redis_client.exists("control")
