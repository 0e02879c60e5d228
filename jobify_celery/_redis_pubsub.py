"""A lean asyncio Redis pub/sub connection for the result watcher.

It does four things: connect (and ``AUTH`` when the URL has a password),
send ``SUBSCRIBE``/``UNSUBSCRIBE``/``PING`` without waiting, hand each
``message`` to a callback as it arrives, and report the connection's end on
a future. Replies are read in batches by ``_resp`` as they arrive, so
following a job costs a few microseconds of parsing rather than a client
round of timeouts and locks per reply.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from jobify_celery._resp import RespError, command, parse_replies

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("PubSubConnection",)

_MESSAGE: Final = b"message"
_PONG: Final = b"pong"
#: Compact the read buffer once this much of it has been read.
_COMPACT_AT: Final = 1 << 16


class PubSubConnection(asyncio.Protocol):
    """One pub/sub connection; ``closed`` resolves (or fails) when it ends."""

    def __init__(self, on_message: Callable[[bytes, bytes], None]) -> None:
        self._on_message = on_message
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._read = 0
        #: Subscriptions sent, in order: confirmations still due, and who waits.
        self._confirming: deque[list[Any]] = deque()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        #: Set by a pong, cleared by ``ping()``: the server answers.
        self.answered = True

    @classmethod
    async def open(  # noqa: PLR0913
        cls,
        host: str,
        port: int,
        *,
        on_message: Callable[[bytes, bytes], None],
        username: str | None = None,
        password: str | None = None,
        keep_alive_channel: bytes,
    ) -> PubSubConnection:
        """Connect, authenticate, and subscribe to ``keep_alive_channel``.

        Returns once the server confirmed that subscription, so the
        connection is known to work; bound the call with ``asyncio.timeout``.
        """
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(lambda: cls(on_message), host, port)
        try:
            if password is not None:
                auth = ("AUTH", username, password) if username else ("AUTH", password)
                connection._write(command(*auth))  # noqa: SLF001
            await connection.subscribe(keep_alive_channel)
        except BaseException:
            connection.close()
            raise
        return connection

    def subscribe(self, *channels: bytes) -> asyncio.Future[None]:
        """Ask for ``channels``' messages; the future resolves once Redis confirmed them all.

        From then on no message published on them can be missed.
        """
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not channels:
            confirmed.set_result(None)
            return confirmed
        self._write(command("SUBSCRIBE", *channels))
        self._confirming.append([len(channels), confirmed])
        return confirmed

    def subscribe_now(self, channel: bytes) -> bool:
        """Send a SUBSCRIBE, not waiting for its confirmation; ``False``: no connection."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        transport.write(command("SUBSCRIBE", channel))
        self._confirming.append([1, None])
        return True

    def unsubscribe(self, *channels: bytes) -> None:
        """Stop ``channels``' messages."""
        if channels:
            self._write(command("UNSUBSCRIBE", *channels))

    def ping(self) -> None:
        """Ask the server for a sign of life; ``answered`` turns true with its answer."""
        self.answered = False
        self._write(command("PING"))

    def close(self) -> None:
        """Drop the connection at once (no goodbye to wait for)."""
        transport = self._transport
        if transport is not None:
            transport.abort()

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            msg = "the result watcher's Redis connection is closed"
            raise ConnectionError(msg)
        transport.write(data)

    # -- asyncio.Protocol ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail_waiters(exc or ConnectionError("Redis closed the result watcher's connection"))
        if not self.closed.cancelled():
            self.closed.exception()  # retrieved: the watcher reads it, or not

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            replies, self._read = parse_replies(self._buffer, self._read)
        except ValueError as exc:  # garbage on the wire: start over on a new connection
            self._fail(ConnectionError(f"unreadable reply from Redis: {exc}"))
            return
        if self._read >= _COMPACT_AT or self._read == len(self._buffer):
            del self._buffer[: self._read]
            self._read = 0
        for reply in replies:
            self._take(reply)

    def _take(self, reply: Any) -> None:  # noqa: ANN401
        if isinstance(reply, RespError):
            self._fail(ConnectionError(f"Redis refused the result watcher: {reply}"))
            return
        if not isinstance(reply, list) or not reply:
            return  # +OK for AUTH
        kind = reply[0]
        if kind == _MESSAGE and len(reply) == 3:  # noqa: PLR2004
            self._on_message(reply[1], reply[2])
        elif kind == b"subscribe" and self._confirming:
            head = self._confirming[0]
            head[0] -= 1
            if head[0] <= 0:
                self._confirming.popleft()
                if head[1] is not None and not head[1].done():
                    head[1].set_result(None)
        elif kind == _PONG:
            self.answered = True

    def _fail(self, error: Exception) -> None:
        self._fail_waiters(error)
        self.close()

    def _fail_waiters(self, error: Exception) -> None:
        while self._confirming:
            _, confirmed = self._confirming.popleft()
            if confirmed is not None and not confirmed.done():
                confirmed.set_exception(error)
        if not self.closed.done():
            self.closed.set_exception(error)
