"""The asyncio worker pool, for ``celery worker``: ``jobify_celery.pool:AsyncioPool``.

Pick it with ``JobifyCelery(app, celery_app, pool="asyncio")``, which sets
Celery's ``worker_pool`` setting so that::

    celery -A mymodule:celery_app worker -c 1000

runs up to 1,000 jobs at once on one event loop in one process (``-c`` keeps
Celery's meaning: jobs in flight; prefetch follows it). Or name the class
yourself: ``worker_pool = "jobify_celery.pool:AsyncioPool"``, or
``CELERY_CUSTOM_WORKER_POOL=jobify_celery.pool:AsyncioPool`` with
``-P custom``. Run one such worker per core (``celery multi``, or one
service per core) to use the machine.
"""

from jobify_celery._aiopool import AsyncioPool

__all__ = ("AsyncioPool",)
