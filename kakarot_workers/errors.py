"""The error hierarchy: retry policies and the CLI match on these classes."""


class KakarotError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(KakarotError):
    """Settings or a monitor config are invalid; the message names the variable or field."""


class InputError(KakarotError):
    """Operator input (a CLI argument, a CSV row, an address) is malformed; says what and where."""


class NotFoundError(KakarotError):
    """A task, config or batch that was asked for does not exist."""


class EventError(KakarotError):
    """A swap event or a source frame is malformed. `field` names the bad field (None: the
    event or frame as a whole), so rejects can be counted by reason."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    @property
    def reason(self) -> str:
        return self.field or "shape"


class SourceError(KakarotError):
    """A market-data source failed (connection, protocol); the consumer reconnects."""


class NotifyError(KakarotError):
    """A notifier could not deliver a message.

    `retryable`: a later attempt may succeed (429, 5xx, network); otherwise the message is
    recorded as failed at once (a wrong chat id, a revoked token). `retry_after_s`: the wait the
    service asked for (Retry-After), if any.
    """

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
