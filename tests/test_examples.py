"""The README's quickstart runs as documented."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_quickstart(env: dict[str, str]) -> str:
    completed = subprocess.run(
        [sys.executable, "examples/quickstart.py"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def run_example_module(
    module: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module`` from ``cwd`` with the repository importable.

    A run that does not end within 60 s fails with every thread's stack
    (faulthandler on SIGABRT), so a hang says where it hangs.
    """
    command = [sys.executable, "-X", "faulthandler", "-m", module]
    with subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            stdout, stderr = process.communicate(timeout=30)
            pytest.fail(f"{module} did not end within 60 s.\nstdout:\n{stdout}\nstderr:\n{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def check_output(output: str) -> None:
    assert ": success -> Receipt(order_id=42, amount=Decimal('19.99')" in output
    assert ": failed -> ValueError('order -1 does not exist')" in output
    assert "failed.result() raised JobFailedError: order -1 does not exist" in output
    assert "outer: publish quickstart:charge for tenant acme" in output
    assert "job: charge(42) ran" in output


def test_quickstart_runs_with_no_server() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("BROKER_URL", "RESULT_BACKEND")}
    check_output(run_quickstart(env))


@pytest.mark.integration
def test_quickstart_runs_on_rabbitmq_and_redis(servers: None) -> None:
    env = {
        **os.environ,
        "BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
        "RESULT_BACKEND": "redis://127.0.0.1:6379/0",
    }
    check_output(run_quickstart(env))


def test_docker_compose_runs_the_example_shop() -> None:
    import yaml

    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {
        "rabbitmq", "redis", "worker", "producer", "cron-worker", "beat", "cron-producer",
    }  # fmt: skip
    assert services["beat"]["command"].startswith("celery -A examples.cron.tasks:celery_app beat")
    assert "-S" not in services["beat"]["command"].split()
    assert set(compose["volumes"]) == {"schedules"}
    assert "management" in services["rabbitmq"]["image"]
    assert "-A examples.shop.tasks:celery_app worker" in services["worker"]["command"]
    assert services["producer"]["command"] == "python -m examples.shop.producer"
    for name in ("worker", "producer"):
        env = services[name]["environment"]
        assert env["BROKER_URL"].startswith("amqp://")
        assert env["RESULT_BACKEND"].startswith("redis://")
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert 'pip install --no-cache-dir ".[redis]"' in dockerfile


@pytest.mark.integration
def test_example_shop_runs_on_a_prefork_worker(servers: None, tmp_path: Path) -> None:
    from kombu import Connection

    from tests.integration.workers import WorkerProcess

    queue = f"shop-example-{os.getpid()}"
    env = {"SHOP_QUEUE": queue}
    os.environ["SHOP_QUEUE"] = queue
    try:
        from examples.shop import tasks

        worker = WorkerProcess(
            app_path="examples.shop.tasks:celery_app",
            celery_app=tasks.celery_app,
            queues=[queue],
            node=f"{queue}@test",
            pool="prefork",
            concurrency=2,
            log_path=tmp_path / "worker.log",
            extra_env=env,
            cwd=tmp_path,
        )
        try:
            worker.wait_ready()
            completed = run_example_module("examples.shop.producer", tmp_path, env)
        finally:
            worker.stop()
        assert completed.returncode == 0, completed.stderr
        assert (
            "success: Receipt(order_id=42, total=Decimal('13.70'), request_id='req-"
            in completed.stdout
        )
        # Neither the worker nor the producer left a file where they ran.
        assert not list(tmp_path.glob("jobify.db*"))
    finally:
        os.environ.pop("SHOP_QUEUE", None)
        with Connection("amqp://guest:guest@127.0.0.1:5672//") as conn:
            conn.channel().queue_delete(queue)


@pytest.mark.integration
@pytest.mark.parametrize("pool", ["solo", "threads", "asyncio"])
def test_example_shop_tests_pass_with_the_testing_helpers(servers: None, pool: str) -> None:
    from kombu import Connection

    queue = f"shop-tests-{pool}-{os.getpid()}"
    env = {**os.environ, "SHOP_QUEUE": queue, "JOBIFY_TEST_POOL": pool}
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "pytest", "examples/shop/tests", "-q", "-p", "no:cacheprovider"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        with Connection("amqp://guest:guest@127.0.0.1:5672//") as conn:
            conn.channel().queue_delete(queue)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "2 passed" in completed.stdout


