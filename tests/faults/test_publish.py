"""A push never blocks the loop, never hangs, and with confirms never loses a message.

The producer publishes through a TCP proxy in front of the shared RabbitMQ;
the proxy refuses, stalls or drops connections. Messages are counted straight
in RabbitMQ (no worker consumes these queues). Tests of what publisher
confirms guarantee turn them on (``publish_confirms=True``); the others run
with the default.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from kombu import Connection

from jobify_celery import PublishError
from tests.faults.conftest import StallMeter, proxied_broker_url
from tests.servers import BROKER_URL

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.apps.tally import Tally
    from tests.conftest import LoopThread
    from tests.faults.proxy import TcpProxy

pytestmark = pytest.mark.integration

BOUND = 1.5
#: A loop that "never blocks" still wakes a little late on a busy 2-core
#: machine; the failure this guards against froze it for seconds.
STALL_GUARD = 0.2


def _queued_ids(queue: str) -> list[str]:
    """Take every message out of ``queue`` and return their task ids."""
    ids: list[str] = []
    with Connection(BROKER_URL) as conn:
        channel = conn.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            ids.append(str(message.headers["id"]))
    return ids


@pytest.mark.parametrize("fault", ["refuse", "stall"])
def test_an_unreachable_broker_fails_a_push_within_the_bound(
    fault: str,
    broker_proxy: TcpProxy,
    make_tally: Callable[..., Tally],
    loop_thread: LoopThread,
) -> None:
    tally = make_tally(broker_url=proxied_broker_url(broker_proxy), publish_timeout=BOUND)
    getattr(broker_proxy, fault)()

    async def scenario() -> tuple[PublishError, float, float, float]:
        async with tally.app:
            with StallMeter() as meter:
                started = time.monotonic()
                with pytest.raises(PublishError) as caught:
                    await tally.work.schedule("x").push(job_id="unreachable")
                failed_after = time.monotonic() - started
                started = time.monotonic()
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(tally.work.push("x"), 0.3)
                gave_up_after = time.monotonic() - started
            return caught.value, failed_after, gave_up_after, meter.longest

    error, failed_after, gave_up_after, stall = loop_thread.run(scenario())
    assert BOUND <= failed_after < BOUND + 1.0
    assert gave_up_after < 0.6
    assert stall < STALL_GUARD
    assert error.job_id == "unreachable"
    assert error.maybe_sent is False
    assert f"127.0.0.1:{broker_proxy.port}" in str(error)
    assert "guest:guest" not in str(error)
    assert tally.app.find_job("unreachable") is None


def test_a_push_goes_through_once_the_broker_is_back(
    broker_proxy: TcpProxy, make_tally: Callable[..., Tally], loop_thread: LoopThread
) -> None:
    tally = make_tally(broker_url=proxied_broker_url(broker_proxy), publish_timeout=5.0)

    async def scenario() -> list[Any]:
        async with tally.app:
            await tally.work.push("warm-up")
            broker_proxy.refuse()
            asyncio.get_running_loop().call_later(1.0, broker_proxy.accept)
            # Pushed while the broker is away; published once it is back.
            return [await tally.work.push("x") for _ in range(3)]

    jobs = loop_thread.run(scenario())
    assert len(jobs) == 3
    assert set(_queued_ids(tally.queue)) >= {job.id for job in jobs}


def test_a_connection_that_stalls_loses_no_push_that_returned(
    broker_proxy: TcpProxy, make_tally: Callable[..., Tally], loop_thread: LoopThread
) -> None:
    tally = make_tally(
        broker_url=proxied_broker_url(broker_proxy), publish_timeout=BOUND, publish_confirms=True
    )
    payload = "x" * 10_000

    async def scenario() -> tuple[list[str], list[PublishError], float]:
        returned: list[str] = []
        failed: list[PublishError] = []

        async def push(index: int) -> None:
            try:
                job = await tally.work.schedule(payload).push(job_id=f"stall-{index}")
            except PublishError as exc:
                failed.append(exc)
            else:
                returned.append(job.id)

        async with tally.app:
            with StallMeter() as meter:
                for batch in range(12):
                    if batch == 4:
                        broker_proxy.stall()
                    await asyncio.gather(*(push(batch * 30 + i) for i in range(30)))
                    if batch == 7:
                        # The stalled connection is broken for good; later
                        # pushes reconnect through a working proxy.
                        broker_proxy.drop()
                        broker_proxy.resume()
            return returned, failed, meter.longest

    returned, failed, stall = loop_thread.run(scenario(), timeout=120)
    assert len(returned) + len(failed) == 360
    assert failed, "the stall must have failed some pushes"
    assert all(exc.maybe_sent for exc in failed if "no confirmation" in exc.reason)
    assert len(returned) >= 8 * 30  # before the stall and after the drop
    queued = _queued_ids(tally.queue)
    # Every push that returned is in the queue: none vanished in a socket buffer.
    assert set(returned) <= set(queued), sorted(set(returned) - set(queued))[:5]
    assert stall < STALL_GUARD


def test_a_push_cancelled_before_anything_left_sends_nothing(
    broker_proxy: TcpProxy, make_tally: Callable[..., Tally], loop_thread: LoopThread
) -> None:
    tally = make_tally(broker_url=proxied_broker_url(broker_proxy), publish_timeout=5.0)
    broker_proxy.stall()  # the connection never opens

    async def scenario() -> None:
        async with tally.app:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(tally.work.schedule("x").push(job_id="never-sent"), 0.3)
            assert tally.app.find_job("never-sent") is None
            broker_proxy.drop()
            broker_proxy.resume()
            await tally.work.schedule("x").push(job_id="after")

    loop_thread.run(scenario())
    assert _queued_ids(tally.queue) == ["after"]


def test_a_push_cancelled_after_its_message_left_fails_its_job_if_never_confirmed(
    broker_proxy: TcpProxy, make_tally: Callable[..., Tally], loop_thread: LoopThread
) -> None:
    # A queue declared once per connection: the stalled push is written at once.
    tally = make_tally(
        broker_url=proxied_broker_url(broker_proxy),
        publish_timeout=BOUND,
        publish_confirms=True,
        expiring_queue=False,
    )

    async def scenario() -> Any:
        async with tally.app:
            await tally.work.push("warm-up")  # connected, queue declared
            broker_proxy.stall()  # written, never confirmed
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(tally.work.schedule("x").push(job_id="in-flight"), 0.3)
            found = tally.app.find_job("in-flight")
            assert found is not None
            # Nobody waits forever: the publish ends within its bound.
            await asyncio.wait_for(found.wait(), BOUND + 2)
            return found

    found = loop_thread.run(scenario(), timeout=60)
    assert isinstance(found.exception, PublishError)
    assert found.exception.maybe_sent is True
    assert str(found.status.value) == "failed"


def test_a_push_cancelled_after_its_message_left_stays_tracked_once_confirmed(
    broker_proxy: TcpProxy, make_tally: Callable[..., Tally], loop_thread: LoopThread
) -> None:
    tally = make_tally(
        broker_url=proxied_broker_url(broker_proxy),
        publish_timeout=5.0,
        publish_confirms=True,
        expiring_queue=False,
    )

    async def scenario() -> tuple[Any, Any, bool]:
        async with tally.app:
            await tally.work.push("warm-up")
            broker_proxy.stall()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(tally.work.schedule("x").push(job_id="late"), 0.3)
            found = tally.app.find_job("late")
            broker_proxy.resume()
            await asyncio.sleep(1.0)
            return found, tally.app.find_job("late"), found is not None and found.is_done()

    found, later, done = loop_thread.run(scenario(), timeout=60)
    assert found is not None
    assert later is found  # confirmed: still tracked, waiting for its run
    assert not done
    assert "late" in _queued_ids(tally.queue)


def test_a_message_no_queue_takes_is_refused(
    make_tally: Callable[..., Tally], loop_thread: LoopThread
) -> None:
    tally = make_tally(publish_timeout=BOUND, publish_confirms=True)
    # Routed by the app's routing, as apply_async routes it, to an exchange
    # where nothing is bound: plain apply_async would drop it silently.
    tally.celery_app.conf.task_routes = {
        "tally.work": {
            "exchange": "amq.direct",
            "routing_key": f"jobify-celery-test-unbound-{uuid.uuid4().hex[:8]}",
        }
    }

    async def scenario() -> PublishError:
        async with tally.app:
            with pytest.raises(PublishError) as caught:
                await tally.work.schedule("x").push(job_id="ghost")
            return caught.value

    error = loop_thread.run(scenario())
    assert "refused" in error.reason
    assert "NO_ROUTE" in error.reason
    assert error.maybe_sent is False
    assert tally.app.find_job("ghost") is None


def _delete_queue(queue: str) -> None:
    with Connection(BROKER_URL) as conn:
        conn.default_channel.queue_delete(queue)


def test_a_queue_that_expired_between_pushes_is_declared_again_before_the_next(
    make_tally: Callable[..., Tally], loop_thread: LoopThread
) -> None:
    tally = make_tally()  # its queue has x-expires: declared again before every push

    async def scenario() -> list[str]:
        async with tally.app:
            first = await tally.work.push("first")
            _delete_queue(tally.queue)  # as the broker does once the queue expired
            second = await tally.work.push("second")
            third = await tally.work.push("third")
            return [first.id, second.id, third.id]

    ids = loop_thread.run(scenario())
    assert _queued_ids(tally.queue) == ids[1:]


def test_a_queue_declared_again_elsewhere_with_other_arguments_fails_the_next_push(
    make_tally: Callable[..., Tally], loop_thread: LoopThread
) -> None:
    tally = make_tally()

    async def scenario() -> PublishError:
        async with tally.app:
            await tally.work.push("first")
            _delete_queue(tally.queue)
            with Connection(BROKER_URL) as conn:  # without x-expires now
                conn.default_channel.queue_declare(tally.queue, durable=True, auto_delete=False)
            with pytest.raises(PublishError) as caught:
                await tally.work.push("second")
            return caught.value

    error = loop_thread.run(scenario())
    assert "PRECONDITION_FAILED" in str(error)
    assert "x-expires" in str(error)
    assert not error.maybe_sent
    assert error.refused


def test_a_push_without_confirms_has_left_the_process_when_it_returns(
    make_tally: Callable[..., Tally], loop_thread: LoopThread
) -> None:
    """As with Celery's ``apply_async``: returned means written to the socket.

    Each round holds the loop right after its pushes (sync code, as a
    producer may run next), so a message still queued in the process would
    not reach the broker until the wait is over. Several rounds: whether the
    last push of a round happened to give the loop a turn is down to timing.
    """
    tally = make_tally()  # no publisher confirms (the default)

    async def scenario() -> list[tuple[list[str], list[str]]]:
        rounds: list[tuple[list[str], list[str]]] = []
        async with tally.app:
            for _ in range(8):
                jobs = [await tally.work.push("held") for _ in range(5)]
                deadline = time.monotonic() + 2.0
                seen: list[str] = []
                while len(seen) < len(jobs) and time.monotonic() < deadline:  # loop held
                    seen += _queued_ids(tally.queue)
                    time.sleep(0.02)  # noqa: ASYNC251 - holding the loop is the point
                rounds.append(([job.id for job in jobs], seen))
        return rounds

    for sent, seen in loop_thread.run(scenario()):
        assert seen == sent
