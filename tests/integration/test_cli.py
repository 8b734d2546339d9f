"""The `kakarot` console script, run as a real subprocess against a fresh SQLite database."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

KAKAROT = str(Path(sys.executable).with_name("kakarot"))
CA = ["0x" + f"{i:040x}" for i in range(1, 4)]


@pytest.fixture
def run(tmp_path):
    env = {**os.environ, "KAKAROT_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db"}

    def kakarot(*args: str, ok: bool = True, **extra_env: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [KAKAROT, *args],
            env={**env, **extra_env},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    kakarot("db", "upgrade")
    return kakarot


@pytest.fixture
def task_id(run):
    run("config", "create", "--name", "c", "--chain", "bsc", "--min-usd", "5000")
    run("task", "create", "--name", "t", "--config-id", "1", "--chain", "bsc")
    return "1"


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one clear line, no traceback
    return lines[0]


def test_happy_path(run, task_id, tmp_path):
    config = json.loads(run("config", "show", "1").stdout)
    assert config["min_transaction_usd"] == 5000 and config["chain"] == "bsc"
    assert (
        "target added"
        in run("target", "add", "--task-id", task_id, "--ca", CA[0], "--symbol", "AAA").stdout
    )
    csv = tmp_path / "targets.csv"
    csv.write_text(
        f"ca,symbol,pair\n{CA[0]},AAA,\n{CA[1].upper().replace('0X', '0x')},BBB,{CA[2]}\n"
    )
    assert (
        "1 targets added, 1 already present"
        in run("target", "import", str(csv), "--task-id", task_id).stdout
    )
    listing = run("task", "list").stdout
    assert " 2 " in listing  # two targets


def test_bad_csv_row_names_the_line_and_imports_nothing(run, task_id, tmp_path):
    csv = tmp_path / "targets.csv"
    csv.write_text(f"ca,symbol,pair\n{CA[0]},AAA,\n0xnothex,BBB,\n{CA[1]},CCC,0x12\n")
    line = _one_error_line(run("target", "import", str(csv), "--task-id", task_id, ok=False))
    assert "targets.csv line 3: invalid address '0xnothex' for chain bsc" in line
    assert "targets.csv line 4: invalid address '0x12'" in line
    assert "nothing was imported" in line
    assert " 0 " in run("task", "list").stdout.replace("│", " ")


def test_csv_without_ca_header(run, task_id, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text(f"{CA[0]},AAA\n")
    line = _one_error_line(run("target", "import", str(csv), "--task-id", task_id, ok=False))
    assert "t.csv line 1: header must name a 'ca' column" in line


def test_invalid_events_config_is_refused_naming_the_field(run):
    result = run(
        "config",
        "create",
        "--name",
        "bad",
        "--chain",
        "bsc",
        "--events-config",
        '{"price_change": {"threshold_pct": -2, "window": "1m"}}',
        ok=False,
    )
    assert (
        "events_config.price_change.threshold_pct: Input should be greater than 0"
        in _one_error_line(result)
    )
    result = run(
        "config",
        "create",
        "--name",
        "bad",
        "--chain",
        "bsc",
        "--events-config",
        '{"volume": ',
        ok=False,
    )
    assert "events_config: not valid JSON" in _one_error_line(result)


def test_unknown_task_and_config(run):
    assert "task 42 does not exist" in _one_error_line(
        run("target", "add", "--task-id", "42", "--ca", CA[0], ok=False)
    )
    assert "config 9 does not exist" in _one_error_line(
        run("task", "create", "--name", "t", "--config-id", "9", "--chain", "bsc", ok=False)
    )
    assert "config 9 does not exist" in _one_error_line(run("config", "show", "9", ok=False))


def test_usage_errors_are_the_usage_and_one_line_exit_2_and_nothing_written(run, task_id):
    version = run("--version")
    assert version.stdout.startswith("kakarot-workers ") and not version.stderr
    for args, said in (
        (("nodesx",), "No such command 'nodesx'. Did you mean 'nodes'?"),
        (("task", "create", "--name", "x"), "Missing option '--config-id'."),
        (("batches", "--task-id", "abc"), "Invalid value for '--task-id'"),
    ):
        result = run(*args, ok=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr
        assert lines[0].startswith("Usage: kakarot") and "--help" in lines[1], result.stderr
        assert said in lines[-1] and "Traceback" not in result.stderr, result.stderr
    create = ("config", "create", "--chain", "bsc")
    for args, said in (
        (("--name", "a", "--min-usd", "nan"), "min_transaction_usd: expected a number from 0"),
        (("--name", "a", "--min-usd", "inf"), "min_transaction_usd: expected a number from 0"),
        (("--name", "a", "--cumulative-usd", "1e400"), "cumulative_min_amount_usd: expected"),
        (("--name", "a", "--interval", "1000d"), "longer than the 7d a window can be"),
        (("--name", "n" * 10_000), "config name: 1 to 128 characters, got 10,000"),
    ):
        result = run(*create, *args, ok=False)
        assert result.returncode == 2 and said in _one_error_line(result), result.stderr
    assert "task name: 1 to 128" in _one_error_line(
        run("task", "create", "--name", " ", "--config-id", "1", "--chain", "bsc", ok=False)
    )
    assert '"id": 1' in run("config", "show", "1").stdout
    assert "config 2 does not exist" in _one_error_line(run("config", "show", "2", ok=False))


def test_a_password_cut_by_an_unescaped_at_never_shows(run):
    # the `@` in "p@ssw0rd" is not escaped: the driver takes "ssw0rd@127.0.0.1" for the host
    url = "mysql+pymysql://kakarot:p@ssw0rd@127.0.0.1:9/kakarot"
    line = _one_error_line(run("tasks", ok=False, KAKAROT_DATABASE_URL=url))
    assert "ssw0rd" not in line and "error: database" in line


def test_bad_address_and_chain(run, task_id):
    assert "expected 0x followed by 40 hex digits" in _one_error_line(
        run("target", "add", "--task-id", task_id, "--ca", "0x1", ok=False)
    )
    assert "unknown chain 'doge'" in _one_error_line(
        run("config", "create", "--name", "c", "--chain", "doge", ok=False)
    )


def test_allocate_dry_run_then_for_real(run, task_id, tmp_path, redis_server):
    csv = tmp_path / "targets.csv"
    csv.write_text("ca\n" + "\n".join(f"0x{i:040x}" for i in range(1, 151)) + "\n")
    run("target", "import", str(csv), "--task-id", task_id)
    dry = run("allocate", "--task-id", task_id, "--dry-run").stdout
    assert "dry run: nothing written" in dry and "epoch     0 → 1" in dry
    assert "batches   0 → 2" in dry and "new 2" in dry
    assert "epoch     1 → 1" not in dry
    real = run("allocate", "--task-id", task_id).stdout
    assert "epoch     0 → 1" in real and "new batch rows [1, 2]" in real
    again = run("allocate", "--task-id", task_id).stdout
    assert "epoch     1 → 1" in again and "kept 2 · changed 0 · new 0 · retired 0" in again


def test_unreachable_redis_and_database_are_one_line(run, task_id, tmp_path):
    run("target", "add", "--task-id", task_id, "--ca", CA[0])
    result = run(
        "dispatch", "--task-id", task_id, ok=False, KAKAROT_REDIS_URL="redis://127.0.0.1:9/0"
    )
    assert "cannot reach Redis at redis://127.0.0.1:9/0 (KAKAROT_REDIS_URL)" in _one_error_line(
        result
    )
    result = run("task", "list", ok=False, KAKAROT_DATABASE_URL=f"sqlite:///{tmp_path}/empty.db")
    line = _one_error_line(result)
    assert "(KAKAROT_DATABASE_URL): no such table" in line and "kakarot db upgrade" in line


def test_invalid_settings_fail_naming_the_variable(tmp_path):
    env = {**os.environ, "KAKAROT_BATCH_CAP": "lots"}
    result = subprocess.run(
        [KAKAROT, "task", "list"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert "KAKAROT_BATCH_CAP: Input should be a valid integer" in _one_error_line(result)
    env = {**os.environ, "KAKAROT_EVM_CHAINS": "{bad"}
    result = subprocess.run(
        [KAKAROT, "task", "list"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert _one_error_line(result) == "error: invalid settings: KAKAROT_EVM_CHAINS: not valid JSON"
    # a worker and beat too: one line, exit 2
    celery = str(Path(sys.executable).with_name("celery"))
    for command in (["worker", "-Q", "control"], ["beat"]):
        result = subprocess.run(
            [celery, "-A", "kakarot_workers", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert result.returncode == 2
        assert _one_error_line(result) == (
            "error: invalid settings: KAKAROT_EVM_CHAINS: not valid JSON"
        )


def test_invalid_notify_methods_are_refused_naming_the_entry(run):
    line = _one_error_line(
        run(
            "config",
            "create",
            "--name",
            "c",
            "--chain",
            "bsc",
            "--notify",
            '{"telegram": {"chat_id": "-1"}, "webhook": {"url": "ftp://x"}}',
            ok=False,
        )
    )
    assert "notify_methods.webhook.url" in line
    run("config", "create", "--name", "c", "--chain", "bsc", "--notify", '["telegram", "wechat"]')
    shown = run("config", "show", "1").stdout
    assert '"telegram"' in shown and '"wecom"' in shown


def test_nodes_batches_tasks_and_config_publish(run, task_id, tmp_path, redis_server):
    import redis

    from kakarot_workers.keys import Keys

    redis_env = {"KAKAROT_REDIS_URL": redis_server.url}
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    keys = Keys()
    # one node beating (its heartbeat key lives), one whose heartbeat key has expired
    client.set(keys.node_heartbeat("node-up"), "2026-01-01T00:00:00+00:00", ex=30)
    for node, batches in (("node-up", 3), ("node-down", 2)):
        client.hset(
            keys.node_metrics(node),
            mapping={
                "portfolio_count": batches,
                "queue_size": 15,
                "cpu_usage": "12.5",
                "memory_usage": "80.2",
                "updated_at": "2026-01-01T00:00:00+00:00",
            },
        )
    nodes = run("nodes", **redis_env).stdout
    up = next(line for line in nodes.splitlines() if "node-up" in line)
    down = next(line for line in nodes.splitlines() if "node-down" in line)
    assert "online" in up and "12.5%" in up and " 3 " in up and "ago" in up
    assert "offline" in down and " 2 " in down

    (tmp_path / "t.csv").write_text(
        "ca,symbol\n" + "".join(f"{ca},S{i}\n" for i, ca in enumerate(CA))
    )
    run("target", "import", str(tmp_path / "t.csv"), "--task-id", task_id)
    run("allocate", "--task-id", task_id, **redis_env)
    client.set(keys.batch_since(1), 1_767_323_045_000)  # its first consumer covered it then
    batches = run("batches", "--task-id", task_id, COLUMNS="160", **redis_env).stdout
    assert "pending" in batches and " 3 " in batches  # one batch of three targets
    assert "2026-01-02 03:04:05" in batches
    assert "no such" not in run("batches", "--task-id", "99").stdout
    tasks = run("tasks").stdout
    assert " t " in tasks and "batch" in tasks

    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("monitor:config:changed")
    assert pubsub.get_message(timeout=2) is None  # the subscription is confirmed (and skipped)
    published = run("config", "publish", "--config-id", "1", **redis_env).stdout
    assert "version 2 published" in published
    message = pubsub.get_message(timeout=5)
    assert json.loads(message["data"]) == {"configId": 1, "version": 2}
    pubsub.close()
    missing = run("config", "publish", "--config-id", "9", ok=False, **redis_env)
    assert "config 9 does not exist" in _one_error_line(missing)


def test_hub_serves_the_api_until_stopped(run, task_id, tmp_path):
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "KAKAROT_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db"}
    hub = subprocess.Popen(
        [KAKAROT, "hub", "--port", str(port)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                tasks = httpx.get(f"http://127.0.0.1:{port}/api/v1/tasks", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the hub did not come up"
                time.sleep(0.2)
        assert [t["id"] for t in tasks] == [int(task_id)]
    finally:
        hub.terminate()
        output, _ = hub.communicate(timeout=10)
    assert "hub on ws://127.0.0.1" in output


def test_config_reference_prints_the_settings_table_of_the_readme(run):
    out = run("config", "reference").stdout
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert out.strip() in readme
    assert "`KAKAROT_LEASE_TTL_S` | 6 |" in out


def test_health_is_not_held_against_a_process_while_redis_does_not_answer(run):
    """A liveness probe that failed while Redis is away would restart the whole fleet, and with
    it what its consumers keep through the outage."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    for args in (("health", "worker", "streams@host"), ("health", "beat")):
        result = run(*args, KAKAROT_REDIS_URL=closed)
        assert result.stderr.startswith("unknown: Redis does not answer")
        assert "Traceback" not in result.stderr


