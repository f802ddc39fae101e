"""A batch of usage events into Redis, exactly once: stream entries and counter increments.

The recorder's writer numbers its batches (``writer id``, ``seq``: one writer per
process, its batches in order). One Lua script applies a batch atomically - an XADD per
event and its counter increments - and remembers the writer's last applied ``seq``
(``{gw}:usage:seq:<writer>``, kept 7 days; every key of the script carries the
``{gw}`` hash tag, one slot on Redis Cluster). A batch whose ``seq`` is already applied
changes nothing and returns nil. So a batch is applied once whatever happens to the
reply: the client library's retry after a lost reply, or a spooled batch (Redis failed
after it had applied it) replayed later, cannot count the spend twice.

Order matters for the ``seq`` check: a writer with spooled batches spools every later
batch too until its spool is replayed (usage/recorder.py, usage/spool.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gatewaysite.redis import SLOT

SEQ_TTL_SECONDS = 7 * 86_400

# KEYS: the writer's seq key, the stream, then every counter key in event order.
# ARGV: seq, seq ttl, event count, then per event: payload, counter count, (amount, ttl) per counter.
_APPLY = """
local seq = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[1]) or '0') >= seq then return false end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local values = {}
local at = 4
local key = 3
for _ = 1, tonumber(ARGV[3]) do
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[at])
  local counters = tonumber(ARGV[at + 1])
  at = at + 2
  for _ = 1, counters do
    values[#values + 1] = redis.call('INCRBY', KEYS[key], ARGV[at])
    if tonumber(ARGV[at + 1]) > 0 then redis.call('EXPIRE', KEYS[key], ARGV[at + 1]) end
    key = key + 1
    at = at + 2
  end
end
return values
"""

Counter = tuple[str, int, int]  # key, amount, ttl seconds (0: none)

_script: Any = None


def seq_key(writer: str) -> str:
    return f"{SLOT}:usage:seq:{writer}"


def apply_batch(
    client: Any, stream: str, writer: str, seq: int, events: Sequence[tuple[bytes, Sequence[Counter]]]
) -> list[list[int]] | None:
    """Apply the batch once; the counters' new values per event, or None if it was applied before."""
    global _script
    if _script is None:
        _script = client.register_script(_APPLY)  # EVALSHA, loaded on first use by any client
    keys: list[str] = [seq_key(writer), stream]
    args: list[Any] = [seq, SEQ_TTL_SECONDS, len(events)]
    for payload, counters in events:
        args += [payload, len(counters)]
        for key, amount, ttl in counters:
            keys.append(key)
            args += [amount, ttl]
    reply = _script(keys=keys, args=args, client=client)
    if reply is None:
        return None
    values = [int(v) for v in reply]
    result: list[list[int]] = []
    position = 0
    for _, counters in events:
        result.append(values[position : position + len(counters)])
        position += len(counters)
    return result
