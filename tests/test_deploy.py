"""The deployment files keep the promises of the README: docker-compose restarts every process,
checks its health, migrates the schema once before the workers start, and gives a streams worker
the time its hand-over takes; the Procfile says what honcho's stop timeout means for it."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from kakarot_workers.settings import Settings
from kakarot_workers.streams.node import LET_GO_MARGIN_S

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"a duration in seconds, not {duration!r}"
    return float(match[1])


def _command(service: dict) -> list[str]:
    return [str(part) for part in service.get("command", [])]


def test_every_long_running_service_restarts_and_has_a_healthcheck():
    for name, service in SERVICES.items():
        if name == "migrate":
            continue
        assert service.get("restart") == "unless-stopped", name
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_the_schema_is_migrated_once_before_the_workers_and_beat_start():
    migrate = SERVICES["migrate"]
    assert _command(migrate) == ["kakarot", "db", "upgrade"]
    assert migrate.get("restart") == "no"
    for name, service in SERVICES.items():
        if _command(service)[:3] == ["celery", "-A", "kakarot_workers"]:
            condition = service["depends_on"]["migrate"]["condition"]
            assert condition == "service_completed_successfully", name


def test_each_worker_and_beat_is_checked_by_its_ready_probe():
    env = COMPOSE["x-kakarot"]["environment"]
    assert int(env["KAKAROT_PROBE_PORT"]) > 0
    for name, service in SERVICES.items():
        command = _command(service)
        if "worker" not in command and "beat" not in command:
            continue
        assert service["healthcheck"]["test"] == ["CMD", "kakarot", "health", "ready"], name


def test_a_streams_worker_is_given_the_time_its_hand_over_takes():
    handover_s = Settings.model_fields["handover_timeout_s"].default
    grace_s = _seconds(SERVICES["streams"]["stop_grace_period"])
    assert grace_s >= handover_s + LET_GO_MARGIN_S


def test_the_procfile_says_what_honchos_stop_timeout_means():
    procfile = (ROOT / "Procfile").read_text()
    assert "honcho" in procfile and "KAKAROT_HANDOVER_TIMEOUT_S" in procfile
    assert (
        "streams: KAKAROT_PROBE_PORT=$((PORT + 4000)) celery -A kakarot_workers worker -Q streams"
        in procfile
    )
