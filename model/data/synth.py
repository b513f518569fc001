"""Built-in demo dataset: procedurally drawn garments written in the attribute dataset format.

Seven attributes, each sampled independently and uniformly per image: small localised details
(neckline, closure, pocket), mid-size regions (sleeve and garment length) and global ones (pattern,
colour). Nuisances (position, scale, rotation, clutter, lighting, occluders, JPEG quality, image size)
keep the task honest. Pure PIL + numpy; the drawing itself lives in `asen_search.model.data.synth_draw`.

Every image is drawn from its own generator, `np.random.default_rng([seed, split_id, index])`, so a
seed gives byte-identical files whatever the worker count or progress setting.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image
from tqdm import tqdm

from asen_search.model.data.synth_draw import DEFAULT_NUISANCE, Nuisance, render_scene

ATTRIBUTES: list[tuple[str, list[str]]] = [
    ("neckline", ["round", "v_neck", "square", "high_collar"]),
    ("closure", ["none", "buttons", "zip", "double_breasted"]),
    ("pocket", ["none", "chest_pocket", "hip_pockets", "kangaroo"]),
    ("sleeve_length", ["sleeveless", "short", "elbow", "long"]),
    ("garment_length", ["cropped", "hip", "thigh", "knee"]),
    ("pattern", ["solid", "h_stripes", "v_stripes", "dots", "checks"]),
    ("colour", ["red", "orange", "yellow", "green", "blue", "purple"]),
]
SPLITS = ("train", "valid", "test")
QUERY_FRACTION = 0.2
CHUNK = 64  # images per worker task
PARALLEL_MIN_IMAGES = 1000  # below this, one process is faster than starting a pool


def parse_nuisance(settings: Sequence[str]) -> Nuisance:
    """`NAME=VALUE` strings (`rotation=25`, `clutter=10,24`) -> Nuisance; unknown names and bad values
    are errors naming the settings there are.

    >>> parse_nuisance(["rotation=25", "brightness=0.55,1.35"]).brightness
    (0.55, 1.35)
    """
    fields = {f.name: f for f in dataclasses.fields(Nuisance)}
    values: dict[str, object] = {}
    for setting in settings:
        name, _, text = setting.partition("=")
        if name not in fields or not text:
            raise ValueError(
                f"nuisance setting {setting!r}: expected NAME=VALUE with NAME one of {', '.join(fields)}"
            )
        default = getattr(DEFAULT_NUISANCE, name)
        kind = type(default[0]) if isinstance(default, tuple) else type(default)
        try:
            parts = tuple(kind(x) for x in text.split(","))
        except ValueError:
            raise ValueError(f"nuisance setting {setting!r}: not a {kind.__name__}") from None
        if len(parts) != (len(default) if isinstance(default, tuple) else 1):
            raise ValueError(f"nuisance setting {setting!r}: expected {default!r}-like value")
        values[name] = parts if isinstance(default, tuple) else parts[0]
    return dataclasses.replace(DEFAULT_NUISANCE, **values)  # type: ignore[arg-type]


def sample_labels(rng: np.random.Generator) -> dict[str, int]:
    """One value id per attribute, independent and uniform."""
    return {name: int(rng.integers(len(values))) for name, values in ATTRIBUTES}


def draw_garment(
    labels: dict[str, int],
    rng: np.random.Generator,
    scale: float = 1.0,
    nuisance: Nuisance = DEFAULT_NUISANCE,
    record: dict[str, float] | None = None,
) -> Image.Image:
    """Draw one RGB picture of a garment with the given value id for every attribute name."""
    named: dict[str, str] = {}
    for name, values in ATTRIBUTES:
        if name not in labels:
            raise KeyError(f"draw_garment: no value for attribute {name!r}")
        if not 0 <= labels[name] < len(values):
            raise ValueError(
                f"draw_garment: value id {labels[name]} out of range for {name!r} ({len(values)} values)"
            )
        named[name] = values[labels[name]]
    return render_scene(named, rng, scale, nuisance, record)


def _render_one(
    seed: int, split_id: int, index: int, scale: float = 1.0, nuisance: Nuisance = DEFAULT_NUISANCE
) -> tuple[list[int], bytes]:
    """Labels (value ids in attribute order) and JPEG bytes of one image."""
    rng = np.random.default_rng([seed, split_id, index])
    labels = sample_labels(rng)
    image = draw_garment(labels, rng, scale, nuisance)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(*nuisance.jpeg_quality)))
    return [labels[name] for name, _ in ATTRIBUTES], buffer.getvalue()


def _render_chunk(
    out_dir: str,
    seed: int,
    split_id: int,
    start: int,
    stop: int,
    scale: float = 1.0,
    nuisance: Nuisance = DEFAULT_NUISANCE,
) -> list[list[int]]:
    """Render and write images start..stop-1 of a split; return their labels."""
    split_dir = pathlib.Path(out_dir) / "images" / SPLITS[split_id]
    labels = []
    for index in range(start, stop):
        values, data = _render_one(seed, split_id, index, scale, nuisance)
        (split_dir / f"{index:05d}.jpg").write_bytes(data)
        labels.append(values)
    return labels


Row = tuple[int, int, int]


def tag_queries(labels: np.ndarray, seed: int, split_id: int) -> tuple[list[Row], list[Row]]:
    """Tag each image with one attribute (round-robin over a seeded permutation) and pick queries.

    labels: [n_images, n_attributes] value ids. Within every (attribute, value) group about
    QUERY_FRACTION of the images (at least one when the group has two or more) become queries.
    Returns (queries, candidates) as sorted lists of (fid, attr, val).
    """
    rng = np.random.default_rng([seed, 1000 + split_id])
    n, n_attr = labels.shape
    tags = np.empty(n, dtype=np.int64)
    tags[rng.permutation(n)] = np.arange(n) % n_attr
    queries: list[Row] = []
    candidates: list[Row] = []
    for attr, (_, values) in enumerate(ATTRIBUTES):
        for val in range(len(values)):
            group = np.flatnonzero((tags == attr) & (labels[:, attr] == val))
            group = group[rng.permutation(len(group))]
            n_query = min(len(group) - 1, max(1, round(QUERY_FRACTION * len(group)))) if len(group) else 0
            queries += [(int(f), attr, val) for f in group[:n_query]]
            candidates += [(int(f), attr, val) for f in group[n_query:]]
    return sorted(queries), sorted(candidates)


def _write_lines(path: pathlib.Path, rows: Sequence[tuple[int, ...]] | Sequence[str]) -> None:
    lines = [r if isinstance(r, str) else " ".join(map(str, r)) for r in rows]
    path.write_text("".join(line + "\n" for line in lines))


def _check_dataset_args(counts: dict[str, int], seed: int, scale: float) -> None:
    if seed < 0:
        raise ValueError(f"generate_dataset: seed must be non-negative, got {seed}")
    if not 0.25 <= scale <= 8:
        raise ValueError(f"generate_dataset: scale must be between 0.25 and 8, got {scale}")
    for split, n in counts.items():
        if n < 1:
            raise ValueError(f"generate_dataset: n_{split} must be at least 1, got {n}")


def _draw(tasks: list[tuple], total: int, workers: int | None, progress: bool) -> dict[int, list[list[int]]]:
    """Render every chunk (in worker processes for large runs); the labels per split id, in image order."""
    workers = (workers or os.cpu_count() or 1) if total >= PARALLEL_MIN_IMAGES else 1
    labels: dict[int, list[list[int]]] = {sid: [] for sid in range(len(SPLITS))}
    with tqdm(total=total, disable=not progress, desc="drawing garments", unit="img") as bar:
        results: Iterator[list[list[int]]]
        if workers == 1:
            results = (_render_chunk(*task) for task in tasks)
            pool = None
        else:
            pool = ProcessPoolExecutor(max_workers=workers)
            results = pool.map(_render_chunk, *zip(*tasks))
        try:
            for task, chunk in zip(tasks, results):  # map keeps task order
                labels[task[2]] += chunk
                bar.update(len(chunk))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return labels


def generate_dataset(
    out_dir: pathlib.Path,
    n_train: int = 4000,
    n_valid: int = 700,
    n_test: int = 1400,
    seed: int = 0,
    progress: bool = True,
    scale: float = 1.0,
    workers: int | None = None,
    nuisance: Nuisance = DEFAULT_NUISANCE,
) -> None:
    """Draw the demo dataset into `out_dir` (created if missing) in the attribute dataset format.

    Train images carry all attribute pairs; each valid/test image is tagged with one attribute and is
    either a query or a candidate. Large runs use a worker process per core (`workers`; the output
    is the same). `scale` multiplies every picture's size (1: shorter side 200-360 px; 1.6: about
    FashionAI's 512 px), leaving every other draw as it is. `nuisance` changes how pictures vary
    (rotation, framing, clutter, occluders, lighting, JPEG quality); non-default settings are
    recorded in meta.json.
    """
    counts = {"train": n_train, "valid": n_valid, "test": n_test}
    _check_dataset_args(counts, seed, scale)
    out_dir = pathlib.Path(out_dir)
    for split in SPLITS:
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
    meta: dict[str, object] = {
        "name": "asen-demo",
        "attributes": [{"name": n, "values": v} for n, v in ATTRIBUTES],
    }
    if nuisance != DEFAULT_NUISANCE:
        meta["nuisance"] = {"seed": seed, **dataclasses.asdict(nuisance)}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    tasks = [
        (str(out_dir), seed, sid, start, min(start + CHUNK, counts[split]), scale, nuisance)
        for sid, split in enumerate(SPLITS)
        for start in range(0, counts[split], CHUNK)
    ]
    labels = _draw(tasks, sum(counts.values()), workers, progress)
    for split in SPLITS:
        _write_lines(
            out_dir / f"filenames_{split}.txt", [f"images/{split}/{i:05d}.jpg" for i in range(counts[split])]
        )
    _write_lines(
        out_dir / "label_train.txt",
        [(fid, *[x for pair in enumerate(vals) for x in pair]) for fid, vals in enumerate(labels[0])],
    )
    for sid, split in enumerate(SPLITS[1:], start=1):
        queries, candidates = tag_queries(np.asarray(labels[sid], dtype=np.int64), seed, sid)
        _write_lines(out_dir / f"query_{split}.txt", queries)
        _write_lines(out_dir / f"candidate_{split}.txt", candidates)
