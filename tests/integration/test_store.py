"""A Jobify task's state is stored in one Redis round trip, with Celery's rules kept.

Celery's Redis backend reads the key (GET) and then writes and publishes it;
for a Jobify task the worker writes and publishes a key that does not exist
yet with one script call, and leaves every other case to Celery. What reaches
Redis is read off the real server with MONITOR.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import redis
from celery import states
from celery.app.task import Context
from celery.backends.redis import RedisBackend

from jobify_celery._store import install_quick_store
from tests.apps import shop
from tests.servers import RESULT_BACKEND

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.conftest import LoopThread
    from tests.integration.conftest import Worker

WAIT = 30.0
JOBIFY_TASK = "tests.apps.shop:add"


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(RESULT_BACKEND)
    yield connection
    connection.close()


@pytest.fixture
def backend(shop_app: Any) -> RedisBackend:
    """A backend instance of the test's own: installing on it touches no other test."""
    fresh = RedisBackend(app=shop.celery_app, url=RESULT_BACKEND)
    install_quick_store(fresh)
    # One store first, so that Redis has the script and MONITOR shows no loading.
    warm_up = str(uuid.uuid4())
    fresh.store_result(warm_up, None, states.SUCCESS, request=_request(JOBIFY_TASK, warm_up))
    fresh.delete(fresh.get_key_for_task(warm_up))
    return fresh


def _request(task: str, task_id: str) -> Context:
    return Context(task=task, id=task_id, args=[], kwargs={})


def _commands_during(client: redis.Redis, action: Callable[[], None]) -> list[dict[str, Any]]:
    """Return the commands Redis ran while ``action`` ran (MONITOR)."""
    marker = f"jobify-celery-marker-{uuid.uuid4()}"
    seen: list[dict[str, Any]] = []
    with client.monitor() as monitor:
        action()
        client.echo(marker)
        for command in monitor.listen():
            if marker in command["command"]:
                break
            seen.append(command)
    return seen


def _on_key(commands: list[dict[str, Any]], key: str) -> list[str]:
    """Each command naming ``key``, as ``<client type> <COMMAND>``."""
    return [
        f"{c['client_type']} {c['command'].split(' ', 1)[0].upper()}"
        for c in commands
        if key in c["command"]
    ]


@contextmanager
def _subscribed(client: redis.Redis, key: str) -> Iterator[Any]:
    pubsub = client.pubsub()
    pubsub.subscribe(key)
    pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    try:
        yield pubsub
    finally:
        pubsub.close()


def _published(pubsub: Any, timeout: float) -> list[bytes]:
    messages = []
    while (message := pubsub.get_message(timeout=timeout)) is not None:
        if message["type"] == "message":
            messages.append(message["data"])
    return messages


def test_a_new_state_is_written_and_published_in_one_call(
    backend: RedisBackend, client: redis.Redis
) -> None:
    task_id = str(uuid.uuid4())
    key = backend.get_key_for_task(task_id).decode()
    with _subscribed(client, key) as pubsub:
        commands = _commands_during(
            client,
            lambda: backend.store_result(
                task_id, 5, states.SUCCESS, request=_request(JOBIFY_TASK, task_id)
            ),
        )
        published = _published(pubsub, timeout=1.0)
    on_key = _on_key(commands, key)
    assert on_key == ["tcp EVALSHA", "lua SET", "lua PUBLISH"]
    meta = backend.decode_result(client.get(key))
    assert (meta["status"], meta["result"], meta["task_id"]) == (states.SUCCESS, 5, task_id)
    assert [backend.decode_result(p)["status"] for p in published] == [states.SUCCESS]
    assert 590 <= client.ttl(key) <= 600  # result_expires of the shop app

    # The same store for a task that is not a Jobify route goes Celery's way.
    plain_id = str(uuid.uuid4())
    plain_key = backend.get_key_for_task(plain_id).decode()
    commands = _commands_during(
        client,
        lambda: backend.store_result(
            plain_id, 5, states.SUCCESS, request=_request("some.plain.task", plain_id)
        ),
    )
    assert _on_key(commands, plain_key) == ["tcp GET", "tcp SETEX", "tcp PUBLISH"]
    assert backend.decode_result(client.get(plain_key))["status"] == states.SUCCESS


def test_a_stored_success_is_never_replaced(backend: RedisBackend, client: redis.Redis) -> None:
    task_id = str(uuid.uuid4())
    key = backend.get_key_for_task(task_id).decode()
    request = _request(JOBIFY_TASK, task_id)
    backend.store_result(task_id, 5, states.SUCCESS, request=request)
    with _subscribed(client, key) as pubsub:
        commands = _commands_during(
            client, lambda: backend.store_result(task_id, None, states.STARTED, request=request)
        )
        published = _published(pubsub, timeout=0.3)
    # The script wrote nothing; Celery's check found the SUCCESS and wrote nothing either.
    assert _on_key(commands, key) == ["tcp EVALSHA", "lua SET", "tcp GET"]
    meta = backend.decode_result(client.get(key))
    assert (meta["status"], meta["result"]) == (states.SUCCESS, 5)
    assert published == []


def test_an_earlier_state_is_replaced_as_celery_replaces_it(
    backend: RedisBackend, client: redis.Redis
) -> None:
    task_id = str(uuid.uuid4())
    key = backend.get_key_for_task(task_id).decode()
    request = _request(JOBIFY_TASK, task_id)
    backend.store_result(task_id, None, states.STARTED, request=request)
    with _subscribed(client, key) as pubsub:
        commands = _commands_during(
            client, lambda: backend.store_result(task_id, 7, states.SUCCESS, request=request)
        )
        published = _published(pubsub, timeout=1.0)
    # The script found the key and wrote nothing; Celery's check-and-set wrote.
    on_key = _on_key(commands, key)
    assert on_key == ["tcp EVALSHA", "lua SET", "tcp GET", "tcp SETEX", "tcp PUBLISH"]
    meta = backend.decode_result(client.get(key))
    assert (meta["status"], meta["result"]) == (states.SUCCESS, 7)
    assert [backend.decode_result(p)["status"] for p in published] == [states.SUCCESS]


