"""Loading what the service serves: the model and its catalogue, checked to belong together (also
used by `asen check`, which reads only the index manifest)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from asen_search.index import Catalogue, DirectoryUnwritable, open_catalogue
from asen_search.index.milvus import MilvusUnavailable
from asen_search.model.encoder import Encoder

logger = logging.getLogger("asen.service")


class ResourceSettings(Protocol):
    """What loading reads of the service's settings: the API's `Settings` (service/api/settings.py)
    is one. Stated here, not imported, so that this module does not depend on the HTTP API."""

    @property
    def checkpoint(self) -> Path: ...
    @property
    def index(self) -> Path | str: ...
    @property
    def device(self) -> str: ...
    @property
    def runtime(self) -> str: ...
    @property
    def mmap(self) -> bool: ...
    @property
    def milvus(self) -> bool: ...
    @property
    def images_root(self) -> Path | None: ...
    @property
    def ef_search(self) -> int | None: ...
    @property
    def nprobe(self) -> int | None: ...


def load_resources(settings: ResourceSettings) -> tuple[Encoder, Catalogue]:
    """Load the model and its catalogue (`open_catalogue`, whatever the engine); ValueError when they
    do not belong together.

    An index directory, unless memory-mapped (read-only), is loaded as its one writer: the
    directory's lock is taken before anything is read and held until shutdown, so a second server
    or an offline compaction or build of the same directory is refused (DirectoryLocked, naming
    this process). A directory that cannot be written at all is loaded without the lock: searches
    work and writes answer 503. A Milvus collection takes a writer lease per write instead."""
    encoder = Encoder.from_checkpoint(settings.checkpoint, settings.device, settings.runtime)
    catalogue: Catalogue
    try:
        catalogue = open_catalogue(
            settings.index,
            encoder.fingerprint,
            writer=not settings.mmap and not settings.milvus,
            mmap=settings.mmap,
        )
    except DirectoryUnwritable as exc:
        logger.error("%s; writes will be refused", exc)
        catalogue = open_catalogue(settings.index, encoder.fingerprint)
        catalogue.refuse_writes(f"the index directory cannot be written: {exc}")
    except MilvusUnavailable as exc:
        raise ValueError(str(exc)) from None
    if settings.milvus and settings.images_root is None:
        logger.warning(
            "uploaded images are not kept (a Milvus catalogue and no ASEN_IMAGES_DIR): GET /images "
            "answers 404 for items added through the API"
        )
    _check_or_close(encoder, catalogue)
    try:
        apply_search_knobs(catalogue, settings)
    except ValueError:
        catalogue.close()
        raise
    return encoder, catalogue


def apply_search_knobs(catalogue: Catalogue, settings: ResourceSettings) -> None:
    """ASEN_EF_SEARCH / ASEN_NPROBE on the catalogue's approximate indexes (either engine); ValueError
    naming the setting where the index kind has no such knob."""
    if settings.ef_search is None and settings.nprobe is None:
        return
    try:
        catalogue.set_search_params(ef_search=settings.ef_search, nprobe=settings.nprobe)
    except ValueError as exc:
        raise ValueError(f"ASEN_EF_SEARCH / ASEN_NPROBE: {exc}") from None
    logger.info("search parameters: %s", catalogue.search_params())


def _check_or_close(encoder: Encoder, catalogue: Catalogue) -> None:
    try:
        check_compatible(encoder, catalogue)
    except ValueError:
        catalogue.close()
        raise


def check_compatible(encoder: Encoder, catalogue: Catalogue) -> None:
    if catalogue.attributes != encoder.attribute_names or catalogue.dim != encoder.dim:
        raise ValueError(
            f"the index has attributes {catalogue.attributes} of dim {catalogue.dim}; the model "
            f"has {encoder.attribute_names} of dim {encoder.dim}: rebuild the index with this model"
        )


def check_compatible_manifest(encoder: Encoder, manifest: dict[str, Any]) -> None:
    """The checks of loading, from an index's manifest alone: same model, attributes and dim."""
    if manifest["fingerprint"] != encoder.fingerprint:
        raise ValueError(
            f"the index at version {manifest['version']} was built by another model (fingerprint "
            f"{manifest['fingerprint'][:12]}, this checkpoint {encoder.fingerprint[:12]}): rebuild "
            "it with `asen index build`"
        )
    if manifest["attributes"] != encoder.attribute_names or manifest["dim"] != encoder.dim:
        raise ValueError(
            f"the index has attributes {manifest['attributes']} of dim {manifest['dim']}; the model "
            f"has {encoder.attribute_names} of dim {encoder.dim}: rebuild the index with this model"
        )
