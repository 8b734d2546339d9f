"""Judging a micro-batch of swap events (`evaluate_events`, queue `alerts`).

A micro-batch from a stream consumer costs a fixed number of round trips, whatever its size:
1. drops malformed events, events of a fenced-off consumer and events a re-org retracted
   (one round trip);
2. fills missing token metrics from the cache or the metrics provider (`enrich`);
3. adds every event to its task's sliding windows (one Lua call, `windows`);
4. judges each event (`rules.judge`, pure);
5. claims the cooldown of each alerting (task, token) (one Lua call, `cooldown`);
6. records the alerts and their outbox notifications in one transaction (`alert_log`);
7. hands the pending notifications to the notify stage (`notify.tasks.dispatch`).
Acknowledged late: a worker lost mid-batch has its message delivered again; windows, cooldowns
and the de-duplication keys make the second pass write nothing twice.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

from kakarot_workers import degrade, metrics, queues, runtime
from kakarot_workers.alerts.alert_log import record_alerts
from kakarot_workers.alerts.cooldown import Claim, Cooldowns
from kakarot_workers.alerts.drafts import draft
from kakarot_workers.alerts.enrich import enrich
from kakarot_workers.alerts.profiles import ProfileCache, TaskProfile
from kakarot_workers.alerts.rules import WindowStats, cooldown_seconds, judge, reads_windows
from kakarot_workers.alerts.windows import Observation, Windows
from kakarot_workers.db.session import session_scope
from kakarot_workers.errors import EventError, NotFoundError
from kakarot_workers.events import SwapEvent, from_wire
from kakarot_workers.notify import tasks as notify
from kakarot_workers.notify.messages import alert_line
from kakarot_workers.notify.notifiers import http_client
from kakarot_workers.settings import get_settings

log = logging.getLogger(__name__)


def _count_rejected_config(_message: str) -> None:
    runtime.redis_client().incr(runtime.keys().configs_rejected)


_profiles = ProfileCache(
    get_settings().config_cache_ttl_s,
    on_reject=_count_rejected_config,
    debounce_s=get_settings().config_debounce_s,
)
_stores: dict[int, tuple[Windows, Cooldowns]] = {}


def _alerts_backlog() -> int:
    return int(runtime.redis_client().llen(runtime.keys().queue(queues.ALERTS)))


_degradation = degrade.Sampled(get_settings().degrade_backlog, "alert pool", _alerts_backlog)


def reset_caches() -> None:
    """Forget cached task profiles, cooldowns and the degradation level (a new database or
    Redis, new settings: tests and tools)."""
    global _degradation
    _profiles.clear()
    for _, cooldowns in _stores.values():
        cooldowns.forget()
    _degradation = degrade.Sampled(get_settings().degrade_backlog, "alert pool", _alerts_backlog)


def stores() -> tuple[Windows, Cooldowns]:
    """This process's window and cooldown stores (their scripts bound to its Redis client)."""
    pid = os.getpid()
    found = _stores.get(pid)
    if found is None:
        client, keys = runtime.redis_client(), runtime.keys()
        found = _stores[pid] = (Windows(client, keys), Cooldowns(client, keys))
    return found


def parse_events(events: list[Any]) -> list[SwapEvent]:
    """The well-formed, plausible events of a message; each other one is logged with its
    reason and counted (in all, by reason, by batch), and the rest are judged as usual."""
    plausible = get_settings().plausible
    now_ms = int(time.time() * 1000)
    parsed = []
    reasons: Counter[str] = Counter()
    batches: Counter[int] = Counter()
    for index, raw in enumerate(events):
        try:
            parsed.append(from_wire(raw, now_ms=now_ms, plausible=plausible))
        except EventError as exc:
            log.warning("event %d of message rejected: %s", index, exc)
            reasons[f"pool:{exc.reason}"] += 1
            batch_id = raw.get("batch_id") if isinstance(raw, dict) else None
            if type(batch_id) is int and batch_id > 0:  # noqa: E721 (a bool is no batch)
                batches[batch_id] += 1
    if reasons:  # one round trip for the message, not one per event
        keys = runtime.keys()
        pipe = runtime.redis_client().pipeline(transaction=False)
        pipe.incrby(keys.events_rejected, sum(reasons.values()))
        for reason, count in reasons.items():
            pipe.hincrby(keys.rejects_by_reason, reason, count)
            metrics.EVENTS_REJECTED.labels(*reason.split(":", 1)).inc(count)
        for batch_id, count in batches.items():
            pipe.hincrby(keys.rejects_by_batch, str(batch_id), count)
        pipe.execute()
    return parsed


