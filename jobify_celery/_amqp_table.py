"""Message headers as an AMQP 0-9-1 field table, typed as Celery's own client types them.

The asyncio AMQP client (aiormq, through pamqp) encodes a Python float as a
32-bit float and refuses tuples and ``bytes``; Celery's client (py-amqp)
sends floats as 64-bit doubles (Sentry's enqueue timestamp, Celery's
``timelimit``) and tuples as arrays. A header must read back on the worker as
exactly the value the producer put in, so the bridge writes header tables
itself, following the AMQP 0-9-1 spec with RabbitMQ's errata, with the type
letters a py-amqp reader decodes to the same Python values. Pure functions.
"""

from __future__ import annotations

import calendar
import struct
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

__all__ = ("encode_table",)

_INT32: Final = 2**31 - 1
_INT64: Final = 2**63 - 1
_SHORT_STRING_MAX: Final = 255


def encode_table(table: dict[str, Any]) -> bytes:
    """Return ``table`` as an AMQP field table: its byte length, then its fields.

    Raises ``TypeError`` naming the key of a value AMQP cannot carry.
    """
    parts: list[bytes] = []
    for key, value in table.items():
        name = str(key).encode("utf-8")
        if len(name) > _SHORT_STRING_MAX:
            msg = f"header name {key!r} is longer than {_SHORT_STRING_MAX} bytes"
            raise TypeError(msg)
        parts.append(struct.pack(">B", len(name)) + name)
        try:
            parts.append(_value(value))
        except TypeError as exc:
            msg = f"header {key!r}: {exc}"
            raise TypeError(msg) from None
    body = b"".join(parts)
    return struct.pack(">I", len(body)) + body


def _value(value: Any) -> bytes:  # noqa: ANN401, C901, PLR0911 - one branch per AMQP type
    if value is None:
        return b"V"
    if isinstance(value, bool):  # before int: a bool is an int
        return struct.pack(">cB", b"t", value)
    if isinstance(value, str):
        return _long_string(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, (bytes, bytearray)):
        return _long_string(bytes(value))
    if isinstance(value, int):
        if -_INT32 <= value <= _INT32:
            return struct.pack(">ci", b"I", value)
        if -_INT64 - 1 <= value <= _INT64:
            return struct.pack(">cq", b"l", value)
        msg = f"the integer {value} does not fit in 64 bits"
        raise TypeError(msg)
    if isinstance(value, float):
        return struct.pack(">cd", b"d", value)
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, datetime):
        return struct.pack(">cQ", b"T", calendar.timegm(value.utctimetuple()))
    if isinstance(value, dict):
        return b"F" + encode_table(value)
    if isinstance(value, (list, tuple)):
        items = b"".join(_value(item) for item in value)
        return b"A" + struct.pack(">I", len(items)) + items
    msg = f"a {type(value).__name__} cannot travel in an AMQP header"
    raise TypeError(msg)


def _long_string(data: bytes) -> bytes:
    return struct.pack(">cI", b"S", len(data)) + data


def _decimal(value: Decimal) -> bytes:
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        msg = f"the decimal {value} is not a finite number"
        raise TypeError(msg)
    unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    if exponent > 0:
        unscaled *= 10**exponent
        exponent = 0
    scale = -exponent
    if scale > 255 or not -_INT32 - 1 <= unscaled <= _INT32:  # noqa: PLR2004
        msg = f"the decimal {value} does not fit an AMQP decimal"
        raise TypeError(msg)
    return struct.pack(">cBi", b"D", scale, unscaled)
