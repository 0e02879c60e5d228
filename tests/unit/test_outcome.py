"""Stored Celery metas into Jobify outcomes."""

from __future__ import annotations

from jobify import JobStatus
from jobify.exceptions import JobTimeoutError

from jobify_celery._errors import RemoteJobTimeoutError
from jobify_celery._outcome import exception_from_stored, read_meta


class NeedsTwo(Exception):
    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}-{b}")


def test_success_started_revoked_and_waiting() -> None:
    assert read_meta({"status": "SUCCESS", "result": {"x": 1}}).value == {"x": 1}
    assert read_meta({"status": "SUCCESS", "result": 1}).status is JobStatus.SUCCESS
    started = read_meta({"status": "STARTED"})
    assert (started.status, started.done) == (JobStatus.RUNNING, False)
    assert read_meta({"status": "REVOKED"}).status is JobStatus.CANCELLED
    assert read_meta({"status": "PENDING"}).done is False
    assert read_meta({"status": "RETRY"}).done is False
    assert read_meta(None).done is False


def test_failure_keeps_type_and_message() -> None:
    outcome = read_meta(
        {
            "status": "FAILURE",
            "result": {
                "exc_type": "LookupError",
                "exc_module": "builtins",
                "exc_message": ["gone"],
            },
        }
    )
    assert outcome.status is JobStatus.FAILED
    assert type(outcome.error) is LookupError
    assert str(outcome.error) == "gone"


def test_timeouts_are_recognised_whatever_their_constructor() -> None:
    remote = RemoteJobTimeoutError("j1", 0.5)
    stored = {
        "exc_type": "RemoteJobTimeoutError",
        "exc_module": "jobify_celery._errors",
        "exc_message": list(remote.args),
    }
    outcome = read_meta({"status": "FAILURE", "result": stored})
    assert outcome.status is JobStatus.TIMEOUT
    assert isinstance(outcome.error, JobTimeoutError)
    assert str(outcome.error) == str(remote)
    plain = {
        "exc_type": "JobTimeoutError",
        "exc_module": "jobify._internal.exceptions",
        "exc_message": ["late"],
    }
    error = exception_from_stored(plain)
    assert type(error) is JobTimeoutError
    assert str(error) == "late"


def test_constructor_mismatch_keeps_the_type() -> None:
    stored = {"exc_type": "NeedsTwo", "exc_module": __name__, "exc_message": ["only-one"]}
    error = exception_from_stored(stored)
    assert type(error) is NeedsTwo
    assert error.args == ("only-one",)


def test_unknown_or_hostile_classes_are_recreated_by_name_only() -> None:
    unknown = exception_from_stored(
        {"exc_type": "Gone", "exc_module": "not.imported", "exc_message": ["m"]}
    )
    assert type(unknown).__name__ == "Gone"
    assert str(unknown) == "m"
    hostile = exception_from_stored(
        {"exc_type": "system", "exc_module": "os", "exc_message": ["echo hi"]}
    )
    assert isinstance(hostile, Exception)
    assert type(hostile).__name__ == "system"
    assert isinstance(exception_from_stored("junk"), RuntimeError)
