"""Run Jobify apps on Celery: producers publish, Celery workers execute.

The whole public API::

    from jobify_celery import JobifyCelery

    JobifyCelery(app, celery_app)   # bind once, in the module every role imports

Everything else lives in private modules.
"""

from importlib.metadata import PackageNotFoundError, version

from jobify_celery._bridge import JobifyCelery
from jobify_celery._errors import (
    AppBindingError,
    ArgumentLoadError,
    NoResultBackendError,
    PublishError,
    ResultLoadError,
    ResultUnavailableError,
    UnsupportedTriggerError,
)

try:
    __version__ = version("jobify-celery")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = (
    "AppBindingError",
    "ArgumentLoadError",
    "JobifyCelery",
    "NoResultBackendError",
    "PublishError",
    "ResultLoadError",
    "ResultUnavailableError",
    "UnsupportedTriggerError",
    "__version__",
)
