"""The control plane's periodic jobs: celery beat sends them to the `control` queue.

- `kakarot.control.allocate`: re-allocate the tasks whose active targets changed;
- `kakarot.control.reconcile`: retire old epochs, dispatch unowned current-epoch batches;
- `kakarot.control.check_timeouts`: silent batches become `stale` and are dispatched again;
  silent tasks are marked failed;
- `kakarot.control.sync_heartbeats`: the consumers' Redis status → `monitor_batch_v2`, in bulk;
- `kakarot.control.poll_configs`: config versions in the database → the announced versions;
- `kakarot.control.rebalance`: move one batch from the busiest streams node to the idlest.
(Beat also schedules `kakarot.notify.sweep_outbox`, on queue `notify`.)

Every job is safe to run twice at once (two beats in a split brain, a retried message): the
dispatch markers, the version maximum and conditional updates make the second run a no-op.
Beat itself holds a Redis lock (RedBeat), so normally only one runs.
"""

from __future__ import annotations

from typing import Any

from kakarot_workers import queues, runtime
from kakarot_workers.celery import app
from kakarot_workers.control import configs, rebalance, reconcile, timeouts
from kakarot_workers.db import heartbeats
from kakarot_workers.settings import get_settings
from kakarot_workers.streams import reporter

# beat sends each job again at its next tick: while a store is away a job does nothing
_JOB: dict[str, Any] = {"ignore_result": True, "skip_while_store_away": True}


@app.task(name=queues.ALLOCATE, **_JOB)
def allocate_job() -> list[int]:
    return reconcile.allocate_changed()


@app.task(name=queues.RECONCILE, **_JOB)
def reconcile_job() -> dict[str, list[int]]:
    report = reconcile.reconcile()
    return {"dispatched": report.dispatched, "retired": report.retired}


@app.task(name=queues.CHECK_TIMEOUTS, **_JOB)
def check_timeouts_job() -> dict[str, list[int]]:
    report = timeouts.check_timeouts()
    return {"stale": report.stale_batches, "failed": report.failed_tasks}


def sync_heartbeats() -> int:
    """Copy the consumers' Redis status to `monitor_batch_v2` when beat is the writer."""
    if get_settings().heartbeat_writer != "beat":
        return 0
    client, keys = runtime.redis_client(), runtime.keys()
    rows = []
    for row in reporter.read_statuses(client, keys):
        consumer, worker = runtime.row_identity(
            row["consumer_id"], row["worker_pid"], row["worker_id"]
        )
        rows.append({**row, "consumer_id": consumer, "worker_id": worker})
    return heartbeats.write_heartbeats(rows)


@app.task(name=queues.SYNC_HEARTBEATS, **_JOB)
def sync_heartbeats_job() -> int:
    return sync_heartbeats()


@app.task(name=queues.POLL_CONFIGS, **_JOB)
def poll_configs_job() -> list[int]:
    return configs.poll_configs()


@app.task(name=queues.REBALANCE, **_JOB)
def rebalance_job() -> list[int]:
    return [move.batch_id for move in rebalance.rebalance().moves]
