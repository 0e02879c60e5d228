"""The asyncio worker pool: many Jobify jobs in flight on one loop per worker process."""

from jobify_celery._aiopool._pool import AsyncioPool

__all__ = ("AsyncioPool",)
