"""Route options: checked when a route is declared, mapped to Celery task options.

Pure functions. A route's Jobify options (``retry``, ``timeout``, ...) are
validated here, and turned into the attributes of the Celery task that stands
for it: Jobify tasks acknowledge late and are redelivered when the process
running them dies (at-least-once), a ``timeout`` also sets Celery's hard time
limit a little later, and ``metadata={"celery": {...}}`` sets, per route,
any of :data:`CELERY_TASK_OPTIONS`: the routing ones (:data:`PUBLISH_OPTIONS`)
are passed to ``apply_async`` on every push, the others become attributes of
the Celery task.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from jobify import Cron, SmartRetry

__all__ = (
    "CELERY_TASK_OPTIONS",
    "PUBLISH_OPTIONS",
    "TIME_LIMIT_GRACE",
    "celery_task_options",
    "is_positive_seconds",
    "publish_options_of",
    "retry_policy",
    "validate_route_options",
)

#: Celery task attributes a route may set through ``metadata={"celery": {...}}``.
CELERY_TASK_OPTIONS: Final = frozenset(
    {
        "acks_late",
        "reject_on_worker_lost",
        "acks_on_failure_or_timeout",
        "ignore_result",
        "store_errors_even_if_ignored",
        "track_started",
        "time_limit",
        "soft_time_limit",
        "rate_limit",
        "expires",
        "priority",
        "queue",
        "exchange",
        "routing_key",
    }
)

#: Options that travel with each publish rather than on the task class
#: (Celery deprecates the ``queue`` task attribute in favour of routing).
PUBLISH_OPTIONS: Final = frozenset({"queue", "exchange", "routing_key", "priority", "expires"})

#: Seconds between a route's ``timeout`` and the hard time limit Celery enforces.
TIME_LIMIT_GRACE: Final = 1.0


def retry_policy(options: Mapping[str, Any]) -> SmartRetry | None:
    """Return the route's retry policy (``retry=N`` means ``SmartRetry(N)``)."""
    retry = options.get("retry")
    if isinstance(retry, SmartRetry):
        return retry
    if isinstance(retry, int) and not isinstance(retry, bool):
        return SmartRetry(retries=retry)
    return None


def validate_route_options(
    name: str,
    func: Callable[..., Any],
    options: Mapping[str, Any],
    *,
    cron_factory: Callable[[str], Any],
) -> None:
    """Raise ``ValueError`` (``TypeError``) naming the route and the option that cannot work."""
    cron = options.get("cron")
    if cron is not None:
        _check_cron(name, func, cron, cron_factory)
    retry = options.get("retry")
    if retry is not None:
        _check_retry(name, retry)
    timeout = options.get("timeout")
    if timeout is not None and not is_positive_seconds(timeout):
        msg = f"route {name!r}: timeout must be a positive number of seconds, got {timeout!r}"
        raise ValueError(msg)
    metadata = options.get("metadata") or {}
    celery = metadata.get("celery") if isinstance(metadata, Mapping) else None
    if celery is not None:
        if not isinstance(celery, Mapping):
            msg = f"route {name!r}: metadata['celery'] must be a mapping of task options"
            raise ValueError(msg)
        unknown = sorted(set(celery) - CELERY_TASK_OPTIONS)
        if unknown:
            msg = (
                f"route {name!r}: metadata['celery'] has unknown option(s) {unknown}; "
                f"known: {sorted(CELERY_TASK_OPTIONS)}"
            )
            raise ValueError(msg)


def is_positive_seconds(value: object) -> bool:
    """Tell whether ``value`` is a finite, positive number of seconds (not a bool)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value > 0
    )


def _check_cron(
    name: str,
    func: Callable[..., Any],
    cron: Any,  # noqa: ANN401
    cron_factory: Callable[[str], Any],
) -> None:
    if isinstance(cron, str):
        cron = Cron(cron)
    if not isinstance(cron, Cron):
        msg = f"route {name!r}: cron must be a string or a jobify.Cron, got {cron!r}"
        raise TypeError(msg)
    try:
        cron_factory(cron.expression)
    except Exception as exc:
        msg = f"route {name!r}: invalid cron expression {cron.expression!r}: {exc}"
        raise ValueError(msg) from exc
    try:
        inspect.signature(func).bind(*cron.args, **cron.kwargs)
    except TypeError as exc:
        msg = f"route {name!r}: the cron's args/kwargs do not fit the function: {exc}"
        raise ValueError(msg) from None


def _check_retry(name: str, retry: Any) -> None:  # noqa: ANN401
    if isinstance(retry, bool) or not isinstance(retry, (int, SmartRetry)):
        msg = f"route {name!r}: retry must be an int or a SmartRetry, got {retry!r}"
        raise TypeError(msg)
    policy = retry if isinstance(retry, SmartRetry) else SmartRetry(retries=retry)
    problems = []
    if policy.retries < 0:
        problems.append(f"retries={policy.retries} is negative")
    if policy.initial_delay < 0:
        problems.append(f"initial_delay={policy.initial_delay} is negative")
    if policy.max_delay < 0:
        problems.append(f"max_delay={policy.max_delay} is negative")
    if policy.backoff_factor <= 0:
        problems.append(f"backoff_factor={policy.backoff_factor} is not positive")
    if problems:
        msg = f"route {name!r}: invalid retry policy: {', '.join(problems)}"
        raise ValueError(msg)


def celery_task_options(
    options: Mapping[str, Any], kept: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the Celery task attributes for a route's options.

    ``kept`` are the options of a wrapped Celery task: they replace the
    defaults, and the route's own options replace them.
    """
    task_options: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True}
    task_options.update((k, v) for k, v in (kept or {}).items() if k not in PUBLISH_OPTIONS)
    timeout = options.get("timeout")
    if timeout is not None:
        task_options["time_limit"] = float(timeout) + TIME_LIMIT_GRACE
    task_options.update(
        (key, value)
        for key, value in _celery_metadata(options).items()
        if key not in PUBLISH_OPTIONS
    )
    return task_options


def publish_options_of(
    options: Mapping[str, Any], kept: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the ``apply_async`` options a route sets for each of its publishes.

    A wrapped Celery task's routing attributes (``kept``) come first: they
    move from the task class to its publishes (Celery deprecates them there).
    """
    merged = {**(kept or {}), **_celery_metadata(options)}
    return {k: v for k, v in merged.items() if k in PUBLISH_OPTIONS}


def _celery_metadata(options: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = options.get("metadata") or {}
    celery = metadata.get("celery") if isinstance(metadata, Mapping) else None
    return celery if isinstance(celery, Mapping) else {}