@pytest.mark.integration
def test_fastapi_example_pushes_and_awaits_jobs_on_a_worker(servers: None, tmp_path: Path) -> None:
    import json

    from kombu import Connection

    from tests.integration.workers import WorkerProcess

    queue = f"shop-fastapi-{os.getpid()}"
    env = {"SHOP_QUEUE": queue}
    try:
        worker = WorkerProcess(
            app_path="examples.shop.tasks:celery_app",
            celery_app=_shop_celery_app(queue),
            queues=[queue],
            node=f"{queue}@test",
            pool="threads",
            concurrency=4,
            log_path=tmp_path / "worker.log",
            extra_env=env,
            cwd=tmp_path,
        )
        try:
            worker.wait_ready()
            completed = run_example_module("tests.drive_fastapi", tmp_path, env)
        finally:
            worker.stop()
    finally:
        with Connection("amqp://guest:guest@127.0.0.1:5672//") as conn:
            conn.channel().queue_delete(queue)
    assert completed.returncode == 0, completed.stderr
    answers = json.loads(completed.stdout.strip().splitlines()[-1])
    status, body = answers["now"]
    assert status == 200
    assert body["total"] == "13.70"
    assert body["request_id"] == f"req-{body['job_id'][:8]}"
    assert answers["later"][0] == 202
    state = answers["state"]
    assert state["state"] == "SUCCESS"
    assert state["result"]["total"] == "1.20"  # the receipt, readable from the backend
    assert answers["bad"] == 422  # FastAPI refuses the body before anything is pushed


def _shop_celery_app(queue: str) -> Any:
    """A Celery app on the shop's broker and queue, for pinging its worker."""
    from celery import Celery

    app = Celery("shop-ping", broker="amqp://guest:guest@127.0.0.1:5672//")
    app.conf.task_default_queue = queue
    return app


@pytest.mark.integration
def test_example_crons_run_on_beat_and_a_worker(servers: None, tmp_path: Path) -> None:
    import contextlib
    import sqlite3
    import time

    from kombu import Connection

    from tests.integration.workers import BeatProcess, WorkerProcess

    queue = f"cron-example-{os.getpid()}"
    env = {"CRON_QUEUE": queue, "CRON_DB": str(tmp_path / "cron.db")}
    os.environ.update(env)
    from examples.cron import tasks

    worker = WorkerProcess(
        app_path="examples.cron.tasks:celery_app",
        celery_app=tasks.celery_app,
        queues=[queue],
        node=f"{queue}@test",
        pool="threads",
        concurrency=2,
        log_path=tmp_path / "worker.log",
        extra_env=env,
        cwd=tmp_path,
    )
    beat = BeatProcess(
        app_path="examples.cron.tasks:celery_app",
        schedule_path=tmp_path / "beat-schedule",
        log_path=tmp_path / "beat.log",
        extra_env=env,
    )
    try:
        worker.wait_ready()
        completed = run_example_module("examples.cron.add_report", tmp_path, env)
        assert completed.returncode == 0, completed.stderr
        assert "cron sales-report scheduled" in completed.stdout
        deadline = time.monotonic() + 30
        while "sales report (cron sales-report)" not in worker.log():
            assert time.monotonic() < deadline, worker.log() + beat.log()
            time.sleep(0.2)
        with contextlib.closing(sqlite3.connect(env["CRON_DB"])) as conn:
            ids = {row[0] for row in conn.execute("SELECT job_id FROM jobify_schedules")}
        assert "sales-report" in ids
        assert "examples.cron.tasks:heartbeat__jobify_cron_definition" in ids
    finally:
        beat.stop()
        worker.stop()
        for key in env:
            os.environ.pop(key, None)
        with Connection("amqp://guest:guest@127.0.0.1:5672//") as conn:
            conn.channel().queue_delete(queue)


@pytest.mark.integration
@pytest.mark.parametrize("stage", ["before", "after"])
def test_migration_example_serves_old_producers_before_and_after(
    servers: None, tmp_path: Path, stage: str
) -> None:
    import importlib

    from celery import chain
    from kombu import Connection

    from tests.integration.workers import WorkerProcess

    queue = f"billing-example-{stage}-{os.getpid()}"
    os.environ["BILLING_QUEUE"] = queue
    # The producer side is the old code in both cases: plain Celery calls.
    old = importlib.reload(importlib.import_module("examples.migrate_from_celery.before.tasks"))
    worker = WorkerProcess(
        app_path=f"examples.migrate_from_celery.{stage}.tasks:celery_app",
        celery_app=old.celery_app,
        queues=[queue],
        node=f"{queue}@test",
        pool="prefork",
        concurrency=2,
        log_path=tmp_path / "worker.log",
        extra_env={"BILLING_QUEUE": queue},
        cwd=tmp_path,
    )
    try:
        worker.wait_ready()
        sent = old.celery_app.send_task("billing.send_invoice", [42, "a@b.c"])
        assert sent.get(timeout=30) == {"order_id": 42, "email": "a@b.c", "task_id": sent.id}
        delayed = old.send_invoice.delay(7, "x@y.z")
        assert delayed.get(timeout=30)["order_id"] == 7
        assert chain(old.total.s([1.25, 2.5]))().get(timeout=30) == 3.75
    finally:
        worker.stop()
        os.environ.pop("BILLING_QUEUE", None)
        with Connection("amqp://guest:guest@127.0.0.1:5672//") as conn:
            conn.channel().queue_delete(queue)
    audited = "audit: " in worker.log()
    assert audited is (stage == "after")
