"""`POST /tag`: the predicted value of every attribute for an image or a catalogue item, each with a
calibrated confidence (model/prototypes.py)."""
from __future__ import annotations

import anyio
import numpy as np
from fastapi import APIRouter, Response

from asen_search.service.api.errors import ApiError
from asen_search.service.api.overload import MODEL, rate_limited
from asen_search.service.api.params import ImageField, ItemIdField, blank_to_none, check_one_query
from asen_search.service.api.prometheus import StageTimer
from asen_search.service.api.schemas import ERROR_RESPONSES, Tag, TagResponse
from asen_search.service.api.state import RuntimeDep

router = APIRouter(tags=["search"])
DECIMALS = 4


@router.post("/tag", response_model=TagResponse, responses=ERROR_RESPONSES, openapi_extra=rate_limited(MODEL))
async def tag(runtime: RuntimeDep, response: Response, image: ImageField = None,
              item_id: ItemIdField = None) -> TagResponse:
    """Every attribute's most likely value with its confidence (calibrated on the validation split:
    a confidence of 0.9 is right about 90% of the time) and the probability of each value."""
    timer = StageTimer(runtime.metrics)
    prototypes = runtime.encoder.prototypes
    if prototypes is None:
        raise ApiError(422, "no_prototypes", "this model's checkpoint has no value prototypes, so it cannot tag "
                       "(trained before they existed, or imported): add them with `asen prototypes --checkpoint "
                       "CKPT --data DATASET`")
    item_id = blank_to_none(item_id)
    check_one_query(image, item_id)
    if image is not None:
        vectors = await runtime.encode(await runtime.decode(image, timer), None, timer)
    else:
        assert item_id is not None
        catalogue = runtime.catalogue
        vectors = await anyio.to_thread.run_sync(
            lambda: np.stack([catalogue.vector(item_id, a) for a in catalogue.attributes]))
    tags = []
    for attr, probs in zip(runtime.encoder.attributes, prototypes.value_probabilities(vectors).values()):
        best = int(np.argmax(probs))
        tags.append(Tag(attribute=attr.name, value=attr.values[best], confidence=round(float(probs[best]), DECIMALS),
                        probabilities={v: round(float(p), DECIMALS) for v, p in zip(attr.values, probs)}))
    response.headers["Server-Timing"] = timer.server_timing()
    return TagResponse(id=item_id, tags=tags)
