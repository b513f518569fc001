"""Service configuration: one pydantic-settings object, filled from `ASEN_*` environment variables
and, for `asen serve`, from command-line flags (flags win)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from asen_search.index.milvus import is_milvus
from asen_search.model.image_input import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_UPLOAD_BYTES, MIB


class Settings(BaseSettings):
    """Everything the HTTP service can be told; see docs/service.md for the environment names."""

    model_config = SettingsConfigDict(env_prefix="ASEN_", extra="ignore", frozen=True)

    checkpoint: Path = Field(description="model checkpoint file (ASEN_CHECKPOINT)")
    index: Path | str = Field(
        description="the catalogue: an index directory built by `asen index build`, or a "
        "Milvus collection, milvus://HOST:PORT/COLLECTION or milvus-lite:PATH.db[#COLLECTION] "
        "(ASEN_INDEX)"
    )
    images_dir: Path | None = Field(
        None,
        description="where uploaded item images are kept (default: the index "
        "directory; with Milvus, a folder every replica shares, else uploads are not "
        "kept)",
    )
    device: str = Field(
        "auto",
        description="where the model runs: auto (a CUDA GPU where torch sees one, else the "
        "CPU), cpu, cuda or cuda:N (ASEN_DEVICE)",
    )
    host: str = Field("127.0.0.1", description="bind address (beyond loopback, writes need api_key)")
    port: int = Field(8000, ge=0, le=65535, description="port")
    api_key: SecretStr | None = Field(
        None, description="when set, write endpoints need this X-API-Key header"
    )
    allow_open_writes: bool = Field(
        False,
        description="without api_key, accept writes from anyone even when "
        "`host` is not loopback (else they answer 403 writes_disabled) "
        "(ASEN_ALLOW_OPEN_WRITES)",
    )
    default_top_k: int = Field(10, ge=1, description="results of a search that sends no top_k")
    max_top_k: int = Field(100, ge=1, description="the largest top_k a search may ask")
    max_search_depth: int = Field(
        1000,
        ge=1,
        description="deepest a search pages to: a page reaching past it ends "
        "there; an offset at it or beyond is refused",
    )
    max_candidates: int = Field(1000, ge=1, description="most ids one /rerank request may send")
    max_batch_items: int = Field(100, ge=1, description="most items one POST /items:batch may write")
    default_max_results: int = Field(
        100,
        ge=1,
        description="threshold searches (min_score / min_precision): "
        "results returned when max_results is not sent",
    )
    max_results: int = Field(
        1000, ge=1, description="threshold searches: the largest max_results a request may ask"
    )
    max_upload_bytes: int = Field(DEFAULT_MAX_UPLOAD_BYTES, ge=1, description="largest accepted image file")
    max_form_overhead_bytes: int = Field(1 * MIB, ge=0, description="request bytes allowed beyond the image")
    max_image_pixels: int = Field(
        DEFAULT_MAX_IMAGE_PIXELS, ge=1, description="width x height above this is refused (413)"
    )
    runtime: Literal["auto", "torch", "openvino", "onnxruntime"] = Field(
        "auto",
        description="backbone inference runtime: auto (OpenVINO on a CPU when installed, else torch), torch, "
        "openvino or onnxruntime (ASEN_RUNTIME; docs/performance.md)",
    )
    inference_concurrency: int = Field(
        1,
        ge=1,
        description="model workers running forward passes at the same time "
        "(each batches the requests waiting for it)",
    )
    batch_max: int = Field(
        16,
        ge=1,
        description="most encode requests one forward pass takes (dynamic batching; 1 turns batching off)",
    )
    batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="longest a request waits for others to join its "
        "batch (0: a free worker takes whatever is waiting at once)",
    )
    max_queue: int = Field(
        64, ge=1, description="requests waiting for or in a forward pass; beyond it 503 with Retry-After"
    )
    queue_timeout_s: float = Field(10.0, gt=0, description="longest wait for a forward pass before 503")
    request_timeout_s: float = Field(60.0, gt=0, description="a request not answered by then gets 504")
    ready_timeout_s: float = Field(
        1.5,
        gt=0,
        description="longest /readyz waits for the catalogue engine to count its "
        "items before answering 503 catalogue_unavailable",
    )
    ready_cache_s: float = Field(
        5.0,
        gt=0,
        description="an item count is reused this long by /readyz and the "
        "asen_catalogue_items gauge (recounted in the background this often; a write through "
        "this process makes the next /readyz count again)",
    )
    rate_limit: float = Field(
        0.0,
        ge=0,
        description="requests per second per client on the routes that run the "
        "model (/search, /rerank, /explain, /tag, POST /items; 10 times as many for "
        "GET /images with `size`) (0: no limit); beyond it 429",
    )
    rate_burst: int = Field(
        20, ge=1, description="requests a client may send at once before rate_limit applies"
    )
    cors_origins: str = Field("", description="comma-separated origins allowed by CORS (empty: CORS off)")
    compact_log_bytes: int = Field(
        64 * MIB,
        ge=0,
        description="compact the write-ahead log into a snapshot once it holds this many bytes",
    )
    compact_interval_s: float = Field(
        300.0, gt=0, description="compact a non-empty write-ahead log at least this often"
    )
    ef_search: int | None = Field(
        None,
        ge=1,
        description="HNSW indexes: efSearch, the search breadth (FAISS's "
        "default is 16: recall@10 about 0.70 at 1M items, 0.986 at 256; docs/performance.md)",
    )
    nprobe: int | None = Field(
        None,
        ge=1,
        description="IVF indexes: inverted lists probed per search (FAISS's "
        "default is 1; docs/performance.md)",
    )
    mmap: bool = Field(
        False, description="memory-map the index vectors (read-only: write endpoints answer 409)"
    )
    log_level: str = Field("info", description="log level of the server (debug, info, warning, error)")

    @field_validator("index", mode="before")
    @classmethod
    def _path_unless_milvus(cls, value: object) -> object:
        """A Milvus location stays a string (a Path would fold its `//`); anything else is a directory."""
        return (
            value if is_milvus(value) else Path(str(value)) if isinstance(value, str | os.PathLike) else value
        )

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        """`ASEN_API_KEY=` (empty, as compose passes an unset variable) means no key."""
        return None if value is None or (isinstance(value, str) and not value.strip()) else value

    @field_validator("allow_open_writes", mode="before")
    @classmethod
    def _empty_is_false(cls, value: object) -> object:
        """`ASEN_ALLOW_OPEN_WRITES=` (empty, as compose passes an unset variable) means no."""
        return False if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _top_k_fits(self) -> Settings:
        if self.default_top_k > self.max_top_k:
            raise ValueError(f"default_top_k ({self.default_top_k}) exceeds max_top_k ({self.max_top_k})")
        if self.max_top_k > self.max_search_depth:
            raise ValueError(
                f"max_top_k ({self.max_top_k}) exceeds max_search_depth ({self.max_search_depth})"
            )
        if self.default_max_results > self.max_results:
            raise ValueError(
                f"default_max_results ({self.default_max_results}) exceeds max_results ({self.max_results})"
            )
        return self

    @property
    def milvus(self) -> bool:
        """The catalogue is a Milvus collection (else a FAISS index directory)."""
        return isinstance(self.index, str)

    @property
    def images_root(self) -> Path | None:
        """The folder uploaded images go under (`images/`), or None when they are not kept."""
        if self.images_dir is not None:
            return self.images_dir
        return None if isinstance(self.index, str) else self.index

    @property
    def max_request_bytes(self) -> int:
        """An image as a file, or as base64 in JSON (a third larger), and the fields besides it."""
        return -(-self.max_upload_bytes * 4 // 3) + self.max_form_overhead_bytes

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]
