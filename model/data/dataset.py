"""Loader for the attribute dataset layout (docs/dataset-format.md); numpy only, no torch.

A dataset directory holds ``meta.json``, ``filenames_<split>.txt``, ``label_train.txt`` and
``query_<split>.txt`` / ``candidate_<split>.txt`` for the valid and test splits. Every problem in
those files raises :class:`DatasetError` naming the file and, where it applies, the 1-based line.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "valid", "test")
_INT = re.compile(r"[+-]?[0-9]{1,18}")
_DRIVE = re.compile(r"[A-Za-z]:")
_INT_LINE = re.compile(r"\s*[+-]?[0-9]{1,18}(?:[ \t]+[+-]?[0-9]{1,18})*\s*")


class DatasetError(ValueError):
    """Bad or missing dataset data; the message names the file and (when relevant) the line."""

    @classmethod
    def at(cls, file: str | Path, line: int | None, message: str) -> DatasetError:
        where = Path(file).name if line is not None else str(file)
        return cls(f"{where} line {line}: {message}" if line is not None else f"{where}: {message}")


@dataclass(frozen=True)
class Attribute:
    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Tagged:
    """Parallel (fid, attribute id, value id) rows: a query or candidate list, or train labels."""

    fids: np.ndarray  # int64 [n]
    attrs: np.ndarray  # int64 [n]
    values: np.ndarray  # int64 [n]

    def __post_init__(self) -> None:
        assert self.fids.shape == self.attrs.shape == self.values.shape, "ragged Tagged arrays"

    def __len__(self) -> int:
        return int(self.fids.shape[0])


@dataclass(frozen=True)
class Split:
    name: str
    paths: tuple[Path, ...]  # absolute image paths; index = fid

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class AttributeDataset:
    """A dataset directory: attributes from meta.json; splits and label files load lazily, cached."""

    root: Path
    name: str
    attributes: tuple[Attribute, ...]
    check_images: bool = True
    _cache: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_values(self) -> list[int]:
        """Number of values of each attribute, indexed by attribute id."""
        return [len(a.values) for a in self.attributes]

    def splits_available(self) -> list[str]:
        """Splits whose ``filenames_<split>.txt`` exists, in train/valid/test order."""
        return [s for s in SPLITS if (self.root / f"filenames_{s}.txt").is_file()]

    def split(self, name: str) -> Split:
        """Image paths of one split (loaded on first use, then cached)."""
        key = f"split:{_check_split_name(name)}"
        if key not in self._cache:
            self._cache[key] = _load_split(self.root, name, self.check_images)
        return self._cache[key]  # type: ignore[return-value]

    def train_labels(self) -> Tagged:
        """Every (fid, attr, value) pair of label_train.txt, flattened in file order."""
        if "labels:train" not in self._cache:
            path = self.root / "label_train.txt"
            rows = _read_lines(path)
            _reject_empty(path, rows, "no labels")
            pairs: list[tuple[int, int, int, int]] = []  # (fid, attr, value, line)
            for lineno, text in rows:
                tokens = _ints(path, lineno, text)
                if len(tokens) < 3 or (len(tokens) - 1) % 2:
                    raise DatasetError.at(
                        path, lineno, f"expected 'fid attr val [attr val ...]', got {len(tokens)} tokens"
                    )
                pairs += [(tokens[0], a, v, lineno) for a, v in zip(tokens[1::2], tokens[2::2])]
            table = np.asarray(pairs, dtype=np.int64)
            tagged = _tagged(table[:, 0], table[:, 1], table[:, 2])
            self._check_ids(path, tagged, table[:, 3], len(self.split("train")), "train")
            self._cache["labels:train"] = tagged
        return self._cache["labels:train"]  # type: ignore[return-value]

    def queries(self, split: str) -> Tagged:
        """Query rows of the valid or test split."""
        return self._tagged_file("query", split)

    def candidates(self, split: str) -> Tagged:
        """Candidate rows of the valid or test split."""
        return self._tagged_file("candidate", split)

    def query_candidate_overlap(self, split: str) -> list[str]:
        """One message per query row whose image is also a candidate of the same attribute (the
        same fid, or another fid naming the same file): such a query finds itself first and
        inflates MAP. Each message names both lines."""
        queries, candidates = self.queries(split), self.candidates(split)
        paths = self.split(split).paths
        real = {
            fid: os.path.realpath(paths[fid]) for fid in {*queries.fids.tolist(), *candidates.fids.tolist()}
        }
        first_line: dict[tuple[str, int], int] = {}
        for row, (fid, attr) in enumerate(
            zip(candidates.fids.tolist(), candidates.attrs.tolist(), strict=True)
        ):
            first_line.setdefault((real[fid], attr), row + 1)
        found = []
        for row, (fid, attr) in enumerate(zip(queries.fids.tolist(), queries.attrs.tolist(), strict=True)):
            line = first_line.get((real[fid], attr))
            if line is not None:
                found.append(
                    f"query_{split}.txt line {row + 1} and candidate_{split}.txt line {line}: "
                    f"{paths[fid]} is both a query and a candidate for '{self.attributes[attr].name}'"
                )
        return found

    def _tagged_file(self, kind: str, split: str) -> Tagged:
        key = f"{kind}:{_check_split_name(split)}"
        if key not in self._cache:
            path = self.root / f"{kind}_{split}.txt"
            rows = _read_lines(path)
            _reject_empty(path, rows, f"no {kind} rows")
            parsed = []
            for lineno, text in rows:
                tokens = _ints(path, lineno, text)
                if len(tokens) != 3:
                    raise DatasetError.at(path, lineno, f"expected 'fid attr val', got {len(tokens)} tokens")
                parsed.append(tokens)
            table = np.asarray(parsed, dtype=np.int64)
            tagged = _tagged(table[:, 0], table[:, 1], table[:, 2])
            lines = np.asarray([lineno for lineno, _ in rows])
            self._check_ids(path, tagged, lines, len(self.split(split)), split)
            self._cache[key] = tagged
        return self._cache[key]  # type: ignore[return-value]

    def _check_ids(self, path: Path, rows: Tagged, lines: np.ndarray, n_images: int, split: str) -> None:
        """Raise on the first row whose fid, attribute id or value id is out of range."""
        n_values = np.asarray(self.n_values, dtype=np.int64)
        bad_fid = (rows.fids < 0) | (rows.fids >= n_images)
        bad_attr = (rows.attrs < 0) | (rows.attrs >= len(n_values))
        safe_attr = np.where(bad_attr, 0, rows.attrs)
        bad_value = ~bad_attr & ((rows.values < 0) | (rows.values >= n_values[safe_attr]))
        bad = bad_fid | bad_attr | bad_value
        if not bad.any():
            return
        i = int(np.argmax(bad))
        suffix = f" ({int(bad.sum())} bad rows in total)" if bad.sum() > 1 else ""
        if bad_fid[i]:
            msg = f"fid {rows.fids[i]} out of range for filenames_{split}.txt ({n_images} images)"
        elif bad_attr[i]:
            msg = f"attribute id {rows.attrs[i]} out of range ({len(n_values)} attributes)"
        else:
            attr = self.attributes[rows.attrs[i]]
            msg = (
                f"value id {rows.values[i]} out of range for attribute '{attr.name}' "
                f"({len(attr.values)} values)"
            )
        raise DatasetError.at(path, int(lines[i]), msg + suffix)


def load_dataset(root: str | Path, check_images: bool = True) -> AttributeDataset:
    """Open a dataset directory: reads and validates meta.json; splits load on first use.

    ``check_images`` makes each split check, when it is loaded, that every image file exists.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset directory not found")
    name, attributes = _read_meta(root / "meta.json", default_name=root.name)
    return AttributeDataset(root=root, name=name, attributes=attributes, check_images=check_images)


