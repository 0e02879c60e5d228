"""Positions on the cron feed (pure); the feed itself runs on Redis in the integration tests."""

from __future__ import annotations

from jobify_celery._cron_feed import START, FeedPosition, after


def test_positions_compare_as_stream_ids() -> None:
    assert FeedPosition.parse(b"10-2") < FeedPosition.parse("10-3")
    assert FeedPosition.parse("9-99") < FeedPosition.parse("10-0")
    assert FeedPosition.parse("10-0") <= FeedPosition.parse("10-0")
    assert FeedPosition.parse("1-0") > START
    assert str(FeedPosition.parse("1796074458856-4")) == "1796074458856-4"


def test_a_read_starts_after_the_position() -> None:
    assert after(FeedPosition(5, 1)) == "(5-1"
