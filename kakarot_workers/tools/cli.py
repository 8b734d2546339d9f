"""The `kakarot` command. Errors are one clear line on stderr and a non-zero exit code."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import kombu.exceptions
import redis
import sqlalchemy.exc
import typer
from rich.console import Console
from rich.table import Table

from kakarot_workers.errors import InputError, KakarotError

cli = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Kakarot Workers: watch DEX trading for configured tokens and alert.",
)
db_cli = typer.Typer(no_args_is_help=True, help="Database schema.")
config_cli = typer.Typer(no_args_is_help=True, help="Monitor configs (rules + channels).")
task_cli = typer.Typer(no_args_is_help=True, help="Monitor tasks.")
target_cli = typer.Typer(no_args_is_help=True, help="A task's targets (token contract addresses).")
deadletter_cli = typer.Typer(
    no_args_is_help=True, help="Messages a worker could not take, moved aside per queue."
)
cli.add_typer(db_cli, name="db")
cli.add_typer(config_cli, name="config")
cli.add_typer(task_cli, name="task")
cli.add_typer(target_cli, name="target")
health_cli = typer.Typer(
    no_args_is_help=True,
    help="Exit 0 while a process of this host beats in Redis (for container healthchecks).",
)
cli.add_typer(deadletter_cli, name="deadletter")
cli.add_typer(health_cli, name="health")

console = Console()
EXIT_ERROR = 2


def _version(shown: bool) -> None:
    if shown:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"kakarot-workers {version('kakarot-workers')}")
        except PackageNotFoundError:
            typer.echo("kakarot-workers (not installed as a package)")
        raise typer.Exit()


@cli.callback()
def _root(
    shown: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Kakarot Workers: watch DEX trading for configured tokens and alert."""
    # Fail early, with the variable named, if the settings are invalid.
    from kakarot_workers.settings import get_settings

    get_settings()