def screen(
    events: list[SwapEvent], config_ids: Sequence[int] = ()
) -> tuple[list[SwapEvent], dict[int, int]]:
    """The events to judge, and the announced version of each config in `config_ids` (those in
    force for these events), read in one round trip. An event is judged if it is:

    - not fenced: an event whose fencing token is below its batch's fence comes from a consumer
      that has lost its lease to a successor since. It is still judged if it was sent (`sent_ms`,
      Redis's clock) before the fence was first raised above its token: its consumer held the
      lease then (a dead owner's last events, a hand-over's overlap). Else it comes from a
      zombie (or a hand-over that was complete) and is dropped and counted in `events_fenced`.
      Events with no token (tools, tests) pass;
    - not retracted: a chain re-org withdrew it (`kakarot:retracted`, written by sources).
    """
    if not events:
        return events, {}
    client, keys = runtime.redis_client(), runtime.keys()
    fenced = sorted({e.batch_id for e in events if e.batch_id and e.fencing_token})
    pipe = client.pipeline(transaction=False)
    if fenced:
        pipe.mget([keys.batch_fence(b) for b in fenced])
    if config_ids:
        pipe.hmget(keys.config_versions, [str(c) for c in config_ids])
    pipe.hmget(keys.retracted, [e.key for e in events])
    replies = pipe.execute()
    current = dict(zip(fenced, (int(v or 0) for v in replies[0]), strict=True)) if fenced else {}
    versions = (
        {c: int(v) for c, v in zip(config_ids, replies[-2], strict=True) if v is not None}
        if config_ids
        else {}
    )
    below = {
        e.batch_id
        for e in events
        if e.batch_id and e.fencing_token and e.fencing_token < current[e.batch_id]
    }
    raised = _fence_raises(client, keys, sorted(below)) if below else {}
    kept, stale, withdrawn = [], 0, 0
    for event, block in zip(events, replies[-1], strict=True):
        if event.batch_id in below and _fenced_off(event, current, raised):
            stale += 1
        elif block is not None:
            withdrawn += 1
        else:
            kept.append(event)
    if stale:
        client.incrby(keys.events_fenced, stale)
        metrics.EVENTS_FENCED.inc(stale)
        log.info(
            "%d event(s) refused (counted in events_fenced): sent after their batch had a new "
            "owner, by a consumer that had lost it; the new owner sends what it reads",
            stale,
        )
    if withdrawn:
        log.info("%d retracted event(s) not judged", withdrawn)
    return kept, versions


def _fence_raises(client: Any, keys: Any, batch_ids: list[int]) -> dict[int, list[tuple[int, int]]]:
    """Per batch, the fence's logged raises (token, Redis ms), by token; a raise trimmed from
    the log (`fence_log.lua`) shows as (its token, 0): nothing below it can be placed."""
    pipe = client.pipeline(transaction=False)
    for batch_id in batch_ids:
        pipe.hgetall(keys.batch_fence_log(batch_id))
    raises = {}
    for batch_id, log in zip(batch_ids, pipe.execute(), strict=True):
        trimmed = log.pop("trimmed", None)
        found = sorted((int(t), int(ms)) for t, ms in log.items())
        raises[batch_id] = ([(int(trimmed), 0)] if trimmed else []) + found
    return raises


def _fenced_off(
    event: SwapEvent, current: dict[int, int], raised: dict[int, list[tuple[int, int]]]
) -> bool:
    """Whether an event below its batch's fence was sent after the fence first rose above its
    token (or that raise is no longer logged, or the event carries no send time)."""
    if not event.fencing_token or event.fencing_token >= current[event.batch_id]:
        return False
    first_above = next((ms for t, ms in raised[event.batch_id] if t > event.fencing_token), None)
    return first_above is None or not 0 < event.sent_ms < first_above


def window_stats(
    judged: Sequence[tuple[TaskProfile, SwapEvent]],
) -> list[Mapping[int, WindowStats] | None]:
    """Each event's windows (by length), after adding it to them (none for an event its rules
    turn away without them); None for a copy of a trade already counted with other values
    (`windows`: the first copy wins, this one is not judged)."""
    observations = [
        Observation(
            profile.rules.task_id,
            profile.rules.window_lengths,
            event,
            quiet=not reads_windows(profile.rules, event),
        )
        for profile, event in judged
        if profile.rules.window_lengths
    ]
    seen = iter(stores()[0].observe(observations))
    return [next(seen) if profile.rules.window_lengths else {} for profile, _ in judged]


