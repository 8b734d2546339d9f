"""Where a batch becomes a stream (queue `streams`): one long-lived consumer per batch, holding
its lease, stamping every trade and sending micro-batches to the alert pool."""
