"""`kakarot demo` as a user runs it: ends by itself, exits 0, its alerts are rows, no orphans."""

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil

KAKAROT = str(Path(sys.executable).with_name("kakarot"))


def test_demo_runs_and_stops_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAKAROT_")}
    env["KAKAROT_DATABASE_URL"] = f"sqlite:///{tmp_path}/demo.db"  # embedded Redis: no URL given
    result = subprocess.run(
        [
            KAKAROT,
            "demo",
            "--duration",
            "8",
            "--tokens",
            "60",
            "--rate",
            "150",
            "--min-usd",
            "3000",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    task_id = int(re.search(r"task (\d+): 60 targets in 1 batches", out).group(1))
    printed = re.findall(r"^ALERT task \d+ .*?(https://bscscan.com/tx/0x[0-9a-f]{64})$", out, re.M)
    summary = re.search(r"done: (\d+) events, (\d+) alerts", out)
    assert summary and int(summary.group(1)) > 300

    with sqlite3.connect(tmp_path / "demo.db") as db:
        rows = [
            r[0]
            for r in db.execute(
                "SELECT tx_hash FROM monitor_alert_log_v2 WHERE task_id = ?", (task_id,)
            )
        ]
    assert len(rows) == int(summary.group(2)) >= 5
    assert sorted(url.rsplit("/", 1)[1] for url in printed) == sorted(rows)

    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(
            "demo-streams@" in part or "demo-alerts@" in part or "kakarot-redis-" in part
            for part in (p.info["cmdline"] or [])
        )
    ]
    assert leftovers == []
