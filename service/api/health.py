"""The catalogue's item count for `/readyz` and the `asen_catalogue_items` gauge, computed off the
event loop so that no operations endpoint ever waits for the catalogue engine there.

Counting asks the engine (a Milvus `count(*)`; a FAISS directory counts in memory). `CatalogueProbe`
counts in a worker thread of its own, ONE count at a time: requests that want a count while one is
running wait for that one (never a second thread on a stuck engine), each for at most `timeout_s`,
then give up (`/readyz` answers 503 `catalogue_unavailable`; so it does while the last count took
longer than `timeout_s`, a slow engine, until a count is in time again). A count is reused for `max_age_s`;
a write through this process (`WriteInvalidates`) makes the next reader count again, so a replica
reads its own writes at once. A background task (`run`, started by the app's lifespan) recounts
every `max_age_s`, which keeps the gauge fresh; `/metrics` only reads the last count and its age
(`asen_catalogue_items_age_seconds`) and never waits.

`/healthz` touches none of this: it answers from the event loop alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asen_search.index import Catalogue

logger = logging.getLogger("asen.service")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class CatalogueUnavailable(Exception):
    """The catalogue engine did not answer a count in time, or the count failed."""


@dataclass(frozen=True)
class _Outcome:
    """What one count gave: the number of items, or the error it raised, and how long it took."""

    generation: int
    started: float
    seconds: float
    items: int | None
    error: BaseException | None


class CatalogueProbe:
    """The catalogue's item count, computed in a worker thread, one count at a time, cached for
    `max_age_s`; every wait for it is bounded by `timeout_s`, and a count that took longer than
    that (a slow engine) does not make the service ready either. Used from the event loop only
    (the count's thread hands its result back to the loop)."""

    def __init__(
        self,
        catalogue: Catalogue,
        timeout_s: float,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalogue, self.timeout_s, self.max_age_s, self.clock = catalogue, timeout_s, max_age_s, clock
        self.items: int | None = None  # the last count
        self.counted_at: float | None = None  # when the last count started (clock)
        self.count_seconds = 0.0  # how long the last count took
        self.generation = 0  # bumped by each write: counts started before it are out of date
        self.counted_generation = -1
        self.failing: str | None = None  # why the engine is unavailable (logged once per outage)
        self._running: asyncio.Future[_Outcome] | None = None
        self._started = 0.0  # when the running count started (clock)

    def age(self) -> float:
        """Seconds since the last count started (inf before the first one)."""
        return math.inf if self.counted_at is None else max(0.0, self.clock() - self.counted_at)

    def last_items(self) -> float:
        """The last count for the gauge (NaN before the first one): never waits."""
        return math.nan if self.items is None else float(self.items)

    def invalidate(self) -> None:
        """A write happened: the next reader counts again (a count running now may predate it)."""
        self.generation += 1

    def _fresh(self) -> bool:
        return (
            self.items is not None
            and self.counted_generation == self.generation
            and self.age() <= self.max_age_s
        )

    async def count(self) -> int:
        """The item count: the cached one while fresh, else a new count (joining the one running).
        `CatalogueUnavailable` when the engine does not answer within `timeout_s`, took longer than
        that for the count in question, or the count fails."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while not self._fresh():
            running = self._running if self._running is not None else self._start(loop)
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                outcome = await asyncio.wait_for(asyncio.shield(running), remaining)
            except TimeoutError:
                raise CatalogueUnavailable(self._late()) from None
            if outcome.error is not None:
                raise CatalogueUnavailable(f"counting the catalogue's items failed: {outcome.error}")
            if outcome.generation == self.generation:  # else a write came after it started: count again
                break
        if self.count_seconds > self.timeout_s:
            raise CatalogueUnavailable(self._slow())
        assert self.items is not None
        return self.items

    def _late(self) -> str:
        why = (
            f"the catalogue engine did not answer within {self.timeout_s:g} s (counting its items; "
            f"that count has been running for {self.clock() - self._started:.1f} s)"
        )
        self._failing(why)
        if self.items is not None:
            why += f"; the last count, {self.items} items, is {self.age():.1f} s old"
        return why

    def _slow(self) -> str:
        return (
            f"the catalogue engine did not answer within {self.timeout_s:g} s: its last count of its items "
            f"took {self.count_seconds:.1f} s ({self.items} items, {self.age():.1f} s ago)"
        )

    def _failing(self, why: str) -> None:
        if self.failing is None:
            logger.warning("%s: /readyz answers 503 until it answers in time", why)
        self.failing = why

    def _start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[_Outcome]:
        """Start one count in a daemon thread (it may never return from a stuck engine; a daemon
        thread never keeps the process from exiting)."""
        running: asyncio.Future[_Outcome] = loop.create_future()
        generation, started = self.generation, self.clock()
        self._running, self._started = running, started

        def work() -> None:
            try:
                items = len(self.catalogue)
            except Exception as exc:  # noqa: BLE001 - reported to every waiter, and logged
                outcome = _Outcome(generation, started, self.clock() - started, None, exc)
            else:
                outcome = _Outcome(generation, started, self.clock() - started, items, None)
            try:
                loop.call_soon_threadsafe(self._settle, running, outcome)
            except RuntimeError:  # the loop is closed: the app has stopped
                pass

        threading.Thread(target=work, name="asen-catalogue-count", daemon=True).start()
        return running

    def _settle(self, running: asyncio.Future[_Outcome], outcome: _Outcome) -> None:
        """On the event loop: keep the count, wake its waiters."""
        if self._running is running:
            self._running = None
        if outcome.error is not None:
            self._failing(f"counting the catalogue's items failed: {outcome.error}")
        else:
            self.items, self.counted_at, self.counted_generation = (
                outcome.items,
                outcome.started,
                outcome.generation,
            )
            self.count_seconds = outcome.seconds
            if outcome.seconds > self.timeout_s:
                self._failing(self._slow())
            elif self.failing is not None:
                logger.info(
                    "the catalogue engine answers again: %d items in %.2f s (was: %s)",
                    outcome.items,
                    outcome.seconds,
                    self.failing,
                )
                self.failing = None
        if not running.done():
            running.set_result(outcome)

    async def run(self) -> None:
        """Recount every `max_age_s` in the background (until cancelled): keeps the gauge fresh."""
        while True:
            try:
                await self.count()
            except CatalogueUnavailable:
                pass  # logged once per outage; the running count (if any) fills the cache when it ends
            await asyncio.sleep(self.max_age_s)


class WriteInvalidates:
    """ASGI middleware: a write request (`POST`, `PUT`, `PATCH`, `DELETE` under `/items`) makes the
    app's catalogue probe count again, so `/readyz` right after a write through this process sees it."""

    def __init__(self, app: ASGIApp, prefix: str = "/items") -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in WRITE_METHODS
            or not scope["path"].startswith(self.prefix)
        ):
            await self.app(scope, receive, send)
            return

        def invalidate() -> None:
            probe = getattr(scope["app"].state, "catalogue_probe", None) if "app" in scope else None
            if probe is not None:
                probe.invalidate()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":  # the write is applied (or refused) by now
                invalidate()
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:  # a write still running in its thread after a 504 lands later: count again then too
            invalidate()
