"""Writing dead letters: the ``<stream>:dlq`` key and the script that acks and dead-letters at once.

A dead letter is the original entry's fields preceded by ``_dlq_source``,
``_dlq_id`` and ``_dlq_reason``. Reading, replaying and purging them is
:mod:`streamproc.redis.dlq`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

DeadLetter = tuple[bytes, Mapping[bytes, bytes], str]  # entry id, original fields, reason

# Ack a bad entry and append it to the dead-letter stream atomically, but only
# if it was still pending: a zombie consumer acking the same entry later gets
# XACK = 0 and adds no second dead letter.
DEAD_LETTER_LUA: Final = """
local written = 0
local i = 1
while i < #ARGV do
  local id, reason, nfields = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local acked = redis.call('XACK', KEYS[1], ARGV[#ARGV], id)
  if acked == 1 then
    local args = {KEYS[2], '*', '_dlq_source', KEYS[1], '_dlq_id', id, '_dlq_reason', reason}
    for j = 1, nfields * 2 do
      args[#args + 1] = ARGV[i + 2 + j]
    end
    redis.call('XADD', unpack(args))
    written = written + 1
  end
  i = i + 3 + nfields * 2
end
return written
"""


def dlq_key(stream: str) -> str:
    """The dead-letter stream of ``stream``: ``<stream>:dlq``."""
    return f"{stream}:dlq"


def dead_letter_args(items: Sequence[DeadLetter], group: str) -> list[Any]:
    """ARGV of :data:`DEAD_LETTER_LUA`: (id, reason, field count, fields...) per entry, then the group."""
    args: list[Any] = []
    for eid, fields, reason in items:
        args.extend((eid, reason, len(fields)))
        for k, v in fields.items():
            args.extend((k, v))
    args.append(group)
    return args
