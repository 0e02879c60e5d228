"""Celery's stacks kept per asyncio task by the asyncio pool (``_aiopool._stacks``)."""

from __future__ import annotations

import asyncio
import threading

import greenlet
from celery.utils.threads import LocalStack

from jobify_celery._aiopool._stacks import ident


def _stack() -> LocalStack:
    stack = LocalStack()
    stack.__ident_func__ = ident
    return stack


def test_tasks_on_one_loop_each_see_their_own_top() -> None:
    stack = _stack()

    async def job(name: str, pause: float) -> list[object]:
        stack.push(name)
        await asyncio.sleep(pause)
        top = stack.top
        stack.pop()
        return [top, stack.top]

    async def main() -> list[list[object]]:
        return list(await asyncio.gather(job("a", 0.02), job("b", 0.01), job("c", 0)))

    assert asyncio.run(main()) == [["a", None], ["b", None], ["c", None]]
    assert stack._local.__storage__ == {}


def test_off_a_loop_the_key_is_the_greenlet_as_in_celery() -> None:
    stack = _stack()
    stack.push("main")
    seen: list[object] = []

    def in_greenlet() -> None:
        seen.append(stack.top)
        stack.push("inner")
        seen.append(stack.top)
        stack.pop()

    greenlet.greenlet(in_greenlet).switch()
    thread = threading.Thread(target=lambda: seen.append(stack.top))
    thread.start()
    thread.join()
    assert seen == [None, "inner", None]
    assert stack.top == "main"
    assert ident() is greenlet.getcurrent()


def test_on_a_loop_outside_any_task_the_key_is_the_greenlet() -> None:
    async def main() -> object:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        loop.call_soon(lambda: future.set_result(ident()))
        return await future

    assert asyncio.run(main()) is greenlet.getcurrent()
