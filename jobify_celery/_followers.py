"""Who follows which pending task id, and how long the results have been out of reach.

Pure bookkeeping for the result watchers (``_results``): no I/O, no clock of
its own (times are passed in), so it is tested without a server.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ("Follower", "Followers", "Outage")


class Follower(Protocol):
    """Something that waits for the states a worker stores for one task id."""

    def on_meta(self, meta: dict[str, Any]) -> bool:
        """Take a stored state (as decoded from JSON); ``True`` once no more is needed."""
        ...

    def on_lost(self, reason: str) -> None:
        """Hear that no state will reach this process any more, and why."""
        ...


class Followers:
    """The followers of each task id (several may follow one id)."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[str, list[Follower]] = {}

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_id

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def ids(self) -> list[str]:
        """Every task id followed, oldest first."""
        return list(self._by_id)

    def add(self, task_id: str, follower: Follower) -> None:
        """Follow ``task_id`` with one more follower."""
        self._by_id.setdefault(task_id, []).append(follower)

    def remove(self, task_id: str, follower: Follower) -> bool:
        """Drop one follower; tell whether nobody follows ``task_id`` any more."""
        followers = self._by_id.get(task_id)
        if followers is None:
            return False
        if follower in followers:
            followers.remove(follower)
        if followers:
            return False
        del self._by_id[task_id]
        return True

    def deliver(self, task_id: str, meta: dict[str, Any]) -> bool:
        """Hand ``meta`` to every follower; tell whether nobody follows ``task_id`` any more."""
        followers = self._by_id.get(task_id)
        if not followers:
            return False
        satisfied = [follower for follower in list(followers) if follower.on_meta(meta)]
        ended = False
        for follower in satisfied:
            ended = self.remove(task_id, follower) or ended
        return ended

    def lose_all(self, reason: str) -> int:
        """Drop every follower, telling each why; return how many task ids were dropped."""
        by_id, self._by_id = self._by_id, {}
        for followers in by_id.values():
            for follower in followers:
                follower.on_lost(reason)
        return len(by_id)


class Outage:
    """How long a watcher has been unable to read results, against its bound.

    ``bound`` is in seconds of the caller's clock (``None``: never give up).
    """

    __slots__ = ("_bound", "_since")

    def __init__(self, bound: float | None) -> None:
        self._bound = bound
        self._since: float | None = None

    @property
    def ongoing(self) -> bool:
        """Tell whether results are out of reach right now."""
        return self._since is not None

    def failed(self, now: float) -> None:
        """Note a failed attempt at ``now`` (the first one starts the outage)."""
        if self._since is None:
            self._since = now

    def recovered(self) -> None:
        """Note that results can be read again."""
        self._since = None

    def exceeded(self, now: float) -> bool:
        """Tell whether the outage has lasted longer than the bound."""
        since = self._since
        return since is not None and self._bound is not None and now - since > self._bound

    def describe(self, now: float) -> str:
        """Say for how long, in words a user reads in an error."""
        since = self._since if self._since is not None else now
        return f"has been unreachable for {now - since:.0f} s"