def test_operator_verbs_task_stop_start_targets_alerts_and_status(
    run, task_id, tmp_path, redis_server
):
    import redis
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from kakarot_workers.db.models import MonitorAlertLog
    from kakarot_workers.keys import Keys

    env = {"KAKAROT_REDIS_URL": redis_server.url, "COLUMNS": "200"}
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    keys = Keys()
    for ca in CA:
        run("target", "add", "--task-id", task_id, "--ca", ca)
    run("allocate", "--task-id", task_id, **env)

    # targets: listed, one removed (and an unknown one refused), added back
    listed = run("target", "list", "--task-id", task_id, **env).stdout
    assert all(ca in listed for ca in CA) and "removed" not in listed
    assert (
        "1 target(s) removed"
        in run("target", "remove", "--task-id", task_id, "--ca", CA[1], **env).stdout
    )
    unknown = run("target", "remove", "--task-id", task_id, "--ca", "0x" + "9" * 40, ok=False)
    assert unknown.returncode == 2 and "does not watch 0x999" in _one_error_line(unknown)
    listed = run("target", "list", "--task-id", task_id, **env).stdout
    assert next(line for line in listed.splitlines() if CA[1] in line).count("removed") == 1
    assert "target added" in run("target", "add", "--task-id", task_id, "--ca", CA[1]).stdout

    # a task stopped: its consumers are told to stop; started: the order is taken back
    assert (
        "stopped: told to stop its 1 batch(es)"
        in run("task", "stop", "--task-id", task_id, **env).stdout
    )
    assert client.hget(keys.batch_control(1), "stop") == "stopped"
    assert "off (0)" in run("tasks", **env).stdout
    assert "started" in run("task", "start", "--task-id", task_id, **env).stdout
    assert client.hget(keys.batch_control(1), "stop") is None
    assert "active" in run("tasks", **env).stdout

    # alerts, newest first
    engine = create_engine(f"sqlite:///{tmp_path}/cli.db")
    with Session(engine) as session:
        for i in range(3):
            session.add(
                MonitorAlertLog(
                    dedup_key=f"k{i}",
                    task_id=1,
                    chain_type="bsc",
                    ca=CA[0],
                    token_symbol="AAA",
                    alert_type="min_transaction",
                    alert_data={"side": "buy"},
                    tx_hash=f"0x{i:064x}",
                    log_index=0,
                    amount_usd=5000 + i,
                    price_usd=1.5,
                )
            )
        session.commit()
    shown = run("alerts", "--task-id", task_id, "--limit", "2", **env).stdout
    assert "5,002.00" in shown and "5,001.00" in shown and "5,000.00" not in shown
    assert shown.index("5,002.00") < shown.index("5,001.00"), "newest first"

    # the fleet on one screen: nothing runs here, and it says what to do
    status = run("status", ok=False, **env)
    assert status.returncode == 1
    assert "batches   0 live of 1 expected" in status.stdout
    assert (
        "no beat leads the fleet" in status.stdout
        and "celery -A kakarot_workers beat" in status.stdout
    )
