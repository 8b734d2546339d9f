"""The Prometheus series of a process (prometheus-client), served by `probes` at `/metrics`.

Counters and histograms are kept in the process that counts them: a streams worker's show its
consumers, an alerts worker's its pool and deliveries, beat's its ticks. Sum them over the fleet
in Prometheus (`sum by (…) (rate(kakarot_…_total[5m]))`). The queue depths and dead letters are
read from Redis when scraped: the same in every process (aggregate them with `max`). A prefork
pool's children count in their own memory: give them `PROMETHEUS_MULTIPROC_DIR` (a directory the
worker empties at start) and `/metrics` merges them (prometheus-client's multiprocess mode).

Counting costs a few hundred nanoseconds: the hot paths count per micro-batch, never per event.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# --- stream consumers ----------------------------------------------------------------------
EVENTS_SENT = Counter(
    "kakarot_events_sent_total", "Trades a stream consumer sent to the alert pool", ["source"]
)
EVENTS_REJECTED = Counter(
    "kakarot_events_rejected_total",
    "Trades or frames refused as implausible or malformed, by where and why",
    ["stage", "reason"],
)
SOURCE_RECONNECTS = Counter(
    "kakarot_source_reconnects_total", "Reconnects of a batch's source", ["source"]
)
LEASES_HELD = Gauge(
    "kakarot_leases_held",
    "Batch leases this process holds (its live consumers)",
    multiprocess_mode="livesum",
)
LEASE_LOSSES = Counter(
    "kakarot_lease_losses_total", "Leases lost to another consumer (the batch moved on)"
)
HANDOVERS = Counter(
    "kakarot_handovers_total", "Batches this process gave up on shutdown, by outcome", ["outcome"]
)
STANDBY_TAKEOVERS = Counter(
    "kakarot_standby_takeovers_total", "Batches a hot standby of this process took over"
)
STANDBYS = Gauge("kakarot_standbys", "Hot standbys this process runs", multiprocess_mode="livesum")

# --- the alert pool ------------------------------------------------------------------------
EVENTS_JUDGED = Counter("kakarot_events_judged_total", "Trades judged against their task's rules")
EVENTS_FENCED = Counter(
    "kakarot_events_fenced_total", "Trades refused: sent by a consumer after it lost its batch"
)
RULE_REJECTIONS = Counter(
    "kakarot_rule_rejections_total", "Trades that did not alert, by what stopped them", ["by"]
)
WINDOW_CONFLICTS = Counter(
    "kakarot_window_conflicts_total", "Copies of a counted trade with other values (not judged)"
)
ALERTS = Counter("kakarot_alerts_total", "New alert rows, by alert type", ["type"])
TRADE_TO_ALERT = Histogram(
    "kakarot_trade_to_alert_seconds",
    "From a trade's time to its alert row's commit",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
POOL_STEP = Histogram(
    "kakarot_pool_step_seconds",
    "One step of judging a micro-batch: screen (Redis), windows (Redis), cooldown (Redis), "
    "record (the database)",
    ["step"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
GC_PAUSES = Histogram(
    "kakarot_gc_pause_seconds",
    "Pauses of Python's cyclic garbage collector in a worker process, by generation (a full "
    "collection stops every thread of the process)",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)

# --- notify ---------------------------------------------------------------------------------
DELIVERIES = Counter(
    "kakarot_deliveries_total", "Notifications, by channel and result", ["channel", "result"]
)
NOTIFY_SECONDS = Histogram(
    "kakarot_notify_seconds",
    "One notification's request to its service",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)

# --- every process ---------------------------------------------------------------------------
TASKS = Counter(
    "kakarot_tasks_total",
    "Celery tasks run by this process (beat's jobs on the control worker), by result",
    ["task", "result"],
)
DB_SECONDS = Histogram(
    "kakarot_db_seconds",
    "One database statement",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
DEGRADATION_LEVEL = Gauge(
    "kakarot_degradation_level",
    "What this process sheds under an alerts backlog (`degrade`)",
    multiprocess_mode="livemax",
)
BEAT_TICKS = Counter("kakarot_beat_ticks_total", "Ticks of a beat, as leader or standby", ["role"])