def main() -> None:
    """Console-script entry point: run the CLI, turning our errors into one line."""
    try:
        # without standalone mode click returns a `typer.Exit`'s code instead of exiting
        code = cli(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except KakarotError as exc:
        _error(f"error: {exc}")
        sys.exit(EXIT_ERROR)
    except (redis.ConnectionError, kombu.exceptions.OperationalError) as exc:
        from kakarot_workers.settings import get_settings

        url = get_settings().safe_dump()["redis_url"]
        _error(f"error: cannot reach Redis at {url} (KAKAROT_REDIS_URL): {exc}")
        sys.exit(EXIT_ERROR)
    except sqlalchemy.exc.OperationalError as exc:
        from kakarot_workers.settings import get_settings

        url = get_settings().safe_dump()["database_url"]
        reason = str(exc.orig)
        if "no such table" in reason or "doesn't exist" in reason:
            reason += " (create the schema with `kakarot db upgrade`)"
        _error(f"error: database {url} (KAKAROT_DATABASE_URL): {reason}")
        sys.exit(EXIT_ERROR)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors (typer bundles its own click)
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()  # the usage, the help hint and one line saying what is wrong
        sys.exit(getattr(exc, "exit_code", EXIT_ERROR))


def _error(line: str) -> None:
    """An error line on stderr, with every secret this process knows masked (`logs.Redact`)."""
    from kakarot_workers.logs import Redact, secrets_of
    from kakarot_workers.settings import get_settings

    with contextlib.suppress(KakarotError):  # invalid settings: the line names the variable
        line = Redact(secrets_of(get_settings())).clean(line)
    typer.echo(line, err=True)


# --- db -------------------------------------------------------------------------------------
@db_cli.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Create or update the schema (Alembic migrations)."""
    from kakarot_workers.db.session import current_revision, upgrade_schema
    from kakarot_workers.settings import get_settings

    upgrade_schema(revision=revision)
    typer.echo(
        f"schema at revision {current_revision()} ({get_settings().safe_dump()['database_url']})"
    )


# --- config ---------------------------------------------------------------------------------
@config_cli.command("create")
def config_create(
    name: Annotated[str, typer.Option(help="Config name.")],
    chain: Annotated[str, typer.Option(help="Chain: bsc, eth, base, sol, …")],
    source: Annotated[str, typer.Option(help="feed or simulator.")] = "simulator",
    min_usd: Annotated[float | None, typer.Option(help="Layer 1: single trade ≥ this USD.")] = None,
    cumulative_usd: Annotated[
        float | None, typer.Option(help="Layer 1: cumulative USD in the interval.")
    ] = None,
    interval: Annotated[str, typer.Option(help="time_interval, e.g. 1m, 5m, 1h.")] = "5m",
    events_config: Annotated[
        str | None, typer.Option(help="events_config JSON, or @file.json.")
    ] = None,
    trigger: Annotated[str, typer.Option(help="trigger_logic: any or all.")] = "any",
    notify: Annotated[str | None, typer.Option(help="notify_methods JSON, or @file.json.")] = None,
) -> None:
    """Create a config; events_config is validated and errors name the field."""
    from kakarot_workers.db.session import session_scope
    from kakarot_workers.tools.admin import create_config, load_json_arg

    events = load_json_arg(events_config, "events_config")
    with session_scope() as session:
        config = create_config(
            session,
            name=name,
            chain=chain,
            source=source,
            min_transaction_usd=min_usd,
            cumulative_min_amount_usd=cumulative_usd,
            time_interval=interval,
            events_config=events if events is not None else None,
            trigger_logic=trigger,
            notify_methods=load_json_arg(notify, "notify_methods"),
        )
        typer.echo(f"config {config.id} created (version {config.version})")


@config_cli.command("reference")
def config_reference() -> None:
    """Print every setting (variable, default, meaning) as the README's Markdown table."""
    from kakarot_workers.tools.reference import settings_block

    typer.echo(settings_block())


@config_cli.command("show")
def config_show(config_id: Annotated[int, typer.Argument(help="Config id.")]) -> None:
    """Print a config as JSON."""
    from kakarot_workers.db.session import session_scope
    from kakarot_workers.tools.admin import config_as_dict, get_config

    with session_scope() as session:
        typer.echo(
            json.dumps(config_as_dict(get_config(session, config_id)), indent=2, ensure_ascii=False)
        )


# --- task -----------------------------------------------------------------------------------
@config_cli.command("publish")
def config_publish(
    config_id: Annotated[int, typer.Option(help="Config id.")],
) -> None:
    """Bump a config's version and publish it on `monitor:config:changed` (as the backend
    does after an edit): every alert worker judges with it within a second."""
    from kakarot_workers.control.configs import publish_config

    version = publish_config(config_id)
    typer.echo(f"config {config_id}: version {version} published")


@task_cli.command("create")
def task_create(
    name: Annotated[str, typer.Option(help="Task name.")],
    config_id: Annotated[int, typer.Option(help="The config the task uses.")],
    chain: Annotated[str, typer.Option(help="Chain of the task.")],
    task_type: Annotated[str, typer.Option("--type", help="smart, batch or block.")] = "batch",
) -> None:
    """Create a monitor task bound to one config."""
    from kakarot_workers.db.session import session_scope
    from kakarot_workers.tools.admin import create_task

    with session_scope() as session:
        task = create_task(
            session, name=name, task_type=task_type, chain=chain, config_id=config_id
        )
        typer.echo(f"task {task.id} created")


@task_cli.command("list")
def task_list() -> None:
    """List tasks (the same table as `kakarot tasks`)."""
    tasks_cmd()


@task_cli.command("stop")
def task_stop(task_id: Annotated[int, typer.Option(help="Task id.")]) -> None:
    """Stop a task: its consumers stop within a second; nothing serves it until `task start`."""
    _task_running(task_id, on=False)


@task_cli.command("start")
def task_start(task_id: Annotated[int, typer.Option(help="Task id.")]) -> None:
    """Start a stopped task again: the next reconcile (beat's, within seconds) serves it."""
    _task_running(task_id, on=True)


def _task_running(task_id: int, *, on: bool) -> None:
    from kakarot_workers import runtime
    from kakarot_workers.db.session import session_scope
    from kakarot_workers.tools.admin import set_task_running

    with session_scope() as session:
        batches = set_task_running(session, runtime.redis_client(), runtime.keys(), task_id, on=on)
    from kakarot_workers import backend

    backend.send_task_status(task_id, running=on, message="started" if on else "stopped")
    what = "started: reconcile serves" if on else "stopped: told to stop"
    typer.echo(f"task {task_id} {what} its {len(batches)} batch(es)")


# --- target ---------------------------------------------------------------------------------
@target_cli.command("list")
def target_list(task_id: Annotated[int, typer.Option(help="Task id.")]) -> None:
    """A task's targets: CA, symbol, pair, watched or removed, batch."""
    from kakarot_workers.db.session import session_scope
    from kakarot_workers.tools.admin import list_targets

    with session_scope() as session:
        rows = list_targets(session, task_id)
    table = Table("ca", "symbol", "pair", "watched", "batch")
    for t in rows:
        table.add_row(
            t["ca"],
            t["symbol"] or "-",
            t["pair"] or "-",
            "yes" if t["watched"] else "removed",
            str(t["batch_id"] or "-"),
        )
    console.print(table)


@target_cli.command("remove")
def target_remove(
    task_id: Annotated[int, typer.Option(help="Task id.")],
    ca: Annotated[list[str], typer.Option(help="A CA to stop watching (repeat for more).")],
) -> None:
    """Stop watching targets; the next allocation (beat's, within seconds) moves them out of
    their batches. `target add` watches one again."""
    from kakarot_workers.addresses import normalize_address
    from kakarot_workers.db.batches import get_task
    from kakarot_workers.db.session import session_scope
    from kakarot_workers.tools.admin import remove_targets

    with session_scope() as session:
        chain = get_task(session, task_id).chain_type
        cas = [normalize_address(chain, c) for c in ca]
        removed, unknown = remove_targets(session, task_id, cas)
    if unknown:
        raise InputError(f"task {task_id} does not watch {', '.join(unknown)}; nothing removed")
    typer.echo(f"{removed} target(s) removed")


@target_cli.command("add")
def target_add(
    task_id: Annotated[int, typer.Option(help="Task id.")],
    ca: Annotated[str, typer.Option(help="Token contract address.")],
    symbol: Annotated[str | None, typer.Option(help="Token symbol.")] = None,
    pair: Annotated[str | None, typer.Option(help="Pair (pool) address.")] = None,
) -> None:
    """Add one target to a task (the address is validated for the task's chain)."""
    from kakarot_workers.db.batches import get_task
    from kakarot_workers.db.session import session_scope
    from kakarot_workers.tools.admin import add_targets, target_row

    with session_scope() as session:
        chain = get_task(session, task_id).chain_type
        added, existing = add_targets(session, task_id, [target_row(chain, ca, symbol, pair)])
    typer.echo("target added" if added else "target already present")


@target_cli.command("import")
def target_import(
    file: Annotated[Path, typer.Argument(help="CSV with a header: ca,symbol,pair[,name].")],
    task_id: Annotated[int, typer.Option(help="Task id.")],
) -> None:
    """Import targets from CSV; any bad row refuses the whole file, naming each bad line."""
    from kakarot_workers.db.session import session_scope
    from kakarot_workers.tools.admin import import_targets_file

    with session_scope() as session:
        added, existing = import_targets_file(session, task_id, file)
    typer.echo(f"{added} targets added, {existing} already present")


# --- running --------------------------------------------------------------------------------
@cli.command("allocate")
def allocate_cmd(
    task_id: Annotated[int, typer.Option(help="Task id.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the diff, write nothing.")
    ] = False,
) -> None:
    """Re-allocate a task's targets into batches; a membership change makes epoch + 1."""
    from kakarot_workers.control.reconcile import allocate_task

    report = allocate_task(task_id, dry_run=dry_run)
    diff = report.diff
    moved_from = len({old for old, _ in diff.moved.values()})
    lines = [
        f"task {task_id}{' (dry run: nothing written)' if dry_run else ''}",
        f"  targets   {report.targets}  (+{len(diff.added)} added, -{len(diff.removed)} removed)",
        f"  batches   {report.batches_before} → {report.batches_after}",
        f"            kept {len(diff.kept)} · changed {len(diff.changed)} · new {len(diff.new)}"
        f" · retired {len(diff.retired)}",
        f"  moved     {len(diff.moved)} surviving targets (from {moved_from} batches;"
        f" merges {len(diff.merged)}, splits {len(diff.split)})",
        f"  epoch     {report.epoch_before} → {report.epoch_after}",
    ]
    if report.new_batch_ids:
        lines.append(f"  new batch rows {list(report.new_batch_ids)} (dispatch them to go live)")
    typer.echo("\n".join(lines))


@cli.command("dispatch")
def dispatch_cmd(task_id: Annotated[int, typer.Option(help="Task id.")]) -> None:
    """Allocate the task (if its targets changed), then dispatch batches that have no consumer."""
    from kakarot_workers.control.reconcile import ensure_allocated
    from kakarot_workers.streams.dispatch import dispatch_unserved

    batch_ids = ensure_allocated(task_id)
    sent = dispatch_unserved(batch_ids)
    typer.echo(
        f"task {task_id}: {len(batch_ids)} batches in the current epoch; dispatched "
        f"{len(sent)} without a consumer: {sent}"
    )


@cli.command("reconcile")
def reconcile_cmd(
    task_id: Annotated[int | None, typer.Option(help="Only this task (default: all).")] = None,
) -> None:
    """One control pass: retire handed-over old-epoch batches, dispatch every unowned batch
    (no live lease, no pending dispatch) of active tasks. Beat will run this periodically."""
    from kakarot_workers.control.reconcile import reconcile

    report = reconcile(task_id)
    typer.echo(
        f"dispatched {len(report.dispatched)} {report.dispatched}; "
        f"retired {len(report.retired)} {report.retired}"
    )


@cli.command("rebalance")
def rebalance_cmd(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show every move it would make; order none.")
    ] = False,
) -> None:
    """Even out the streams nodes: order one batch moved from the busiest node to the idlest
    (beat does this every KAKAROT_BEAT_REBALANCE_S), or show the whole plan."""
    from kakarot_workers.control.rebalance import rebalance

    plan = rebalance(dry_run=dry_run)
    loads = ", ".join(f"{node} {count}" for node, count in plan.load.items()) or "no streams node"
    typer.echo(f"batches per node: {loads} (spread {plan.spread})")
    if plan.waiting:
        typer.echo(f"waiting: {plan.waiting}")
    verb = "would move" if dry_run else "moving"
    for move in plan.moves:
        typer.echo(f"{verb} batch {move.batch_id}: {move.source} → {move.target}")
    if not plan.moves:
        typer.echo("nothing to move")


