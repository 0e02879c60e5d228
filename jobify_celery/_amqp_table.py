"""Message headers as an AMQP 0-9-1 field table, typed as Celery's own client types them.

The asyncio AMQP client (aiormq, through pamqp) encodes a Python float as a
32-bit float and refuses tuples and ``bytes``; Celery's client (py-amqp)
sends floats as 64-bit doubles (Sentry's enqueue timestamp, Celery's
``timelimit``) and tuples as arrays. A header must read back on the worker as
exactly the value the producer put in, so the bridge writes header tables
itself, following the AMQP 0-9-1 spec with RabbitMQ's errata, with the type
letters a py-amqp reader decodes to the same Python values. Pure functions;
this runs for every message a producer sends, so the common types (strings,
``None``, small integers, booleans) take a dictionary lookup, not a chain of
``isinstance`` tests.
"""

from __future__ import annotations

import calendar
import struct
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

__all__ = ("encode_table",)

_INT32: Final = 2**31 - 1
_INT64: Final = 2**63 - 1
_SHORT_STRING_MAX: Final = 255
_LENGTH: Final = struct.Struct(">I")
_LONG_STRING: Final = struct.Struct(">cI")
_INT: Final = struct.Struct(">ci")
_LONG: Final = struct.Struct(">cq")
_DOUBLE: Final = struct.Struct(">cd")
_TIMESTAMP: Final = struct.Struct(">cQ")
_DECIMAL: Final = struct.Struct(">cBi")
_TRUE: Final = b"t\x01"
_FALSE: Final = b"t\x00"
_VOID: Final = b"V"


def encode_table(table: dict[str, Any]) -> bytes:
    """Return ``table`` as an AMQP field table: its byte length, then its fields.

    Raises ``TypeError`` naming the key of a value AMQP cannot carry.
    """
    out = bytearray(4)
    _fields(out, table)
    _LENGTH.pack_into(out, 0, len(out) - 4)
    return bytes(out)


def _fields(out: bytearray, table: dict[str, Any]) -> None:
    for key, value in table.items():
        name = str(key).encode("utf-8")
        if len(name) > _SHORT_STRING_MAX:
            msg = f"header name {key!r} is longer than {_SHORT_STRING_MAX} bytes"
            raise TypeError(msg)
        out.append(len(name))
        out += name
        try:
            _value(out, value)
        except TypeError as exc:
            msg = f"header {key!r}: {exc}"
            raise TypeError(msg) from None


def _value(out: bytearray, value: Any) -> None:  # noqa: ANN401
    write = _BY_TYPE.get(type(value))
    if write is None:
        write = _by_kind(value)
    write(out, value)


def _string(out: bytearray, value: str) -> None:
    data = value.encode("utf-8", "surrogatepass")
    out += _LONG_STRING.pack(b"S", len(data))
    out += data


def _bytes(out: bytearray, value: bytes | bytearray) -> None:
    out += _LONG_STRING.pack(b"S", len(value))
    out += value


def _none(out: bytearray, _value: None) -> None:
    out += _VOID


def _bool(out: bytearray, value: bool) -> None:  # noqa: FBT001
    out += _TRUE if value else _FALSE


def _int(out: bytearray, value: int) -> None:
    if -_INT32 <= value <= _INT32:
        out += _INT.pack(b"I", value)
    elif -_INT64 - 1 <= value <= _INT64:
        out += _LONG.pack(b"l", value)
    else:
        msg = f"the integer {value} does not fit in 64 bits"
        raise TypeError(msg)


def _float(out: bytearray, value: float) -> None:
    out += _DOUBLE.pack(b"d", value)


def _decimal(out: bytearray, value: Decimal) -> None:
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
    out += _DECIMAL.pack(b"D", scale, unscaled)


def _datetime(out: bytearray, value: datetime) -> None:
    out += _TIMESTAMP.pack(b"T", calendar.timegm(value.utctimetuple()))


def _table(out: bytearray, value: dict[str, Any]) -> None:
    out.append(ord("F"))
    start = len(out)
    out += b"\0\0\0\0"
    _fields(out, value)
    _LENGTH.pack_into(out, start, len(out) - start - 4)


def _array(out: bytearray, value: list[Any] | tuple[Any, ...]) -> None:
    out.append(ord("A"))
    start = len(out)
    out += b"\0\0\0\0"
    for item in value:
        _value(out, item)
    _LENGTH.pack_into(out, start, len(out) - start - 4)


_Writer = Callable[[bytearray, Any], None]
_BY_TYPE: Final[dict[type, _Writer]] = {
    str: _string,
    type(None): _none,
    bool: _bool,
    int: _int,
    float: _float,
    bytes: _bytes,
    bytearray: _bytes,
    Decimal: _decimal,
    datetime: _datetime,
    dict: _table,
    list: _array,
    tuple: _array,
}


def _by_kind(value: Any) -> _Writer:  # noqa: ANN401
    """Return the writer for a subclass of a known type (``bool`` before ``int``)."""
    for kind, write in _BY_TYPE.items():
        if kind is not type(None) and isinstance(value, kind):
            return write
    msg = f"a {type(value).__name__} cannot travel in an AMQP header"
    raise TypeError(msg)
