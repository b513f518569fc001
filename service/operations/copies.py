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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import numpy as np

from asen_search.copy_score import DEFAULT_MODIFIED
from asen_search.index import Filter
from asen_search.index.copies import CopyAnswer, CopyRule, search_copies
from asen_search.model.copy_calibration import CopyCalibration, NoCopyThreshold
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


@dataclass(frozen=True)
class CopiesOutcome:
    hits: list[CopyHit]
    modified_allowed: int
    calibrated: bool
    threshold: CopyThreshold | None = None
    truncated: bool | None = None  # threshold searches: more items pass than this page holds
    total: int | None = None  # threshold searches: how many pass (None: not counted)
    next_offset: int | None = None


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


async def design_vectors(service: Service, design: Design, timer: Stages) -> dict[str, np.ndarray]:
    """The design's vector under every attribute: an image encoded once for all of them, or the
    catalogue item's stored vectors (404 `unknown_item` when there is none)."""
    if design.image is not None:
        picture = await images.decode(service, design.image, timer)
        encoded = await images.encode_all(service, picture, timer)
        return dict(zip(service.encoder.attribute_names, encoded))
    catalogue, item_id = service.catalogue, str(design.item_id)
    return await anyio.to_thread.run_sync(
        lambda: {a: catalogue.vector(item_id, a) for a in catalogue.attributes}
    )


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
    queries = await design_vectors(service, design, timer)
    calibration = service.encoder.copy_calibration
    catalogue = service.catalogue
    rule = CopyRule(
        tuple(catalogue.attributes), modified, {} if calibration is None else dict(calibration.changed_below)
    )
    exclude = [] if design.item_id is None else [design.item_id]

    def run() -> tuple[CopyAnswer, dict[str, dict[str, Any] | None]]:
        if threshold is None:
            answer = search_copies(
                catalogue,
                queries,
                rule,
                top_k=page,
                offset=options.offset,
                filters=options.filters,
                exclude=exclude,
            )
        else:
            answer = search_copies(
                catalogue,
                queries,
                rule,
                min_score=threshold.min_score,
                max_results=page,
                offset=options.offset,
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
    if threshold is None:
        return CopiesOutcome(
            hits,
            modified,
            calibration is not None,
            next_offset=next_page(service, options.offset, page, len(answer.hits) == page),
        )
    return CopiesOutcome(
        hits,
        modified,
        calibration is not None,
        threshold,
        answer.truncated,
        answer.total,
        next_page(service, options.offset, page, bool(answer.truncated)),
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
