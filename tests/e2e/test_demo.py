"""`kakarot demo` as a user runs it: ends by itself, exits 0, its alerts are rows, no orphans."""

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

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


@pytest.mark.parametrize("when", [b"running", b"starting workers"])
def test_ctrl_c_in_a_terminal_stops_every_process_in_order_and_exits_0(tmp_path, when):
    """The demo run in a terminal (a pty) until Ctrl-C, running or still starting: the terminal
    sends SIGINT to the demo's process group; the embedded Redis, in a group of its own, is
    stopped last, after the workers drained; the demo exits 0 and leaves no process behind."""
    import pty
    import select
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("KAKAROT_")}
    env["KAKAROT_DATABASE_URL"] = f"sqlite:///{tmp_path}/demo.db"
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal
        os.chdir(tmp_path)
        os.execve(KAKAROT, [KAKAROT, "demo", "--tokens", "20", "--rate", "50"], env)
    output = b""

    def read_until(text: bytes, timeout_s: float) -> None:
        nonlocal output
        deadline = time.monotonic() + timeout_s
        while text not in output:
            assert time.monotonic() < deadline, output.decode(errors="replace")[-2000:]
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    output += os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    break

    try:
        read_until(when, 120)
        started = psutil.Process(pid).children(recursive=True)
        assert any("redis-server" in " ".join(p.cmdline()) for p in started)
        os.write(fd, b"\x03")  # Ctrl-C: SIGINT to the terminal's foreground process group
        read_until(b"done:", 120)
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-2000:]
    assert "cannot reach Redis" not in text and "Traceback" not in text, text[-2000:]
    time.sleep(0.5)
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
