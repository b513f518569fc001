"""Copy search over the service (design protection, docs/protection.md): the catalogue items that copy
a design, an uploaded image or a catalogue item, as a whole. Every attribute of the design is compared
at once; an item's copy score is the mean of its best `A - modified` attribute scores
(index/copies.py), so a copy that changes up to `modified` attributes still scores high.

The `top_k` best copies (a page at `offset`), or every item whose copy score reaches a threshold:
`min_score`, or `max_false_match_rate` translated through the copy calibration of the checkpoint
(model/copy_calibration.py, written by `asen train` or `asen calibrate-copies`). With a calibration
each hit names the attributes judged modified (those scoring below their calibrated line); without
one nothing is judged and the answer says so (`calibrated` false). Every refusal is a ServiceError with its code,
found before any image is decoded.

`verify` re-ranks the best `VERIFY_POOL` copies (of a top k, or of those passing a threshold: the
threshold chooses on the copy score, verification only orders) by geometric verification
(model/copy_verify.py): the design's picture (the uploaded image, or the item's stored one) against
each one's stored image, local features matched under one similarity transform. A verified hit's
`score` becomes its copy score plus `WEIGHT` x its verification; `copy_score` and `inliers` say what
it was made of (an item with no readable stored image keeps its copy score, `inliers` null). Deeper
copies follow the pool unverified, in copy-score order (never above a pool item: its verified score
is at least its copy score, which is at least theirs), so every page of one request is cut from the
same ranking.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import anyio
import numpy as np
from PIL import Image

from asen_search.copy_score import DEFAULT_MODIFIED
from asen_search.index import Filter
from asen_search.index.copies import CopyAnswer, CopyRule, search_copies
from asen_search.model.copy_calibration import CopyCalibration, NoCopyThreshold
from asen_search.model.copy_verify import TOP_K as VERIFY_POOL
from asen_search.model.copy_verify import LocalFeatures, local_features, verify_ranking
from asen_search.service.jobs.build import load_or_reason
from asen_search.service.jobs.item_images import IMAGE_KEY, stored_path
from asen_search.service.operations import images
from asen_search.service.operations.context import Service, Stages
from asen_search.service.operations.errors import ServiceError
from asen_search.service.operations.items import check_item_id
from asen_search.service.operations.searching import Selection, check_top_k, next_page, page_within_depth

CALIBRATE = (
    "`asen calibrate-copies --checkpoint CKPT --data DATASET` (writes CKPT-stem.copies.json beside it)"
)


@dataclass(frozen=True)
class Design:
    """The design: an image's bytes or a catalogue item (exactly one)."""

    image: bytes | None = None
    item_id: str | None = None


@dataclass(frozen=True)
class CopyOptions:
    top_k: int | None = None
    offset: int = 0
    filters: Filter = Filter()
    min_score: float | None = None
    max_false_match_rate: float | None = None
    max_results: int | None = None
    modified: int | None = None
    verify: bool = False


@dataclass(frozen=True)
class CopyThreshold:
    """A threshold copy search: every item whose copy score is at least `min_score` (given, or the
    score of `max_false_match_rate`), `max_results` a page; `false_match_rate`: the calibration's
    estimate at `min_score` (None where it does not apply)."""

    min_score: float
    max_false_match_rate: float | None
    false_match_rate: float | None
    max_results: int

    def describe(self) -> dict[str, Any]:
        return {
            "min_score": self.min_score,
            "max_false_match_rate": self.max_false_match_rate,
            "false_match_rate": self.false_match_rate,
            "max_results": self.max_results,
        }


@dataclass(frozen=True)
class CopyHit:
    id: str
    score: float
    scores: dict[str, float]
    modified: list[str]
    metadata: dict[str, Any] | None
    false_match_rate: float | None = None
    copy_score: float | None = None  # verified searches: the copy score before verification
    inliers: int | None = None  # verified searches: the verification's inliers (None: no stored image)


@dataclass(frozen=True)
class CopiesOutcome:
    hits: list[CopyHit]
    modified_allowed: int
    calibrated: bool
    threshold: CopyThreshold | None = None
    truncated: bool | None = None  # threshold searches: more items pass than this page holds
    total: int | None = None  # threshold searches: how many pass (None: not counted)
    next_offset: int | None = None
    verified: bool = False  # re-ranked by geometric verification


