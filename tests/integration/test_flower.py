"""Flower as the Procfile starts it (`kakarot flower`): it refuses to start without credentials,
and with them every page asks for them (but `/metrics` and `/healthcheck`, on 127.0.0.1)."""

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
KAKAROT = str(Path(sys.executable).with_name("kakarot"))


def _procfile_command(name: str) -> list[str]:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            command = shlex.split(line.split(":", 1)[1])
            return [KAKAROT if part == "kakarot" else part for part in command]
    raise AssertionError(f"no {name} in the Procfile")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAKAROT_FLOWER", "FLOWER_"))}
    return {**env, **extra}


def test_flower_without_credentials_refuses_to_start():
    result = subprocess.run(
        _procfile_command("flower"), env=_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: Flower needs KAKAROT_FLOWER_USER and KAKAROT_FLOWER_PASSWORD (basic auth); it "
        "does not start without them"
    ]


def test_a_comma_in_the_password_is_refused_flower_would_split_it_into_two_logins():
    env = _env(KAKAROT_FLOWER_USER="ops", KAKAROT_FLOWER_PASSWORD="s3cret,tail")
    result = subprocess.run(
        _procfile_command("flower"), env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "no ','" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout


def test_flower_with_credentials_asks_for_them_and_keeps_them_off_its_command_line(
    redis_server, tmp_path
):
    port = _free_port()
    command = [p for p in _procfile_command("flower") if not p.startswith("--port")]
    env = _env(
        KAKAROT_REDIS_URL=redis_server.url,
        KAKAROT_DATABASE_URL=f"sqlite:///{tmp_path}/f.db",
        KAKAROT_FLOWER_USER="ops",
        KAKAROT_FLOWER_PASSWORD="flower-test-password",
    )
    log = (tmp_path / "flower.log").open("w")
    process = subprocess.Popen([*command, f"--port={port}"], env=env, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"{url}/", timeout=2)
                break
            except httpx.HTTPError:
                assert process.poll() is None, (tmp_path / "flower.log").read_text()
                assert time.monotonic() < deadline, "flower never answered"
                time.sleep(0.2)
        assert answer.status_code == 401
        assert httpx.get(f"{url}/", auth=("ops", "wrong"), timeout=5).status_code == 401
        assert httpx.get(f"{url}/", auth=("ops", "flower-test-password"), timeout=5).is_success
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
        assert "flower-test-password" not in cmdline and "--address=127.0.0.1" in cmdline
    finally:
        process.terminate()
        process.wait(15)
        log.close()
