"""Which waiting publish of a job id may run (pure rules of ``_supersede``)."""

from __future__ import annotations

import pytest

from jobify_celery._supersede import Verdict, new_token, verdict

SECOND = 1_000_000_000
T0 = 1_800_000_000 * SECOND


def _cancel_at(moment_ns: int) -> str:
    return f"cancelled@{moment_ns:x}"


def test_tokens_start_with_their_time_and_differ() -> None:
    first, second = new_token(T0), new_token(T0)
    assert first != second
    assert first.startswith(f"{T0:x}.")


def test_a_message_with_no_record_or_its_own_record_runs() -> None:
    token = new_token(T0)
    assert verdict(token, None) is Verdict.RUN
    assert verdict(token, token) is Verdict.RUN


def test_a_replace_supersedes_the_earlier_publish_only() -> None:
    old, current, later = new_token(T0), new_token(T0 + SECOND), new_token(T0 + 2 * SECOND)
    assert verdict(old, current) is Verdict.REPLACED
    # The id used again for a new job after the replace: the new job runs.
    assert verdict(later, current) is Verdict.RUN


def test_a_cancel_supersedes_every_publish_made_before_it() -> None:
    first, replaced_by = new_token(T0), new_token(T0 + SECOND)
    record = _cancel_at(T0 + 2 * SECOND)
    assert verdict(first, record) is Verdict.CANCELLED
    assert verdict(replaced_by, record) is Verdict.CANCELLED
    assert verdict(new_token(T0 + 3 * SECOND), record) is Verdict.RUN


@pytest.mark.parametrize(
    ("token", "record", "expected"),
    [
        # Tokens without a time (older producers): any other record supersedes them.
        ("0123456789abcdef0123456789abcdef", new_token(T0), Verdict.REPLACED),
        ("0123456789abcdef0123456789abcdef", _cancel_at(T0), Verdict.CANCELLED),
        # An unreadable record still stops the message rather than running it twice.
        (new_token(T0), "cancelled@not-hex", Verdict.CANCELLED),
        (new_token(T0 + SECOND), "garbage", Verdict.REPLACED),
    ],
)
def test_what_cannot_be_ordered_is_superseded(token: str, record: str, expected: Verdict) -> None:
    assert verdict(token, record) is expected