def _read_meta(path: Path, default_name: str) -> tuple[str, tuple[Attribute, ...]]:
    if not path.is_file():
        raise DatasetError.at(path, None, "file not found")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError.at(path, exc.lineno, f"invalid JSON: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError.at(path, None, f"not UTF-8 text: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("attributes"), list) or not meta["attributes"]:
        raise DatasetError.at(path, None, "expected an object with a non-empty 'attributes' list")
    name = meta.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise DatasetError.at(path, None, "'name' must be a non-empty string")
    attributes: list[Attribute] = []
    for i, entry in enumerate(meta["attributes"]):
        where = f"attributes[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise DatasetError.at(path, None, f"{where} needs a non-empty string 'name'")
        values = entry.get("values")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise DatasetError.at(path, None, f"{where} ('{entry['name']}') needs a list of string 'values'")
        if len(values) < 2:
            raise DatasetError.at(
                path, None, f"{where} ('{entry['name']}') has {len(values)} values; needs >= 2"
            )
        if len(set(values)) != len(values):
            raise DatasetError.at(path, None, f"{where} ('{entry['name']}') has duplicate value names")
        if any(a.name == entry["name"] for a in attributes):
            raise DatasetError.at(path, None, f"duplicate attribute name '{entry['name']}'")
        attributes.append(Attribute(entry["name"], tuple(values)))
    return name, tuple(attributes)


