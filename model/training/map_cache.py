"""Backbone maps for training, in bounded memory and cached across runs.

The frozen part of the global backbone (its stem) is run once per image; training then runs only the
attention heads (and any trainable backbone stages) on its maps. The maps are kept in a cache folder
(`--cache-dir`, default `$ASEN_CACHE_DIR` or `~/.cache/asen-search`), keyed by what they depend on:
the backbone, its stride and frozen stages, the stem's weights, the preprocessing, and each image
file's content (SHA-256). A second run on the same images (another variant, another seed, a resumed
run) reads them instead of recomputing; a changed image has another digest, so only it is
recomputed; a changed stem or preprocessing is another folder. Maps are appended and fsynced before
the index line that names them, so a killed caching pass loses at most its last chunk.

Memory is bounded by a `MemoryBudget`: the maps (and, for the local branch, the decoded originals
its RoI crops are cut from) are held in memory only when they fit; otherwise maps are read from disk
per batch (`row_store.py`) and originals decoded when a batch needs them, by worker threads one batch
ahead. Local crops depend on the global attention; `local_maps` recomputes them for a list of
(image, attribute) pairs, in memory or into a scratch row file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, cast

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from asen_search.model.config import Preprocess
from asen_search.model.device import mixed_precision, to_device
from asen_search.model.nn.asen import ASENModel
from asen_search.model.nn.preprocess import global_inputs, load_image, local_inputs
from asen_search.model.nn.roi import SquareView, attention_boxes, roi_threshold
from asen_search.model.runtime import BackboneRunner
from asen_search.model.training.row_store import Maps, RowFile

KEEP_SIDE = 640  # decoded originals are used with their shorter side at most this long
CACHE_FORMAT = 1  # bump when what a cached map means changes
CHUNK = 64  # images decoded and cached per unit of the caching pass (and lost at most by a kill)
BATCH_MARGIN = 1 << 30  # memory kept free of caches for batches, activations and the optimiser


def default_cache_dir() -> Path:
    """`$ASEN_CACHE_DIR`, else `$XDG_CACHE_HOME/asen-search`, else `~/.cache/asen-search`."""
    if os.environ.get("ASEN_CACHE_DIR"):
        return Path(os.environ["ASEN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "asen-search"


def rss_bytes() -> int:
    """This process's resident memory now (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class MemoryBudget:
    """Bytes the caches may still hold in memory: the limit, less what the process holds when the
    budget is made (the model, torch) and a margin for batches. `take` reserves, or says no."""

    def __init__(self, limit_bytes: float | None) -> None:
        self.limit = limit_bytes
        self.left = float("inf") if limit_bytes is None else limit_bytes - rss_bytes() - BATCH_MARGIN

    def take(self, nbytes: float) -> bool:
        if nbytes <= self.left:
            self.left -= nbytes
            return True
        return False


def kept_size(width: int, height: int) -> tuple[int, int]:
    """The size an image is used at: its shorter side brought down to KEEP_SIDE."""
    short = min(width, height)
    if short <= KEEP_SIDE:
        return width, height
    scale = KEEP_SIDE / short
    return round(width * scale), round(height * scale)


def load_kept(path: Path) -> Image.Image:
    img = load_image(path)
    size = kept_size(img.width, img.height)
    return img if size == img.size else img.resize(size, Image.Resampling.BILINEAR)


def decode_images(
    paths: Sequence[Path], desc: str, workers: int = 2, progress: bool = True
) -> list[Image.Image]:
    """Decode image files (threads: PIL releases the GIL), with a progress bar."""
    with ThreadPoolExecutor(workers) as pool:
        return list(
            tqdm(
                pool.map(load_kept, paths),
                total=len(paths),
                desc=desc,
                unit="img",
                leave=False,
                dynamic_ncols=True,
                disable=not progress,
            )
        )


