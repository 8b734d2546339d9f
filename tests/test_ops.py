"""The operations files: the alert rules pass `promtool check rules` and their unit tests, and
every `kakarot_*` series the rules and the dashboard use is one the processes export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "ops" / "prometheus"
SERIES = re.compile(r"\bkakarot_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum")


def _exported() -> set[str]:
    """Every series name the code declares (the metrics module and the scrape-time gauges)."""
    text = (ROOT / "kakarot_workers" / "metrics.py").read_text()
    text += (ROOT / "kakarot_workers" / "probes.py").read_text()
    return set(re.findall(r'"(kakarot_[a-z_]+)"', text))


def _used(text: str) -> set[str]:
    names = set()
    for name in SERIES.findall(text):
        for suffix in SUFFIXES:
            name = name.removesuffix(suffix)
        names.add(name)
    return names


def test_every_series_the_rules_and_the_dashboard_use_is_exported():
    exported = _exported()
    assert "kakarot_events_sent_total" in exported and "kakarot_queue_depth" in exported
    rules = (RULES / "kakarot-rules.yml").read_text()
    dashboard = json.loads((ROOT / "ops" / "grafana" / "kakarot.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for where, text in (("rules", rules), ("dashboard", exprs)):
        unknown = _used(text) - exported
        assert not unknown, f"the {where} use series nobody exports: {sorted(unknown)}"


def test_the_alert_rules_pass_promtool_and_their_unit_tests():
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("KAKAROT_TEST_REQUIRE_PROMTOOL"):
            pytest.fail("promtool is required here (KAKAROT_TEST_REQUIRE_PROMTOOL)")
        pytest.skip("promtool is not installed (Debian's prometheus package has it)")
    for args in (
        ["check", "rules", "kakarot-rules.yml"],
        ["test", "rules", "kakarot-rules.test.yml"],
    ):
        result = subprocess.run(
            [promtool, *args], cwd=RULES, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
