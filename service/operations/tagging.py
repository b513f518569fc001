"""Tagging (every attribute's predicted value with its calibrated confidence, model/prototypes.py)
and explaining (an attribute's attention map and RoI box) an image or a catalogue item."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import numpy as np

from asen_search.model.encoder import Explanation
from asen_search.service.operations import images
from asen_search.service.operations.context import Service, Stages
from asen_search.service.operations.errors import ServiceError
from asen_search.service.operations.items import check_item_id

DECIMALS = 4


@dataclass(frozen=True)
class Tag:
    attribute: str
    value: str
    confidence: float
    probabilities: dict[str, float]


def _one_source(image: bytes | None, item_id: str | None) -> None:
    if (image is None) == (item_id is None):
        raise ServiceError("query_required", "send exactly one of `image` or `item_id`")


async def tag(service: Service, image: bytes | None, item_id: str | None, timer: Stages) -> list[Tag]:
    prototypes = service.encoder.prototypes
    if prototypes is None:
        raise ServiceError(
            "no_prototypes",
            "this model's checkpoint has no value prototypes, so it cannot tag "
            "(trained before they existed, or imported): add them with `asen prototypes --checkpoint "
            "CKPT --data DATASET`",
        )
    _one_source(image, item_id)
    if image is not None:
        vectors = await images.encode_all(service, await images.decode(service, image, timer), timer)
    else:
        catalogue, wanted = service.catalogue, check_item_id(str(item_id))
        vectors = await anyio.to_thread.run_sync(
            lambda: np.stack([catalogue.vector(wanted, a) for a in catalogue.attributes])
        )
    tags = []
    for attr, probs in zip(service.encoder.attributes, prototypes.value_probabilities(vectors).values()):
        best = int(np.argmax(probs))
        tags.append(
            Tag(
                attr.name,
                attr.values[best],
                round(float(probs[best]), DECIMALS),
                {v: round(float(p), DECIMALS) for v, p in zip(attr.values, probs)},
            )
        )
    return tags


async def explain(
    service: Service, attribute: str, image: bytes | None, item_id: str | None, timer: Stages
) -> tuple[Explanation, int, int]:
    """The attention map and RoI box, and the image's width and height."""
    attr = service.encoder.attribute_id(attribute)
    _one_source(image, item_id)
    if image is not None:
        picture = await images.decode(service, image, timer)
    else:
        picture = await images.stored_image(service, check_item_id(str(item_id)), timer)
    return await images.explain(service, picture, attr, timer), picture.width, picture.height
