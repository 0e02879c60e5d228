"""Plain JSON into declared types."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import pytest

from jobify_celery._coerce import Coercer, CoercionError, coerce


class Level(IntEnum):
    LOW = 1


class Point(NamedTuple):
    x: int
    y: int


@dataclasses.dataclass
class Box:
    size: Point
    label: str | None = None


@pytest.mark.parametrize(
    ("value", "tp", "expected"),
    [
        (1, float, 1.0),
        ("2026-01-01T00:00:00+00:00", datetime, datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01", date, date(2026, 1, 1)),
        ("10:30:00", time, time(10, 30)),
        (1.5, timedelta, timedelta(seconds=1.5)),
        ("1.10", Decimal, Decimal("1.10")),
        (2, Decimal, Decimal(2)),
        ("/tmp/x", Path, Path("/tmp/x")),
        (1, Level, Level.LOW),
        ([1, 2], Point, Point(1, 2)),
        ({"x": 1, "y": 2}, Point, Point(1, 2)),
        ({"size": [1, 2]}, Box, Box(Point(1, 2))),
        ([1, 2], tuple[int, ...], (1, 2)),
        ([1, "a"], tuple[int, str], (1, "a")),
        ([1, 1], set[int], {1}),
        ([1], Sequence[int], [1]),
        ({"a": "2026-01-01"}, dict[str, date], {"a": date(2026, 1, 1)}),
        (None, int | None, None),
        ("a", Literal["a", "b"], "a"),
        (3, Annotated[int, "meta"], 3),
        (object, Any, object),
    ],
)
def test_coerces(value: Any, tp: Any, expected: Any) -> None:
    assert coerce(value, tp) == expected


@pytest.mark.parametrize(
    ("value", "tp"),
    [
        ("1", int),
        (True, int),
        (1.5, int),
        ("x", datetime),
        ("x", uuid.UUID),
        (5, Level),
        ({"size": [1, 2], "extra": 1}, Box),
        ("ab", list[str]),
        ([1, 2, 3], tuple[int, int]),
        ("c", Literal["a", "b"]),
        (1, None),
        ("x", int | None),
    ],
)
def test_refuses(value: Any, tp: Any) -> None:
    with pytest.raises(CoercionError):
        coerce(value, tp)


@dataclasses.dataclass
class Later:
    part: NotYet  # noqa: F821 - defined below, after a first read


def test_one_coercer_reads_a_dataclass_again_and_again_the_same_way() -> None:
    read = Coercer()
    for x in (1, 2, 3):
        assert read({"size": [x, 2], "label": "b"}, Box) == Box(Point(x, 2), "b")
    with pytest.raises(CoercionError, match="no field"):
        read({"size": [1, 2], "colour": "red"}, Box)
    with pytest.raises(CoercionError, match="got int 5"):
        read({"size": [1, 2], "label": 5}, Box)


def test_an_annotation_that_does_not_resolve_yet_is_not_remembered() -> None:
    read = Coercer()
    assert read({"part": {"n": 1}}, Later) == Later({"n": 1})  # type: ignore[arg-type]
    globals()["NotYet"] = _NotYet
    try:
        assert read({"part": {"n": 1}}, Later) == Later(_NotYet(1))
    finally:
        del globals()["NotYet"]


@dataclasses.dataclass
class _NotYet:
    n: int
