"""Let Celery build a job's message, and keep it instead of sending it.

A push must not block the producer's event loop, yet the message it sends
must be exactly the one ``apply_async`` would send: Celery's routing
(``task_routes``, queues, exchanges), its headers and properties, the
``before_task_publish``/``after_task_publish`` signals that Sentry and
OpenTelemetry hook into (they run here, on the caller's thread and context,
where they expect to), the ``task-sent`` event when enabled. So the bridge
calls ``apply_async`` with a kombu ``Producer`` whose last step, where kombu
would hand the serialized message to the broker channel, records it instead.
Everything up to that step is CPU work; the I/O happens later, in a sender
(``_senders``), off the loop or on an asyncio client.

This module is the one place that relies on the arguments of kombu's
``Producer._publish`` (kombu 5.7); ``tests/unit/test_capture.py`` pins them, and
a sender replays the recorded call on a real producer with the same arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kombu.messaging import Producer

from jobify_celery._send import send_followed

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from celery import Celery, Task
    from kombu.connection import Connection

__all__ = ("Capture", "Outgoing")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message as kombu would hand it to the channel: ``Producer._publish``'s arguments."""

    body: bytes | str
    priority: int | None
    content_type: str | None
    content_encoding: str | None
    headers: dict[str, Any]
    properties: dict[str, Any]
    routing_key: str
    mandatory: bool
    immediate: bool
    exchange: str
    #: kombu entities (queues, exchanges) that must exist before the publish.
    declare: tuple[Any, ...]

    @property
    def body_bytes(self) -> bytes:
        """The body as bytes, encoded as kombu encodes a text body."""
        body = self.body
        if isinstance(body, str):
            return body.encode(self.content_encoding or "utf-8")
        return body

    def replay_arguments(self) -> tuple[Any, ...]:
        """Return the positional arguments of the ``Producer._publish`` call recorded."""
        return (
            self.body,
            self.priority,
            self.content_type,
            self.content_encoding,
            self.headers,
            self.properties,
            self.routing_key,
            self.mandatory,
            self.immediate,
            self.exchange,
            list(self.declare),
        )


class _RecordingProducer(Producer):
    """A kombu producer that records what it would publish instead of publishing it."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(None)  # type: ignore[no-untyped-call]
        # kombu's producer reads its connection from here when it has no channel.
        self.__connection__: Connection = connection  # type: ignore[assignment]
        self.recorded: list[Outgoing] = []

    def _publish(  # noqa: PLR0913, PLR0917 - kombu's signature
        self,
        body: bytes | str,
        priority: int | None,
        content_type: str | None,
        content_encoding: str | None,
        headers: dict[str, Any],
        properties: dict[str, Any],
        routing_key: str,
        mandatory: bool,  # noqa: FBT001
        immediate: bool,  # noqa: FBT001
        exchange: str,
        declare: Sequence[Any],
        timeout: float | None = None,
        confirm_timeout: float | None = None,
        retry: bool = False,  # noqa: FBT001, FBT002
        retry_policy: Mapping[str, Any] | None = None,
    ) -> None:
        del timeout, confirm_timeout, retry, retry_policy
        self.recorded.append(
            Outgoing(
                body=body,
                priority=priority,
                content_type=content_type,
                content_encoding=content_encoding,
                headers=headers,
                properties=properties,
                routing_key=routing_key or "",
                mandatory=bool(mandatory),
                immediate=bool(immediate),
                exchange=exchange or "",
                declare=tuple(declare or ()),
            )
        )


class Capture:
    """Builds messages with Celery's own ``apply_async``, one call at a time, on one thread."""

    __slots__ = ("_producer",)

    def __init__(self, celery_app: Celery) -> None:
        # A connection object for Celery's bookkeeping; it never connects.
        self._producer = _RecordingProducer(celery_app.connection_for_write())

    def messages(
        self,
        task: Task,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        **options: Any,  # noqa: ANN401
    ) -> list[Outgoing]:
        """Return what ``task.apply_async(args, kwargs, **options)`` would publish.

        The job's own message comes first; Celery's ``task-sent`` event, when
        enabled, follows it.
        """
        return self.messages_and_result(task, args, kwargs, **options)[0]

    def messages_and_result(
        self,
        task: Task,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        **options: Any,  # noqa: ANN401
    ) -> tuple[list[Outgoing], Any]:
        """Like ``messages``, with the ``AsyncResult`` ``apply_async`` returns."""
        producer = self._producer
        producer.recorded = []
        # retry=False: Celery would wrap the publish in a reconnecting retry
        # on a real connection; the sender retries instead.
        result = send_followed(task, args, kwargs, producer=producer, retry=False, **options)
        return producer.recorded, result
