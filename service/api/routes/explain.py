"""`POST /explain`: why an image looks the way it does under one attribute (the attention map the
model uses and the region its local branch zooms into), for the web page's overlays and for clients."""
from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Response

from asen_search.service.api.overload import MODEL, rate_limited
from asen_search.service.api.params import AttributeField, ImageField, ItemIdField, blank_to_none, check_one_query
from asen_search.service.api.prometheus import StageTimer
from asen_search.service.api.schemas import ERROR_RESPONSES, ExplainResponse
from asen_search.service.api.state import RuntimeDep

router = APIRouter(tags=["search"])
DECIMALS = 4


@router.post("/explain", response_model=ExplainResponse, responses=ERROR_RESPONSES,
              openapi_extra=rate_limited(MODEL))
async def explain(runtime: RuntimeDep, response: Response, attribute: AttributeField, image: ImageField = None,
                  item_id: ItemIdField = None) -> ExplainResponse:
    """The attribute's attention map over an uploaded image or a catalogue item's stored image, and
    the RoI box, both in the image's own pixels (`image_box` places the map on the image)."""
    timer = StageTimer(runtime.metrics)
    attr = runtime.attribute_id(attribute)
    item_id = blank_to_none(item_id)
    check_one_query(image, item_id)
    if image is not None:
        picture = await runtime.decode(image, timer)
    else:
        assert item_id is not None
        picture = await runtime.item_image(item_id, timer)
    found = await runtime.explain(picture, attr, timer)
    response.headers["Server-Timing"] = timer.server_timing()
    attention = np.round(found.attention.astype(np.float64), DECIMALS)
    return ExplainResponse(attribute=attribute, attention=attention.tolist(), grid=attention.shape,
                           image_box=found.image_box, roi_box=found.roi_box, width=picture.width,
                           height=picture.height)
