"""Dynamic batching: concurrent requests for the model share one forward pass.

Requests queue in arrival order. A worker thread that becomes free takes every waiting encode
request (up to `max_batch`), waiting at most `max_wait_s` after the oldest one arrived for more to
join, and runs them as one batch. Under load the batch fills while the previous one runs, so
batching costs a lone request nothing beyond `max_wait_s` (0 by default, so nothing at all;
docs/performance.md compares the batched design with the unbatched one, not other defaults).

Each caller gets its own result, in order. When a batch fails (one request's image breaks the
forward pass), its requests are run again one by one, so only the request at fault gets the error.
Other model work (`submit_call`: an explanation) runs alone, in its turn.

Our own, not a library: the batching servers we looked at (Ray Serve's `@serve.batch`, Triton,
TorchServe) are whole serving stacks or need an actor runtime; this is one condition variable in
front of `Encoder.encode_requests` and keeps the service a single process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

I = TypeVar("I")  # noqa: E741  (a batch item)
O = TypeVar("O")  # noqa: E741  (its result)
T = TypeVar("T")
logger = logging.getLogger("asen.service")


@dataclass
class _Job:
    future: Future[Any]
    item: Any = None
    call: Callable[[], Any] | None = None  # solo work instead of a batch item
    arrived: float = field(default_factory=time.monotonic)


class Batcher(Generic[I, O]):
    """`workers` threads running `run_batch(items) -> results` (same length, same order) over
    batches of at most `max_batch` items."""

    def __init__(
        self,
        run_batch: Callable[[list[I]], Sequence[O]],
        workers: int = 1,
        max_batch: int = 16,
        max_wait_s: float = 0.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if workers < 1 or max_batch < 1 or max_wait_s < 0:
            raise ValueError("workers and max_batch must be >= 1 and max_wait_s >= 0")
        self.run_batch, self.workers, self.max_batch, self.max_wait_s = (
            run_batch,
            workers,
            max_batch,
            max_wait_s,
        )
        self.on_batch = on_batch
        self.mean_s = 0.1  # running mean of the model time per request (for Retry-After)
        self._pending: list[_Job] = []
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, item: I) -> Future[O]:
        """Queue one batch item; the future holds its result (or its own exception)."""
        return self._queue(_Job(Future(), item=item))

    def submit_call(self, call: Callable[[], T]) -> Future[T]:
        """Queue `call()` to run alone on a worker, in its turn."""
        return self._queue(_Job(Future(), call=call))

    def close(self) -> None:
        """Stop the workers once the queue is empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _queue(self, job: _Job) -> Future[Any]:
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._pending.append(job)
            while len(self._threads) < self.workers:
                thread = threading.Thread(
                    target=self._work, name=f"asen-infer-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._cond.notify()
        return job.future

    def _batchable(self) -> int:
        return sum(1 for job in self._pending if job.call is None)

    def _take(self) -> list[_Job]:
        """Under the lock: a solo call at the head of the queue alone, else up to max_batch items
        (calls queued behind them keep their place)."""
        if self._pending[0].call is not None:
            return [self._pending.pop(0)]
        taken = [job for job in self._pending if job.call is None][: self.max_batch]
        chosen = set(map(id, taken))
        self._pending = [job for job in self._pending if id(job) not in chosen]
        return taken

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                if self._pending[0].call is None and self.max_wait_s > 0:
                    deadline = self._pending[0].arrived + self.max_wait_s
                    while self._batchable() < self.max_batch and (left := deadline - time.monotonic()) > 0:
                        self._cond.wait(left)
                jobs = self._take()
            live = [job for job in jobs if job.future.set_running_or_notify_cancel()]  # drops abandoned ones
            if live:
                start = time.perf_counter()
                self._execute(live)
                seconds = time.perf_counter() - start
                self.mean_s = 0.9 * self.mean_s + 0.1 * seconds / len(live)
                if self.on_batch is not None and live[0].call is None:
                    self.on_batch(len(live), seconds)

    def _execute(self, jobs: list[_Job]) -> None:
        call = jobs[0].call
        if call is not None:
            _settle(jobs[0].future, call)
            return
        try:
            results = self.run_batch([job.item for job in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(jobs)} items")
        except Exception as exc:
            if len(jobs) == 1:
                jobs[0].future.set_exception(exc)
                return
            logger.info("a batch of %d failed; running its requests one by one", len(jobs))
            for job in jobs:  # each request gets its own result or its own error
                _settle(job.future, lambda job=job: self.run_batch([job.item])[0])  # type: ignore[misc]
            return
        for job, result in zip(jobs, results):
            job.future.set_result(result)


def _settle(future: Future[Any], call: Callable[[], Any]) -> None:
    try:
        future.set_result(call())
    except BaseException as exc:  # delivered to the caller, whatever it is
        future.set_exception(exc)
