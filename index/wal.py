"""Write-ahead log: every catalogue write since the committed snapshot, appended and fsynced
before the write is applied (and, in the service, before it is acknowledged).

One log file per snapshot version, beside it in the save root::

    root/CURRENT              "v000007"
    root/v000007/             the snapshot
    root/wal-v000007.log      the writes made after v000007 was committed

Loading a catalogue reads the snapshot named by ``CURRENT`` and replays ``wal-<CURRENT>.log``.
Compaction (``FaissCatalogue.checkpoint``) commits a new snapshot ``v000008`` holding everything,
then starts ``wal-v000008.log`` and deletes the old log. A crash before ``CURRENT`` moves leaves
the old snapshot and its complete log; a crash after it leaves the new snapshot, whose log is
empty or absent. Logs of other versions are stale and removed.

A write is one or more frames (a write larger than ``MAX_RECORD_BYTES`` is split into several
records; the header's ``more`` counts the records of the same write still to come), written
with one ``write(2)`` and followed by ``fsync``::

    b"AWL1" | u32 length | u32 crc32(payload) | payload
    payload = u32 header length | JSON header | float32 vectors (C order)

Replay applies a write only once its last record is read, so a write is applied whole or not at
all. What the log may hold after the last complete write (a write cut off by a crash: never
acknowledged) is a *torn tail*: replay ignores it and opening the log for writing cuts it off,
keeping the cut bytes in ``wal-<version>.log.cut-<time>``. A damaged frame *followed by valid
frames* is corruption, not a torn tail: cutting there would destroy acknowledged writes, so
loading refuses with ``LogCorrupt`` and changes nothing; ``asen index repair`` (``repair_log``)
reports what would be lost and keeps a copy of the log before it cuts.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import struct
import threading
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from asen_search.fileio import fsync_path

from .errors import CatalogueError, IndexFormatError

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


class LogCorrupt(IndexFormatError):
    """A damaged frame with valid frames after it: acknowledged writes follow the damage, so the
    log is left untouched and the catalogue is not opened (see ``repair_log``)."""

    def __init__(self, path: Path, scan: LogScan) -> None:
        self.path, self.scan = path, scan
        assert scan.damage is not None
        after = scan.damage.valid_after
        super().__init__(
            f"{path} is corrupt: the frame at byte {scan.damage.offset} is damaged and {len(after)} valid "
            f"records ({sum(len(r.ids) for _, _, r in after)} item writes) follow it, so it is not the torn tail "
            "of a crash and cutting it off would lose acknowledged writes. Nothing was changed. See what a "
            f"repair would keep and lose: asen index repair --index {path.parent} --dry-run"
        )


class RecordTooLarge(CatalogueError, ValueError):
    """One record would exceed ``MAX_RECORD_BYTES`` (refused before anything is written)."""


@dataclass(frozen=True)
class LogRecord:
    """One logged record: ``op`` is "upsert" (``ids``, ``vectors`` [n, n_attributes, dim],
    ``metadata``) or "remove" (``ids``); ``more`` records of the same write follow it."""

    op: str
    ids: list[str]
    vectors: np.ndarray | None = None
    metadata: list[dict[str, Any]] = field(default_factory=list)
    more: int = 0

    def encode(self) -> bytes:
        """The frame; RecordTooLarge when its payload would exceed ``MAX_RECORD_BYTES``."""
        header: dict[str, Any] = {"op": self.op, "ids": self.ids}
        if self.more:
            header["more"] = self.more
        body = b""
        if self.vectors is not None:
            vectors = np.ascontiguousarray(self.vectors, dtype="<f4")
            header["shape"] = list(vectors.shape)
            header["metadata"] = self.metadata
            body = vectors.tobytes()
        head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        size = _HEADER_LEN.size + len(head) + len(body)
        if size > MAX_RECORD_BYTES:
            raise RecordTooLarge(
                f"a log record of {size} bytes ({len(self.ids)} items) is over the limit of "
                f"{MAX_RECORD_BYTES} bytes; nothing was written"
            )
        payload = _HEADER_LEN.pack(len(head)) + head + body
        return _FRAME.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload

    @classmethod
    def decode(cls, payload: bytes) -> LogRecord:
        (head_len,) = _HEADER_LEN.unpack_from(payload)
        header = json.loads(payload[_HEADER_LEN.size : _HEADER_LEN.size + head_len].decode("utf-8"))
        if header.get("op") not in ("upsert", "remove") or not isinstance(header.get("ids"), list):
            raise ValueError(f"unknown log record {header.get('op')!r}")
        more = int(header.get("more", 0))
        if header["op"] == "remove":
            return cls("remove", header["ids"], more=more)
        body = payload[_HEADER_LEN.size + head_len :]
        vectors = np.frombuffer(body, dtype="<f4").reshape(header["shape"]).astype(np.float32)
        return cls("upsert", header["ids"], vectors, header["metadata"], more)


def split_write(
    op: str, ids: list[str], vectors: np.ndarray | None = None, metadata: list[dict[str, Any]] | None = None
) -> list[LogRecord]:
    """One write as the records that log it: a single record when it fits ``MAX_RECORD_BYTES``,
    else consecutive slices of it, each within the limit (RecordTooLarge when one item alone is
    over it)."""
    metadata = metadata or []
    budget = MAX_RECORD_BYTES - 256  # the header's fixed keys
    per_vector = 0 if vectors is None else int(np.prod(vectors.shape[1:])) * 4
    cost = [
        per_vector
        + len(json.dumps(i, ensure_ascii=False).encode())
        + 1
        + (
            len(json.dumps(metadata[n], ensure_ascii=False, separators=(",", ":")).encode()) + 1
            if vectors is not None
            else 0
        )
        for n, i in enumerate(ids)
    ]
    slices, start, used = [], 0, 0
    for n, c in enumerate(cost):
        if c > budget:
            raise RecordTooLarge(
                f"item {ids[n]!r} alone needs {c} bytes in the log, over the limit of "
                f"{MAX_RECORD_BYTES}; nothing was written"
            )
        if used + c > budget and n > start:
            slices.append((start, n))
            start, used = n, 0
        used += c
    slices.append((start, len(ids)))
    return [
        LogRecord(
            op,
            ids[a:b],
            None if vectors is None else vectors[a:b],
            metadata[a:b] if vectors is not None else [],
            len(slices) - 1 - k,
        )
        for k, (a, b) in enumerate(slices)
    ]


def log_path(root: Path, version: str) -> Path:
    return root / f"wal-{version}.log"


@dataclass(frozen=True)
class LogDamage:
    """A frame that cannot be read at ``offset``, and the valid frames found after it, as
    (offset, end, record)."""

    offset: int
    valid_after: list[tuple[int, int, LogRecord]]


@dataclass(frozen=True)
class LogScan:
    """What a log holds: ``records``, the records of its complete writes in order, ending at byte
    ``end``; ``size``, the file's size; ``frames``, (offset, end) of each frame of ``records``;
    ``damage`` when a frame could not be read."""

    records: list[LogRecord]
    end: int
    size: int
    frames: list[tuple[int, int]]
    damage: LogDamage | None = None

    @property
    def corrupt(self) -> bool:
        """Valid frames follow a damaged one (not a torn tail)."""
        return self.damage is not None and bool(self.damage.valid_after)


def _frame_at(data: bytes, offset: int, strict: bool) -> tuple[int, LogRecord] | None:
    """(end, record) of a valid frame at ``offset``, else None. A frame whose checksum holds but
    whose content cannot be read raises IndexFormatError when ``strict``."""
    if offset + _FRAME.size > len(data):
        return None
    magic, length, crc = _FRAME.unpack_from(data, offset)
    start, end = offset + _FRAME.size, offset + _FRAME.size + length
    if magic != MAGIC or length > MAX_RECORD_BYTES or end > len(data):
        return None
    payload = data[start:end]
    if zlib.crc32(payload) != crc:
        return None
    try:
        return end, LogRecord.decode(payload)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        if strict:
            raise IndexFormatError(
                f"record at byte {offset} has a valid checksum but cannot be read: {exc}"
            ) from None
        return None


def _valid_frames_from(data: bytes, offset: int) -> list[tuple[int, int, LogRecord]]:
    """Every valid frame at or after ``offset``, found by their magic bytes."""
    found = []
    position = data.find(MAGIC, offset)
    while position >= 0:
        frame = _frame_at(data, position, strict=False)
        if frame is not None:
            found.append((position, frame[0], frame[1]))
            position = data.find(MAGIC, frame[0])
        else:
            position = data.find(MAGIC, position + 1)
    return found


def scan_log(path: Path) -> LogScan:
    """Read a log without judging it (a missing file is an empty log)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return LogScan([], 0, 0, [])
    records: list[LogRecord] = []
    frames: list[tuple[int, int]] = []
    group: list[tuple[int, int, LogRecord]] = []
    offset = end = 0
    damage = None
    while offset < len(data):
        try:
            frame = _frame_at(data, offset, strict=True)
        except IndexFormatError as exc:
            raise IndexFormatError(f"{path}: {exc}") from None
        if frame is None:
            damage = LogDamage(offset, _valid_frames_from(data, offset + 1))
            break
        group.append((offset, frame[0], frame[1]))
        offset = frame[0]
        if frame[1].more == 0:  # the write is complete
            records.extend(r for _, _, r in group)
            frames.extend((a, b) for a, b, _ in group)
            group, end = [], offset
    if damage is not None and group and damage.valid_after:  # the open write's frames are valid too
        damage = LogDamage(damage.offset, [*group, *damage.valid_after])
    return LogScan(records, end, len(data), frames, damage)