@cli.command("nodes")
def nodes_cmd() -> None:
    """The fleet's nodes: batches, queue, CPU, memory, last heartbeat, online (heartbeat TTL)."""
    from kakarot_workers import runtime
    from kakarot_workers.tools.admin import ago, list_nodes

    nodes = list_nodes(runtime.redis_client(), runtime.keys())
    table = Table(
        "Node ID",
        "Batches",
        "Queue Size",
        "CPU Usage",
        "Memory",
        "Last Heartbeat",
        "State",
        title="Kakarot nodes",
    )
    for n in nodes:
        table.add_row(
            n["node_id"],
            str(n["batches"]),
            str(n["queue_size"]),
            f"{n['cpu_pct']:.1f}%",
            f"{n['memory_mib']:.0f} MiB",
            ago(n["last_heartbeat"]),
            "[green]online[/green]" if n["online"] else "[red]offline[/red]",
        )
    console.print(table if nodes else "no nodes have reported (is a worker running?)")
    from kakarot_workers import queues
    from kakarot_workers.streams.node import queues_without_workers

    unserved = queues_without_workers(runtime.redis_client(), runtime.keys(), queues.ALL)
    if unserved:
        listed = ", ".join(f"{name} ({waiting} waiting)" for name, waiting in unserved.items())
        console.print(f"[red]no live worker consumes: {listed}[/red]")


