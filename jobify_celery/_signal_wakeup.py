"""Wake the worker's event loop the moment a signal arrives.

Celery's handlers for SIGTERM, SIGINT and SIGQUIT only set a flag
(``celery.worker.state.should_stop``); the consumer reads it between two polls
of kombu's hub. An idle hub sleeps until its next timer, up to ten seconds
away, so an idle worker told to stop used to notice 1 to 10 s later (measured:
plain Celery prefork 1.0-4.5 s, threads 2.5-4.0 s). Python can write the
number of every signal it catches to a file descriptor
(:func:`signal.set_wakeup_fd`); a socket pair whose read end the hub watches
turns each signal into a poll that returns at once.

The wakeup descriptor belongs to the whole process and only the main thread may
set it: where another owner (an asyncio loop on the main thread) already holds
it, or the consumer runs on another thread (an embedded test worker), the hub
is left as Celery made it.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from typing import Any

from celery import bootsteps

logger = logging.getLogger(__name__)


class SignalWakeup:
    """A socket pair that Python writes to on each signal, read by the hub."""

    def __init__(self) -> None:
        self._pair: tuple[socket.socket, socket.socket] | None = None

    def watch(self, hub: Any) -> bool:  # noqa: ANN401 - kombu's Hub, untyped
        """Make each signal wake ``hub`` (kombu's); ``False`` where it cannot be done here."""
        if threading.current_thread() is not threading.main_thread():
            return False
        if self._pair is None:
            reader, writer = socket.socketpair()
            reader.setblocking(False)  # noqa: FBT003 - socket API
            writer.setblocking(False)  # noqa: FBT003 - socket API
            self._pair = (reader, writer)
        reader, writer = self._pair
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        if previous not in (-1, writer.fileno()):
            signal.set_wakeup_fd(previous)
            logger.debug("Signal wakeup fd %d is taken: the hub keeps its own timing", previous)
            return False
        # Re-added on every consumer start: a reconnect resets the hub's poller.
        hub.add_reader(reader.fileno(), self._drain)
        return True

    def release(self) -> None:
        """Stop writing to the socket pair and close it (a forked pool process)."""
        pair, self._pair = self._pair, None
        if pair is None:
            return
        if threading.current_thread() is threading.main_thread():
            previous = signal.set_wakeup_fd(-1)
            if previous not in (-1, pair[1].fileno()):
                signal.set_wakeup_fd(previous)
        for end in pair:
            end.close()

    def _drain(self) -> None:
        if self._pair is None:
            return
        reader = self._pair[0]
        try:
            while reader.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass


def wakeup_step(wakeup: SignalWakeup) -> type[bootsteps.StartStopStep]:
    """Make the consumer bootstep that points ``wakeup`` at the hub on each consumer start."""

    class WakeOnSignal(bootsteps.StartStopStep):  # type: ignore[misc]
        """Signals wake the worker's hub, so a shutdown starts at once."""

        name = "jobify_celery.WakeOnSignal"

        def start(self, parent: Any) -> None:  # noqa: ANN401 - Celery's Consumer
            hub = getattr(parent, "hub", None)
            if hub is not None:
                wakeup.watch(hub)

        # Nothing to stop: no ``obj``, and the socket pair lives as long as the process.

    return WakeOnSignal
