"""Cooldown per (task, token) in Redis: after an alert, the token stays quiet for a while.

Claimed atomically for a whole micro-batch in one script. The key holds the id of the event that
claimed it, so the same event claiming again (a re-delivered message, a retry after a database
error) still gets it: a worker dying between the claim and the commit cannot swallow the alert.
The length comes from `rules.cooldown_seconds` (tiered by market cap, overridable per config).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from kakarot_workers.keys import Keys

# KEYS: one cooldown key per candidate (repeats allowed; the first claimant wins).
# ARGV: per key, the claimant's event id and the cooldown in ms (0: no cooldown).
# Returns per key 1 (claimed now, or already this event's) or 0 (another event holds it).
_CLAIM = """
local out = {}
for k = 1, #KEYS do
  local id, ttl = ARGV[2 * k - 1], tonumber(ARGV[2 * k])
  if ttl <= 0 then
    out[k] = 1
  else
    local holder = redis.call('GET', KEYS[k])
    if not holder then
      redis.call('SET', KEYS[k], id, 'PX', ttl)
      out[k] = 1
    elseif holder == id then
      out[k] = 1
    else
      out[k] = 0
    end
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class Claim:
    task_id: int
    ca: str
    event_id: str
    seconds: int


class Cooldowns:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.keys = keys
        self._claim = client.register_script(_CLAIM)

    def claim(self, claims: Sequence[Claim]) -> list[bool]:
        """Claim each in order; True where the event may alert."""
        if not claims:
            return []
        keys = [self.keys.cooldown(c.task_id, c.ca) for c in claims]
        argv: list[str | int] = []
        for c in claims:
            argv += [c.event_id, c.seconds * 1000]
        return [bool(won) for won in self._claim(keys=keys, args=argv)]
