"""Readable wire values: plain JSON only where the annotation reads it back unchanged."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, NamedTuple

from jobify_celery._coerce import coerce
from jobify_celery._plain import NOT_PLAIN, readable


class Color(Enum):
    BLUE = "blue"


@dataclasses.dataclass
class Line:
    sku: str
    qty: int


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    placed: datetime
    total: Decimal
    color: Color
    lines: list[Line]
    wait: timedelta


class Pair(NamedTuple):
    left: int
    right: int


@dataclasses.dataclass
class Shape:
    name: str


@dataclasses.dataclass
class Label:
    name: str


def test_a_nested_dataclass_is_its_fields_all_the_way_down() -> None:
    order = Order(
        uuid.UUID(int=1),
        datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
        Decimal("19.99"),
        Color.BLUE,
        [Line("a", 2)],
        timedelta(minutes=1),
    )
    assert readable(order, Order, coerce) == {
        "id": "00000000-0000-0000-0000-000000000001",
        "placed": "2026-11-30T09:00:00+00:00",
        "total": "19.99",
        "color": "blue",
        "lines": [{"sku": "a", "qty": 2}],
        "wait": 60.0,
    }


def test_containers_follow_their_item_annotations() -> None:
    assert readable([Line("a", 1)], list[Line], coerce) == [{"sku": "a", "qty": 1}]
    assert readable({"k": Decimal(1)}, dict[str, Decimal], coerce) == {"k": "1"}
    assert readable({1, 2}, set[int], coerce) in ([1, 2], [2, 1])
    assert readable((1, "x"), tuple[int, str], coerce) == [1, "x"]
    assert readable(Pair(1, 2), Pair, coerce) == {"left": 1, "right": 2}
    assert readable(None, Order | None, coerce) is None


def test_what_would_come_back_different_keeps_its_tags() -> None:
    assert readable(Line("a", 1), Any, coerce) is NOT_PLAIN  # a dict would come back
    assert readable(Label("x"), Shape | Label, coerce) is NOT_PLAIN  # read back as a Shape
    assert readable({1: "x"}, dict[int, str], coerce) is NOT_PLAIN  # JSON keys are strings
    assert readable(object(), object, coerce) is NOT_PLAIN
