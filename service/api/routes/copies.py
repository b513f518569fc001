"""`POST /copies` (design protection): the catalogue items that copy a design, an image or a catalogue
item, over every attribute at once. Reads the request (JSON or a form), calls the service layer
(service/operations/copies.py), answers."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from asen_search.index import parse_filters
from asen_search.service.api.errors import responses_for
from asen_search.service.api.overload import MODEL, rate_limited
from asen_search.service.api.requests import COPIES, CopiesRequest, encode_cursor, start_offset
from asen_search.service.api.routes.common import body_doc, read, send_timing
from asen_search.service.api.schemas import CopiesResponse, CopyHit
from asen_search.service.api.state import ServiceStateDep
from asen_search.service.operations.checks import check_fields
from asen_search.service.operations.copies import CopyOptions, Design, find_copies
from asen_search.service.operations.items import check_user_filters, decode_base64
from asen_search.service.operations.searching import Selection

router = APIRouter(tags=["search"])

COPIES_CODES = (
    "invalid_form",
    "not_an_image",
    "empty_image",
    "invalid_base64",
    "unknown_item",
    "image_too_large",
    "too_many_pixels",
    "unsupported_format",
    "unsupported_media_type",
    "corrupt_image",
    "invalid_request",
    "invalid_json",
    "unknown_field",
    "query_required",
    "invalid_item_id",
    "top_k_out_of_range",
    "offset_out_of_range",
    "invalid_cursor",
    "invalid_filters",
    "max_results_without_threshold",
    "conflicting_threshold",
    "threshold_with_top_k",
    "no_image",
    "max_results_out_of_range",
    "min_score_out_of_range",
    "modified_out_of_range",
    "max_false_match_rate_out_of_range",
    "no_copy_calibration",
    "modified_not_calibrated",
    "false_match_rate_unmeasurable",
    "rate_limited",
    "not_ready",
    "overloaded",
    "busy",
)


@router.post(
    "/copies",
    response_model=CopiesResponse,
    responses=responses_for(COPIES_CODES),
    openapi_extra={**rate_limited(MODEL), **body_doc(COPIES)},
)
async def copies(state: ServiceStateDep, request: Request, response: Response) -> CopiesResponse:
    """The catalogue items that copy a design (`image` or a catalogue `item_id`, never returned itself)
    as a whole: every attribute compared at once, an item's copy score the mean of its best
    (attributes - `modified`) attribute scores, so a copy that changes up to `modified` attributes
    still scores high. The `top_k` best (a page: `offset` or `cursor`), or every item at or above a
    threshold (`min_score`, or `max_false_match_rate` with a copy calibration; `max_results` a page).
    Each hit gives every attribute's score and, with a calibration, the attributes judged modified.
    `verify` re-ranks the best copies by geometric verification of their stored pictures.
    JSON or a form (a file for the image)."""
    timer = state.timer()
    asked, body = await read(state, request, COPIES, CopiesRequest)
    image = body.files.get("image") if asked.image is None else decode_base64(asked.image, "image")
    offset = start_offset(asked.offset, asked.cursor, "copies")
    check_user_filters(asked.filters)
    options = CopyOptions(
        asked.top_k,
        offset,
        parse_filters(asked.filters),
        asked.min_score,
        asked.max_false_match_rate,
        asked.max_results,
        asked.modified,
        asked.verify,
    )
    selection = Selection(asked.include_metadata, check_fields(asked.fields))
    outcome = await find_copies(state.service, Design(image, asked.item_id), options, selection, timer)
    send_timing(response, timer)
    next_offset = outcome.next_offset
    return CopiesResponse(
        results=[
            CopyHit(
                id=h.id,
                score=h.score,
                scores=h.scores,
                modified=h.modified,
                false_match_rate=h.false_match_rate,
                metadata=h.metadata,
                copy_score=h.copy_score,
                inliers=h.inliers,
            )
            for h in outcome.hits
        ],
        modified_allowed=outcome.modified_allowed,
        calibrated=outcome.calibrated,
        verified=outcome.verified,
        offset=offset,
        next_cursor=None if next_offset is None else encode_cursor("copies", next_offset),
        threshold=None if outcome.threshold is None else outcome.threshold.describe(),
        truncated=outcome.truncated,
        total=outcome.total,
    )