def check_modified(service: Service, modified: int | None) -> int:
    """How many attributes a copy may modify: as asked (0 to A-1), else the calibration's, else 2."""
    n = len(service.catalogue.attributes)
    calibration = service.encoder.copy_calibration
    if modified is None:
        modified = calibration.modified if calibration is not None else DEFAULT_MODIFIED
        return max(0, min(modified, n - 1))
    if not 0 <= modified <= n - 1:
        raise ServiceError(
            "modified_out_of_range",
            f"modified must be between 0 and {n - 1} (the catalogue has {n} "
            f"attributes; a copy keeps at least one), got {modified}",
        )
    return modified


def _rates(calibration: CopyCalibration | None, modified: int) -> CopyCalibration | None:
    """The calibration whose false-match rates apply to copy scores of `modified` (its own m)."""
    return calibration if calibration is not None and calibration.modified == modified else None


def read_threshold(service: Service, options: CopyOptions, modified: int) -> CopyThreshold | None:
    """The threshold of a request (None for a top-k one); a ServiceError naming the conflict or range."""
    if options.min_score is None and options.max_false_match_rate is None:
        if options.max_results is not None:
            raise ServiceError(
                "max_results_without_threshold",
                "max_results caps a threshold search: send min_score "
                "or max_false_match_rate with it (top_k sizes a top-k search)",
            )
        return None
    if options.min_score is not None and options.max_false_match_rate is not None:
        raise ServiceError("conflicting_threshold", "send min_score or max_false_match_rate, not both")
    if options.top_k is not None:
        raise ServiceError(
            "threshold_with_top_k",
            "a threshold search returns every copy above the threshold (up "
            "to max_results a page): send top_k or min_score/max_false_match_rate, not both",
        )
    limits = service.limits
    cap = limits.default_max_results if options.max_results is None else options.max_results
    if not 1 <= cap <= limits.max_results:
        raise ServiceError(
            "max_results_out_of_range", f"max_results must be between 1 and {limits.max_results}, got {cap}"
        )
    calibration = service.encoder.copy_calibration
    if options.min_score is not None:
        if not -1.0 <= options.min_score <= 1.0:
            raise ServiceError(
                "min_score_out_of_range",
                "a copy score is a mean of cosine similarities: min_score "
                f"must be in [-1, 1], got {options.min_score:g}",
            )
        rates = _rates(calibration, modified)
        return CopyThreshold(
            float(options.min_score), None, None if rates is None else rates.rate_at(options.min_score), cap
        )
    rate = options.max_false_match_rate
    assert rate is not None
    if not 0.0 <= rate <= 1.0:
        raise ServiceError(
            "max_false_match_rate_out_of_range",
            f"max_false_match_rate is a share of look-alike pairs, in [0, 1], got {rate:g}",
        )
    if calibration is None:
        raise ServiceError(
            "no_copy_calibration",
            "this model's copy scores were never calibrated, so "
            f"max_false_match_rate cannot be translated into a score: run {CALIBRATE}, or send "
            "min_score",
        )
    if calibration.modified != modified:
        raise ServiceError(
            "modified_not_calibrated",
            f"the copy calibration was made for modified="
            f"{calibration.modified}; a false-match rate means nothing for modified={modified}: send "
            f"modified={calibration.modified} (the default), min_score, or calibrate again with "
            f"--modified {modified}",
        )
    try:
        score = calibration.score_for_rate(rate)
    except NoCopyThreshold as exc:
        raise ServiceError("false_match_rate_unmeasurable", str(exc)) from None
    return CopyThreshold(score, rate, calibration.rate_at(score), cap)


def check_design(design: Design) -> Design:
    if (design.image is None) == (design.item_id is None):
        raise ServiceError(
            "query_required",
            "send the design: exactly one of `image` (a picture of it) or `item_id` (a catalogue item)",
        )
    return design if design.item_id is None else Design(None, check_item_id(design.item_id))


async def design_vectors(
    service: Service, design: Design, timer: Stages, picture: bool = False
) -> tuple[dict[str, np.ndarray], Image.Image | None]:
    """The design's vector under every attribute: an image encoded once for all of them, or the
    catalogue item's stored vectors (404 `unknown_item` when there is none); with `picture` also the
    design's picture (an item's stored image: 404 `no_image` when it has none)."""
    if design.image is not None:
        decoded = await images.decode(service, design.image, timer)
        encoded = await images.encode_all(service, decoded, timer)
        return dict(zip(service.encoder.attribute_names, encoded)), decoded
    catalogue, item_id = service.catalogue, str(design.item_id)
    vectors = await anyio.to_thread.run_sync(
        lambda: {a: catalogue.vector(item_id, a) for a in catalogue.attributes}
    )
    return vectors, (await images.stored_image(service, item_id, timer) if picture else None)


