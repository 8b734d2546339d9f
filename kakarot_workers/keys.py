"""Every Redis key the fleet uses, in one place.

Keys shared with other systems keep the names of the design notes (`heartbeat:node:{id}`,
`node:metrics:{id}`, `monitor:config:changed`); the rest live under `kakarot:`. A configurable
prefix (`KAKAROT_REDIS_KEY_PREFIX`) lets several fleets share one Redis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = ""

    def _k(self, name: str) -> str:
        return f"{self.prefix}{name}"

    # --- shared with the backend (names from the notes) -------------------------------------
    def node_heartbeat(self, node_id: str) -> str:
        return self._k(f"heartbeat:node:{node_id}")

    def node_metrics(self, node_id: str) -> str:
        return self._k(f"node:metrics:{node_id}")

    @property
    def config_changed_channel(self) -> str:
        return self._k("monitor:config:changed")

    # --- stream side ------------------------------------------------------------------------
    def batch_status(self, batch_id: int) -> str:
        """Hash: status, events, last_event_ms, consumer_id, epoch; expires unless refreshed."""
        return self._k(f"kakarot:batch:{batch_id}:status")

    def batch_control(self, batch_id: int) -> str:
        """Hash written by the control plane for a batch's consumer: `stop` (a reason), `epoch`."""
        return self._k(f"kakarot:batch:{batch_id}:control")

    def batch_lease(self, batch_id: int) -> str:
        """String `{consumer_id}:{token}` with a TTL: who serves the batch right now."""
        return self._k(f"kakarot:batch:{batch_id}:lease")

    def batch_token(self, batch_id: int) -> str:
        """Counter: the fencing token of the batch's latest lease acquisition."""
        return self._k(f"kakarot:batch:{batch_id}:token")

    def batch_fence(self, batch_id: int) -> str:
        """The oldest fencing token the alert pool still accepts for the batch."""
        return self._k(f"kakarot:batch:{batch_id}:fence")

    def batch_fence_log(self, batch_id: int) -> str:
        """Hash token → the server's time (ms) the fence was raised to it, the last 16: an event
        of an older token counts if it left its consumer before the first raise above it."""
        return self._k(f"kakarot:batch:{batch_id}:fence_log")

    def batch_standby(self, batch_id: int) -> str:
        """String `{consumer_id}` with a TTL: the batch's hot standby (KAKAROT_STANDBY)."""
        return self._k(f"kakarot:batch:{batch_id}:standby")

    def batch_standby_dispatch(self, batch_id: int) -> str:
        """Marker with a TTL: a `stand_by` for the batch is on its way."""
        return self._k(f"kakarot:batch:{batch_id}:standby_dispatch")

    def batch_sent_mark(self, batch_id: int) -> str:
        """`tx_hash|log_index|ts_ms` of the last trade the batch's owner sent (with a standby:
        the standby takes over after it)."""
        return self._k(f"kakarot:batch:{batch_id}:sent_mark")

    def batch_since(self, batch_id: int) -> str:
        """Since when (ms) the batch is monitored: set once, by its first consumer, when its
        source first covered it (a feed's subscription, a back-fill's first block)."""
        return self._k(f"kakarot:batch:{batch_id}:since")

    def batch_handover(self, batch_id: int) -> str:
        """Marker with a TTL: the last holder released the batch gracefully and serves on until
        its successor is live."""
        return self._k(f"kakarot:batch:{batch_id}:handover")

    def batch_dispatch(self, batch_id: int) -> str:
        """Marker with a TTL: a `consume_batch` for the batch is on its way."""
        return self._k(f"kakarot:batch:{batch_id}:dispatch")

    def batch_moved(self, batch_id: int) -> str:
        """Marker with a TTL (the rebalance cool-off): the batch was moved to another node."""
        return self._k(f"kakarot:batch:{batch_id}:moved")

    @property
    def rebalance_moving(self) -> str:
        """Marker with a TTL (a hand-over's timeout): beat's rebalance ordered a move lately;
        the next waits (one move at a time)."""
        return self._k("kakarot:rebalance:moving")

    def queue(self, name: str) -> str:
        """The Redis list of Celery queue `name` (the broker prefixes its keys too)."""
        return self._k(name)

    def batch_checkpoint(self, batch_id: int) -> str:
        """The last block whose events the batch's consumer has emitted (EVM sources)."""
        return self._k(f"kakarot:batch:{batch_id}:checkpoint")

    @property
    def batch_status_pattern(self) -> str:
        """SCAN pattern matching every batch status key."""
        return self._k("kakarot:batch:*:status")

    @property
    def events_total(self) -> str:
        """Counter of swap events emitted to the alert pool by every consumer."""
        return self._k("kakarot:stats:events_emitted")

    @property
    def events_rejected(self) -> str:
        """Counter of wire events the alert pool refused as malformed."""
        return self._k("kakarot:stats:events_rejected")

    @property
    def frames_rejected(self) -> str:
        """Counter of frames and events the stream consumers refused (malformed or implausible)."""
        return self._k("kakarot:stats:frames_rejected")

    @property
    def rejects_by_batch(self) -> str:
        """Hash batch id → events and frames of the batch refused, at the source or the pool."""
        return self._k("kakarot:stats:rejects:batch")

    @property
    def rejects_by_reason(self) -> str:
        """Hash `source:<field>` / `pool:<field>` → events refused for that field."""
        return self._k("kakarot:stats:rejects:reason")

    @property
    def events_fenced(self) -> str:
        """Counter of events the alert pool dropped because their fencing token was stale."""
        return self._k("kakarot:stats:events_fenced")

    @property
    def events_retracted(self) -> str:
        """Counter of events withdrawn by a chain re-org (`removed: true` logs)."""
        return self._k("kakarot:stats:events_retracted")

    @property
    def retracted(self) -> str:
        """Hash `{chain}:{tx}:{log index}` → block: swaps a re-org removed after emission."""
        return self._k("kakarot:retracted")

    @property
    def handovers_resent(self) -> str:
        """Counter of hand-over dispatches sent again because no successor took the batch."""
        return self._k("kakarot:stats:handovers_resent")

    @property
    def reconnects(self) -> str:
        """Counter of source reconnects, every consumer together."""
        return self._k("kakarot:stats:reconnects")

    # --- beat ---------------------------------------------------------------------------------
    def beat_heartbeat(self, host: str, role: str) -> str:
        """Rewritten (with a TTL) at every tick of a beat on `host` acting as `role` (`leader`
        or `standby`): one key per role, so two beats on one host do not overwrite each other."""
        return self._k(f"kakarot:heartbeat:beat:{host}:{role}")

    # --- every queue --------------------------------------------------------------------------
    def deadletters(self, queue: str) -> str:
        """List (newest first, capped) of the queue's messages moved aside, JSON each."""
        return self._k(f"kakarot:deadletter:{queue}")

    def deadletter_count(self, queue: str) -> str:
        """Counter of the queue's messages ever moved aside."""
        return self._k(f"kakarot:stats:deadletter:{queue}")

    # --- alert pool -------------------------------------------------------------------------
    def window_entries(self, task_id: int, ca: str) -> str:
        """Sorted set: the token's trades within the task's longest window
        (`id|cents|price|side` by ts ms)."""
        return self._k(f"kakarot:win:{task_id}:{ca}:z")

    def window_state(self, task_id: int, ca: str) -> str:
        """msgpack array: the newest trade, and per window length the running sums (cents) and
        first trade (see `windows`)."""
        return self._k(f"kakarot:win:{task_id}:{ca}:h")

    def window_seen(self, task_id: int, ca: str) -> str:
        """Hash: trade id → the windows as that trade first saw them (re-deliveries judge alike)."""
        return self._k(f"kakarot:win:{task_id}:{ca}:seen")

    def cooldown(self, task_id: int, ca: str) -> str:
        """String with a TTL: the event that alerted the task on the token last."""
        return self._k(f"kakarot:cooldown:{task_id}:{ca}")

    def token_metrics(self, chain: str, ca: str) -> str:
        """JSON with a TTL: market cap and top-10 holders share from the metrics provider."""
        return self._k(f"kakarot:metrics:{chain}:{ca}")

    def digest_pending(self, task_id: int, channel: str) -> str:
        """Marker with the digest window's TTL: a flush of the task's digest is scheduled."""
        return self._k(f"kakarot:digest:{task_id}:{channel}")

    def notify_sent(self, outbox_id: int) -> str:
        """A notification the service accepted while the database could not record it: the
        service's message reference, until the outbox row is marked sent (`notify.journal`)."""
        return self._k(f"kakarot:notify:sent:{outbox_id}")

    def alert_stat(self, name: str) -> str:
        """Counters of the alert pool: evaluated, alerts, cooldown, rejected_<layer>, …"""
        return self._k(f"kakarot:stats:alerts:{name}")

    def notify_stat(self, channel: str, result: str) -> str:
        """Counters of notifications by channel and result (sent, retried, failed)."""
        return self._k(f"kakarot:stats:notify:{channel}:{result}")

    @property
    def configs_rejected(self) -> str:
        """Counter of config versions refused as invalid (the last valid one stayed in force)."""
        return self._k("kakarot:stats:configs_rejected")

    # --- control plane ----------------------------------------------------------------------
    @property
    def beat_prefix(self) -> str:
        """RedBeat's keys (the schedule and the lock of the active beat)."""
        return self._k("kakarot:beat:")

    @property
    def config_versions(self) -> str:
        """Hash config id → the newest version announced (Pub/Sub notices and the poll_configs
        job raise it, never lower it); alert workers reload a config whose version is newer."""
        return self._k("kakarot:config:versions")

    @property
    def config_notices_rejected(self) -> str:
        """Counter of `monitor:config:changed` messages refused as malformed."""
        return self._k("kakarot:stats:config_notices_rejected")

    @property
    def target_signatures(self) -> str:
        """Hash task id → signature of its active targets at its last allocation."""
        return self._k("kakarot:alloc:signatures")

    @property
    def backend_outbox(self) -> str:
        """List of JSON events for the backend that no node in particular sends (task_status),
        sent by whichever node's backend client is connected."""
        return self._k("kakarot:backend:outbox")

    def backend_outbox_of(self, node_id: str) -> str:
        """List of JSON events (batch_status) that node `node_id` sends on its own connection:
        the batches it serves."""
        return self._k(f"kakarot:backend:outbox:{node_id}")

    @property
    def backend_events_dropped(self) -> str:
        """Counter of backend events dropped from a full outbox (no node connected for long)."""
        return self._k("kakarot:stats:backend_events_dropped")

    @property
    def batches_stale(self) -> str:
        """Counter of batches check_timeouts found silent and marked `stale`."""
        return self._k("kakarot:stats:batches_stale")

    @property
    def tasks_failed(self) -> str:
        """Counter of tasks check_timeouts marked failed."""
        return self._k("kakarot:stats:tasks_failed")

    @property
    def node_pattern(self) -> str:
        """SCAN pattern matching every node metrics key."""
        return self._k("node:metrics:*")
