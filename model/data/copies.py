"""The copy benchmark (design protection): protected designs, plagiarised copies, look-alike distractors.

The task as the field defines it (a plagiarised garment copies an original design as a whole and
modifies at most two of its parts; docs/protection.md): for each protected *design* the benchmark
draws

- **copies**: the same garment (its own outline, palette, pattern phase, detail sizes and places,
  drawn from the design's per-part seeds) with 0, 1 or 2 attributes changed to another value (the
  changed parts drawn anew), each photographed anew: another picture size, framing, scale,
  rotation, background, occluders, lighting and JPEG quality;
- **distractors**: other garments that share the design's values in every attribute, or in all but
  one or two: the same classes with other shapes, sizes, colours within the class and details;

and a background of ordinary garments. Written in the dataset format (valid and test splits; no
train split: the benchmark is for evaluation and for choosing, never for training) plus one file per
split, `copies_<split>.jsonl`: one line per design naming its copies, which attributes each changed,
and its distractors. Every image is drawn from its own generators, so a seed gives the same files
whatever the worker count.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from asen_search.model.data.synth import ATTRIBUTES, CHUNK, PARALLEL_MIN_IMAGES
from asen_search.model.data.synth_draw import (
    DEFAULT_NUISANCE,
    GARMENT_PARTS,
    Nuisance,
    SeededParts,
    render_scene,
)

# The garment parts an attribute's value is drawn in: changing the value draws these anew (a garment
# length moves the hem, every part keeps its own draws).
ATTRIBUTE_PARTS: dict[str, tuple[str, ...]] = {
    "neckline": ("neckline",),
    "closure": ("closure",),
    "pocket": ("pocket",),
    "sleeve_length": ("sleeves",),
    "garment_length": (),
    "pattern": ("pattern",),
    "colour": ("palette",),
}
COPY_CHANGES = (0, 1, 1, 2, 2)  # attributes changed by each copy of a design
DISTRACTOR_DIFFERS = (0, 0, 1, 2)  # attribute values each distractor does not share with its design
SPLITS = ("valid", "test")
SPLIT_IDS = {"valid": 1, "test": 2}  # the demo dataset's split ids: another stream of draws than its own
FILE_FORMAT = 1


@dataclass(frozen=True)
class Design:
    """One garment: a value id per attribute (ATTRIBUTES order) and a seed per part (GARMENT_PARTS)."""

    values: tuple[int, ...]
    seeds: tuple[int, ...]

    def named(self) -> dict[str, str]:
        return {name: values[v] for (name, values), v in zip(ATTRIBUTES, self.values)}


def new_design(rng: np.random.Generator, values: Sequence[int] | None = None) -> Design:
    """A new garment: the given values (else uniform ones) and fresh seeds for every part."""
    if values is None:
        values = [int(rng.integers(len(v))) for _, v in ATTRIBUTES]
    return Design(
        tuple(int(v) for v in values), tuple(int(x) for x in rng.integers(0, 2**62, len(GARMENT_PARTS)))
    )


def change(design: Design, attributes: Sequence[int], rng: np.random.Generator) -> Design:
    """The same garment with each of `attributes` (ids) set to another value, its parts drawn anew."""
    values, seeds = list(design.values), list(design.seeds)
    for attr in attributes:
        name, names = ATTRIBUTES[attr]
        others = [v for v in range(len(names)) if v != values[attr]]
        values[attr] = int(others[int(rng.integers(len(others)))])
        for part in ATTRIBUTE_PARTS[name]:
            seeds[GARMENT_PARTS.index(part)] = int(rng.integers(0, 2**62))
    return Design(tuple(values), tuple(seeds))


def render(
    design: Design, photo: np.random.Generator, scale: float = 1.0, nuisance: Nuisance = DEFAULT_NUISANCE
) -> bytes:
    """One photograph of `design` as JPEG bytes; everything but the garment comes from `photo`."""
    parts = SeededParts(dict(zip(GARMENT_PARTS, design.seeds)), photo)
    image = render_scene(design.named(), photo, scale, nuisance, parts=parts)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(photo.integers(*nuisance.jpeg_quality)))
    return buffer.getvalue()


@dataclass(frozen=True)
class _Image:
    design: Design
    role: str  # "design", "copy", "distractor", "background"
    group: int  # the design it belongs to (-1: background)
    changed: tuple[int, ...] = ()  # attribute ids changed (copy) or not shared (distractor)


def _plan(seed: int, split: str, n_designs: int, n_background: int) -> list[_Image]:
    """Every image of a split, in a seeded shuffled order (fids reveal nothing)."""
    rng = np.random.default_rng([seed, 7000 + SPLIT_IDS[split]])
    n_attr = len(ATTRIBUTES)
    images: list[_Image] = []
    for g in range(n_designs):
        design = new_design(rng)
        images.append(_Image(design, "design", g))
        for k in COPY_CHANGES:
            attrs = tuple(sorted(int(a) for a in rng.choice(n_attr, k, replace=False)))
            images.append(_Image(change(design, attrs, rng), "copy", g, attrs))
        for k in DISTRACTOR_DIFFERS:
            attrs = tuple(sorted(int(a) for a in rng.choice(n_attr, k, replace=False)))
            look_alike = new_design(rng, design.values)
            images.append(
                _Image(
                    Design(change(look_alike, attrs, rng).values, look_alike.seeds), "distractor", g, attrs
                )
            )
    images += [_Image(new_design(rng), "background", -1) for _ in range(n_background)]
    return [images[i] for i in rng.permutation(len(images))]


def _render_chunk(
    out_dir: str,
    seed: int,
    split: str,
    start: int,
    designs: Sequence[Design],
    scale: float,
    nuisance: Nuisance,
) -> int:
    folder = pathlib.Path(out_dir) / "images" / split
    for offset, design in enumerate(designs):
        index = start + offset
        photo = np.random.default_rng([seed, 7100 + SPLIT_IDS[split], index])
        (folder / f"{index:05d}.jpg").write_bytes(render(design, photo, scale, nuisance))
    return len(designs)


def _write_lines(path: pathlib.Path, lines: Sequence[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _check_copy_args(n_designs: int, n_background: int, seed: int, scale: float) -> None:
    if seed < 0:
        raise ValueError(f"generate_copies: seed must be non-negative, got {seed}")
    if n_designs < 2:
        raise ValueError(f"generate_copies: at least 2 designs per split, got {n_designs}")
    if n_background < 0:
        raise ValueError(f"generate_copies: n_background must be non-negative, got {n_background}")
    if not 0.25 <= scale <= 8:
        raise ValueError(f"generate_copies: scale must be between 0.25 and 8, got {scale}")


def _draw(tasks: list[tuple], total: int, workers: int | None, progress: bool) -> None:
    """Render every chunk, in worker processes when there are enough images to be worth it."""
    workers = (workers or os.cpu_count() or 1) if total >= PARALLEL_MIN_IMAGES else 1
    with tqdm(
        total=total, disable=not progress, desc="drawing designs, copies and distractors", unit="img"
    ) as bar:
        if workers == 1:
            for task in tasks:
                bar.update(_render_chunk(*task))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for done in pool.map(_render_chunk, *zip(*tasks)):
                    bar.update(done)


def _write_split(out_dir: pathlib.Path, split: str, plan: Sequence[_Image]) -> None:
    """A split's file list, query and candidate lists, and `copies_<split>.jsonl`."""
    names = [name for name, _ in ATTRIBUTES]
    paths = [f"images/{split}/{i:05d}.jpg" for i in range(len(plan))]
    _write_lines(out_dir / f"filenames_{split}.txt", paths)
    tagged = list(enumerate(plan))
    _write_lines(
        out_dir / f"query_{split}.txt",
        [
            f"{fid} {a} {v}"
            for fid, im in tagged
            if im.role == "design"
            for a, v in enumerate(im.design.values)
        ],
    )
    _write_lines(
        out_dir / f"candidate_{split}.txt",
        [
            f"{fid} {a} {v}"
            for fid, im in tagged
            if im.role != "design"
            for a, v in enumerate(im.design.values)
        ],
    )
    records: dict[int, dict[str, Any]] = {}
    for fid, im in tagged:
        if im.role == "design":
            records[im.group] = {
                "design": paths[fid],
                "values": im.design.named(),
                "copies": [],
                "distractors": [],
            }
    for fid, im in tagged:
        changed = [names[a] for a in im.changed]
        if im.role == "copy":
            records[im.group]["copies"].append({"path": paths[fid], "changed": changed})
        elif im.role == "distractor":
            records[im.group]["distractors"].append({"path": paths[fid], "differs": changed})
    _write_lines(
        out_dir / f"copies_{split}.jsonl",
        [json.dumps(records[g], ensure_ascii=False) for g in sorted(records)],
    )


