"""Degradation levels: up as the backlog crosses each threshold, down only below half of it."""

import logging

from kakarot_workers.degrade import Degradation


def test_levels_rise_with_the_backlog_and_fall_with_hysteresis(caplog):
    caplog.set_level(logging.INFO, logger="kakarot_workers.degrade")
    degradation = Degradation([100, 1_000, 10_000], "test")
    seen = [
        degradation.update(b) for b in (0, 99, 100, 5_000, 20_000, 9_000, 5_001, 4_999, 499, 49)
    ]
    assert seen == [0, 0, 1, 2, 3, 3, 3, 2, 1, 0]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6, lines  # one line per change
    assert "degradation level 2 → 3 (metric lookups skipped" in lines[2]
    assert lines[2].endswith("notifications as 60s digests)") and lines[-1].endswith("(normal)")


def test_no_thresholds_no_degradation():
    assert Degradation([], "test").update(10**9) == 0
