"""`POST /tag`: the predicted value of every attribute for an image or a catalogue item, each with a
calibrated confidence; and `POST /explain`: an attribute's attention map and RoI box."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request, Response

from asen_search.service.api.errors import responses_for
from asen_search.service.api.overload import MODEL, rate_limited
from asen_search.service.api.requests import EXPLAIN, TAG, ExplainRequest, TagRequest
from asen_search.service.api.routes.common import body_doc, read, send_timing
from asen_search.service.api.schemas import ExplainResponse, Tag, TagResponse
from asen_search.service.api.state import ServiceStateDep
from asen_search.service.operations import tagging
from asen_search.service.operations.items import decode_base64

router = APIRouter(tags=["search"])
DECIMALS = 4
IMAGE_CODES = (
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
    "rate_limited",
    "not_ready",
    "overloaded",
)


@router.post(
    "/tag",
    response_model=TagResponse,
    responses=responses_for((*IMAGE_CODES, "no_prototypes")),
    openapi_extra={**rate_limited(MODEL), **body_doc(TAG)},
)
async def tag(state: ServiceStateDep, request: Request, response: Response) -> TagResponse:
    """Every attribute's most likely value with its confidence (calibrated on the validation split:
    a confidence of 0.9 is right about 90% of the time) and the probability of each value."""
    timer = state.timer()
    asked, body = await read(state, request, TAG, TagRequest)
    image = body.files.get("image") if asked.image is None else decode_base64(asked.image, "image")
    tags = await tagging.tag(state.service, image, asked.item_id, timer)
    send_timing(response, timer)
    return TagResponse(
        id=asked.item_id,
        tags=[
            Tag(attribute=t.attribute, value=t.value, confidence=t.confidence, probabilities=t.probabilities)
            for t in tags
        ],
    )


@router.post(
    "/explain",
    response_model=ExplainResponse,
    responses=responses_for((*IMAGE_CODES, "unknown_attribute", "no_image")),
    openapi_extra={**rate_limited(MODEL), **body_doc(EXPLAIN)},
)
async def explain(state: ServiceStateDep, request: Request, response: Response) -> ExplainResponse:
    """The attribute's attention map over an image or a catalogue item's stored image, and the RoI
    box, both in the image's own pixels (`image_box` places the map on the image)."""
    timer = state.timer()
    asked, body = await read(state, request, EXPLAIN, ExplainRequest)
    image = body.files.get("image") if asked.image is None else decode_base64(asked.image, "image")
    found, width, height = await tagging.explain(state.service, asked.attribute, image, asked.item_id, timer)
    send_timing(response, timer)
    attention = np.round(found.attention.astype(np.float64), DECIMALS)
    return ExplainResponse(
        attribute=asked.attribute,
        attention=attention.tolist(),
        grid=list(attention.shape),
        image_box=list(found.image_box),
        roi_box=None if found.roi_box is None else list(found.roi_box),
        width=width,
        height=height,
    )
