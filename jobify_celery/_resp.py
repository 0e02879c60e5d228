"""Redis's wire protocol (RESP2), the part a pub/sub connection needs. Pure functions.

A result watcher follows every pending job on one pub/sub connection: a
SUBSCRIBE per job, a confirmation per channel, a message per stored state, an
UNSUBSCRIBE and its confirmation at the end. With redis-py's asyncio client
each reply read costs tens of microseconds of timeouts, locks and retries;
these functions read a whole buffer of replies in a few microseconds each.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ("RespError", "command", "parse_replies")

_CRLF: Final = b"\r\n"


class RespError(Exception):
    """An error reply from the server (``-ERR ...``)."""


def command(*parts: bytes | str) -> bytes:
    """Encode one command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def parse_replies(buffer: bytes | bytearray, start: int = 0) -> tuple[list[Any], int]:
    """Read every complete reply in ``buffer`` from ``start``.

    Returns the replies (bulk strings as ``bytes``, integers as ``int``,
    arrays as ``list``, simple strings as ``str``, errors as ``RespError``,
    null as ``None``) and the position after the last complete one; what
    follows is an incomplete reply to read again with more data.
    """
    replies: list[Any] = []
    view = bytes(buffer) if isinstance(buffer, bytearray) else buffer
    position = start
    while position < len(view):
        parsed = _reply(view, position)
        if parsed is None:
            break
        value, position = parsed
        replies.append(value)
    return replies, position


def _reply(data: bytes, position: int) -> tuple[Any, int] | None:  # noqa: C901, PLR0911 - a branch per type
    end = data.find(_CRLF, position)
    if end < 0:
        return None
    kind = data[position : position + 1]
    line = data[position + 1 : end]
    after = end + 2
    if kind == b"$":
        length = int(line)
        if length < 0:
            return None, after
        if len(data) < after + length + 2:
            return None
        return data[after : after + length], after + length + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, after
        items: list[Any] = []
        for _ in range(count):
            parsed = _reply(data, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        return items, after
    if kind == b":":
        return int(line), after
    if kind == b"+":
        return line.decode(), after
    if kind == b"-":
        return RespError(line.decode(errors="replace")), after
    msg = f"not a RESP reply: {data[position : position + 20]!r}"
    raise ValueError(msg)
