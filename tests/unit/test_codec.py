"""The wire format, without a broker."""

from __future__ import annotations

import dataclasses
import inspect
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from jobify import INJECT, JobContext
from jobify.serializers import ExtendedJSONSerializer

from jobify_celery._codec import (
    HEADER_KEY,
    ValueCodec,
    decode_call,
    decode_header,
    encode_call,
    encode_header,
    ensure_json,
    parse_time,
    positional_names,
    tagged_classes,
    wire_signature,
)
from jobify_celery._errors import ArgumentLoadError
from jobify_celery._jobify import extended_encode


class Tier(Enum):
    GOLD = "gold"


@dataclasses.dataclass
class Customer:
    id: uuid.UUID
    tier: Tier
    since: date


def target(
    customer: Customer,
    amount: Decimal,
    /,
    when: datetime,
    *extras: int,
    note: str = "",
    ctx: JobContext = INJECT,
    **tags: str,
) -> Customer:
    raise NotImplementedError


SIGNATURE = inspect.signature(target)
HINTS = {
    "customer": Customer,
    "amount": Decimal,
    "when": datetime,
    "extras": int,
    "note": str,
    "tags": str,
    "ctx": JobContext,
}
WIRE = wire_signature(SIGNATURE, frozenset({"ctx"}))


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def default_codec() -> ValueCodec:
    serializer = ExtendedJSONSerializer()
    serializer.add_system_types(list(tagged_classes(HINTS.values())))
    return ValueCodec(
        dump=lambda value, _tp: value,
        load=lambda value, _tp: value,
        tag=extended_encode,
        untag_hook=serializer.decoder_hook,
        coerce_plain=True,
    )


def decode(args: list[Any], kwargs: dict[str, Any]) -> inspect.BoundArguments:
    return decode_call(
        "t",
        signature=SIGNATURE,
        wire=WIRE,
        hints=HINTS,
        codec=default_codec(),
        args=args,
        kwargs=kwargs,
    )


def test_call_round_trips_through_plain_json() -> None:
    customer = Customer(uuid.uuid4(), Tier.GOLD, date(2020, 1, 2))
    when = datetime(2026, 1, 1, tzinfo=UTC)
    bound = SIGNATURE.bind(customer, Decimal("9.5"), when, 1, 2, note="n", color="red")
    args, kwargs = encode_call("t", bound, HINTS, default_codec(), ["ctx"])
    ensure_json([args, kwargs], "message")
    back = decode(args, kwargs)
    assert back.arguments == bound.arguments
    assert back.args == (customer, Decimal("9.5"), when, 1, 2)
    assert back.kwargs == {"note": "n", "color": "red"}


def test_injected_parameters_never_travel() -> None:
    bound = SIGNATURE.bind(
        Customer(uuid.uuid4(), Tier.GOLD, date(2020, 1, 2)), Decimal(1), datetime.now(UTC)
    )
    bound.arguments["ctx"] = object()
    args, kwargs = encode_call("t", bound, HINTS, default_codec(), ["ctx"])
    assert "ctx" not in kwargs
    assert len(args) == 3

    def small(x: int, ctx: JobContext = INJECT) -> None:
        raise NotImplementedError

    signature = inspect.signature(small)
    wire = wire_signature(signature, frozenset({"ctx"}))
    for args, kwargs, message in (
        ([1], {"ctx": 1}, "unexpected keyword argument 'ctx'"),
        ([1, 2], {}, "too many positional arguments"),
    ):
        with pytest.raises(ArgumentLoadError, match=message):
            decode_call(
                "t",
                signature=signature,
                wire=wire,
                hints={"x": int},
                codec=default_codec(),
                args=args,
                kwargs=kwargs,
            )


def test_plain_positional_calls_bind_like_signature_bind() -> None:
    def simple(a: int, b: Decimal, /, c: str, ctx: JobContext = INJECT) -> None:
        raise NotImplementedError

    signature = inspect.signature(simple)
    wire = wire_signature(signature, frozenset({"ctx"}))
    positional = positional_names(wire)
    assert positional == ("a", "b", "c")
    # Defaults, *args, **kwargs and keyword-only parameters always go to bind.
    assert positional_names(WIRE) is None
    param = inspect.Parameter
    a = param("a", param.POSITIONAL_OR_KEYWORD)
    assert positional_names(inspect.Signature([a, param("b", a.kind, default=1)])) is None
    assert positional_names(inspect.Signature([a, param("b", param.KEYWORD_ONLY)])) is None

    def call(args: list[Any], kwargs: dict[str, Any]) -> inspect.BoundArguments:
        return decode_call(
            "t",
            signature=signature,
            wire=wire,
            hints={"a": int, "b": Decimal, "c": str},
            codec=default_codec(),
            args=args,
            kwargs=kwargs,
            positional=positional,
        )

    fast = call([1, "2.5", "x"], {})
    assert fast.arguments == {"a": 1, "b": Decimal("2.5"), "c": "x"}
    assert call([1, "2.5"], {"c": "x"}).arguments == fast.arguments
    for args, kwargs, message in (
        ([1, "2.5"], {}, "missing a required argument: 'c'"),
        ([1, "2.5", "x", 4], {}, "too many positional arguments"),
        ([1, "2.5", "x"], {"c": "y"}, "multiple values for argument 'c'"),
        (["one", "2.5", "x"], {}, "parameter 'a'"),
    ):
        with pytest.raises(ArgumentLoadError, match=message):
            call(args, kwargs)