def generate_copies(
    out_dir: pathlib.Path,
    n_designs: int = 100,
    n_background: int = 600,
    seed: int = 0,
    progress: bool = True,
    scale: float = 1.0,
    workers: int | None = None,
    nuisance: Nuisance = DEFAULT_NUISANCE,
) -> dict[str, int]:
    """Draw the copy benchmark into `out_dir`: per split (valid, test) `n_designs` protected designs,
    each with len(COPY_CHANGES) copies and len(DISTRACTOR_DIFFERS) distractors, and `n_background`
    ordinary garments. Returns the number of images per split."""
    _check_copy_args(n_designs, n_background, seed, scale)
    out_dir = pathlib.Path(out_dir)
    plans = {split: _plan(seed, split, n_designs, n_background) for split in SPLITS}
    for split in SPLITS:
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
    tasks = [
        (str(out_dir), seed, split, start, [im.design for im in plan[start : start + CHUNK]], scale, nuisance)
        for split, plan in plans.items()
        for start in range(0, len(plan), CHUNK)
    ]
    _draw(tasks, sum(len(plan) for plan in plans.values()), workers, progress)
    meta = {
        "name": "asen-demo-copies",
        "attributes": [{"name": n, "values": v} for n, v in ATTRIBUTES],
        "copy_benchmark": {
            "format": FILE_FORMAT,
            "seed": seed,
            "designs": n_designs,
            "background": n_background,
            "copy_changes": list(COPY_CHANGES),
            "distractor_differs": list(DISTRACTOR_DIFFERS),
            "files": {split: f"copies_{split}.jsonl" for split in SPLITS},
            "note": "for evaluation and for choosing, never for training",
        },
    }
    if nuisance != DEFAULT_NUISANCE:
        meta["nuisance"] = {"seed": seed, **{k: v for k, v in vars(nuisance).items()}}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    for split, plan in plans.items():
        _write_split(out_dir, split, plan)
    return {split: len(plan) for split, plan in plans.items()}


@dataclass(frozen=True)
class CopyRecord:
    """One protected design of a copy benchmark: its image, its copies (path, changed attribute names)
    and its distractors (path, attribute names whose values it does not share)."""

    design: pathlib.Path
    copies: tuple[tuple[pathlib.Path, tuple[str, ...]], ...]
    distractors: tuple[tuple[pathlib.Path, tuple[str, ...]], ...]


def read_copies(root: pathlib.Path, split: str) -> list[CopyRecord]:
    """`copies_<split>.jsonl` of a copy benchmark; a ValueError naming the file and line otherwise."""
    path = pathlib.Path(root) / f"copies_{split}.jsonl"
    if not path.is_file():
        raise ValueError(f"{path}: not found; a copy benchmark is written by `asen synth --copies OUT`")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            records.append(
                CopyRecord(
                    root / row["design"],
                    tuple((root / c["path"], tuple(c["changed"])) for c in row["copies"]),
                    tuple((root / d["path"], tuple(d["differs"])) for d in row.get("distractors", [])),
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} line {n}: not a copy record ({exc!r})") from None
    if not records:
        raise ValueError(f"{path}: no designs")
    return records