def _stored_features(service: Service, item_id: str) -> LocalFeatures | None:
    """The local features of an item's stored image; None where it has none or it cannot be read."""
    try:
        ref = stored_path(service.images_root, service.catalogue.get(item_id).metadata.get(IMAGE_KEY))
    except KeyError:  # removed since it was found
        return None
    picture = None if ref is None else load_or_reason(ref, service.limits.images)
    return None if picture is None or isinstance(picture, str) else local_features(picture)


def verify_hits(service: Service, picture: Image.Image, hits: list[CopyHit]) -> list[CopyHit]:
    """`hits` (best copy score first) with the first `VERIFY_POOL` re-ranked by geometric verification
    against the design's `picture` (model/copy_verify.py `verify_ranking`), the rest after them."""
    ranking = verify_ranking(
        [h.score for h in hits],
        local_features(picture),
        lambda p: _stored_features(service, hits[p].id),
        pool=VERIFY_POOL,
    )
    return [
        replace(hits[c.position], score=c.score, copy_score=c.copy_score, inliers=c.inliers) for c in ranking
    ]


async def find_copies(
    service: Service, design: Design, options: CopyOptions, selection: Selection, timer: Stages
) -> CopiesOutcome:
    """The copies of `design`: a page of the `top_k` best, or of those at or above a threshold."""
    design = check_design(design)
    modified = check_modified(service, options.modified)
    threshold = read_threshold(service, options, modified)
    page = page_within_depth(
        service,
        options.offset,
        check_top_k(service, options.top_k) if threshold is None else threshold.max_results,
    )
    queries, picture = await design_vectors(service, design, timer, picture=options.verify)
    calibration = service.encoder.copy_calibration
    catalogue = service.catalogue
    rule = CopyRule(
        tuple(catalogue.attributes), modified, {} if calibration is None else dict(calibration.changed_below)
    )
    exclude = [] if design.item_id is None else [design.item_id]
    # verify: the ranking from the top down to the page (at least the VERIFY_POOL verified), cut after
    start, size = (0, max(VERIFY_POOL, options.offset + page)) if options.verify else (options.offset, page)

    def run() -> tuple[CopyAnswer, dict[str, dict[str, Any] | None]]:
        if threshold is None:
            answer = search_copies(
                catalogue, queries, rule, top_k=size, offset=start, filters=options.filters, exclude=exclude
            )
        else:
            answer = search_copies(
                catalogue,
                queries,
                rule,
                min_score=threshold.min_score,
                max_results=size,
                offset=start,
                filters=options.filters,
                exclude=exclude,
            )
        return answer, _metadata(service, [h.id for h in answer.hits], selection)

    with timer.stage("search"):
        answer, metadata = await anyio.to_thread.run_sync(run)
    rates = _rates(calibration, modified)
    hits = [
        CopyHit(
            h.id,
            h.score,
            h.scores,
            h.modified,
            metadata[h.id],
            None if rates is None else rates.rate_at(h.score),
        )
        for h in answer.hits
        if h.id in metadata
    ]
    full, truncated = len(answer.hits) == page, answer.truncated
    if options.verify:
        assert picture is not None
        with timer.stage("verify"):
            ranked = await anyio.to_thread.run_sync(verify_hits, service, picture, hits)
        hits = ranked[options.offset : options.offset + page]
        full = len(hits) == page
        truncated = bool(answer.truncated) or len(ranked) > options.offset + page
    if threshold is None:
        return CopiesOutcome(
            hits,
            modified,
            calibration is not None,
            next_offset=next_page(service, options.offset, page, full),
            verified=options.verify,
        )
    return CopiesOutcome(
        hits,
        modified,
        calibration is not None,
        threshold,
        truncated,
        answer.total,
        next_page(service, options.offset, page, bool(truncated)),
        verified=options.verify,
    )


def _metadata(service: Service, ids: list[str], selection: Selection) -> dict[str, dict[str, Any] | None]:
    """Each hit's metadata as `selection` shows it; an item removed since it was scored is left out."""
    if not selection.include_metadata:
        return dict.fromkeys(ids)
    shown: dict[str, dict[str, Any] | None] = {}
    for item_id in ids:
        try:
            shown[item_id] = selection.apply(service.catalogue.get(item_id).metadata)
        except KeyError:
            continue
    return shown
