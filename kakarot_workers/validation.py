"""Reading the columns operators write (a config's JSON, durations like `5m`), with errors that
name the field: a typo is refused, never silently turned into "rule off"."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ValidationError

from kakarot_workers.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)

_INTERVAL = re.compile(r"^(\d{1,7})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The longest window or interval: a window keeps its trades in Redis for as long, and no trade
# older than a week is judged (`events.Plausible.max_age_ms`).
MAX_INTERVAL_S = 7 * 86400


def parse_interval(text: str) -> int:
    """`'5m'` → 300. Accepts s, m, h, d, up to 7 days; raises ValueError otherwise."""
    match = _INTERVAL.match(text.strip()) if isinstance(text, str) else None
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"expected a duration like 30s, 1m, 5m, 1h, got {str(text)[:40]!r}")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds > MAX_INTERVAL_S:
        raise ValueError(f"{text.strip()!r} is longer than the 7d a window can be")
    return seconds


def _check_window(value: str) -> str:
    parse_interval(value)
    return value


# A duration like "30s", "5m", "1h" in a config (validated, kept as written).
WindowText = Annotated[str, AfterValidator(_check_window)]


def json_text(raw: Any, label: str) -> Any:
    """A config column as data: JSON text is parsed (empty text is None), anything else passes."""
    if not isinstance(raw, str):
        return raw
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{label}: not valid JSON: {exc}") from None


def validate_config(model: type[ModelT], data: Any, label: str) -> ModelT:
    """`model` from `data`, or a ConfigError naming every bad field as `label.path: problem`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"])
            problems.append(f"{label}.{where}: {err['msg']}")
        raise ConfigError("; ".join(problems)) from None