def configs_in_force(events: list[SwapEvent]) -> list[int]:
    """The configs of the events' tasks, as cached (so their announced versions can be read)."""
    profiles = (_profiles.fresh(task_id) for task_id in {e.task_id for e in events})
    return sorted({p.rules.config_id for p in profiles if p is not None})


def process(events: list[SwapEvent], announced: dict[int, int]) -> tuple[int, Counter[str]]:
    """Judge, cool down and record a micro-batch; return (new alerts, counters). `announced`:
    config versions announced (`screen`); a config newer than the cached one is read again."""
    settings = get_settings()
    client, keys = runtime.redis_client(), runtime.keys()
    stats: Counter[str] = Counter(evaluated=len(events))
    by_task: dict[int, list[SwapEvent]] = defaultdict(list)
    for event in events:
        by_task[event.task_id].append(event)
    _profiles.note(announced)  # drops the profiles of configs announced newer
    profiles = {task_id: _profiles.fresh(task_id) for task_id in by_task}
    stale = [task_id for task_id, profile in profiles.items() if profile is None]
    if stale:
        with session_scope() as session:
            for task_id in stale:
                try:
                    profiles[task_id] = _profiles.get(session, task_id)
                except NotFoundError as exc:
                    stats["skipped_no_config"] += len(by_task[task_id])
                    log.warning(
                        "%d event(s) of task %s not judged: %s", len(by_task[task_id]), task_id, exc
                    )
    judged: list[tuple[TaskProfile, SwapEvent]] = []
    for task_id, task_events in by_task.items():
        profile = profiles[task_id]
        if profile is not None:
            judged += [(profile, event) for event in task_events]
    level = _degradation.current()
    if settings.metrics_url:
        lookups = http_client() if level < 1 else None  # degraded: cached metrics only
        filled = enrich(client, keys, settings, lookups, [e for _, e in judged])
        judged = [(p, e) for (p, _), e in zip(judged, filled, strict=True)]

    with metrics.POOL_STEP.labels("windows").time():
        per_event = window_stats(judged)
    candidates = []
    for (profile, event), windows in zip(judged, per_event, strict=True):
        if windows is None:
            stats["window_conflicts"] += 1
            log.warning(
                "trade %s (task %s) came again with other values (%s $%.2f at $%g); the first "
                "copy counts, this one is not judged",
                event.key,
                profile.rules.task_id,
                event.side,
                event.amount_usd,
                event.price_usd,
            )
            continue
        verdict = judge(profile.rules, event, windows)
        if verdict.alert:
            candidates.append((profile, event, verdict, windows))
        else:
            stats[f"rejected_{verdict.rejected_by}"] += 1
    candidates.sort(key=lambda c: (c[1].ts_ms, c[1].tx_hash, c[1].log_index))
    claims = [
        Claim(
            p.rules.task_id,
            e.ca,
            e.key,
            cooldown_seconds(e.market_cap_usd, p.rules.events.cooldown),
        )
        for p, e, _, _ in candidates
    ]
    drafts = []
    with metrics.POOL_STEP.labels("cooldown").time():
        won_claims = stores()[1].claim(claims)
    for candidate, won in zip(candidates, won_claims, strict=True):
        if won:
            drafts.append(draft(*candidate))
        else:
            stats["cooldown"] += 1
    if not drafts:
        return 0, stats
    if level >= 3:  # degraded: notifications as digests
        drafts = [
            dataclasses.replace(d, digest_s=max(d.digest_s or 0, degrade.DIGEST_S))
            if d.targets
            else d
            for d in drafts
        ]
    with metrics.POOL_STEP.labels("record").time(), session_scope() as session:
        recorded = record_alerts(session, drafts)
    stats["alerts"] += len(recorded.new_rows)
    now = time.time()
    for row in recorded.new_rows:
        metrics.ALERTS.labels(row["alert_type"]).inc()
        if row.get("event_time") is not None:
            traded = row["event_time"].replace(tzinfo=UTC).timestamp()
            metrics.TRADE_TO_ALERT.observe(max(0.0, now - traded))
    notify.dispatch(recorded.pending)
    new_keys = {row["dedup_key"] for row in recorded.new_rows}
    for d in drafts:
        if d.row["dedup_key"] in new_keys:
            log.info(alert_line(d.summary))
    return len(recorded.new_rows), stats
