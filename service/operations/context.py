"""What the service layer works with: the loaded model and catalogue, the request limits, the model
queue (dynamic batching, bounded), where uploaded images go, and how a request's stages are timed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from asen_search.index import Catalogue
from asen_search.model.encoder import Encoder
from asen_search.model.image_input import ImageLimits

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """How much one request may ask (the service's settings)."""

    default_top_k: int = 10
    max_top_k: int = 100
    max_search_depth: int = 1000  # offset + top_k of a paged search, offset + page of a threshold search
    default_max_results: int = 100
    max_results: int = 1000
    max_candidates: int = 1000
    max_batch_items: int = 100
    images: ImageLimits = field(default_factory=ImageLimits)


class Stages(Protocol):
    """Times named stages of one request (decode, encode, search, persist)."""

    def stage(self, name: str) -> AbstractContextManager[None]: ...


class NoTiming:
    def stage(self, name: str) -> AbstractContextManager[None]:
        return nullcontext()


class ModelQueue(Protocol):
    """The bounded way to the model: `run` a call alone, or `run_batched` an (image, attributes)
    request with whatever else is waiting (service/api/overload.py InferenceQueue)."""

    async def run(self, work: Callable[[], T]) -> T: ...

    async def run_batched(self, item: Any) -> Any: ...


@dataclass
class Service:
    """The loaded service: one per app."""

    encoder: Encoder
    catalogue: Catalogue
    queue: ModelQueue
    limits: Limits = field(default_factory=Limits)
    images_root: Path | None = None  # where uploads go (None: not kept)
    write_lock: threading.Lock = field(default_factory=threading.Lock)  # with the pruning of uploads
    after_write: Callable[[], None] = lambda: None
