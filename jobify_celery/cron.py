"""A croniter-backed ``cron_factory`` for Jobify apps.

Jobify parses cron strings with its own parser (7 fields = second..year,
6 fields = minute..year, 5 fields = minute..weekday). Teams used to
`croniter <https://pypi.org/project/croniter/>`_ syntax (seconds as a 6th
field at the end, ``L``, ``#``, hashed ``H``) can use it instead::

    from jobify_celery.cron import croniter_factory

    app = Jobify(cron_factory=croniter_factory)

The same string can mean different things to the two parsers:
``"* * * * * */2"`` is every two seconds to croniter, and every minute of
every second year to Jobify's default parser. Times are computed in the
zone of the ``now`` they are given (Jobify passes the app's ``tz``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from croniter import croniter

from jobify_celery._jobify import CronParser

__all__ = ("CroniterParser", "croniter_factory")

_HASHED: Final = "H"


class CroniterParser(CronParser):
    """Jobify's ``CronParser`` on top of croniter.

    Args:
        expression: a croniter expression.
        hash_id: what ``H`` fields hash (croniter's ``hash_id``); by default
            the expression itself, so one expression always lands on the same
            times.

    Raises:
        ValueError: when croniter does not accept the expression.

    """

    __slots__ = ("_expression", "_hash_id")

    def __init__(self, expression: str, hash_id: str | None = None) -> None:
        if not croniter.is_valid(expression, hash_id=hash_id or expression):
            msg = f"invalid croniter expression {expression!r}"
            raise ValueError(msg)
        self._expression = expression
        self._hash_id = hash_id or (expression if _HASHED in expression else None)

    def next_run(self, *, now: datetime) -> datetime:
        """Return the first time strictly after ``now``."""
        following: datetime = croniter(self._expression, now, hash_id=self._hash_id).get_next(
            datetime
        )
        return following


def croniter_factory(expression: str) -> CronParser:
    """Build a croniter parser for ``expression`` (Jobify's ``cron_factory``)."""
    return CroniterParser(expression)