# --- health ---------------------------------------------------------------------------------
@health_cli.command("worker")
def health_worker(
    node: Annotated[str, typer.Argument(help="The worker's node name, e.g. streams@$(hostname).")],
) -> None:
    """The worker's node heartbeat is fresh (it beats every KAKAROT_NODE_HEARTBEAT_S). While
    Redis does not answer, nothing is held against the worker (exit 0): restarting the fleet
    would lose what its consumers keep through the outage."""
    from kakarot_workers import runtime

    beat = _while_redis_answers(
        lambda: runtime.redis_client().get(runtime.keys().node_heartbeat(node))
    )
    if beat is _REDIS_AWAY:
        return
    if beat is None:
        typer.echo(f"unhealthy: worker {node} has not beaten in Redis lately", err=True)
        raise typer.Exit(1)
    typer.echo(f"healthy: worker {node}")


@health_cli.command("beat")
def health_beat() -> None:
    """This host's beat ticked lately (as the leader or as a standby); exit 0 while Redis does
    not answer (as `health worker`)."""
    import socket

    from kakarot_workers import runtime

    host = socket.gethostname()
    roles = ("leader", "standby")
    beats = _while_redis_answers(
        lambda: runtime.redis_client().mget([runtime.keys().beat_heartbeat(host, r) for r in roles])
    )
    if not isinstance(beats, list):  # _REDIS_AWAY
        return
    ticking = [role for role, beat in zip(roles, beats, strict=True) if beat is not None]
    if not ticking:
        typer.echo(f"unhealthy: no beat on {host} has ticked lately", err=True)
        raise typer.Exit(1)
    typer.echo(f"healthy: beat on {host} ({' and '.join(ticking)})")