def test_plain_json_from_a_celery_client_loads_into_the_annotations() -> None:
    ident = uuid.uuid4()
    back = decode(
        [
            {"id": str(ident), "tier": "gold", "since": "2020-01-02"},
            "9.50",
            "2026-01-01T00:00:00+00:00",
            3,
        ],
        {"note": "x"},
    )
    assert back.arguments["customer"] == Customer(ident, Tier.GOLD, date(2020, 1, 2))
    assert back.arguments["amount"] == Decimal("9.50")
    assert back.arguments["when"] == datetime(2026, 1, 1, tzinfo=UTC)
    assert back.arguments["extras"] == (3,)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ([], {}, "arguments do not fit"),
        ([{"id": "x"}, "1", "2026-01-01T00:00:00"], {}, "parameter 'customer'"),
        (
            [{"id": str(uuid.uuid4()), "tier": "tin", "since": "2020-01-01"}, "1", "2026-01-01"],
            {},
            "parameter 'customer'",
        ),
        (
            [{"id": str(uuid.uuid4()), "tier": "gold", "since": "2020-01-01"}, "abc", "2026-01-01"],
            {},
            "parameter 'amount'",
        ),
        (
            [
                {"id": str(uuid.uuid4()), "tier": "gold", "since": "2020-01-01"},
                "1",
                "2026-01-01",
                "x",
            ],
            {},
            "parameter 'extras'",
        ),
        (
            [{"id": str(uuid.uuid4()), "tier": "gold", "since": "2020-01-01"}, "1", "2026-01-01"],
            {"k": 5},
            "parameter 'tags'",
        ),
        (
            [{"__dataclass__": {"type": "Nope", "fields": {}}}, "1", "2026-01-01"],
            {},
            "unknown type tag 'Nope'",
        ),
        (
            # A tagged Decimal that is no number: the loader raises InvalidOperation.
            [
                {"id": str(uuid.uuid4()), "tier": "gold", "since": "2020-01-01"},
                {"__decimal__": "abc"},
                "2026-01-01",
            ],
            {},
            "parameter 'amount': cannot load the value: InvalidOperation",
        ),
        (
            [
                {"id": str(uuid.uuid4()), "tier": {"__enum__": "Tier.TIN"}, "since": "2020-01-01"},
                "1",
                "2026-01-01",
            ],
            {},
            "parameter 'customer'",
        ),
        (
            [_nested(5000), "1", "2026-01-01"],
            {},
            "parameter 'customer': cannot load the value: the value is nested too deeply",
        ),
    ],
)
def test_arguments_that_do_not_load_name_task_and_parameter(
    args: list[Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ArgumentLoadError, match="task 't'") as caught:
        decode(args, kwargs)
    assert message in str(caught.value)


def test_values_that_cannot_travel_are_refused_with_their_place() -> None:
    with pytest.raises(TypeError, match=r"argument 'x' of task 't'\['k'\] is a object"):
        ensure_json({"k": object()}, "argument 'x' of task 't'")
    with pytest.raises(TypeError, match="key 1"):
        ensure_json({1: "a"}, "where")
    with pytest.raises(TypeError, match=r"^result\['a'\]\[1\]\['b'\] is a set,"):
        ensure_json({"a": [0, {"b": {1}}], "z": 1}, "result")
    with pytest.raises(TypeError, match=r"^result\[2\] has a key"):
        ensure_json([1, "x", {(1, 2): 3}], "result")
    ensure_json({"a": [0, {"b": [None, 1.5, True]}]}, "result")


def test_header_carries_planned_time_and_request_state() -> None:
    codec = default_codec()
    planned = datetime(2026, 5, 1, 12, tzinfo=UTC)
    header = encode_header(
        exec_at=planned, request_state={"user": "ann", "at": planned}, codec=codec
    )
    ensure_json(header, "header")
    envelope = decode_header(header, codec, ZoneInfo("Europe/Paris"))
    assert envelope.exec_at == planned
    assert str(envelope.exec_at.tzinfo) == "Europe/Paris"
    assert envelope.request_state == {"user": "ann", "at": planned}
    assert HEADER_KEY == "jobify"


def test_header_refuses_reserved_and_unserializable_state() -> None:
    codec = default_codec()
    now = datetime.now(UTC)
    with pytest.raises(TypeError, match="reserved"):
        encode_header(exec_at=now, request_state={"celery_request": 1}, codec=codec)
    with pytest.raises(TypeError, match=r"request_state\['span'\]"):
        encode_header(exec_at=now, request_state={"span": object()}, codec=codec)


def test_missing_or_foreign_header_is_a_plain_celery_call() -> None:
    codec = default_codec()
    exec_at = '"exec_at":"2026-01-01T00:00:00+00:00"'
    for raw in (None, "x", {"v": 99}, '{"v":99,%s}' % exec_at, '{"v":1,%s} trailing' % exec_at):  # noqa: UP031
        envelope = decode_header(raw, codec, ZoneInfo("UTC"))
        assert envelope.exec_at is None
        assert envelope.request_state == {}
    assert decode_header(None, codec, ZoneInfo("UTC")).problems == ()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("x", "is not JSON"),
        ('{"v":1} trailing', "text after its JSON"),
        ("[1, 2]", "is a list, not a JSON object"),
        (17, "is a int, not a JSON object"),
        ('{"v":99}', "wire version 99, this worker reads 1"),
        ('{"v":1,"exec_at":"soon"}', "exec_at 'soon' is not an ISO 8601 time"),
        ('{"v":1,"exec_at":5}', "exec_at 5 is not an ISO 8601 time"),
        ('{"v":1,"request_state":[1]}', "request_state is a list, not an object"),
        ('{"v":1,"request_state":{"attempt":9,"celery_task":1}}', "['attempt', 'celery_task']"),
        ('{"v":1,"request_state":{"k":{"__decimal__":"x"}}}', "request_state['k'] does not load"),
        ('{"v":1,"publish":5}', "publish token is not a string"),
        ('{"v":1,"cron":{"job_id":1}}', "cron part is malformed"),
    ],
)
def test_a_bad_header_says_what_was_left_out(raw: Any, problem: str) -> None:
    envelope = decode_header(raw, default_codec(), ZoneInfo("UTC"))
    assert len(envelope.problems) == 1, envelope.problems
    assert problem in envelope.problems[0]
    assert not set(envelope.request_state) & {"attempt", "celery_task", "celery_request"}


