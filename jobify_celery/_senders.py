"""Hand captured messages (``_capture``) to the broker without blocking the loop.

A sender's ``send()`` returns once the broker has the job's message
(confirmed, with confirms on; else as far as the sender follows it) or raises
``PublishError`` within the publish bound. Its :class:`Attempt` tells whether
the message may already have left this process (``handed_off``): a push
cancelled before that sent nothing; one cancelled after it leaves the work
still due (``Attempt.task``) running to its end.

Three senders, picked per producer session by :func:`sender_for`:

* ``AmqpSender`` (``_amqp_sender``) for RabbitMQ: an asyncio AMQP client on
  the loop itself (with publisher confirms when ``publish_confirms`` is on);
* :class:`ThreadSender` for every other broker (Redis, SQS, the in-memory
  one): kombu's own publish, on a thread of the sender with a connection of
  its own;
* :class:`InlineSender` in a prefork or solo pool process, whose loop runs
  only while the job that pushes runs on that very thread: kombu's publish
  right there, as ``apply_async`` in a Celery task would do it.

The kombu senders replay kombu's ``Producer._publish`` with the recorded
arguments, inside ``Connection.ensure`` with Celery's publish retry policy
(``task_publish_retry_policy``), as ``apply_async`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from typing import TYPE_CHECKING, Protocol

from jobify_celery._errors import PublishError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from celery import Celery
    from kombu.connection import Connection

    from jobify_celery._capture import Outgoing

__all__ = ("Attempt", "InlineSender", "Sender", "ThreadSender", "broker_name", "sender_for")

logger = logging.getLogger("jobify_celery.producer")

#: kombu transports spoken by the asyncio AMQP client.
_AMQP_TRANSPORTS = frozenset({"amqp", "pyamqp", "librabbitmq"})


class Attempt:
    """One push's publish in progress.

    ``handed_off`` and ``withdrawn`` change under ``lock``: a sender thread
    hands the message off only if it was not withdrawn, and a withdrawal
    succeeds only if the message was not handed off.
    """

    __slots__ = ("handed_off", "lock", "task", "withdrawn")

    def __init__(self) -> None:
        #: Ends when the broker has the message; raises ``PublishError`` otherwise.
        self.task: asyncio.Future[None] | None = None
        #: True once the message may have left this process.
        self.handed_off = False
        #: True once the pusher gave up before the message left.
        self.withdrawn = False
        self.lock = threading.Lock()

    def hand_off(self) -> bool:
        """Mark the message as leaving now, unless it was withdrawn; tell which."""
        with self.lock:
            if self.withdrawn:
                return False
            self.handed_off = True
            return True

    def withdraw(self) -> bool:
        """Stop the publish if nothing has left yet; tell whether it was stopped."""
        with self.lock:
            if self.handed_off:
                return False
            self.withdrawn = True
        if self.task is not None:
            self.task.cancel()
        return True


class Sender(Protocol):
    """Publishes captured messages for one producer session."""

    async def send(self, messages: Sequence[Outgoing], job_id: str, attempt: Attempt) -> None:
        """Publish ``messages`` (the job's first); raise ``PublishError`` within the bound.

        Cancelled before ``attempt`` is handed off, it sends nothing. Work that
        must go on after a cancel (a confirm not yet received) runs as
        ``attempt.task``, whose outcome tells how the publish ended.
        """
        ...

    async def close(self, grace: float) -> None:
        """Release connections and threads within ``grace`` seconds."""
        ...


def broker_name(celery_app: Celery) -> str:
    """Return the broker's URL for messages, password hidden."""
    return str(celery_app.connection_for_write().as_uri())


def sender_for(celery_app: Celery, *, inline: bool, timeout: float, confirms: bool) -> Sender:
    """Pick the sender for a producer session (see the module docstring)."""
    if inline:
        return InlineSender(celery_app)
    connection = celery_app.connection_for_write()
    if _speaks_plain_amqp(celery_app, connection):
        from jobify_celery._amqp_sender import AmqpSender  # noqa: PLC0415

        return AmqpSender(connection, timeout=timeout, confirms=confirms)
    return ThreadSender(celery_app, timeout=timeout)


def _speaks_plain_amqp(celery_app: Celery, connection: Connection) -> bool:
    """Tell whether the asyncio client can reach this broker as kombu would."""
    return (
        connection.transport_cls in _AMQP_TRANSPORTS
        and not connection.alt  # failover URLs: kombu's own rotation
        and not connection.ssl
        and not celery_app.conf.broker_use_ssl
        and not connection.login_method
    )


def _publish_with_kombu(celery_app: Celery, connection: Connection, message: Outgoing) -> None:
    """Publish one recorded message on ``connection`` as ``apply_async`` would."""
    producer = celery_app.amqp.Producer(connection, auto_declare=False)
    conf = celery_app.conf
    publish = producer._publish  # noqa: SLF001 - replays the call _capture recorded
    if conf.task_publish_retry:
        policy = dict(conf.task_publish_retry_policy or {})
        publish = connection.ensure(producer, publish, **policy)  # type: ignore[no-untyped-call]
    publish(*message.replay_arguments())


class InlineSender:
    """Publishes on the calling thread (a prefork or solo pool process's job)."""

    __slots__ = ("_celery_app", "_where")

    def __init__(self, celery_app: Celery) -> None:
        self._celery_app = celery_app
        self._where = broker_name(celery_app)

    async def send(self, messages: Sequence[Outgoing], job_id: str, attempt: Attempt) -> None:
        """Publish now, on this thread, as a Celery task's ``apply_async`` would."""
        attempt.hand_off()
        try:
            with self._celery_app.pool.acquire(block=True) as connection:
                for message in messages:
                    _publish_with_kombu(self._celery_app, connection, message)
        except Exception as exc:
            raise _failed(job_id, self._where, exc) from exc

    async def close(self, grace: float) -> None:
        """Nothing of its own to release."""
        del grace


class _Work:
    """A push waiting for, or taken by, the sender thread."""

    __slots__ = ("attempt", "future", "job_id", "loop", "messages")

    def __init__(
        self,
        messages: Sequence[Outgoing],
        job_id: str,
        loop: asyncio.AbstractEventLoop,
        attempt: Attempt,
    ) -> None:
        self.messages = messages
        self.job_id = job_id
        self.loop = loop
        self.attempt = attempt
        self.future: asyncio.Future[None] = loop.create_future()


class ThreadSender:
    """Publishes with kombu on one thread of its own, with a connection of its own."""

    def __init__(self, celery_app: Celery, *, timeout: float) -> None:
        self._celery_app = celery_app
        self._timeout = timeout
        self._where = broker_name(celery_app)
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    async def send(self, messages: Sequence[Outgoing], job_id: str, attempt: Attempt) -> None:
        """Hand the push to the sender thread and wait for its outcome."""
        if self._closed:
            msg = "the producer is shutting down"
            raise PublishError(job_id, self._where, msg, maybe_sent=False)
        loop = asyncio.get_running_loop()
        work = _Work(messages, job_id, loop, attempt)
        self._ensure_thread()
        self._queue.put(work)
        attempt.task = loop.create_task(self._outcome(work))
        await asyncio.shield(attempt.task)

    async def _outcome(self, work: _Work) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(work.future)
        except TimeoutError:
            sent = not work.attempt.withdraw()
            reason = f"no answer within {self._timeout:g} s (publish_timeout)"
            raise PublishError(work.job_id, self._where, reason, maybe_sent=sent) from None

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._serve, name="jobify-celery-publisher", daemon=True
            )
            self._thread.start()

    def _serve(self) -> None:
        connection = self._celery_app.connection_for_write()
        try:
            while (work := self._queue.get()) is not None:
                if not work.attempt.hand_off():
                    continue
                try:
                    for message in work.messages:
                        _publish_with_kombu(self._celery_app, connection, message)
                except Exception as exc:  # noqa: BLE001 - handed to the pusher
                    _settle(work, _failed(work.job_id, self._where, exc))
                else:
                    _settle(work, None)
        finally:
            connection.release()

    async def close(self, grace: float) -> None:
        """Stop the thread once its queue is done; do not wait past ``grace``."""
        self._closed = True
        thread = self._thread
        self._queue.put(None)
        if thread is not None and thread.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, thread.join, grace)
            if thread.is_alive():
                logger.warning("The publisher thread did not stop within %.1f s", grace)


def _settle(work: _Work, error: BaseException | None) -> None:
    def settle() -> None:
        if work.future.done():
            return
        if error is None:
            work.future.set_result(None)
        else:
            work.future.set_exception(error)

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        work.loop.call_soon_threadsafe(settle)


def _failed(job_id: str, where: str, exc: BaseException) -> PublishError:
    reason = f"{type(exc).__name__}: {exc}"
    error = PublishError(job_id, where, reason, maybe_sent=True)
    error.__cause__ = exc
    return error
