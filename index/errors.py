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


class InvalidInput(CatalogueError, ValueError):
    """A value sent to the catalogue that no engine may store or use, refused before any engine sees
    it (the same refusal on every engine); ``code`` names the kind of input."""

    code = "invalid_input"


class InvalidItemId(InvalidInput, TypeError):
    """An item id that is not a non-empty string of printable characters within the length limit."""

    code = "invalid_item_id"


class InvalidMetadata(InvalidInput):
    """Metadata that is not a JSON object within the limits (depth, size, numbers, text)."""

    code = "invalid_metadata"


class InvalidFilters(InvalidInput):
    """A filter the catalogue's filter language does not have (index/filters.py)."""

    code = "invalid_filters"


class InvalidVectors(InvalidInput):
    """Vectors or query vectors of the wrong shape, type or with non-finite values."""

    code = "invalid_vectors"


class UnknownAttribute(InvalidInput, KeyError):
    """An attribute name the catalogue does not have."""

    code = "unknown_attribute"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown attribute"


class ItemExists(CatalogueError, ValueError):
    """An add (add-if-absent) of an id already in the catalogue: nothing was written."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        super().__init__(f"{len(ids)} ids already in the catalogue (use upsert to replace): {ids[:5]}")


class CatalogueExists(CatalogueError, RuntimeError):
    """A save, build or copy would replace a catalogue that holds writes it has not seen."""