def test_a_good_part_of_a_bad_header_is_kept() -> None:
    raw = '{"v":1,"exec_at":"2026-01-01T00:00:00+00:00","request_state":{"ok":1,"attempt":2}}'
    envelope = decode_header(raw, default_codec(), ZoneInfo("UTC"))
    assert envelope.exec_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert envelope.request_state == {"ok": 1}
    assert len(envelope.problems) == 1


def test_a_value_too_deep_to_send_is_refused_naming_its_place() -> None:
    def deep(value: list[Any]) -> None:
        raise NotImplementedError

    signature = inspect.signature(deep)
    bound = signature.bind(_nested(5000))
    with pytest.raises(TypeError, match=r"argument 'value' of task 't' is nested too deeply"):
        encode_call("t", bound, {"value": list[Any]}, default_codec())
    with pytest.raises(TypeError, match=r"request_state\['deep'\] is nested too deeply"):
        encode_header(
            exec_at=datetime.now(UTC), request_state={"deep": _nested(5000)}, codec=default_codec()
        )


def test_parse_time_reads_naive_times_in_the_app_zone() -> None:
    tz = ZoneInfo("Asia/Tokyo")
    assert parse_time("2026-01-01T09:00:00", tz) == datetime(2026, 1, 1, 9, tzinfo=tz)
    assert parse_time("garbage", tz) is None
    assert parse_time(None, tz) is None


def test_tagged_classes_reach_nested_and_generic_hints() -> None:
    @dataclasses.dataclass
    class Outer:
        inner: list[Customer]

    found = set(tagged_classes([dict[str, Outer] | None]))
    assert found == {Outer, Customer, Tier}


def test_typed_values_travel_as_readable_plain_json() -> None:
    customer = Customer(uuid.UUID(int=7), Tier.GOLD, date(2020, 1, 2))
    when = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    bound = SIGNATURE.bind(customer, Decimal("9.50"), when, 1, note="n", color="red")
    args, kwargs = encode_call("t", bound, HINTS, default_codec(), ["ctx"])
    assert args == [
        {"id": str(uuid.UUID(int=7)), "tier": "gold", "since": "2020-01-02"},
        "9.50",
        "2026-01-01T12:30:00+00:00",
        1,
    ]
    assert kwargs == {"note": "n", "color": "red"}
    assert decode(args, kwargs).arguments == bound.arguments


def test_a_value_its_annotation_cannot_read_back_keeps_its_tags() -> None:
    codec = default_codec()
    customer = Customer(uuid.UUID(int=7), Tier.GOLD, date(2020, 1, 2))
    tagged = codec.dump(customer, Any)  # Any: a plain dict would come back a dict
    assert tagged["__dataclass__"]["type"] == "Customer"
    assert codec.load(tagged, Any) == customer


def test_a_message_in_the_tagged_form_still_loads() -> None:
    customer = Customer(uuid.UUID(int=7), Tier.GOLD, date(2020, 1, 2))
    when = datetime(2026, 1, 1, tzinfo=UTC)
    # What producers before the readable wire sent: every typed value tagged.
    args = [extended_encode(customer), extended_encode(Decimal("9.5")), extended_encode(when)]
    assert args[0]["__dataclass__"]["type"] == "Customer"
    back = decode(args, {})
    assert back.args == (customer, Decimal("9.5"), when)
