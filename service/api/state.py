"""What a running app holds: the service layer's `Service` (model, catalogue, limits, model queue),
the settings, the metrics and the compactor; one per app, in `app.state.service_state`, reached by routes
through `ServiceStateDep`. The work itself is the service layer's (service/operations/)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from asen_search.index import Catalogue
from asen_search.model.encoder import Encoder
from asen_search.model.image_input import ImageLimits
from asen_search.service.api.compaction import Compactor
from asen_search.service.api.overload import InferenceQueue
from asen_search.service.api.prometheus import Metrics, StageTimer
from asen_search.service.api.settings import Settings
from asen_search.service.operations.context import Limits, Service
from asen_search.service.operations.errors import ServiceError


def limits_of(settings: Settings) -> Limits:
    return Limits(
        settings.default_top_k,
        settings.max_top_k,
        settings.max_search_depth,
        settings.default_max_results,
        settings.max_results,
        settings.max_candidates,
        settings.max_batch_items,
        ImageLimits(settings.max_upload_bytes, settings.max_image_pixels),
    )


@dataclass
class ServiceState:
    """The loaded app: one per app, in `app.state.service_state`."""

    settings: Settings
    service: Service
    metrics: Metrics
    queue: InferenceQueue
    compactor: Compactor

    @property
    def encoder(self) -> Encoder:
        return self.service.encoder

    @property
    def catalogue(self) -> Catalogue:
        return self.service.catalogue

    def timer(self) -> StageTimer:
        return StageTimer(self.metrics)


def get_service_state(request: Request) -> ServiceState:
    state = getattr(request.app.state, "service_state", None)
    if state is None:
        raise ServiceError("not_ready", "the model and index are still loading")
    return state


ServiceStateDep = Annotated[ServiceState, Depends(get_service_state)]
