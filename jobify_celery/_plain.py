"""Readable wire values: a typed value as the plain JSON a person would write.

A default ``Jobify()`` tags what plain JSON cannot say (``{"__dataclass__":
{"type": "Order", "fields": {...}}}``), which Flower, ``celery events``,
``inspect active`` and plain Celery clients show as it is. Where the
parameter's or the result's annotation says enough to read the value back
(``Order``, ``list[Order]``, ``Decimal``, ``datetime``, ...), the value travels
as plain JSON instead: a dataclass as its fields, a ``Decimal`` or a ``UUID`` as
a string, a ``datetime`` as ISO 8601, an enum as its value, a set or a tuple as
a list, a ``timedelta`` as seconds. The receiving side reads it back into the
annotated type (``_coerce``).

Plain only when that is lossless: :func:`readable` reads the plain form back
for the annotation and compares; when it differs (an ``Any`` annotation, a
union of look-alikes, a type ``_coerce`` does not build), the caller keeps
the tagged form. Messages in the tagged form load as before. Pure functions.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Final

from jobify_celery._coerce import CoercionError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("NOT_PLAIN", "readable", "to_plain")

_PRIMITIVES: Final = (str, int, float, bool, type(None))
_AS_STRING: Final = (Decimal, uuid.UUID, PurePath)
_AS_ISO: Final = (datetime, date, time)


class _NoPlainFormError(Exception):
    """A value with no plain JSON form."""


#: What :func:`readable` returns when the value must keep its tags.
NOT_PLAIN: Final = object()


def to_plain(value: Any) -> Any:  # noqa: ANN401, C901, PLR0911
    """Return ``value`` as plain JSON data; raise ``_NoPlainFormError`` for what has none."""
    if type(value) in _PRIMITIVES:
        return value
    if isinstance(value, Enum):
        return to_plain(value.value)
    if isinstance(value, _AS_ISO):
        return value.isoformat()
    if isinstance(value, _AS_STRING):
        return str(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: to_plain(getattr(value, field.name))
            for field in dataclasses.fields(value)
            if field.init
        }
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {key: to_plain(item) for key, item in value._asdict().items()}
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise _NoPlainFormError
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, deque)):
        return [to_plain(item) for item in value]
    raise _NoPlainFormError


def readable(value: Any, hint: Any, coerce: Callable[[Any, Any], Any]) -> Any:  # noqa: ANN401
    """Return ``value`` as plain JSON if ``hint`` reads that back unchanged, else ``NOT_PLAIN``.

    ``coerce`` reads the plain form back (``_coerce.Coercer``).
    """
    try:
        plain = to_plain(value)
        back = coerce(plain, hint)
        same = type(back) is type(value) and back == value
    except (_NoPlainFormError, CoercionError, TypeError, ValueError, RecursionError):
        return NOT_PLAIN
    return plain if same else NOT_PLAIN
