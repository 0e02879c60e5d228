"""Header tables read back, through Celery's own AMQP reader, as the values put in."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from amqp.serialization import loads

from jobify_celery._amqp_table import encode_table


def _read_back(table: dict[str, Any]) -> dict[str, Any]:
    encoded = encode_table(table)
    (length,) = struct.unpack_from(">I", encoded)
    assert length == len(encoded) - 4
    (values,), _ = loads("F", encoded, 0)
    result: dict[str, Any] = values
    return result


def test_celerys_own_headers_round_trip() -> None:
    headers = {
        "lang": "py",
        "task": "tests.apps.shop:add",
        "id": "7b0c",
        "shadow": None,
        "eta": "2026-01-01T00:00:00+00:00",
        "retries": 0,
        "timelimit": (1.3, None),
        "argsrepr": "[1, 2]",
        "ignore_result": False,
        "stamps": {},
        "stamped_headers": None,
        "jobify": '{"v":1}',
    }
    back = _read_back(headers)
    assert back == {**headers, "timelimit": [1.3, None]}


@pytest.mark.parametrize(
    "value",
    [
        1796065907.8754756,  # a wall-clock timestamp: a 32-bit float would be 128 s off
        -0.1,
        2**31 - 1,
        -(2**31) + 1,
        2**40,
        -(2**62),
        True,
        "naïve ☕",
        Decimal("19.99"),
        Decimal(-7),
        {"nested": {"deep": [1, "two", 3.5, None]}},
        [],
    ],
)
def test_values_keep_their_value_and_type(value: Any) -> None:
    back = _read_back({"k": value})["k"]
    assert back == value
    assert type(back) is type(value)


def test_bytes_and_datetimes_read_back_as_py_amqp_reads_them() -> None:
    moment = datetime(2026, 11, 30, 12, 0, 5, tzinfo=UTC)
    back = _read_back({"raw": b"abc", "at": moment})
    assert back["raw"] == "abc"
    assert back["at"] == moment.replace(tzinfo=None)


def test_what_cannot_travel_is_refused_with_its_key() -> None:
    with pytest.raises(TypeError, match="header 'obj': a object cannot travel"):
        encode_table({"obj": object()})
    with pytest.raises(TypeError, match="does not fit in 64 bits"):
        encode_table({"big": 2**70})
    with pytest.raises(TypeError, match="longer than 255 bytes"):
        encode_table({"k" * 300: 1})