def _load_split(root: Path, name: str, check_images: bool) -> Split:
    path = root / f"filenames_{name}.txt"
    rows = _read_lines(path)
    _reject_empty(path, rows, f"split '{name}' has no images")
    prefix = f"{root}{os.sep}"
    paths = tuple(Path(prefix + _relative_path(path, lineno, text.strip())) for lineno, text in rows)
    if check_images:
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        if missing:
            first = missing[0]
            raise DatasetError.at(
                path,
                rows[first][0],
                f"image not found: {paths[first]} ({len(missing)} of {len(paths)} images missing)",
            )
    return Split(name=name, paths=paths)


def _relative_path(path: Path, lineno: int, text: str) -> str:
    """A filenames_*.txt entry as a POSIX path string that stays inside the dataset root."""
    rel = text.replace("\\", "/")
    if rel.startswith("/") or _DRIVE.match(rel):
        raise DatasetError.at(
            path, lineno, f"absolute image path '{text}'; paths must be relative to the dataset directory"
        )
    if ".." in rel.split("/"):
        raise DatasetError.at(path, lineno, f"image path '{text}' escapes the dataset directory ('..')")
    return rel


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, text) of every line; trailing blank lines are dropped, inner ones rejected."""
    if not path.is_file():
        raise DatasetError.at(path, None, "file not found")
    try:
        lines = [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n")]
    except UnicodeDecodeError as exc:
        raise DatasetError.at(path, None, f"not UTF-8 text: {exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    for lineno, text in enumerate(lines, start=1):
        if not text.strip():
            raise DatasetError.at(path, lineno, "blank line (only trailing blank lines are allowed)")
    return list(enumerate(lines, start=1))


def _reject_empty(path: Path, rows: list[tuple[int, str]], what: str) -> None:
    if not rows:
        raise DatasetError.at(path, None, f"empty file: {what}")


def _ints(path: Path, lineno: int, text: str) -> list[int]:
    if not _INT_LINE.fullmatch(text):
        bad = next((t for t in text.split() if not _INT.fullmatch(t)), text.strip())
        raise DatasetError.at(path, lineno, f"non-integer token '{bad}'")
    return [int(token) for token in text.split()]


def _tagged(fids: object, attrs: object, values: object) -> Tagged:
    return Tagged(
        np.asarray(fids, dtype=np.int64),
        np.asarray(attrs, dtype=np.int64),
        np.asarray(values, dtype=np.int64),
    )


def _check_split_name(name: str) -> str:
    if name not in SPLITS:
        raise ValueError(f"unknown split '{name}'; expected one of {', '.join(SPLITS)}")
    return name
