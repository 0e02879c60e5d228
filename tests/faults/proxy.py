"""A TCP proxy the fault tests put between a client and a real server, and break on purpose.

It runs on its own event loop in a thread and forwards bytes both ways. The
test then:

* ``drop()``: closes every open connection at once (a network blip);
* ``refuse()``: stops listening, so new connections are refused, and drops
  the open ones; ``accept()`` listens again on the same port;
* ``stall()``: keeps every connection open and accepts new ones, but moves no
  byte any more, either way (a server or network that hangs); ``resume()``
  moves the bytes held meanwhile.

Only loopback is used; the shared servers behind it are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Coroutine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``, until told otherwise."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.accepted = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._run(self._set_flowing())
        self.accept()

    # -- control, from the test's thread ------------------------------------

    def accept(self) -> None:
        """Listen (again) and forward."""
        self._run(self._listen())

    def refuse(self) -> None:
        """Stop listening and drop every open connection: new ones are refused."""
        self._run(self._close_server())
        self.drop()

    def drop(self) -> None:
        """Close every open connection abruptly."""
        self._run(self._drop_all())

    def stall(self) -> None:
        """Keep connections open, but stop moving bytes (both ways)."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        """Move bytes again."""
        self._loop.call_soon_threadsafe(self._flowing.set)

    def close(self) -> None:
        self.refuse()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def url_port(self) -> int:
        return self.port

    # -- the proxy itself, on its loop ----------------------------------------

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _set_flowing(self) -> None:
        self._flowing.set()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

    async def _close_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    async def _drop_all(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            with contextlib.suppress(Exception):
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    # RST rather than FIN: the client sees a broken connection.
                    linger = struct.pack("ii", 1, 0)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            transport.abort()
        self._writers.clear()
        for pipe in list(self._pipes):
            pipe.cancel()

    async def _serve(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.accepted += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update({client_writer, server_writer})
        pipes = [
            asyncio.ensure_future(self._pipe(client_reader, server_writer)),
            asyncio.ensure_future(self._pipe(server_reader, client_writer)),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
                self._pipes.discard(pipe)
            for writer in (client_writer, server_writer):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            await self._flowing.wait()
            writer.write(data)
            await writer.drain()
