"""The signal wakeup: each caught signal makes the hub's reader readable."""

from __future__ import annotations

import select
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any

import pytest

from jobify_celery._signal_wakeup import SignalWakeup, wakeup_step

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


class _Hub:
    """What the wakeup uses of kombu's Hub: add_reader."""

    def __init__(self) -> None:
        self.readers: dict[int, Callable[[], None]] = {}

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.readers[fd] = callback


@pytest.fixture
def caught_usr1() -> Iterator[list[int]]:
    """SIGUSR1 handled in Python (as Celery handles SIGTERM); the wakeup fd put back after."""
    caught: list[int] = []
    before = signal.signal(signal.SIGUSR1, lambda signum, _frame: caught.append(signum))
    wakeup_before = signal.set_wakeup_fd(-1)
    yield caught
    signal.set_wakeup_fd(wakeup_before)
    signal.signal(signal.SIGUSR1, before)


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_a_signal_makes_the_hub_reader_readable_and_the_callback_drains_it(
    caught_usr1: list[int],
) -> None:
    wakeup, hub = SignalWakeup(), _Hub()
    assert wakeup.watch(hub)
    try:
        [(fd, drain)] = hub.readers.items()
        assert not _readable(fd)
        signal.raise_signal(signal.SIGUSR1)
        assert caught_usr1 == [signal.SIGUSR1]
        assert _readable(fd)
        drain()
        assert not _readable(fd)
    finally:
        wakeup.release()
    assert signal.set_wakeup_fd(-1) == -1


def test_watching_again_after_a_hub_reset_keeps_one_socket_pair(caught_usr1: list[int]) -> None:
    wakeup, first, second = SignalWakeup(), _Hub(), _Hub()
    try:
        assert wakeup.watch(first)
        assert wakeup.watch(second)
        assert first.readers.keys() == second.readers.keys()
        signal.raise_signal(signal.SIGUSR1)
        assert _readable(next(iter(second.readers)))
    finally:
        wakeup.release()
    assert caught_usr1


def test_a_wakeup_fd_owned_by_someone_else_is_left_alone(caught_usr1: list[int]) -> None:
    assert caught_usr1 == []
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        signal.set_wakeup_fd(writer.fileno())
        wakeup, hub = SignalWakeup(), _Hub()
        assert not wakeup.watch(hub)
        assert hub.readers == {}
        assert signal.set_wakeup_fd(-1) == writer.fileno()
        wakeup.release()
    finally:
        reader.close()
        writer.close()


def test_off_the_main_thread_the_hub_is_left_as_celery_made_it() -> None:
    wakeup, hub = SignalWakeup(), _Hub()
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(wakeup.watch(hub)))
    thread.start()
    thread.join()
    assert outcome == [False]
    assert hub.readers == {}


def test_the_consumer_step_watches_the_consumers_hub(caught_usr1: list[int]) -> None:
    wakeup, hub = SignalWakeup(), _Hub()
    step_class: Any = wakeup_step(wakeup)
    consumer: Any = type("Consumer", (), {"hub": hub})()
    step = step_class(consumer)
    try:
        step.start(consumer)
        assert len(hub.readers) == 1
        signal.raise_signal(signal.SIGUSR1)
        assert _readable(next(iter(hub.readers)))
        step.stop(consumer)  # Celery's no-op stop: the wakeup stays
    finally:
        wakeup.release()
    assert caught_usr1 == [signal.SIGUSR1]
