"""Celery beat for Jobify crons: ``jobify_celery.beat.JobifyScheduler``.

``JobifyCelery(app, celery_app)`` makes it the app's ``beat_scheduler``, so::

    celery -A mymodule:celery_app beat

fires every Jobify cron: those declared with ``@app.task(cron=...)`` and
those added at run time with ``schedule(...).cron(...)``, with Jobify's
semantics (seconds-level expressions from the app's ``cron_factory`` in its
``tz``, ``start_date``, ``max_runs``, ``max_failures``, misfire policies).
Plain Celery ``beat_schedule`` entries keep working beside them: this class
extends Celery's ``PersistentScheduler``.

The beat process starts the Jobify app (its lifespan included) to reach the
routes and the Jobify storage where schedules live. Use a storage every
producer and the beat share: the default SQLite file for one host, a
PostgreSQL-backed Jobify ``Storage`` for several. Several beats may run: a
lease in the Redis result backend lets one fire at a time (see
``_beat_lock``).
"""

from __future__ import annotations

from typing import Any

from celery.beat import PersistentScheduler

from jobify_celery._beat import BeatEngine
from jobify_celery._beat_lock import lock_for
from jobify_celery._beat_storage import install as install_beat_storage
from jobify_celery._bridge import beat_parts

__all__ = ("JobifyScheduler",)


class JobifyScheduler(PersistentScheduler):  # type: ignore[misc]
    """A Celery beat scheduler that also fires the bound Jobify app's crons."""

    _engine: BeatEngine | None = None

    def setup_schedule(self) -> None:
        """Set up Celery's own entries, then start the Jobify side."""
        super().setup_schedule()
        parts = beat_parts(self.app)
        self._engine = BeatEngine(
            app=parts.app,
            celery_app=self.app,
            codec=parts.codec,
            run=parts.run,
            submit=parts.submit,
            lock=lock_for(self.app),
            # Before the app starts: a storage that is away does not stop beat.
            storage=install_beat_storage(parts.app),
            sender=parts.sender,
            confirms=parts.confirms,
        )

    def tick(self, *args: Any, **kwargs: Any) -> float:  # noqa: ANN401
        """Run Celery's entries and Jobify's crons; sleep until the next due."""
        interval: float = super().tick(*args, **kwargs)
        engine = self._engine
        if engine is None:
            return interval
        return min(interval, engine.tick())

    def close(self) -> None:
        """Release the lease and stop the Jobify app, then close Celery's store."""
        engine, self._engine = self._engine, None
        try:
            if engine is not None:
                engine.close()
                beat_parts(self.app).stop()
        finally:
            super().close()

    @property
    def info(self) -> str:
        """What ``celery beat`` prints at start."""
        base: str = super().info
        return f"{base}\n    . jobify crons -> storage of the bound Jobify app"
