"""Exceptions raised by the index package."""

from __future__ import annotations


class CatalogueError(Exception):
    """Base class of the errors this package raises on purpose."""


class FingerprintMismatch(CatalogueError, ValueError):
    """A saved index was built by a different model than the one asking to use it."""

    def __init__(self, path: str, found: str, expected: str) -> None:
        self.path, self.found, self.expected = path, found, expected
        super().__init__(
            f"the index at {path} was built by a different model: its fingerprint is "
            f"{found!r} but the loaded model's is {expected!r}. Vectors of different models "
            f"are not comparable; rebuild the index with the current model (or load the "
            f"checkpoint that built it)."
        )


class IndexFormatError(CatalogueError, ValueError):
    """A saved index is missing, incomplete, corrupt or of an unsupported format version."""


class ReadOnlyCatalogue(CatalogueError, RuntimeError):
    """A write was attempted on a catalogue loaded with ``mmap=True``."""


class CatalogueBusy(CatalogueError, RuntimeError):
    """The catalogue kept changing under one request (items deleted between looking them up and
    reading them) for every attempt: retry."""


class UnknownItem(CatalogueError, KeyError):
    """No item with this id in the catalogue."""

    def __init__(self, item_id: str) -> None:
        super().__init__(item_id)
        self.item_id = item_id

    def __str__(self) -> str:
        return f"no item {self.item_id!r} in the catalogue"