def read_log(path: Path) -> tuple[list[LogRecord], int, int]:
    """The records of a log's complete writes, the byte offset where they end and the file's size
    (more than the offset when the log has a torn tail). LogCorrupt when valid frames follow a
    damaged one."""
    scan = scan_log(path)
    if scan.corrupt:
        raise LogCorrupt(path, scan)
    return scan.records, scan.end, scan.size


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def keep_copy(path: Path, suffix: str, data: bytes | None = None) -> Path:
    """A durable copy of ``path`` (or of ``data``) beside it, named ``<name>.<suffix>-<time>``."""
    copy = path.with_name(f"{path.name}.{suffix}-{_stamp()}")
    if data is None:
        shutil.copyfile(path, copy)
    else:
        copy.write_bytes(data)
    fd = os.open(copy, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_path(path.parent)
    return copy


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
            raise LogUnavailable(
                f"{self.path} is open for writing in another process: one writer per index directory"
            ) from None
        try:
            _, end, size = read_log(self.path)  # under the lock: no other writer can append meanwhile
            if size > end:
                self._cut_torn_tail(end, size)
            os.fsync(self._fd)
            fsync_path(self.root)
        except BaseException:  # OSError, LogCorrupt, IndexFormatError from a record that cannot be read
            os.close(self._fd)
            raise
        self._size = end

    def _cut_torn_tail(self, end: int, size: int) -> None:
        """Cut off what follows the last complete write (a write a crash cut off, never
        acknowledged), keeping the bytes in a copy beside the log (best effort)."""
        try:
            copy = keep_copy(self.path, "cut", os.pread(self._fd, size - end, end))
            kept = f"; the bytes are kept in {copy.name}"
        except OSError as exc:
            kept = f"; they could not be kept ({exc})"
        logger.warning(
            "%s: cutting off %d bytes after byte %d: a write that was never completed%s",
            self.path,
            size - end,
            end,
            kept,
        )
        os.ftruncate(self._fd, end)

    @property
    def size(self) -> int:
        """Bytes of acknowledged records in the log."""
        return self._size

    @property
    def broken(self) -> str | None:
        return self._broken

    def append(self, record: LogRecord | list[LogRecord]) -> None:
        """Write and fsync one write (a record, or the records of ``split_write``), durable
        when this returns. RecordTooLarge before anything is written; OSError (disk full, I/O
        error) if it could not be made durable, after cutting the file back; LogUnavailable if
        even that failed earlier."""
        records = record if isinstance(record, list) else [record]
        if [r.more for r in records] != list(range(len(records) - 1, -1, -1)):
            raise ValueError("the records of one write must count down their `more` to 0")
        frame = b"".join(r.encode() for r in records)
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
            self._broken = (
                f"the write-ahead log {self.path} could not be restored after a failed append "
                f"({cause}; then {exc}); writes are refused until the next successful compaction"
            )
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
