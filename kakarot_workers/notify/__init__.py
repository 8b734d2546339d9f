"""Where an alert becomes a message (queue `notify`): the outbox, its delivery tasks, the text
of a message, and one notifier per channel (Telegram, WeCom, webhook, the backend)."""
