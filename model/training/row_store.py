"""Fixed-size float16 rows in one file, appended in batches and read back by row number.

The training caches (backbone maps of every image, RoI-crop maps of every labelled pair) grow with the
dataset: 44 KB an image for the default global stem, so 6.6 GB for 150,000 images. A `RowFile` keeps
them on disk; `read(rows)` gathers one batch with `pread`, so the process holds only that batch and the
kernel's page cache (which it may drop, and which is not the process's memory) keeps the hot part.
When the whole file fits the memory budget, `load()` reads it once into a tensor instead: the fast
path of small datasets, as fast as an in-memory cache because it is one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

DTYPE = np.float16


def _as_rows(rows: torch.Tensor | np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows.cpu().numpy() if isinstance(rows, torch.Tensor) else rows, dtype=DTYPE)


class RowFile:
    """Rows of `shape` float16 values appended to `path` (created if missing)."""

    def __init__(self, path: Path, shape: Sequence[int]) -> None:
        self.path, self.shape = Path(path), tuple(int(s) for s in shape)
        self.row_bytes = int(np.prod(self.shape)) * np.dtype(DTYPE).itemsize
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def __len__(self) -> int:
        return os.fstat(self._fd).st_size // self.row_bytes

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def append(self, rows: torch.Tensor | np.ndarray) -> range:
        """Write `rows` `[n, *shape]` at the end; returns their row numbers. A torn earlier write (a
        file size that is not a whole number of rows) is cut first."""
        data = _as_rows(rows)
        assert data.shape[1:] == self.shape, (data.shape, self.shape)
        size = os.fstat(self._fd).st_size
        start = size // self.row_bytes
        if size % self.row_bytes:
            os.ftruncate(self._fd, start * self.row_bytes)
        os.pwrite(self._fd, data.tobytes(), start * self.row_bytes)
        return range(start, start + len(data))

    def write_at(self, row: int, rows: torch.Tensor | np.ndarray) -> None:
        """Overwrite (or extend to) rows `row ... row + n`."""
        os.pwrite(self._fd, _as_rows(rows).tobytes(), row * self.row_bytes)

    def sync(self) -> None:
        os.fsync(self._fd)

    def read(self, rows: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Rows `[n, *shape]` (float16), in the order asked (repeats allowed)."""
        index = np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(index), *self.shape), dtype=DTYPE)
        flat = out.reshape(len(index), -1).view(np.uint8)
        for i, row in enumerate(index.tolist()):
            data = os.pread(self._fd, self.row_bytes, row * self.row_bytes)
            if len(data) != self.row_bytes:
                raise IndexError(f"{self.path}: row {row} is past the end ({len(self)} rows)")
            flat[i] = np.frombuffer(data, dtype=np.uint8)
        return torch.from_numpy(out)

    def load(self, rows: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
        """Rows `rows` (default: all) read into one tensor."""
        if rows is not None:
            return self.read(rows)
        out = np.empty((len(self), *self.shape), dtype=DTYPE)
        view, done = memoryview(out.reshape(-1).view(np.uint8).data), 0
        while done < len(view):  # into the tensor's own memory: no second copy
            got = os.preadv(self._fd, [view[done:]], done)
            if got <= 0:
                raise OSError(f"{self.path}: short read")
            done += got
        return torch.from_numpy(out)


class Maps:
    """Backbone maps `[N, *shape]` addressed by image (or pair) number: a tensor in memory, or rows
    of a `RowFile` read per batch. Indexing (`maps[idx]`, a tensor of numbers or a slice) gives a
    float16 tensor either way."""

    def __init__(
        self, memory: torch.Tensor | None = None, file: RowFile | None = None, rows: np.ndarray | None = None
    ) -> None:
        assert (memory is None) != (file is None)
        self.memory, self.file = memory, file
        self.rows = rows if rows is not None else (None if file is None else np.arange(len(file)))

    @property
    def in_memory(self) -> bool:
        return self.memory is not None

    def __len__(self) -> int:
        if self.memory is not None:
            return len(self.memory)
        assert self.rows is not None
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        if self.memory is not None:
            return tuple(self.memory.shape[1:])
        assert self.file is not None
        return self.file.shape

    def __getitem__(self, index: torch.Tensor | np.ndarray | slice) -> torch.Tensor:
        if self.memory is not None:
            return self.memory[index]
        assert self.file is not None and self.rows is not None
        picked = (
            np.arange(len(self))[index]
            if isinstance(index, slice)
            else np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index, dtype=np.int64)
        )
        return self.file.read(self.rows[picked])
