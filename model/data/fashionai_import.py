"""Convert the raw FashionAI attribute CSV into the dataset layout of docs/dataset-format.md.

Input rows: ``Images/collar_design_labels/<hash>.jpg,collar_design_labels,nnynn``; the position of
the single ``y`` is the value id, ``m`` marks a "maybe" value (not the label). Attributes are the
label categories without the ``_labels`` suffix, in sorted order; values are named ``v0..v{k-1}``.
The split is seeded and stratified per attribute; in valid/test each image appears once, and about
``query_frac`` of each attribute's images are queries, the rest candidates. numpy only.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from asen_search.model.data.dataset import DatasetError

LINKS = ("symlink", "copy")
IMAGES_DIR = "images"  # out_dir/images is the image root (a symlink to it, or copies)


@dataclass(frozen=True)
class _Row:
    line: int  # 1-based CSV line
    path: str  # image path relative to image_root, POSIX separators
    category: str
    value: int
    n_values: int


def import_fashionai(
    csv_path: Path,
    image_root: Path,
    out_dir: Path,
    seed: int = 0,
    valid_frac: float = 0.1,
    test_frac: float = 0.1,
    query_frac: float = 0.2,
    link: str = "symlink",
) -> dict[str, dict[str, int]]:
    """Write a dataset directory at ``out_dir`` from a FashionAI label CSV; returns counts per split.

    ``image_root`` is the directory the CSV's image paths are relative to. ``link="symlink"`` makes
    ``out_dir/images`` a symlink to it (absolute); ``link="copy"`` copies the listed images there.
    Raises :class:`DatasetError` naming the CSV line of the first bad row (and how many are bad).
    """
    csv_path, image_root, out_dir = Path(csv_path), Path(image_root).resolve(), Path(out_dir)
    _check_arguments(valid_frac, test_frac, query_frac, link)
    rows = _read_csv(csv_path)
    _check_images(csv_path, rows, image_root)
    categories = sorted({r.category for r in rows})
    n_values = _values_per_category(csv_path, rows, categories)
    splits, queries = _assign_splits(rows, categories, seed, valid_frac, test_frac, query_frac)
    files = _dataset_files(splits, queries, {c: i for i, c in enumerate(categories)})
    empty = [file_name for file_name, lines in files.items() if not lines]
    if empty:
        raise DatasetError.at(
            csv_path,
            None,
            f"too few images to fill {', '.join(empty)}; "
            "use more images or other valid_frac / test_frac / query_frac",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    _link_images(image_root, out_dir, rows, link)
    meta = {
        "name": "fashionai",
        "attributes": [
            {"name": c.removesuffix("_labels"), "values": [f"v{v}" for v in range(n_values[c])]}
            for c in categories
        ],
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    for file_name, lines in files.items():
        _write_lines(out_dir / file_name, lines)
    counts = {"train": {"images": len(splits["train"]), "labels": len(files["label_train.txt"])}}
    for name in ("valid", "test"):
        counts[name] = {
            "images": len(splits[name]),
            "queries": len(files[f"query_{name}.txt"]),
            "candidates": len(files[f"candidate_{name}.txt"]),
        }
    return counts


def _assign_splits(
    rows: list[_Row], categories: list[str], seed: int, valid_frac: float, test_frac: float, query_frac: float
) -> tuple[dict[str, list[_Row]], set[int]]:
    """Seeded split stratified per category; returns rows per split (CSV order) and query lines."""
    rng = np.random.default_rng(seed)
    splits: dict[str, list[_Row]] = {"train": [], "valid": [], "test": []}
    queries: set[int] = set()  # CSV lines of query rows
    for category in categories:
        members = [r for r in rows if r.category == category]
        shuffled = [members[i] for i in rng.permutation(len(members))]
        n_test, n_valid = round(test_frac * len(members)), round(valid_frac * len(members))
        test, valid = shuffled[:n_test], shuffled[n_test : n_test + n_valid]
        splits["test"] += test
        splits["valid"] += valid
        splits["train"] += shuffled[n_test + n_valid :]
        for part in (valid, test):  # >= 1 query and >= 1 candidate when the part has >= 2 images
            n_query = min(max(round(query_frac * len(part)), 1), len(part) - 1) if len(part) > 1 else 0
            queries.update(r.line for r in part[:n_query])
    for rows_of_split in splits.values():
        rows_of_split.sort(key=lambda r: r.line)
    return splits, queries


def _dataset_files(
    splits: dict[str, list[_Row]], queries: set[int], attr_of: dict[str, int]
) -> dict[str, list[str]]:
    """Lines of every filenames/label/query/candidate file, keyed by file name."""
    files: dict[str, list[str]] = {
        f"{kind}_{name}.txt": []
        for name, kinds in (
            ("train", ("filenames", "label")),
            ("valid", ("filenames", "query", "candidate")),
            ("test", ("filenames", "query", "candidate")),
        )
        for kind in kinds
    }
    for name, members in splits.items():
        for fid, r in enumerate(members):
            kind = "label" if name == "train" else "query" if r.line in queries else "candidate"
            files[f"filenames_{name}.txt"].append(f"{IMAGES_DIR}/{r.path}")
            files[f"{kind}_{name}.txt"].append(f"{fid} {attr_of[r.category]} {r.value}")
    return files


def _check_arguments(valid_frac: float, test_frac: float, query_frac: float, link: str) -> None:
    if link not in LINKS:
        raise ValueError(f"link must be one of {', '.join(LINKS)}, got '{link}'")
    if not (0 < valid_frac < 1 and 0 < test_frac < 1 and valid_frac + test_frac < 1):
        raise ValueError(
            f"need 0 < valid_frac, test_frac and valid_frac + test_frac < 1, got {valid_frac}, {test_frac}"
        )
    if not 0 < query_frac < 1:
        raise ValueError(f"need 0 < query_frac < 1, got {query_frac}")


def _read_csv(csv_path: Path) -> list[_Row]:
    """Parse every row; raise naming the first bad line and the number of bad lines."""
    if not csv_path.is_file():
        raise DatasetError.at(csv_path, None, "label CSV not found")
    with csv_path.open(newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f))
    while lines and not any(field.strip() for field in lines[-1]):
        lines.pop()  # trailing blank lines
    rows: list[_Row] = []
    errors: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for lineno, fields in enumerate(lines, start=1):
        row_or_error = _parse_row(lineno, fields)
        if isinstance(row_or_error, str):
            errors.append((lineno, row_or_error))
        elif row_or_error.path in seen:
            errors.append(
                (lineno, f"duplicate image '{row_or_error.path}' (first on line {seen[row_or_error.path]})")
            )
        else:
            seen[row_or_error.path] = lineno
            rows.append(row_or_error)
    if errors:
        lineno, message = errors[0]
        raise DatasetError.at(csv_path, lineno, f"{message} ({len(errors)} bad rows in total)")
    if not rows:
        raise DatasetError.at(csv_path, None, "empty label CSV")
    return rows


def _parse_row(lineno: int, fields: list[str]) -> _Row | str:
    """A row, or an error message for it."""
    if len(fields) != 3:
        return f"expected 'image,category,labels', got {len(fields)} fields"
    path, category, labels = (field.strip() for field in fields)
    rel = PurePosixPath(path.replace("\\", "/"))
    if not path or rel.is_absolute() or ".." in rel.parts:
        return f"image path '{path}' must be relative to the image root, without '..'"
    if not category:
        return "empty label category"
    if len(labels) < 2 or set(labels) - set("ynm"):
        return f"label string '{labels}' must be >= 2 characters of y/n/m"
    if labels.count("y") != 1:
        return f"label string '{labels}' must have exactly one 'y', has {labels.count('y')}"
    return _Row(lineno, rel.as_posix(), category, labels.index("y"), len(labels))


def _check_images(csv_path: Path, rows: list[_Row], image_root: Path) -> None:
    missing = [r for r in rows if not (image_root / r.path).is_file()]
    if missing:
        raise DatasetError.at(
            csv_path,
            missing[0].line,
            f"image not found: {image_root / missing[0].path} ({len(missing)} of {len(rows)} images missing)",
        )


def _values_per_category(csv_path: Path, rows: list[_Row], categories: list[str]) -> dict[str, int]:
    """Number of values of each category; all its label strings must have the same length."""
    first: dict[str, _Row] = {}
    for r in rows:
        ref = first.setdefault(r.category, r)
        if r.n_values != ref.n_values:
            raise DatasetError.at(
                csv_path,
                r.line,
                f"label string has {r.n_values} values but "
                f"'{r.category}' has {ref.n_values} (line {ref.line})",
            )
    names = [c.removesuffix("_labels") for c in categories]
    if len(set(names)) != len(names):
        raise DatasetError.at(csv_path, None, f"categories collide without '_labels': {categories}")
    return {c: first[c].n_values for c in categories}


def _link_images(image_root: Path, out_dir: Path, rows: list[_Row], link: str) -> None:
    target = out_dir / IMAGES_DIR
    if link == "symlink":
        if target.is_symlink() and Path(os.readlink(target)) == image_root:
            return
        if target.exists() or target.is_symlink():
            raise DatasetError.at(
                target,
                None,
                f"already exists and is not a symlink to {image_root}; remove it or choose another out_dir",
            )
        target.symlink_to(image_root, target_is_directory=True)
        return
    if target.is_symlink():
        raise DatasetError.at(target, None, "is a symlink; remove it before copying images")
    for r in rows:
        destination = target / r.path
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(image_root / r.path, destination)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
