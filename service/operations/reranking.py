"""Reranking a given list of catalogue ids (for example a text search's results) by similarity to a
resolved query:

    score = weight * similarity + (1 - weight) * (1 - position / n)

`weight` 1 ranks by similarity alone; 0 keeps the submitted order. Ties keep the submitted order.
Ids not in the catalogue are reported, never silently dropped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from asen_search.index import Catalogue, CatalogueBusy, Part
from asen_search.service.jobs.item_images import public_metadata
from asen_search.service.operations.context import Service, Stages
from asen_search.service.operations.errors import ServiceError
from asen_search.service.operations.searching import Selection


@dataclass(frozen=True)
class Reranked:
    id: str
    similarity: float
    position: int
    score: float
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class RerankOutcome:
    hits: list[Reranked]
    unknown: list[str]
    duplicates: list[str]


def check_candidates(service: Service, candidates: Sequence[str]) -> tuple[list[str], list[str]]:
    """The candidates once each, in order, and those sent more than once."""
    if not candidates:
        raise ServiceError("empty_candidates", "send at least one `candidates` id")
    if len(candidates) > service.limits.max_candidates:
        raise ServiceError(
            "too_many_candidates",
            f"{len(candidates)} candidates; the limit is {service.limits.max_candidates}",
        )
    duplicates = sorted(c for c, count in Counter(candidates).items() if count > 1)
    return list(dict.fromkeys(candidates)), duplicates


async def rerank(
    service: Service,
    parts: list[Part],
    candidates: list[str],
    duplicates: list[str],
    weight: float,
    selection: Selection,
    timer: Stages,
) -> RerankOutcome:
    with timer.stage("search"):
        scores, metadata, unknown = await anyio.to_thread.run_sync(
            score_known, service.catalogue, parts, candidates
        )
    return RerankOutcome(
        rerank_scores(candidates, scores, {i: selection.apply(m) for i, m in metadata.items()}, weight),
        unknown,
        duplicates,
    )


def score_known(
    catalogue: Catalogue, parts: Sequence[Part], ids: Sequence[str], attempts: int = 5
) -> tuple[dict[str, float], dict[str, dict[str, Any]], list[str]]:
    """Similarities (the weighted sum over `parts`) and metadata of the ids present in the catalogue,
    and the ids that are not. Retries when a concurrent delete removes an id between the check and
    the lookup; CatalogueBusy after `attempts` such races."""
    for _ in range(attempts):
        known = [i for i in ids if i in catalogue]
        try:
            scores = dict.fromkeys(known, 0.0)
            for part in parts:
                if part.weight and known:
                    for item_id, score in catalogue.score_ids(part.vector, part.attribute, known).items():
                        scores[item_id] += part.weight * score
            metadata = {i: public_metadata(catalogue.get(i).metadata) for i in known}
        except KeyError:
            continue
        return scores, metadata, [i for i in ids if i not in scores]
    raise CatalogueBusy(f"the catalogue changed during the request {attempts} times; retry")


def rerank_scores(
    candidates: Sequence[str],
    scores: dict[str, float],
    metadata: dict[str, dict[str, Any] | None],
    weight: float,
) -> list[Reranked]:
    """The `candidates` that have a score, best first (the module's formula); `candidates` unique."""
    n = len(candidates)
    hits = [
        Reranked(c, scores[c], p, weight * scores[c] + (1.0 - weight) * (1.0 - p / n), metadata[c])
        for p, c in enumerate(candidates)
        if c in scores
    ]
    hits.sort(key=lambda h: (-h.score, h.position))
    return hits
