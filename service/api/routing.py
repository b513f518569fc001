"""The routes of an app, included routers opened: what the rate limit (overload.py) and the list of
a path's methods for 405 answers (errors.py) both walk. Its own module so that neither of those two
imports the other."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from starlette.routing import BaseRoute, Route


def plain_routes(routes: Iterable[BaseRoute]) -> Iterator[Route]:
    """The routes of an app, included routers opened."""
    for route in routes:
        if isinstance(route, Route):
            yield route
        else:  # FastAPI >= 0.16x keeps an included router whole (its routers are included without prefix)
            inner = getattr(route, "original_router", None)
            if inner is not None:
                yield from plain_routes(inner.routes)
