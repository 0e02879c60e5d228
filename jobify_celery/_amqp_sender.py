"""Publish captured Celery messages to RabbitMQ from the event loop.

One asyncio AMQP connection (aiormq) per producer session and one channel,
in confirm mode when ``publish_confirms`` is on. A push's attempt (with
confirms, a task of its own, so a cancelled caller never cancels a
confirmation the job's fate depends on):

1. waits for a free slot (at most ``MAX_IN_FLIGHT`` unconfirmed publishes:
   back-pressure instead of an unbounded buffer when the broker is slow;
   without confirms, aiormq's bounded write queue does the same);
2. (re)connects if needed, declaring what kombu would declare before the
   publish (``declaration_plan``, worked out once per entity), with kombu's
   caching rule: an entity is declared once per connection unless kombu says
   its declaration cannot be cached (a queue with ``x-expires`` is declared
   before every publish);
3. publishes the message with the headers and properties Celery gave it
   (headers encoded as Celery's own client encodes them, ``_amqp_table``);
   with confirms, the job's message is ``mandatory`` so a message no queue
   takes is refused rather than dropped, and the attempt waits for the
   broker's confirm; without, it ends once the message is written to the
   connection's socket (as far as ``apply_async`` follows a message too).

A lost connection is reconnected and the messages not yet confirmed are
published again (at least once, as kombu's own publish retry does), until the
publish bound; a refusal (no such exchange, access refused, unroutable, a
nack) fails the push at once. Either way the caller gets one
``PublishError`` naming the broker.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import quote

import aiormq
import aiormq.exceptions
from kombu.transport.base import to_rabbitmq_queue_arguments
from pamqp import commands as spec

from jobify_celery._amqp_table import encode_table
from jobify_celery._errors import PublishError
from jobify_celery._tasks import stop_task

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aiormq.abc import AbstractConnection
    from kombu.connection import Connection

    from jobify_celery._capture import Outgoing
    from jobify_celery._senders import Attempt

__all__ = ("MAX_IN_FLIGHT", "AmqpSender")

logger = logging.getLogger("jobify_celery.producer")

#: Unconfirmed publishes one producer keeps in flight before pushes wait.
MAX_IN_FLIGHT: Final = 1000
_RECONNECT_SECONDS: Final = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
#: Entities whose declaration plan a sender keeps (more: it starts again).
_MAX_PLANS: Final = 256
#: kombu message properties and their names in the AMQP client.
_PROPERTY_NAMES: Final = {
    "delivery_mode": "delivery_mode",
    "correlation_id": "correlation_id",
    "reply_to": "reply_to",
    "expiration": "expiration",
    "message_id": "message_id",
    "timestamp": "timestamp",
    "type": "message_type",
    "user_id": "user_id",
    "app_id": "app_id",
    "cluster_id": "cluster_id",
}
#: The broker refused this message (a permanent answer for this publish).
_REFUSALS: Final = (aiormq.exceptions.AMQPChannelError, aiormq.exceptions.DeliveryError)
#: The connection is gone or unusable; another one may do.
_LOST: Final = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
)


class _Properties(spec.Basic.Properties):
    """Message properties whose headers are encoded as Celery's client encodes them."""

    def encode_property(self, name: str, value: Any) -> bytes:  # noqa: ANN401
        if name == "headers":
            return encode_table(value)
        encoded: bytes = super().encode_property(name, value)
        return encoded


def properties_of(message: Outgoing) -> spec.Basic.Properties:
    """Return a recorded message's AMQP properties, as kombu's py-amqp channel sends them."""
    fields: dict[str, Any] = {
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "headers": message.headers or None,
        "priority": message.priority,
    }
    for key, value in message.properties.items():
        name = _PROPERTY_NAMES.get(key)
        if name is not None and value is not None:
            fields[name] = value
    return _Properties(**{k: v for k, v in fields.items() if v is not None})


class _DeclareRecorder:
    """A stand-in kombu channel: notes the declarations kombu makes for an entity."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @staticmethod
    def prepare_queue_arguments(arguments: Any, **options: Any) -> Any:  # noqa: ANN401
        """Turn kombu's queue options into RabbitMQ's ``x-`` arguments, as py-amqp does."""
        return to_rabbitmq_queue_arguments(arguments, **options)

    def exchange_declare(self, **kwargs: Any) -> None:  # noqa: ANN401
        self.calls.append(("exchange_declare", kwargs))

    def queue_declare(self, **kwargs: Any) -> None:  # noqa: ANN401
        self.calls.append(("queue_declare", kwargs))

    def queue_bind(self, **kwargs: Any) -> None:  # noqa: ANN401
        self.calls.append(("queue_bind", kwargs))

    def exchange_bind(self, **kwargs: Any) -> None:  # noqa: ANN401
        self.calls.append(("exchange_bind", kwargs))


def declare_calls(entity: Any) -> list[tuple[str, dict[str, Any]]]:  # noqa: ANN401
    """Return what kombu's ``entity.declare()`` asks of a channel, in order."""
    recorder = _DeclareRecorder()
    entity.declare(channel=recorder)
    return recorder.calls


