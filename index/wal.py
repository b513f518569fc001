"""Write-ahead log: every catalogue write since the committed snapshot, appended and fsynced
before the write is applied (and, in the service, before it is acknowledged).

One log file per snapshot version, beside it in the save root::

    root/CURRENT              "v000007"
    root/v000007/             the snapshot
    root/wal-v000007.log      the writes made after v000007 was committed

Loading a catalogue reads the snapshot named by ``CURRENT`` and replays ``wal-<CURRENT>.log``.
Compaction (``CatalogueIndex.checkpoint``) commits a new snapshot ``v000008`` holding everything,
then starts ``wal-v000008.log`` and deletes the old log. A crash before ``CURRENT`` moves leaves
the old snapshot and its complete log; a crash after it leaves the new snapshot, whose log is
empty or absent. Logs of other versions are stale and removed.

A record is one ``write(2)`` of a frame::

    b"AWL1" | u32 length | u32 crc32(payload) | payload
    payload = u32 header length | JSON header | float32 vectors (C order)

followed by ``fsync``. Replay stops at the first incomplete or corrupt frame: that is a write
that was never acknowledged (killed mid-append); opening the log for writing cuts it off.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CatalogueError, IndexFormatError
from .store import fsync_path

MAGIC = b"AWL1"
_FRAME = struct.Struct("<4sII")
_HEADER_LEN = struct.Struct("<I")
_LOG_RE = re.compile(r"^wal-(v\d{6,})\.log$")
MAX_RECORD_BYTES = 1 << 30
logger = logging.getLogger(__name__)

# Errors that mean "the disk is full" rather than "the disk is broken or not writable".
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class LogUnavailable(CatalogueError):
    """The write-ahead log cannot take writes (it could not be opened, or a failed append could
    not be undone); writes are refused until a checkpoint starts a fresh log."""


@dataclass(frozen=True)
class LogRecord:
    """One logged write: ``op`` is "upsert" (``ids``, ``vectors`` [n, n_attributes, dim],
    ``metadata``) or "remove" (``ids``)."""

    op: str
    ids: list[str]
    vectors: np.ndarray | None = None
    metadata: list[dict[str, Any]] = field(default_factory=list)

    def encode(self) -> bytes:
        header: dict[str, Any] = {"op": self.op, "ids": self.ids}
        body = b""
        if self.vectors is not None:
            vectors = np.ascontiguousarray(self.vectors, dtype="<f4")
            header["shape"] = list(vectors.shape)
            header["metadata"] = self.metadata
            body = vectors.tobytes()
        head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        payload = _HEADER_LEN.pack(len(head)) + head + body
        return _FRAME.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload

    @classmethod
    def decode(cls, payload: bytes) -> LogRecord:
        (head_len,) = _HEADER_LEN.unpack_from(payload)
        header = json.loads(payload[_HEADER_LEN.size:_HEADER_LEN.size + head_len].decode("utf-8"))
        if header.get("op") not in ("upsert", "remove") or not isinstance(header.get("ids"), list):
            raise ValueError(f"unknown log record {header.get('op')!r}")
        if header["op"] == "remove":
            return cls("remove", header["ids"])
        body = payload[_HEADER_LEN.size + head_len:]
        vectors = np.frombuffer(body, dtype="<f4").reshape(header["shape"]).astype(np.float32)
        return cls("upsert", header["ids"], vectors, header["metadata"])


def log_path(root: Path, version: str) -> Path:
    return root / f"wal-{version}.log"


def read_log(path: Path) -> tuple[list[LogRecord], int, int]:
    """The complete records of a log, the byte offset where they end and the file's size (more
    than the offset when the last append was cut off). A missing file is an empty log."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0, 0
    records, offset = [], 0
    while offset + _FRAME.size <= len(data):
        magic, length, crc = _FRAME.unpack_from(data, offset)
        start, end = offset + _FRAME.size, offset + _FRAME.size + length
        if magic != MAGIC or length > MAX_RECORD_BYTES or end > len(data):
            break
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            break
        try:
            records.append(LogRecord.decode(payload))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise IndexFormatError(f"{path}: record at byte {offset} has a valid checksum but cannot be read: "
                                   f"{exc}") from None
        offset = end
    return records, offset, len(data)


class WriteAheadLog:
    """The open log of one snapshot version. ``append`` returns only once the record is on disk;
    if it fails, the file is cut back to where it was, so a failed write leaves no trace."""

    def __init__(self, root: Path, version: str) -> None:
        """Open (creating if needed) ``wal-<version>.log`` under ``root`` for appending, cutting
        off a torn last record. Raises OSError when the directory is not writable."""
        self.root, self.version = Path(root), version
        self.path = log_path(self.root, version)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._lock = threading.Lock()
        self._broken: str | None = None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise LogUnavailable(f"{self.path} is open for writing in another process: one writer per index "
                                 "directory") from None
        try:
            _, end, size = read_log(self.path)  # under the lock: no other writer can append meanwhile
            if size > end:
                logger.warning("%s: cutting off %d bytes of a write that was never acknowledged", self.path,
                               size - end)
                os.ftruncate(self._fd, end)
            os.fsync(self._fd)
            fsync_path(self.root)
        except BaseException:  # OSError, or IndexFormatError from a record that cannot be read
            os.close(self._fd)
            raise
        self._size = end

    @property
    def size(self) -> int:
        """Bytes of acknowledged records in the log."""
        return self._size

    @property
    def broken(self) -> str | None:
        return self._broken

    def append(self, record: LogRecord) -> None:
        """Write and fsync one record. OSError (disk full, I/O error) if it could not be made
        durable, after cutting the file back; LogUnavailable if even that failed earlier."""
        frame = record.encode()
        with self._lock:
            if self._broken is not None:
                raise LogUnavailable(self._broken)
            try:
                os.lseek(self._fd, self._size, os.SEEK_SET)
                view = memoryview(frame)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                os.fsync(self._fd)
            except OSError as exc:
                self._undo(exc)
                raise
            self._size += len(frame)

    def _undo(self, cause: OSError) -> None:
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
        except OSError as exc:
            self._broken = (f"the write-ahead log {self.path} could not be restored after a failed append "
                            f"({cause}; then {exc}); writes are refused until the next successful compaction")
            logger.error("%s", self._broken)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def remove_stale_logs(root: Path, current: str | None) -> None:
    """Best effort: delete the logs of versions other than ``current`` (superseded by a later
    snapshot: no load reads them)."""
    try:
        for path in root.iterdir():
            match = _LOG_RE.match(path.name)
            if match and match.group(1) != current:
                path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("could not remove stale logs in %s: %s", root, exc)
