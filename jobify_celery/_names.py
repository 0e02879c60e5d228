"""Full task names of a Jobify app's routes, nested routers included.

Jobify names a route ``module:qualname`` (or ``name=``), and gives the routes
of an included ``JobRouter`` their full name only when the app starts: the
router's prefix, a colon, the route's name, with nested routers joining
their prefixes with dots (``billing.refunds:shop.tasks:refund``). Celery
needs those names before the app starts, in every process, so this module
computes them the same way without touching the routers. Pure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = ("RouterLike", "route_table")


class RouterLike(Protocol):
    """The part of a Jobify router this module reads."""

    prefix: str

    @property
    def routes(self) -> Iterator[Any]:
        """The router's own routes."""
        ...

    @property
    def sub_routers(self) -> Any:  # noqa: ANN401
        """Routers included in this one."""
        ...


def route_table(root: RouterLike, *, started: bool) -> list[tuple[str, Any]]:
    """Return ``(full name, route)`` for every route reachable from ``root``.

    Once the app has started, Jobify has moved every route to the root under
    its full name and rewritten the routers' prefixes, so the root's own
    routes are the whole table then. The routers keep those same routes, so
    an app started before (and stopped) lists them at the root already:
    they are not walked again under the rewritten prefixes.
    """
    table = [(route.name, route) for route in root.routes]
    if started:
        return table
    at_root = {id(route) for _, route in table}
    for sub in _subs(root):
        table.extend(
            (name, route) for name, route in _walk(sub, sub.prefix) if id(route) not in at_root
        )
    return table


def _walk(router: RouterLike, prefix: str) -> Iterator[tuple[str, Any]]:
    head = f"{prefix}:" if prefix else ""
    for route in router.routes:
        yield f"{head}{route.name}", route
    for sub in _subs(router):
        suffix = f".{sub.prefix}" if sub.prefix else ""
        yield from _walk(sub, f"{prefix}{suffix}")


def _subs(router: RouterLike) -> Iterable[RouterLike]:
    subs: Iterable[RouterLike] = router.sub_routers
    return subs