#: One AMQP method of a declaration: its name on an aiormq channel and its arguments.
DeclareStep = tuple[str, tuple[str, ...], dict[str, Any]]


def declaration_plan(entity: Any) -> tuple[DeclareStep, ...]:  # noqa: ANN401
    """Return the aiormq calls that make kombu's ``entity.declare()``, in order."""
    return tuple((call, *_aiormq_arguments(call, kwargs)) for call, kwargs in declare_calls(entity))


def _aiormq_arguments(call: str, kwargs: dict[str, Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Translate a kombu channel call's keywords into aiormq's arguments for that method."""
    arguments = kwargs.get("arguments") or None
    if call == "exchange_declare":
        return (kwargs["exchange"],), {
            "exchange_type": kwargs.get("type", "direct"),
            "passive": bool(kwargs.get("passive")),
            "durable": bool(kwargs.get("durable")),
            "auto_delete": bool(kwargs.get("auto_delete")),
            "arguments": arguments,
        }
    if call == "queue_declare":
        return (kwargs["queue"],), {
            "passive": bool(kwargs.get("passive")),
            "durable": bool(kwargs.get("durable")),
            "exclusive": bool(kwargs.get("exclusive")),
            "auto_delete": bool(kwargs.get("auto_delete")),
            "arguments": arguments,
        }
    if call == "queue_bind":
        return (kwargs["queue"], kwargs["exchange"]), {
            "routing_key": kwargs.get("routing_key") or "",
            "arguments": arguments,
        }
    if call == "exchange_bind":
        return (kwargs["destination"], kwargs["source"]), {
            "routing_key": kwargs.get("routing_key") or "",
            "arguments": arguments,
        }
    msg = f"kombu asked for a declaration this sender does not know: {call}"
    raise ValueError(msg)


def amqp_url(connection: Connection) -> str:
    """Return the URL the asyncio client connects to: kombu's parameters, defaults applied."""
    info = connection.info()  # type: ignore[no-untyped-call]
    user = quote(str(info.get("userid") or "guest"), safe="")
    password = quote(str(info.get("password") or "guest"), safe="")
    vhost = quote(str(info.get("virtual_host") or "/"), safe="")
    port = info.get("port") or 5672
    return f"amqp://{user}:{password}@{info['hostname']}:{port}/{vhost}"


class AmqpSender:
    """Publishes on one asyncio AMQP connection, with publisher confirms if asked."""

    def __init__(self, connection: Connection, *, timeout: float, confirms: bool) -> None:
        self._url = amqp_url(connection)
        self._where = str(connection.as_uri())
        self._timeout = timeout
        self._confirms = confirms
        self._connection: AbstractConnection | None = None
        self._channel: aiormq.Channel | None = None
        self._connecting: asyncio.Lock | None = None
        self._slots: asyncio.Semaphore | None = None
        #: kombu entities declared on the current connection.
        self._declared: set[int] = set()
        #: Declaration plans by entity id, the entity kept so that its id stays its own.
        self._plans: dict[int, tuple[Any, tuple[DeclareStep, ...]]] = {}
        self._attempts: set[asyncio.Task[None]] = set()
        self._closed = False
        self._lost_logged = False

    async def send(self, messages: Sequence[Outgoing], job_id: str, attempt: Attempt) -> None:
        """Publish ``messages``; with confirms, return once the broker confirmed them.

        With confirms the publish runs as a task of its own, so that a caller
        who stops waiting never cancels the confirmation the job's fate
        depends on. Without, it runs right here and returns once the message
        is written to the connection's socket, as kombu's publish does.
        """
        if self._closed:
            msg = "the producer is shutting down"
            raise PublishError(job_id, self._where, msg, maybe_sent=False)
        if not self._confirms:
            await self._attempt(attempt, messages, job_id)
            return
        task = asyncio.get_running_loop().create_task(self._attempt(attempt, messages, job_id))
        self._attempts.add(task)
        task.add_done_callback(self._attempts.discard)
        attempt.task = task
        await asyncio.shield(task)

    async def close(self, grace: float) -> None:
        """Let attempts in flight end (within ``grace``), then close the connection."""
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._attempts:
            await asyncio.wait(set(self._attempts), timeout=grace / 2)
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            closing = asyncio.ensure_future(connection.close())
            left = max(deadline - loop.time(), 0.05)
            await stop_task(closing, left, "the broker connection's close")
        for task in list(self._attempts):
            task.cancel()

    async def _attempt(self, attempt: Attempt, messages: Sequence[Outgoing], job_id: str) -> None:
        slots = self._slots
        if slots is None:
            slots = self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        try:
            async with asyncio.timeout(self._timeout), slots:
                await self._publish_all(attempt, messages)
        except TimeoutError:
            if attempt.handed_off:
                reason = f"no confirmation within {self._timeout:g} s (publish_timeout)"
            else:
                reason = f"the broker could not be reached within {self._timeout:g} s"
            raise PublishError(job_id, self._where, reason, maybe_sent=attempt.handed_off) from None
        except _REFUSALS as exc:
            reason = f"the broker refused it: {exc}"
            raise PublishError(job_id, self._where, reason, maybe_sent=False, refused=True) from exc
        except _LOST as exc:  # only once closing: otherwise a loss is retried
            reason = f"the producer shut down ({type(exc).__name__}: {exc})"
            raise PublishError(job_id, self._where, reason, maybe_sent=attempt.handed_off) from exc
        except asyncio.CancelledError:
            if not self._closed or attempt.withdrawn:
                raise
            # Ended by close(): the pusher gets the outcome, not a cancel it never asked for.
            reason = "the producer shut down before the broker confirmed it"
            raise PublishError(job_id, self._where, reason, maybe_sent=attempt.handed_off) from None

    async def _publish_all(self, attempt: Attempt, messages: Sequence[Outgoing]) -> None:
        failures = 0
        index = 0
        while index < len(messages):
            if self._closed and not attempt.handed_off:
                msg = "the producer is shutting down"
                raise ConnectionAbortedError(msg)
            channel = None
            try:
                channel = await self._ready_channel()
                message = messages[index]
                for entity in message.declare:
                    await self._declare(channel, entity)
                if index == 0 and not attempt.hand_off():
                    raise asyncio.CancelledError
                await channel.basic_publish(
                    message.body_bytes,
                    exchange=message.exchange,
                    routing_key=message.routing_key,
                    properties=properties_of(message),
                    mandatory=index == 0 and self._confirms,
                    # Unconfirmed, as with kombu: returned once written to the
                    # socket, not while still queued in this process (a loop
                    # held or a process ended right after would keep it).
                    wait=True,
                )
                index += 1
                self._lost_logged = False
            except _REFUSALS as exc:
                self._forget_channel(channel)
                if index == 0:
                    raise
                # Celery's task-sent event is best effort, as in Celery.
                logger.warning("The task-sent event was not published: %s", exc)
                return
            except _LOST as exc:
                if self._closed:
                    raise
                self._forget_connection(channel)
                delay = _RECONNECT_SECONDS[min(failures, len(_RECONNECT_SECONDS) - 1)]
                failures += 1
                if not self._lost_logged:
                    self._lost_logged = True
                    logger.warning(
                        "Publishing to %s failed (%s: %s); reconnecting",
                        self._where,
                        type(exc).__name__,
                        exc,
                    )
                await asyncio.sleep(delay)

    async def _ready_channel(self) -> aiormq.Channel:
        channel = self._channel
        if channel is not None and not channel.is_closed:
            return channel
        lock = self._connecting
        if lock is None:
            lock = self._connecting = asyncio.Lock()
        async with lock:
            channel = self._channel
            if channel is not None and not channel.is_closed:
                return channel
            connection = self._connection
            if connection is None or connection.is_closed:
                connection = await aiormq.connect(
                    self._url,
                    client_properties={"connection_name": f"jobify-celery producer {os.getpid()}"},
                )
                self._connection = connection
                self._declared = set()
            try:
                opened = await connection.channel(publisher_confirms=self._confirms)
                channel = cast("aiormq.Channel", opened)
            except RuntimeError as exc:  # aiormq: the connection closed meanwhile
                self._connection = None
                raise ConnectionAbortedError(str(exc)) from exc
            self._channel = channel
            return channel

    async def _declare(self, channel: aiormq.Channel, entity: Any) -> None:  # noqa: ANN401
        """Declare ``entity`` as kombu's ``maybe_declare`` would before a publish.

        kombu declares an entity once per connection when it can cache the
        declaration, and before every publish when it cannot (a queue with
        ``x-expires`` may have expired since). The first declaration on a
        connection waits for each answer, so a mismatch is reported. Later
        ones send every method but the last without waiting for an answer:
        the broker handles a channel's methods in order, so the last one's
        answer (or the channel's error) comes after the others took effect,
        and a connection that died is still found before the publish. One
        round trip instead of one per method.
        """
        cacheable = bool(getattr(entity, "can_cache_declaration", False))
        ident = hash(entity)
        seen = ident in self._declared
        if cacheable and seen:
            return
        known = self._plans.get(id(entity))
        if known is None:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            known = self._plans[id(entity)] = (entity, declaration_plan(entity))
        plan = known[1]
        last = len(plan) - 1
        for index, (call, positional, options) in enumerate(plan):
            method = getattr(channel, call)
            await method(*positional, **options, nowait=seen and index < last)
        self._declared.add(ident)

    def _forget_channel(self, channel: aiormq.Channel | None) -> None:
        if channel is not None and self._channel is channel:
            self._channel = None

    def _forget_connection(self, channel: aiormq.Channel | None) -> None:
        """Drop the connection ``channel`` was on, unless a newer one replaced it."""
        if channel is not None and channel is not self._channel:
            return  # a failure on a connection already replaced
        connection, self._connection = self._connection, None
        self._channel = None
        if connection is not None and not connection.is_closed:
            closing = asyncio.ensure_future(connection.close())
            closing.add_done_callback(_quietly)


def _quietly(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
