"""Followers and outages: the watchers' bookkeeping, without a server."""

from __future__ import annotations

from typing import Any

from jobify_celery._followers import Followers, Outage


class Recorder:
    def __init__(self, *, done_on: str | None = None) -> None:
        self.metas: list[dict[str, Any]] = []
        self.lost: list[str] = []
        self.done_on = done_on

    def on_meta(self, meta: dict[str, Any]) -> bool:
        self.metas.append(meta)
        return meta.get("status") == self.done_on

    def on_lost(self, reason: str) -> None:
        self.lost.append(reason)


def test_a_task_id_stays_followed_until_its_last_follower_is_satisfied() -> None:
    followers = Followers()
    early, late = Recorder(done_on="STARTED"), Recorder(done_on="SUCCESS")
    followers.add("t", early)
    followers.add("t", late)
    assert followers.deliver("t", {"status": "STARTED"}) is False
    assert "t" in followers
    assert followers.deliver("t", {"status": "SUCCESS"}) is True
    assert "t" not in followers
    assert early.metas == [{"status": "STARTED"}]
    assert late.metas == [{"status": "STARTED"}, {"status": "SUCCESS"}]


def test_removing_the_last_follower_ends_the_watch() -> None:
    followers = Followers()
    one, two = Recorder(), Recorder()
    followers.add("t", one)
    followers.add("t", two)
    assert followers.remove("t", one) is False
    assert followers.remove("t", two) is True
    assert followers.remove("t", two) is False
    assert not followers


def test_losing_everything_tells_each_follower_once_and_forgets_them() -> None:
    followers = Followers()
    a, b, c = Recorder(), Recorder(), Recorder()
    followers.add("x", a)
    followers.add("x", b)
    followers.add("y", c)
    assert followers.lose_all("backend down") == 2
    assert a.lost == b.lost == c.lost == ["backend down"]
    assert not followers
    assert followers.deliver("x", {"status": "SUCCESS"}) is False
    assert a.metas == []


def test_an_outage_is_exceeded_only_past_its_bound() -> None:
    outage = Outage(10.0)
    assert not outage.ongoing
    assert not outage.exceeded(100.0)
    outage.failed(100.0)
    outage.failed(105.0)  # a later failure does not restart the clock
    assert outage.ongoing
    assert not outage.exceeded(110.0)
    assert outage.exceeded(110.5)
    assert outage.describe(112.0) == "has been unreachable for 12 s"
    outage.recovered()
    assert not outage.ongoing
    assert not outage.exceeded(200.0)


def test_an_outage_without_a_bound_never_gives_up() -> None:
    outage = Outage(None)
    outage.failed(0.0)
    assert not outage.exceeded(1e9)
