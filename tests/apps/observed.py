"""A bridged app watched by Sentry and OpenTelemetry, both writing what they send to files.

A worker imports it as ``-A tests.apps.observed:celery_app``; the producer is
``python -m tests.apps.observed OUT`` (a process of its own: both SDKs patch
process-wide state). Each process writes JSON lines to ``$OBSERVE_OUT.<role>.
{sentry,spans}``: the Sentry envelopes' items (a transport of ours instead of
the network) and the finished OpenTelemetry spans (Celery's instrumentation
with an exporter of ours). The queue comes from ``OBSERVED_QUEUE``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sentry_sdk
from celery import Celery
from jobify import Jobify
from kombu import Queue
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.transport import Transport

from jobify_celery import JobifyCelery
from tests.servers import BROKER_URL, RESULT_BACKEND

QUEUE = os.environ.get("OBSERVED_QUEUE", "jobify-celery-test-local.observed")
OUT = os.environ.get("OBSERVE_OUT", "")
_WRITE_LOCK = threading.Lock()


def _append(path: str, record: dict[str, Any]) -> None:
    line = json.dumps(record, default=str) + "\n"
    with _WRITE_LOCK, Path(path).open("a") as file:
        file.write(line)


class FileTransport(Transport):  # type: ignore[misc]
    """Sentry's envelopes, one JSON line per item, instead of HTTP."""

    def __init__(self, path: str) -> None:
        super().__init__({"dsn": "http://public@sentry.invalid/1"})
        self.path = path

    def capture_envelope(self, envelope: Any) -> None:
        for item in envelope.items:
            payload = item.payload.json
            if payload is not None:
                _append(self.path, {"type": item.type, "payload": payload})


class FileExporter(SpanExporter):  # type: ignore[misc]
    """Finished spans, one JSON line each."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            context = span.context
            parent = span.parent
            _append(
                self.path,
                {
                    "name": span.name,
                    "trace_id": f"{context.trace_id:032x}",
                    "span_id": f"{context.span_id:016x}",
                    "parent_id": f"{parent.span_id:016x}" if parent else None,
                    "attributes": dict(span.attributes or {}),
                },
            )
        return SpanExportResult.SUCCESS


def observe(role: str) -> None:
    """Start both SDKs for this process, writing to ``$OBSERVE_OUT.<role>.*``."""
    if not OUT:
        return
    sentry_sdk.init(
        dsn="http://public@sentry.invalid/1",
        transport=FileTransport(f"{OUT}.{role}.sentry"),
        integrations=[CeleryIntegration()],
        traces_sample_rate=1.0,
        default_integrations=False,
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(f"{OUT}.{role}.spans")))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)


celery_app = Celery("observed", broker=BROKER_URL, backend=RESULT_BACKEND, set_as_current=False)
celery_app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[Queue(QUEUE, queue_arguments={"x-expires": 120_000})],
    broker_connection_retry_on_startup=True,
)
app = Jobify(storage=False)
JobifyCelery(app, celery_app)


@app.task(name="observed.ok")
async def ok(n: int) -> int:
    await asyncio.sleep(0.01)
    return n + 1


@app.task(name="observed.boom")
async def boom() -> None:
    msg = "boom for the observers"
    raise ValueError(msg)


if os.environ.get("OBSERVE_ROLE") == "worker":
    observe("worker")


async def produce() -> dict[str, Any]:
    """Push one good and one failing job inside a span and a Sentry transaction."""
    tracer = trace.get_tracer("observed.producer")
    with (
        tracer.start_as_current_span("request") as span,
        sentry_sdk.start_transaction(name="request", op="test") as transaction,
    ):
        async with app:
            good = await ok.push(1)
            bad = await boom.push()
            await asyncio.wait_for(good.wait(), 30)
            await asyncio.wait_for(bad.wait(), 30)
        return {
            "otel_trace_id": f"{span.get_span_context().trace_id:032x}",
            "sentry_trace_id": transaction.trace_id,
            "good": good.id,
            "bad": bad.id,
            "good_result": good.result(),
            "bad_status": bad.status.value,
        }


if __name__ == "__main__":
    observe("producer")
    result = asyncio.run(produce())
    sentry_sdk.flush()
    print(json.dumps(result))  # noqa: T201 - what the test reads
