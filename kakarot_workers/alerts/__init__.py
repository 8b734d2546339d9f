"""Where a trade becomes an alert (queue `alerts`): rules, sliding windows, cooldowns, and the
idempotent alert log with its outbox."""
