"""The worker warns when Celery's Redis backend could not retry a lost connection."""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING

from celery import Celery
from celery.backends import redis as celery_redis

from jobify_celery._store import store_retry_problem

if TYPE_CHECKING:
    import pytest


def _backend() -> celery_redis.RedisBackend:
    app = Celery("retry-check", backend="redis://127.0.0.1:6379/0", set_as_current=False)
    return celery_redis.RedisBackend(app=app, url="redis://127.0.0.1:6379/0")


def test_an_installed_redis_extra_lets_the_backend_retry() -> None:
    backend = _backend()
    assert backend.connection_errors
    assert store_retry_problem(backend) is None


def test_a_backend_without_connection_errors_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # What Celery builds when kombu's Redis transport failed to import.
    monkeypatch.setattr(celery_redis, "get_redis_error_classes", None)
    problem = store_retry_problem(_backend())
    assert problem is not None
    assert "cannot retry a store" in problem
    assert "jobify-celery[redis]" in problem


def test_other_backends_are_not_judged() -> None:
    app = Celery("retry-check", backend="cache+memory://", set_as_current=False)
    assert store_retry_problem(app.backend) is None


def test_the_redis_extra_brings_kombus_redis_transport() -> None:
    requirements = importlib.metadata.requires("jobify-celery") or []
    redis_extra = [r for r in requirements if 'extra == "redis"' in r]
    assert any(r.startswith("kombu[redis]") for r in redis_extra), redis_extra