def file_digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def stem_key(model: ASENModel, pre: Preprocess) -> str:
    """What a cached global map depends on, besides the image: the stem and the preprocessing."""
    branch = model.cfg.global_branch
    digest = hashlib.sha256(
        json.dumps(
            {
                "format": CACHE_FORMAT,
                "backbone": branch.backbone,
                "stride": branch.stride,
                "frozen": branch.frozen_stages,
                "size": pre.global_size,
                "mean": list(pre.mean),
                "std": list(pre.std),
                "crop": pre.crop_rule,
                "keep_side": KEEP_SIDE,
            },
            sort_keys=True,
        ).encode()
    )
    for name, tensor in sorted(model.global_backbone.stem_state().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return f"{branch.backbone}-s{branch.stride}-{digest.hexdigest()[:20]}"


class Entry(NamedTuple):
    row: int
    width: int  # kept size of the image
    height: int


class MapCache:
    """One cache folder: `maps.f16` (a RowFile) and `index.tsv` (`digest row width height` lines)."""

    def __init__(self, folder: Path, shape: Sequence[int]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.file = RowFile(self.folder / "maps.f16", shape)
        self.entries: dict[str, Entry] = {}
        self.reload()

    def reload(self) -> None:
        """Read the index (what another run added too). A torn last line, or a line naming a row
        past the end of the file, is ignored: that map is recomputed."""
        rows = len(self.file)
        try:
            text = (self.folder / "index.tsv").read_text()
        except FileNotFoundError:
            return
        for line in text.split("\n")[:-1]:  # the text after the last newline is a torn write
            parts = line.split("\t")
            if len(parts) == 4 and parts[1].isdigit() and int(parts[1]) < rows:
                self.entries[parts[0]] = Entry(int(parts[1]), int(parts[2]), int(parts[3]))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive among writers (two runs caching into one folder at once)."""
        with open(self.folder / "lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def add(self, digests: Sequence[str], sizes: Sequence[tuple[int, int]], maps: torch.Tensor) -> None:
        """Append maps and then their index lines, each made durable in that order."""
        with self.locked():
            self.reload()
            rows = self.file.append(maps)
            self.file.sync()
            lines = "".join(f"{d}\t{r}\t{w}\t{h}\n" for d, r, (w, h) in zip(digests, rows, sizes))
            index = self.folder / "index.tsv"
            with open(index, "ab+") as fh:  # a torn last line stays alone on its line, ignored
                fh.seek(0, os.SEEK_END)
                if fh.tell():
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        lines = "\n" + lines
            with open(index, "a") as fh:
                fh.write(lines)
                fh.flush()
                os.fsync(fh.fileno())
            for d, r, (w, h) in zip(digests, rows, sizes):
                self.entries[d] = Entry(r, w, h)


@dataclass
class ImageSet:
    """A split's images: their global-input views, their global stem maps `[N, C, h, w]`, and the
    decoded originals when they are held (else decoded per batch by `images`)."""

    paths: list[Path]
    views: list[SquareView]
    sizes: list[tuple[int, int]]
    global_maps: Maps
    kept: list[Image.Image] | None = None
    computed: int = 0  # maps this run computed (the rest came from the cache)

    def __len__(self) -> int:
        return len(self.paths)

    def original_bytes(self) -> int:
        return sum(w * h * 3 for w, h in self.sizes)

    def keep_originals(self, budget: MemoryBudget, desc: str, progress: bool = True) -> bool:
        """Decode and hold every original if they fit the budget (the local branch cuts its crops
        from them every epoch); otherwise they are decoded per batch."""
        if self.kept is None and budget.take(self.original_bytes()):
            self.kept = decode_images(self.paths, f"decode {desc}", progress=progress)
        return self.kept is not None


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _stem_maps(
    stem: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, amp: bool | None
) -> torch.Tensor:
    """A frozen stem's maps of host inputs, computed where its weights are, as float16 on the host."""
    device = getattr(stem, "device", None) or model_device(
        cast(torch.nn.Module, getattr(stem, "__self__", stem))
    )
    with mixed_precision(device, amp):
        return stem(to_device(x, device)).to("cpu", torch.float16)


def _map_shape(module: Callable[[torch.Tensor], torch.Tensor], size: int) -> tuple[int, ...]:
    with torch.inference_mode():
        return tuple(_stem_maps(module, torch.zeros(1, 3, size, size), False).shape[1:])


def _hash_all(paths: Sequence[Path], desc: str, progress: bool) -> list[str]:
    with ThreadPoolExecutor(4) as pool:
        return list(
            tqdm(
                pool.map(file_digest, paths),
                total=len(paths),
                desc=f"hash {desc}",
                unit="img",
                leave=False,
                dynamic_ncols=True,
                disable=not progress,
            )
        )


@torch.inference_mode()
def build_image_set(
    model: ASENModel,
    pre: Preprocess,
    paths: Sequence[Path],
    desc: str,
    cache_dir: Path | None = None,
    budget: MemoryBudget | None = None,
    batch_size: int = 32,
    progress: bool = True,
    amp: bool | None = None,
    stem: BackboneRunner | None = None,
) -> ImageSet:
    """The global stem maps of `paths`, from the cache where it has them, computed (and cached)
    where not (by `stem`: the global backbone's stem on an inference runtime, model/runtime.py;
    default torch); held in memory if they fit `budget`, else read from the cache file per batch."""
    paths = list(paths)
    budget = budget or MemoryBudget(None)
    model.eval()
    run_stem = stem or model.global_backbone.stem
    cache = MapCache(
        Path(cache_dir or default_cache_dir()) / stem_key(model, pre),
        _map_shape(model.global_backbone.stem, pre.global_size),
    )
    digests = _hash_all(paths, desc, progress)
    todo: dict[str, Path] = {}
    for digest, path in zip(digests, paths):
        if digest not in cache.entries and digest not in todo:
            todo[digest] = path
    if todo:
        items = list(todo.items())
        bar = tqdm(
            total=len(items),
            desc=f"cache {desc}",
            unit="img",
            leave=False,
            dynamic_ncols=True,
            disable=not progress,
        )
        chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
        with ThreadPoolExecutor(2) as pool:

            def decode(chunk: list[tuple[str, Path]]) -> list[Image.Image]:
                return list(pool.map(load_kept, [p for _, p in chunk]))

            with ThreadPoolExecutor(1) as ahead:  # the next chunk decodes while this one runs the stem
                pending: Future[list[Image.Image]] = ahead.submit(decode, chunks[0])
                for c, chunk in enumerate(chunks):
                    images = pending.result()
                    if c + 1 < len(chunks):
                        pending = ahead.submit(decode, chunks[c + 1])
                    maps = torch.cat(
                        [
                            _stem_maps(run_stem, global_inputs(images[i : i + batch_size], pre)[0], amp)
                            for i in range(0, len(images), batch_size)
                        ]
                    )
                    cache.add([d for d, _ in chunk], [img.size for img in images], maps)
                    bar.update(len(chunk))
        bar.close()
    entries = [cache.entries[d] for d in digests]
    rows = np.array([e.row for e in entries], dtype=np.int64)
    sizes = [(e.width, e.height) for e in entries]
    views = [SquareView.of(w, h, pre.crop_rule) for w, h in sizes]
    if budget.take(len(rows) * cache.file.row_bytes):
        maps_ = Maps(memory=cache.file.load(rows))
    else:
        maps_ = Maps(file=cache.file, rows=rows)
    return ImageSet(paths, views, sizes, maps_, computed=len(todo))


class _Originals:
    """Decoded originals for a run of batches: held ones, or decoded by threads one batch ahead and
    kept in a small LRU (pairs of one image are adjacent, so each is decoded about once a pass)."""

    def __init__(self, imageset: ImageSet, batches: list[list[int]], workers: int = 2) -> None:
        self.imageset, self.batches = imageset, batches
        self.lru: OrderedDict[int, Image.Image] = OrderedDict()
        self.pool = ThreadPoolExecutor(workers) if imageset.kept is None else None

    def _submit(self, ahead: ThreadPoolExecutor, index: list[int]) -> Future[list[Image.Image]]:
        """Decode a batch's images in the background; the ones the LRU holds are taken now, here,
        so that the background thread never reads the LRU the consumer is changing."""
        assert self.pool is not None
        pool, paths = self.pool, self.imageset.paths
        known = {i: self.lru[i] for i in index if i in self.lru}
        wanted = [i for i in dict.fromkeys(index) if i not in known]

        def decode() -> list[Image.Image]:
            fresh = dict(zip(wanted, pool.map(lambda i: load_kept(paths[i]), wanted)))
            return [known[i] if i in known else fresh[i] for i in index]

        return ahead.submit(decode)

    def __iter__(self) -> Iterator[list[Image.Image]]:
        if self.imageset.kept is not None:
            kept = self.imageset.kept
            for index in self.batches:
                yield [kept[i] for i in index]
            return
        assert self.pool is not None
        with self.pool, ThreadPoolExecutor(1) as ahead:
            pending = self._submit(ahead, self.batches[0]) if self.batches else None
            for b, index in enumerate(self.batches):
                assert pending is not None
                images = pending.result()
                for i, img in zip(index, images):
                    self.lru[i] = img
                    self.lru.move_to_end(i)
                while len(self.lru) > 4 * max(1, len(index)):
                    self.lru.popitem(last=False)
                if b + 1 < len(self.batches):
                    pending = self._submit(ahead, self.batches[b + 1])
                yield images


def local_map_shape(model: ASENModel, pre: Preprocess) -> tuple[int, ...]:
    assert model.local_backbone is not None
    return _map_shape(model.local_backbone.stem, pre.local_size)


def local_row_bytes(model: ASENModel, pre: Preprocess) -> int:
    """Bytes of one RoI-crop map (float16), for memory planning."""
    return 2 * int(np.prod(local_map_shape(model, pre)))


@torch.inference_mode()
def local_maps(
    model: ASENModel,
    pre: Preprocess,
    imageset: ImageSet,
    fids: torch.Tensor,
    attrs: torch.Tensor,
    desc: str,
    batch_size: int = 64,
    progress: bool = True,
    scratch: Path | None = None,
    amp: bool | None = None,
    stem: BackboneRunner | None = None,
) -> Maps:
    """Local stem maps `[n, C, h', w']` of the RoI crops of (fid, attr) pairs, crops chosen by the
    model's CURRENT global attention (`stem`: the local stem on an inference runtime, default torch);
    in memory, or written to the row file `scratch` (overwritten)."""
    assert model.local_backbone is not None
    model.eval()
    batches = [
        list(range(start, min(start + batch_size, len(fids)))) for start in range(0, len(fids), batch_size)
    ]
    out_file = None if scratch is None else RowFile(scratch, local_map_shape(model, pre))
    parts: list[torch.Tensor] = []
    originals = _Originals(imageset, [fids[b].tolist() for b in batches])
    bar = tqdm(
        total=len(batches),
        desc=f"crops {desc}",
        unit="batch",
        leave=False,
        dynamic_ncols=True,
        disable=not progress,
    )
    device = model_device(model)
    run_stem = stem or model.local_backbone.stem

    def cut(rows: list[int], images: list[Image.Image]) -> torch.Tensor:
        """The crops of a batch's pairs by the current global attention (runs in the helper thread)."""
        f, a = fids[rows], attrs[rows]
        with torch.inference_mode(), mixed_precision(device, amp):
            _, att = model.global_embed(
                to_device(imageset.global_maps[f], device).float(), a[:, None].to(device)
            )
        boxes = attention_boxes(att[:, 0].float().cpu(), pre.global_size, roi_threshold(pre, a))
        return local_inputs(images, [imageset.views[i] for i in f.tolist()], boxes, pre)

    def store(rows: list[int], crops: torch.Tensor) -> None:
        maps = _stem_maps(run_stem, crops, amp)
        if out_file is None:
            parts.append(maps)
        else:
            out_file.write_at(rows[0], maps)
        bar.update(1)

    # the next batch's attention and crops are made in a helper thread while the stem runs on this
    # one: the stem's runtime leaves enough of the CPU idle to hide most of the image work
    with ThreadPoolExecutor(1, thread_name_prefix="asen-crops") as helper:
        pending: tuple[list[int], Future[torch.Tensor]] | None = None
        for rows, images in zip(batches, originals):
            submitted = (rows, helper.submit(cut, rows, images))
            if pending is not None:
                store(pending[0], pending[1].result())
            pending = submitted
        if pending is not None:
            store(pending[0], pending[1].result())
    bar.close()
    if out_file is None:
        return Maps(
            memory=torch.cat(parts)
            if parts
            else torch.zeros(0, *local_map_shape(model, pre), dtype=torch.float16)
        )
    return Maps(file=out_file, rows=np.arange(len(fids)))
