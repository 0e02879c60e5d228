"""The shop's own tests: the helpers of ``jobify_celery.testing`` as a user wires them.

    python -m pytest examples/shop/tests

``jobify_app`` names the app; the plugin gives ``jobify_producer`` (the app
started on a loop thread) and ``jobify_worker`` (a Celery worker in this
process, threads pool unless ``JOBIFY_TEST_POOL`` says solo or asyncio). The
worker consumes the shop's queue on the RabbitMQ and Redis of ``tasks``.
"""

from __future__ import annotations

import pytest
from jobify import Jobify

from examples.shop import tasks

pytest_plugins = ("jobify_celery.testing",)


@pytest.fixture(scope="session")
def jobify_app() -> Jobify:
    return tasks.app
