"""Load plain JSON values into a parameter's declared type.

A default ``Jobify()`` has no loader of its own: values come back from its
extended JSON serializer already typed. A plain Celery client
(``send_task``, ``.delay``, a canvas step fed by another task) sends plain
JSON instead, so for such apps this module turns ``"2026-01-01T00:00:00"``
into a ``datetime``, a ``dict`` into a dataclass and so on, and refuses a
value that cannot be what the annotation says. No I/O; a ``Coercer``
remembers what it learnt of each dataclass (its fields' types: resolving
string annotations costs more than building the instance), so the worker
keeps one per app and reads every job's arguments with it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from enum import Enum
from pathlib import PurePath
from typing import Any, Final

__all__ = ("Coercer", "CoercionError", "coerce")


class CoercionError(TypeError):
    """A value cannot be read as the declared type."""


_FROM_STRING: Final[dict[type[Any], Callable[[str], Any]]] = {
    datetime: datetime.fromisoformat,
    date: date.fromisoformat,
    time: time.fromisoformat,
    uuid.UUID: uuid.UUID,
    Decimal: Decimal,
}
_SEQUENCE_ORIGINS: Final = (list, set, frozenset, deque, Sequence)


def _type_name(tp: Any) -> str:  # noqa: ANN401
    return getattr(tp, "__qualname__", None) or repr(tp)


def _fail(value: Any, tp: Any) -> CoercionError:  # noqa: ANN401
    return CoercionError(f"expected {_type_name(tp)}, got {type(value).__name__} {value!r:.80}")


def coerce(value: Any, tp: Any) -> Any:  # noqa: ANN401
    """Return ``value`` as an instance of ``tp``, or raise ``CoercionError`` (see ``Coercer``)."""
    return Coercer()(value, tp)


def _shape_of(tp: type[Any]) -> tuple[dict[str, Any], frozenset[str]] | None:
    """Return a dataclass's field types (resolved) and the names its ``__init__`` takes.

    ``None`` if its annotations do not resolve (yet): the fields then take any value.
    """
    try:
        hints = typing.get_type_hints(tp)
    except (NameError, TypeError):
        return None
    return hints, frozenset(f.name for f in dataclasses.fields(tp) if f.init)


class Coercer:
    """Reads plain JSON values into declared types; remembers each dataclass's shape."""

    __slots__ = ("_shapes",)

    def __init__(self) -> None:
        #: Per dataclass: its fields' types and init names (gone with the class).
        self._shapes: weakref.WeakKeyDictionary[type[Any], tuple[dict[str, Any], frozenset[str]]]
        self._shapes = weakref.WeakKeyDictionary()

    def __call__(self, value: Any, tp: Any) -> Any:  # noqa: ANN401, C901, PLR0911
        """Return ``value`` as an instance of ``tp``, or raise ``CoercionError``.

        Annotations this module does not understand (type variables, protocols,
        callables, ...) let the value through unchanged: the function's own code
        is then the judge, as it would be in a single-process Jobify app.
        """
        if type(value) is tp:
            # Already one (most fields: a str, an int): what the checks below end in.
            return value
        if tp is Any or tp is object or isinstance(tp, typing.TypeVar):
            return value
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            return self(value, typing.get_args(tp)[0])
        if origin is typing.Union or origin is types.UnionType:
            return self._union(value, typing.get_args(tp), tp)
        if origin is typing.Literal:
            if value in typing.get_args(tp):
                return value
            raise _fail(value, tp)
        if origin is not None:
            return self._generic(value, origin, typing.get_args(tp), tp)
        if tp is None or tp is type(None):
            if value is None:
                return None
            raise _fail(value, "None")
        if not isinstance(tp, type):
            return value
        return self._class(value, tp)

    def _union(self, value: Any, members: tuple[Any, ...], tp: Any) -> Any:  # noqa: ANN401
        for member in members:
            if isinstance(member, type) and isinstance(value, member):
                return value
        for member in members:
            try:
                return self(value, member)
            except CoercionError:
                continue
        raise _fail(value, tp)

    def _generic(  # noqa: C901, PLR0911
        self,
        value: Any,  # noqa: ANN401
        origin: Any,  # noqa: ANN401
        args: tuple[Any, ...],
        tp: Any,  # noqa: ANN401
    ) -> Any:  # noqa: ANN401
        if origin is tuple:
            if not isinstance(value, (list, tuple)):
                raise _fail(value, tp)
            if len(args) == 2 and args[1] is Ellipsis:  # noqa: PLR2004
                return tuple(self(item, args[0]) for item in value)
            if args and len(args) != len(value):
                raise _fail(value, tp)
            return tuple(self(item, arg) for item, arg in zip(value, args, strict=False))
        if origin in (dict, Mapping) or (isinstance(origin, type) and issubclass(origin, Mapping)):
            if not isinstance(value, Mapping):
                raise _fail(value, tp)
            key_tp, val_tp = args if len(args) == 2 else (Any, Any)  # noqa: PLR2004
            return {self(k, key_tp): self(v, val_tp) for k, v in value.items()}
        if origin in _SEQUENCE_ORIGINS or (
            isinstance(origin, type) and issubclass(origin, (list, set, frozenset, deque))
        ):
            if isinstance(value, (str, bytes, Mapping)) or not isinstance(
                value, (list, tuple, set, frozenset, deque)
            ):
                raise _fail(value, tp)
            item_tp = args[0] if args else Any
            items = [self(item, item_tp) for item in value]
            if origin is Sequence:
                return items if isinstance(value, list) else type(value)(items)
            return origin(items)
        if isinstance(origin, type):
            if dataclasses.is_dataclass(origin):
                return self._class(value, origin)
            if isinstance(value, origin):
                return value
            raise _fail(value, tp)
        return value

    def _class(self, value: Any, tp: type[Any]) -> Any:  # noqa: ANN401, C901, PLR0911, PLR0912
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if dataclasses.is_dataclass(tp) and (type(value) is dict or isinstance(value, Mapping)):
            return self._dataclass(value, tp)
        if issubclass(tp, Enum):
            try:
                return tp(value)
            except ValueError:
                raise _fail(value, tp) from None
        if isinstance(value, str):
            parse = _FROM_STRING.get(tp)
            if parse is None and issubclass(tp, PurePath):
                parse = tp
            if parse is not None:
                try:
                    return parse(value)
                except (ValueError, InvalidOperation):
                    raise _fail(value, tp) from None
        if tp is Decimal and isinstance(value, (int, float)) and not isinstance(value, bool):
            return Decimal(str(value))
        if tp is timedelta and isinstance(value, (int, float)) and not isinstance(value, bool):
            return timedelta(seconds=value)
        if issubclass(tp, tuple) and hasattr(tp, "_fields"):
            if isinstance(value, Mapping):
                return tp(**value)
            if isinstance(value, (list, tuple)):
                return tp(*value)
        if tp in (set, frozenset, tuple, deque) and isinstance(value, list):
            return tp(value)
        raise _fail(value, tp)

    def _dataclass(self, value: Mapping[str, Any], tp: type[Any]) -> Any:  # noqa: ANN401
        shape = self._shapes.get(tp)
        if shape is None:
            shape = _shape_of(tp)
            if shape is None:
                shape = ({}, frozenset(f.name for f in dataclasses.fields(tp) if f.init))
            else:
                self._shapes[tp] = shape
        hints, known = shape
        unknown = value.keys() - known
        if unknown:
            msg = f"{_type_name(tp)} has no field(s) {sorted(unknown)}"
            raise CoercionError(msg)
        fields = {name: self(item, hints.get(name, Any)) for name, item in value.items()}
        try:
            return tp(**fields)
        except TypeError as exc:
            msg = f"cannot build {_type_name(tp)}: {exc}"
            raise CoercionError(msg) from None