@health_cli.command("ready")
def health_ready(
    port: Annotated[
        int | None, typer.Option(help="The process's probe port (default: KAKAROT_PROBE_PORT).")
    ] = None,
) -> None:
    """The process on this host's probe port says it is ready (`/ready`: Redis, the database,
    its batches live): exit 0, else 1 with what is not (docker-compose's healthcheck)."""
    import httpx

    from kakarot_workers.settings import get_settings

    port = port or get_settings().probe_port
    if not port:
        raise InputError("no probe port: set KAKAROT_PROBE_PORT (or --port)")
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5)
    except httpx.HTTPError as exc:
        typer.echo(f"unhealthy: nothing answers on 127.0.0.1:{port} ({exc})", err=True)
        raise typer.Exit(1) from None
    try:
        checks = answer.json().get("checks", {}) if answer.status_code in (200, 503) else {}
    except (ValueError, AttributeError):
        checks = {}  # something else answers on that port
    if answer.status_code != 200:
        failing = "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
        typer.echo(f"unhealthy: {failing or f'HTTP {answer.status_code}'}", err=True)
        raise typer.Exit(1)
    typer.echo("ready: " + ", ".join(sorted(checks)))


_REDIS_AWAY = object()


def _while_redis_answers(read: Callable[[], object]) -> object:
    """`read()`, or _REDIS_AWAY (said on stderr) when Redis does not answer."""
    try:
        return read()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        typer.echo(
            f"unknown: Redis does not answer ({exc}); not held against the process", err=True
        )
        return _REDIS_AWAY