def test_expiry_follows_celerys_settings(backend: RedisBackend, client: redis.Redis) -> None:
    failed_id, kept_id = str(uuid.uuid4()), str(uuid.uuid4())
    failed_key = backend.get_key_for_task(failed_id).decode()
    kept_key = backend.get_key_for_task(kept_id).decode()
    backend.failure_expires = 60

    def store() -> None:
        backend.store_result(
            failed_id,
            backend.prepare_exception(ValueError("boom")),
            states.FAILURE,
            traceback="Traceback ...",
            request=_request(JOBIFY_TASK, failed_id),
        )
        backend.expires = None
        backend.store_result(kept_id, 1, states.SUCCESS, request=_request(JOBIFY_TASK, kept_id))

    commands = _commands_during(client, store)
    try:
        assert _on_key(commands, failed_key) == ["tcp EVALSHA", "lua SET", "lua PUBLISH"]
        assert _on_key(commands, kept_key) == ["tcp EVALSHA", "lua SET", "lua PUBLISH"]
        assert 50 <= client.ttl(failed_key) <= 60
        failed = backend.decode_result(client.get(failed_key))
        assert failed["status"] == states.FAILURE
        assert failed["traceback"] == "Traceback ..."
        assert client.ttl(kept_key) == -1  # result_expires=None: kept until deleted
    finally:
        client.delete(failed_key, kept_key)


def test_a_backend_with_its_own_store_keeps_it(backend: RedisBackend, client: redis.Redis) -> None:
    """A subclass overriding a store step keeps its step; Celery's own class takes the script."""
    writes: list[str] = []

    class AuditedBackend(RedisBackend):  # type: ignore[misc]
        def _set(self, key: str, value: Any, expires: Any = None) -> None:
            writes.append(key)
            super()._set(key, value, expires)

    audited = AuditedBackend(app=shop.celery_app, url=RESULT_BACKEND)
    install_quick_store(audited)
    audited_id, stock_id = str(uuid.uuid4()), str(uuid.uuid4())

    def store() -> None:
        for target, task_id in ((audited, audited_id), (backend, stock_id)):
            target.store_result(task_id, 5, states.SUCCESS, request=_request(JOBIFY_TASK, task_id))

    commands = _commands_during(client, store)
    audited_key = audited.get_key_for_task(audited_id)
    assert writes == [audited_key]
    assert backend.decode_result(client.get(audited_key))["result"] == 5
    assert _on_key(commands, audited_key.decode()) == ["tcp GET", "tcp SETEX", "tcp PUBLISH"]
    stock_key = backend.get_key_for_task(stock_id).decode()
    assert _on_key(commands, stock_key) == ["tcp EVALSHA", "lua SET", "lua PUBLISH"]


def test_a_server_that_forbids_scripts_gets_celerys_store(
    client: redis.Redis, shop_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL without scripting: every state is still stored, the Celery way, with one warning."""
    user = f"jobify-celery-noscript-{uuid.uuid4().hex[:8]}"
    client.acl_setuser(
        user,
        enabled=True,
        nopass=True,
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-@scripting"],
    )
    try:
        host, port = (
            client.connection_pool.connection_kwargs["host"],
            client.connection_pool.connection_kwargs["port"],
        )
        restricted = RedisBackend(app=shop.celery_app, url=f"redis://{user}:any@{host}:{port}/0")
        install_quick_store(restricted)
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        second_key = restricted.get_key_for_task(second).decode()
        with caplog.at_level(logging.WARNING, logger="jobify_celery.worker"):
            restricted.store_result(first, 1, states.SUCCESS, request=_request(JOBIFY_TASK, first))
            commands = _commands_during(
                client,
                lambda: restricted.store_result(
                    second, 2, states.SUCCESS, request=_request(JOBIFY_TASK, second)
                ),
            )
        for task_id, expected in ((first, 1), (second, 2)):
            meta = restricted.decode_result(client.get(restricted.get_key_for_task(task_id)))
            assert (meta["status"], meta["result"]) == (states.SUCCESS, expected)
        # Refused once, then not tried again.
        assert _on_key(commands, second_key) == ["tcp GET", "tcp SETEX", "tcp PUBLISH"]
        warnings = [
            r.getMessage() for r in caplog.records if "result-store script" in r.getMessage()
        ]
        assert len(warnings) == 1
        assert "NOPERM" in warnings[0] or "permission" in warnings[0].lower()
        restricted.client.close()
    finally:
        client.acl_deluser(user)


def test_a_worker_stores_a_run_in_one_call(
    worker: Worker, loop_thread: LoopThread, client: redis.Redis
) -> None:
    """Every worker kind stores the run with the script, and the producer gets it."""
    results: list[Any] = []
    ids: list[str] = []

    async def scenario() -> None:
        job = await shop.add.push(20, 22)
        ids.append(job.id)
        await asyncio.wait_for(job.wait(), WAIT)
        results.append(job.result())

    commands = _commands_during(client, lambda: loop_thread.run(scenario()))
    assert results == [42]
    key = shop.celery_app.backend.get_key_for_task(ids[0]).decode()
    worker_writes = [
        c for c in _on_key(commands, key) if c in {"tcp EVALSHA", "tcp SETEX", "tcp SET"}
    ]
    assert set(worker_writes) == {"tcp EVALSHA"}  # twice when Redis has to load the script
