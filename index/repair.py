"""``asen index repair``: make a corrupt write-ahead log loadable again, saying first exactly what
that keeps and what it loses, and keeping a copy of the log as it was.

Two ways, as the operator chooses (the catalogue refuses to load until one is taken):

- ``cut`` (default; etcd's choice): keep the writes before the first damaged frame, drop the rest;
- ``salvage``: keep every complete write whose frames are all intact, before and after the damage,
  dropping only the damaged write(s). Later writes are then applied without the lost one (a
  removed item whose removal was damaged comes back, for example), which the report lists.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from asen_search.fileio import atomic_write

from .dirlock import DirectoryLock
from .errors import IndexFormatError
from .store import current_version
from .wal import LogRecord, keep_copy, log_path, scan_log


@dataclass(frozen=True)
class RepairReport:
    """What a repair keeps and loses: ``kept`` and ``lost`` records, the byte ranges that could not
    be read, the copy of the old log (None on a dry run or when nothing needed repair)."""

    log: Path
    mode: str
    kept: list[LogRecord]
    lost: list[LogRecord]
    unreadable: list[tuple[int, int]]
    size: int
    backup: Path | None
    applied: bool

    @property
    def needed(self) -> bool:
        return bool(self.lost or self.unreadable)

    def lines(self) -> list[str]:
        if not self.needed:
            return [f"{self.log}: no damage found ({len(self.kept)} records); nothing to repair"]
        out = [
            f"{self.log}: {self.size} bytes; unreadable: "
            + ", ".join(f"bytes {a}-{b} ({b - a} bytes)" for a, b in self.unreadable),
            f"{self.mode}: keeps {len(self.kept)} records ({sum(len(r.ids) for r in self.kept)} item writes); "
            f"loses {len(self.lost)} readable records and whatever the unreadable bytes held:",
        ]
        for record in self.lost:
            shown = ", ".join(record.ids[:10]) + (
                f" ... (+{len(record.ids) - 10})" if len(record.ids) > 10 else ""
            )
            out.append(f"  lost: {record.op} of {len(record.ids)} item(s): {shown}")
        if self.applied:
            out.append(f"repaired; the log as it was is kept in {self.backup}")
        else:
            out.append("dry run: nothing was changed")
        return out


def _complete_writes(frames: list[tuple[int, int, LogRecord]]) -> tuple[list, list]:
    """Split consecutive frames into complete writes (``more`` counting down to 0, adjacent) and
    the frames of incomplete ones."""
    complete: list[tuple[int, int, LogRecord]] = []
    broken: list[tuple[int, int, LogRecord]] = []
    group: list[tuple[int, int, LogRecord]] = []
    for frame in frames:
        if group and (frame[0] != group[-1][1] or frame[2].more != group[-1][2].more - 1):
            broken.extend(group)
            group = []
        if not group and frame[2].more < 0:
            broken.append(frame)
            continue
        group.append(frame)
        if frame[2].more == 0:
            complete.extend(group)
            group = []
    return complete, broken + group


def repair_log(root: str | os.PathLike[str], mode: str = "cut", dry_run: bool = False) -> RepairReport:
    """Report (``dry_run``) or repair the write-ahead log of the committed version of ``root``,
    holding the directory's lock (DirectoryLocked while a server writes it)."""
    if mode not in ("cut", "salvage"):
        raise ValueError(f"mode must be 'cut' or 'salvage', got {mode!r}")
    root = Path(root)
    with DirectoryLock.acquire(root, "repairing the write-ahead log"):
        version = current_version(root)
        if version is None:
            raise IndexFormatError(f"no saved index at {root}: it has no CURRENT pointer")
        path = log_path(root, version)
        scan = scan_log(path)
        before = [(a, b, r) for (a, b), r in zip(scan.frames, scan.records, strict=True)]
        after = scan.damage.valid_after if scan.damage is not None else []
        if mode == "cut":
            keep, drop = before, list(after)
        else:
            good, broken = _complete_writes(after)
            keep, drop = before + good, broken
        covered = sorted((a, b) for a, b, _ in keep + drop)
        unreadable, cursor = [], 0
        for a, b in covered:
            if a > cursor:
                unreadable.append((cursor, a))
            cursor = max(cursor, b)
        if scan.size > cursor:
            unreadable.append((cursor, scan.size))
        report = RepairReport(
            path, mode, [r for _, _, r in keep], [r for _, _, r in drop], unreadable, scan.size, None, False
        )
        if dry_run or not report.needed:
            return report
        data = path.read_bytes()
        backup = keep_copy(path, "corrupt")
        atomic_write(path, lambda fh: fh.writelines(data[a:b] for a, b, _ in keep))
        return RepairReport(path, mode, report.kept, report.lost, unreadable, scan.size, backup, True)
