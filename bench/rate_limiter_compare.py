"""Our per-client token buckets (service/api/overload.py) against the `limits` library that slowapi
uses, on what matters for a flood of distinct client addresses: memory held and time per check.

    .venv/bin/pip install limits      # slowapi's backend; not a dependency of this project
    .venv/bin/python bench/rate_limiter_compare.py --keys 200000
"""

from __future__ import annotations

import argparse
import gc
import resource
import time
import tracemalloc

from asen_search.service.api.overload import TokenBuckets


def measure(name: str, hit, keys: int) -> None:  # type: ignore[no-untyped-def]
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    for i in range(keys):
        hit(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    elapsed = time.perf_counter() - start
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(
        f"{name:48s} {1e6 * elapsed / keys:6.2f} us/check   {held / 2**20:7.1f} MiB held after {keys} clients"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=200_000)
    args = parser.parse_args()
    try:  # slowapi's backend: not a dependency of this project, measured here only
        from limits import parse
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
    except ImportError:
        raise SystemExit(
            "this comparison needs the `limits` package (slowapi's backend): .venv/bin/pip install limits"
        ) from None
    buckets = TokenBuckets(rate=5.0, burst=10)
    measure("token buckets (ours, 10k keys kept)", buckets.take, args.keys)
    limit = parse("10/2 second")  # the same average and burst as a moving window
    moving = MovingWindowRateLimiter(MemoryStorage())
    measure("limits moving window (slowapi's default)", lambda k: moving.hit(limit, k), args.keys)
    sliding = SlidingWindowCounterRateLimiter(MemoryStorage())
    measure("limits sliding window counter", lambda k: sliding.hit(limit, k), args.keys)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
