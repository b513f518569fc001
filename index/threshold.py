"""Threshold ("everything at least this similar") searches on top of top-k searches.

Where no native range search serves (approximate indexes, Milvus, composed queries), the top-k search
is asked for more and more results (64, then 4x each time) until the last one falls below the
threshold, the catalogue has no more, or one more than the cap was read; the results at or above the
threshold are kept, best first. On an exact index that is exact; on an approximate one it is as good
as its top-k search at that k (measured: docs/protection.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .errors import InvalidInput
from .results import SearchResult

RANGE_FIRST = 64  # results asked for first
RANGE_GROWTH = 4


def check_threshold(min_score: float, max_results: int, low: float = -1.0, high: float = 1.0) -> None:
    """ValueError unless `min_score` is a finite number in [low, high] and `max_results` >= 1."""
    if (
        isinstance(min_score, bool)
        or not isinstance(min_score, int | float)
        or not math.isfinite(min_score)
        or not low <= min_score <= high
    ):
        raise InvalidInput(f"min_score must be a number in [{low:g}, {high:g}], got {min_score!r}")
    if isinstance(max_results, bool) or not isinstance(max_results, int) or max_results < 1:
        raise InvalidInput(f"max_results must be a positive integer, got {max_results!r}")


def grow_until_below(
    fetch: Callable[[int], list[SearchResult]],
    min_score: float,
    max_results: int,
    size: int,
    limit: int | None = None,
) -> tuple[list[SearchResult], bool]:
    """Every result of `fetch(k)` (the best k, best first) scoring at least `min_score`, at most
    `max_results` of them, and whether the cap cut the list. `size` bounds k (the catalogue's size);
    `limit` is the most one fetch may ask for (an engine's top-k limit; reaching it also counts as
    cut)."""
    k = RANGE_FIRST
    ceiling = min(max_results + 1, size) if limit is None else min(max_results + 1, size, limit)
    while True:
        want = max(1, min(k, ceiling))
        found = fetch(want)
        if len(found) < want or found[-1].score < min_score or want >= ceiling:
            break
        k *= RANGE_GROWTH
    kept = [hit for hit in found if hit.score >= min_score]
    hit_limit = limit is not None and want >= limit and len(kept) == want and want <= max_results
    return kept[:max_results], len(kept) > max_results or hit_limit
