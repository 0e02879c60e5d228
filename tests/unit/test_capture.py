"""Celery builds the message, the bridge keeps it: what the capture records, without a broker."""

from __future__ import annotations

import inspect
import json
from decimal import Decimal

import pytest
from celery import Celery
from kombu import Exchange, Queue
from kombu.messaging import Producer

from jobify_celery._amqp_sender import amqp_url, declaration_plan, declare_calls, properties_of
from jobify_celery._capture import Capture, Outgoing
from jobify_celery._celery_traps import PREFETCH_REDUCTION, keep_prefetch_after_reconnect
from jobify_celery._senders import Attempt


def _app(**conf: object) -> Celery:
    app = Celery(
        "capture",
        broker="amqp://guest:secret@rabbit.example:5673/shop",
        backend="cache+memory://",
        set_as_current=False,
    )
    app.conf.update(
        task_default_queue="jobs",
        task_queues=[Queue("jobs", queue_arguments={"x-expires": 60_000})],
        **conf,
    )

    @app.task(name="t.add", time_limit=1.3, shared=False)
    def add(a: int, b: int) -> int:
        return a + b

    return app


def test_kombus_publish_step_has_the_signature_the_capture_replays() -> None:
    # _capture overrides Producer._publish and replays it positionally.
    names = list(inspect.signature(Producer._publish).parameters)
    assert names[:12] == [
        "self", "body", "priority", "content_type", "content_encoding", "headers",
        "properties", "routing_key", "mandatory", "immediate", "exchange", "declare",
    ]  # fmt: skip


def test_a_captured_message_is_what_apply_async_would_publish() -> None:
    app = _app()
    published: list[dict[str, object]] = []

    def before(headers: dict[str, object] | None = None, **_: object) -> None:
        published.append(dict(headers or {}))

    from celery import signals

    signals.before_task_publish.connect(before, weak=False)
    try:
        (message,) = Capture(app).messages(
            app.tasks["t.add"], [1, 2], {}, task_id="abc", headers={"jobify": "{}"}
        )
    finally:
        signals.before_task_publish.disconnect(before)
    assert isinstance(message, Outgoing)
    assert message.exchange == ""
    assert message.routing_key == "jobs"
    assert [entity.name for entity in message.declare] == ["jobs"]
    assert message.content_type == "application/json"
    assert message.headers["task"] == "t.add"
    assert message.headers["id"] == "abc"
    assert message.headers["jobify"] == "{}"
    assert message.headers["timelimit"] == [1.3, None]
    assert message.properties["correlation_id"] == "abc"
    assert message.properties["delivery_mode"] == 2
    assert json.loads(message.body_bytes)[0] == [1, 2]
    # Celery's publish signal ran here, on the caller's thread and context.
    assert [headers["id"] for headers in published] == ["abc"]


def test_the_task_sent_event_follows_the_jobs_message() -> None:
    app = _app(task_send_sent_event=True)
    job, event = Capture(app).messages(app.tasks["t.add"], [1, 2], {}, task_id="abc")
    assert job.headers["id"] == "abc"
    assert event.exchange == "celeryev"
    assert event.routing_key == "task.sent"


def test_properties_keep_celerys_fields_and_drop_what_amqp_has_no_room_for() -> None:
    message = Outgoing(
        body=b"[]",
        priority=3,
        content_type="application/json",
        content_encoding="utf-8",
        headers={"id": "abc", "price": Decimal("1.5")},
        properties={"correlation_id": "abc", "reply_to": "r", "delivery_mode": 2, "x-own": 1},
        routing_key="jobs",
        mandatory=False,
        immediate=False,
        exchange="",
        declare=(),
    )
    properties = properties_of(message)
    assert properties.correlation_id == "abc"
    assert properties.reply_to == "r"
    assert properties.delivery_mode == 2
    assert properties.priority == 3
    assert properties.headers == {"id": "abc", "price": Decimal("1.5")}
    assert properties.marshal()  # headers encode with the bridge's own table encoder


def test_declarations_are_what_kombu_asks_of_a_channel() -> None:
    queue = Queue(
        "jobs",
        Exchange("work", type="topic"),
        routing_key="jobs.#",
        queue_arguments={"x-expires": 60_000},
        max_priority=5,
    )
    calls = declare_calls(queue)
    assert [name for name, _ in calls] == ["exchange_declare", "queue_declare", "queue_bind"]
    assert calls[0][1]["exchange"] == "work"
    assert calls[0][1]["type"] == "topic"
    assert calls[1][1]["queue"] == "jobs"
    assert calls[1][1]["arguments"] == {"x-expires": 60_000, "x-max-priority": 5}
    assert calls[2][1]["routing_key"] == "jobs.#"
    assert queue.can_cache_declaration is False  # x-expires: declared before every publish


def test_a_declaration_plan_is_those_calls_in_the_asyncio_client_s_terms() -> None:
    queue = Queue("jobs", Exchange("work", type="topic"), routing_key="jobs.#", durable=True)
    plan = declaration_plan(queue)
    assert plan == (
        (
            "exchange_declare",
            ("work",),
            {
                "exchange_type": "topic",
                "passive": False,
                "durable": True,
                "auto_delete": False,
                "arguments": None,
            },
        ),
        (
            "queue_declare",
            ("jobs",),
            {
                "passive": False,
                "durable": True,
                "exclusive": False,
                "auto_delete": False,
                "arguments": None,
            },
        ),
        ("queue_bind", ("jobs", "work"), {"routing_key": "jobs.#", "arguments": None}),
    )


def test_the_asyncio_client_connects_where_kombu_would() -> None:
    app = _app()
    assert amqp_url(app.connection_for_write()) == "amqp://guest:secret@rabbit.example:5673/shop"
    default = Celery("d", broker="amqp://localhost//", set_as_current=False)
    assert amqp_url(default.connection_for_write()) == "amqp://guest:guest@localhost:5672/%2F"


def test_an_attempt_is_either_withdrawn_or_handed_off_never_both() -> None:
    withdrawn = Attempt()
    assert withdrawn.withdraw() is True
    assert withdrawn.hand_off() is False
    assert withdrawn.handed_off is False
    sent = Attempt()
    assert sent.hand_off() is True
    assert sent.withdraw() is False
    assert sent.withdrawn is False


@pytest.mark.parametrize(
    ("pool_name", "chosen", "expected"),
    [("threads", False, False), ("threads", True, True), ("prefork", False, True)],
)
def test_the_prefetch_reduction_is_turned_off_for_threads_pools_only(
    pool_name: str, chosen: bool, expected: bool
) -> None:
    from celery.concurrency import get_implementation

    app = Celery("traps", set_as_current=False)
    if chosen:
        app.conf.update({PREFETCH_REDUCTION: True})
    app.conf.broker_url  # noqa: B018 - configured, as in a running worker
    pool = object.__new__(get_implementation(pool_name))
    keep_prefetch_after_reconnect(app.conf, pool)
    assert app.conf[PREFETCH_REDUCTION] is expected