# --- dead letters ---------------------------------------------------------------------------
@deadletter_cli.command("list")
def deadletter_list(
    queue: Annotated[
        str | None, typer.Argument(help="One queue's letters (else a count each).")
    ] = None,
    count: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
) -> None:
    """Dead letters: per queue how many, or one queue's newest (index, time, reason)."""
    from datetime import UTC, datetime

    from kakarot_workers import deadletters, runtime

    client, keys = runtime.redis_client(), runtime.keys()
    if queue is None:
        found = deadletters.queues_with_letters(client, keys)
        if not found:
            console.print("no dead letters")
        for name, letters in found.items():
            console.print(f"{name}: {letters}")
        return
    table = Table("index", "time (UTC)", "what", "reason", title=f"dead letters of {queue}")
    for index, letter in enumerate(deadletters.entries(client, keys, queue, count)):
        when = datetime.fromtimestamp(letter.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        what = letter.task or f"{len(letter.raw or ''):,} characters"
        table.add_row(str(index), when, what, letter.reason)
    console.print(table)


@deadletter_cli.command("show")
def deadletter_show(
    queue: Annotated[str, typer.Argument(help="The queue.")],
    index: Annotated[int, typer.Argument(help="0: the newest.")] = 0,
) -> None:
    """One dead letter as JSON: reason, time, and the message as it came."""
    from kakarot_workers import deadletters, runtime

    letters = deadletters.entries(runtime.redis_client(), runtime.keys(), queue, index + 1)
    if len(letters) <= index:
        raise InputError(f"queue {queue} has no dead letter {index}")
    typer.echo(letters[index].to_json())


@deadletter_cli.command("requeue")
def deadletter_requeue(
    queue: Annotated[str, typer.Argument(help="The queue.")],
    index: Annotated[int, typer.Argument(help="0: the newest.")] = 0,
) -> None:
    """Send a dead letter to its queue again (and remove it from the dead letters)."""
    from kakarot_workers import deadletters, runtime

    client, keys = runtime.redis_client(), runtime.keys()
    letter = deadletters.take(client, keys, queue, index)
    if letter is None:
        raise InputError(f"queue {queue} has no dead letter {index}")
    if not letter.requeueable:
        client.lpush(keys.deadletters(queue), letter.to_json())  # keep it
        raise InputError(f"dead letter {index} of {queue} was cut when kept: it cannot be sent")
    if letter.task is not None:
        from kakarot_workers.celery import app

        app.send_task(letter.task, args=letter.args or [], kwargs=letter.kwargs or {})
    else:
        client.lpush(keys.queue(queue), letter.raw or "")
    typer.echo(f"sent again to {queue}: {letter.task or 'the raw item'}")


@deadletter_cli.command("purge")
def deadletter_purge(queue: Annotated[str, typer.Argument(help="The queue.")]) -> None:
    """Drop every dead letter of a queue."""
    from kakarot_workers import deadletters, runtime

    dropped = deadletters.purge(runtime.redis_client(), runtime.keys(), queue)
    typer.echo(f"dropped {dropped} dead letter(s) of {queue}")


@cli.command("batches")
def batches_cmd(
    task_id: Annotated[int | None, typer.Option(help="Only this task's batches.")] = None,
) -> None:
    """Batches that are not retired: epoch, size, status, consumer, last heartbeat, and since
    when each is monitored (when its source first covered it; UTC)."""
    from datetime import UTC, datetime

    from kakarot_workers import runtime
    from kakarot_workers.db.session import session_scope
    from kakarot_workers.tools.admin import ago, list_batches

    with session_scope() as session:
        rows = list_batches(session, task_id)
    since = _while_redis_answers(
        lambda: runtime.redis_client().mget(
            [runtime.keys().batch_since(b["id"]) for b in rows] or ["-"]
        )
    )
    covered = since if isinstance(since, list) else [None] * len(rows)
    table = Table("id", "task", "no", "epoch", "items", "status", "worker", "last heartbeat")
    table.add_column("since", no_wrap=True)
    for b, ms in zip(rows, covered, strict=False):
        started = (
            datetime.fromtimestamp(int(ms) / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"
        )
        table.add_row(
            str(b["id"]),
            str(b["task_id"]),
            str(b["batch_no"]),
            str(b["epoch"]),
            str(b["item_count"]),
            b["status"],
            b["worker_id"] or "-",
            ago(b["last_heartbeat"]),
            started,
        )
    console.print(table)


@cli.command("tasks")
def tasks_cmd() -> None:
    """Tasks: type, chain, epoch, targets, last heartbeat and health (check_timeouts)."""
    from kakarot_workers.db.models import TASK_ACTIVE
    from kakarot_workers.db.session import session_scope
    from kakarot_workers.tools.admin import ago, list_tasks

    with session_scope() as session:
        rows = list_tasks(session)
    table = Table(
        "id", "name", "type", "chain", "status", "epoch", "targets", "last heartbeat", "health"
    )
    for t in rows:
        health = t["health"] or "-"
        if t["health_reason"]:
            health += f" ({t['health_reason']})"
        table.add_row(
            str(t["id"]),
            t["name"],
            t["type"],
            t["chain"],
            "active" if t["status"] == TASK_ACTIVE else f"off ({t['status']})",
            str(t["epoch"]),
            str(t["targets"]),
            ago(t["last_heartbeat"]),
            health,
        )
    console.print(table)


@cli.command("alerts")
def alerts_cmd(
    task_id: Annotated[int | None, typer.Option(help="Only this task's alerts.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
    follow: Annotated[bool, typer.Option(help="Then print each new alert as it comes.")] = False,
    follow_s: Annotated[
        float, typer.Option(min=1, max=86_400, help="With --follow: stop after this long.")
    ] = 3600,
) -> None:
    """The newest alerts (time UTC, task, type, token, side, USD, price, tx, notify status)."""
    import time

    from kakarot_workers.db.session import session_scope
    from kakarot_workers.tools.admin import recent_alerts

    with session_scope() as session:
        rows = recent_alerts(session, task_id, limit=limit)
    table = Table(
        "id", "time (UTC)", "task", "type", "token", "side", "usd", "price", "tx", "notify"
    )
    for row in rows:
        table.add_row(*_alert_cells(row))
    console.print(table)
    if not follow:
        return
    last = max((r.id for r in rows), default=0)
    deadline = time.monotonic() + follow_s
    try:
        while time.monotonic() < deadline:
            time.sleep(1)
            with session_scope() as session:
                new = recent_alerts(session, task_id, after_id=last, limit=1000)
            for row in reversed(new):
                console.print("  ".join(_alert_cells(row)))
                last = max(last, row.id)
    except KeyboardInterrupt:
        return


def _alert_cells(row: Any) -> list[str]:
    data = row.alert_data or {}
    tx = row.tx_hash or "-"
    return [
        str(row.id),
        row.event_time.strftime("%Y-%m-%d %H:%M:%S") if row.event_time else "-",
        str(row.task_id),
        row.alert_type + (" (retracted)" if row.retracted else ""),
        row.token_symbol or row.ca[:10],
        str(data.get("side", "-")),
        f"{float(row.amount_usd):,.2f}" if row.amount_usd is not None else "-",
        f"{float(row.price_usd):.6g}" if row.price_usd is not None else "-",
        tx if len(tx) <= 14 else f"{tx[:8]}…{tx[-4:]}",
        row.notify_status,
    ]


@cli.command("status")
def status_cmd() -> None:
    """The fleet on one screen: nodes, batches live of those expected, queues, dead letters,
    beat; then what is wrong and what to do. Exit 1 when something is wrong."""
    from kakarot_workers import runtime
    from kakarot_workers.db.session import session_scope
    from kakarot_workers.tools.admin import fleet_status

    with session_scope() as session:
        found = fleet_status(session, runtime.redis_client(), runtime.keys())
    offline = f", {len(found.nodes_offline)} offline" if found.nodes_offline else ""
    online = ", ".join(found.nodes_online) or "-"
    console.print(f"nodes     {len(found.nodes_online)} online{offline}: {online}")
    console.print(f"batches   {found.batches_live} live of {found.batches_expected} expected")
    console.print("queues    " + ", ".join(f"{q} {n}" for q, n in found.queue_depths.items()))
    console.print("beat      " + (", ".join(sorted(found.beats)) or "none ticking"))
    letters = ", ".join(f"{q} {n}" for q, n in found.dead_letters.items())
    console.print(f"dead      {letters or 'none'}")
    if not found.problems:
        console.print("all well")
        return
    for wrong, todo in found.problems:
        console.print(f"[bold red]✗[/] {wrong}\n    → {todo}")
    raise typer.Exit(1)


@cli.command("flower")
def flower_cmd(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 5555,
    address: Annotated[
        str, typer.Option(help="Address to bind (behind a reverse proxy to go further).")
    ] = "127.0.0.1",
) -> None:
    """Flower, the Celery dashboard, with basic auth from KAKAROT_FLOWER_USER and
    KAKAROT_FLOWER_PASSWORD: it refuses to start without them (the dashboard can revoke tasks
    and shut workers down). The credentials reach Flower through its environment, never its
    command line; its `/metrics` and `/healthcheck` stay open, so it binds 127.0.0.1 unless
    told otherwise."""
    import os

    from kakarot_workers.settings import get_settings

    settings = get_settings()
    user, password = settings.flower_user, settings.flower_password
    if not user or password is None or not password.get_secret_value():
        _error(
            "error: Flower needs KAKAROT_FLOWER_USER and KAKAROT_FLOWER_PASSWORD (basic auth); "
            "it does not start without them"
        )
        raise typer.Exit(EXIT_ERROR)
    secret = password.get_secret_value()
    if "," in user or ":" in user or "," in secret:  # Flower splits its option at commas
        _error("error: KAKAROT_FLOWER_USER may hold no ',' or ':', KAKAROT_FLOWER_PASSWORD no ','")
        raise typer.Exit(EXIT_ERROR)
    env = {**os.environ, "FLOWER_BASIC_AUTH": f"{user}:{secret}"}
    command = [sys.executable, "-m", "celery", "-A", "kakarot_workers", "flower"]
    os.execvpe(sys.executable, [*command, f"--address={address}", f"--port={port}"], env)


@cli.command("hub")
def hub_cmd(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8780,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Run the backend-compatible WebSocket hub (and its read-only /api/v1) until Ctrl-C."""
    import asyncio

    from kakarot_workers.settings import get_settings
    from kakarot_workers.tools.hub import Hub

    settings = get_settings()
    token = settings.hub_token.get_secret_value() if settings.hub_token else None
    hub = Hub(
        host,
        port,
        token=token,
        write_heartbeats=settings.heartbeat_writer == "hub",
        epoch_poll_s=settings.hub_epoch_poll_s,
    )
    typer.echo(
        f"hub on ws://{host}:{port} (GET /api/v1/tasks|batches|nodes); heartbeat writer: "
        f"{'this hub' if hub.write_heartbeats else settings.heartbeat_writer}; Ctrl-C to stop"
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(hub.serve())


@cli.command("simulator")
def simulator_cmd(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    host: Annotated[
        str, typer.Option(help="Address to bind (containers need 0.0.0.0).")
    ] = "127.0.0.1",
    tokens: Annotated[int, typer.Option(help="Tokens traded.")] = 200,
    rate: Annotated[float, typer.Option(help="Trades per second over all tokens.")] = 50.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
) -> None:
    """Run the market simulator feed until Ctrl-C."""
    import time

    from kakarot_workers.tools.market import Market
    from kakarot_workers.tools.simulator import SimulatorServer

    with SimulatorServer(Market.with_tokens(seed, tokens), rate, host=host, port=port) as sim:
        typer.echo(f"simulator on {sim.url}: {tokens} tokens, {rate:g} trades/s (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


@cli.command("demo")
def demo_cmd(
    tokens: Annotated[int, typer.Option(min=1, help="Simulated tokens (targets).")] = 200,
    rate: Annotated[float, typer.Option(min=0.1, help="Trades per second over all tokens.")] = 50.0,
    duration: Annotated[
        float | None, typer.Option(min=1, help="Stop after this many seconds.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 7,
    min_usd: Annotated[float, typer.Option(help="Alert on single trades ≥ this USD.")] = 5000.0,
) -> None:
    """Run the whole fleet on embedded defaults: Redis, SQLite, simulator, workers."""
    from kakarot_workers.tools.demo import DemoOptions, run_demo

    run_demo(
        DemoOptions(tokens=tokens, rate=rate, duration=duration, seed=seed, min_usd=min_usd),
        console,
    )
