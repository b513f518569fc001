"""MAP evaluation per the spec's protocol: during training from cached maps, and for `asen eval`
through the Encoder (the same path the service uses)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from asen_search.model.config import Preprocess
from asen_search.model.data.dataset import Attribute, AttributeDataset, Tagged
from asen_search.model.device import mixed_precision, to_device
from asen_search.model.nn.asen import ASENModel, fusion_beta
from asen_search.model.nn.preprocess import load_image
from asen_search.model.runtime import Stems
from asen_search.model.training.map_cache import (
    ImageSet,
    MemoryBudget,
    build_image_set,
    local_maps,
    local_row_bytes,
    model_device,
)
from asen_search.model.training.retrieval_map import MapReport, attribute_rankings, ranking_report

BETA_GRID = tuple(round(0.1 * k, 1) for k in range(1, 11))  # fusion weights tried per attribute (> 0)


def map_from_vectors(
    attributes: Sequence[Attribute],
    queries: Tagged,
    query_vecs: np.ndarray,
    candidates: Tagged,
    cand_vecs: np.ndarray,
) -> MapReport:
    """Per-attribute MAP (and the ranking metrics of retrieval_map.py): each query ranked against all
    candidates tagged with its attribute.

    `query_vecs` `[nq, D]` and `cand_vecs` `[nc, D]` are unit vectors of each row under the row's
    own attribute. Attributes without queries are left out of the report.
    """
    per_attr: dict[str, dict[str, np.ndarray]] = {}
    for a, attr in enumerate(attributes):
        q, c = queries.attrs == a, candidates.attrs == a
        if q.any():
            per_attr[attr.name] = attribute_rankings(
                query_vecs[q], queries.values[q], cand_vecs[c], candidates.values[c]
            )
    return ranking_report(per_attr)


@dataclass
class ValidationSet:
    """A split's query and candidate rows with their images cached, for per-epoch validation."""

    attributes: tuple[Attribute, ...]
    queries: Tagged
    candidates: Tagged
    images: ImageSet
    scratch: Path | None = None  # where the local maps go when they do not fit in memory
    stems: Stems | None = None  # the stems on an inference runtime (model/runtime.py); None: torch

    @classmethod
    def from_dataset(
        cls,
        ds: AttributeDataset,
        split: str,
        model: ASENModel,
        pre: Preprocess,
        progress: bool = True,
        cache_dir: Path | None = None,
        budget: MemoryBudget | None = None,
        amp: bool | None = None,
        stems: Stems | None = None,
    ) -> ValidationSet:
        paths = list(ds.split(split).paths)
        images = build_image_set(
            model,
            pre,
            paths,
            split,
            cache_dir,
            budget,
            progress=progress,
            amp=amp,
            stem=stems.global_ if stems else None,
        )
        return cls(ds.attributes, ds.queries(split), ds.candidates(split), images, stems=stems)

    def plan_local(self, model: ASENModel, pre: Preprocess, budget: MemoryBudget, scratch: Path) -> None:
        """Local maps of every row in memory if they fit `budget`, else in the row file `scratch`."""
        rows = len(self.queries) + len(self.candidates)
        self.scratch = None if budget.take(rows * local_row_bytes(model, pre)) else scratch

    @torch.no_grad()
    def branch_vectors(
        self,
        model: ASENModel,
        pre: Preprocess,
        use_local: bool,
        batch_size: int = 256,
        progress: bool = True,
        amp: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each row's global and (with `use_local`) local embedding under the row's attribute,
        queries first: `[n_rows, 1, D_g]`, `[n_rows, 1, D_l]` (unnormalised, as the heads give them)."""
        model.eval()
        device = model_device(model)
        fids, attrs = self._rows
        dev_attrs = attrs.to(device)
        with mixed_precision(device, amp):
            g = torch.cat(
                [
                    model.global_embed(
                        to_device(self.images.global_maps[fids[i : i + batch_size]], device).float(),
                        dev_attrs[i : i + batch_size, None],
                    )[0].float()
                    for i in range(0, len(fids), batch_size)
                ]
            )
        loc = None
        if use_local:
            maps = local_maps(
                model,
                pre,
                self.images,
                fids,
                attrs,
                "valid",
                progress=progress,
                scratch=self.scratch,
                amp=amp,
                stem=self.stems.local if self.stems else None,
            )
            with mixed_precision(device, amp):
                loc = torch.cat(
                    [
                        model.local_embed(
                            to_device(maps[i : i + batch_size], device).float(),
                            dev_attrs[i : i + batch_size, None],
                        ).float()
                        for i in range(0, len(fids), batch_size)
                    ]
                )
        return g.cpu(), None if loc is None else loc.cpu()

    @cached_property
    def _rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Image ids and attribute ids of every row, queries first."""
        fids = torch.from_numpy(np.concatenate([self.queries.fids, self.candidates.fids]))
        attrs = torch.from_numpy(np.concatenate([self.queries.attrs, self.candidates.attrs]))
        return fids, attrs

    def report(
        self, model: ASENModel, g: torch.Tensor, loc: torch.Tensor | None, beta: float | torch.Tensor
    ) -> MapReport:
        """MAP of the fused vectors of `branch_vectors`' output at `beta` (one, or one per row)."""
        vecs = model.fuse(g, loc, beta)[:, 0].numpy()
        nq = len(self.queries)
        return map_from_vectors(self.attributes, self.queries, vecs[:nq], self.candidates, vecs[nq:])

    def choose_betas(
        self, model: ASENModel, g: torch.Tensor, loc: torch.Tensor, grid: Sequence[float] = BETA_GRID
    ) -> tuple[tuple[float, ...], MapReport]:
        """Per attribute, the fusion weight of `grid` with the best validation MAP (ties: the larger
        beta, 1 = the global branch alone), and the report at those weights."""
        _, attrs = self._rows
        best: dict[str, tuple[float, float]] = {}
        for beta in sorted(grid, reverse=True):
            for name, value in self.report(model, g, loc, beta).per_attribute.items():
                if name not in best or value > best[name][1]:
                    best[name] = (beta, value)
        betas = tuple(best[a.name][0] if a.name in best else 1.0 for a in self.attributes)
        return betas, self.report(model, g, loc, torch.tensor(betas)[attrs][:, None])

    def evaluate(
        self,
        model: ASENModel,
        pre: Preprocess,
        use_local: bool,
        batch_size: int = 256,
        progress: bool = True,
        amp: bool | None = None,
    ) -> MapReport:
        """Validation MAP of `model` with the fusion weight(s) of `pre`."""
        g, loc = self.branch_vectors(model, pre, use_local, batch_size, progress, amp)
        _, attrs = self._rows
        return self.report(model, g, loc, fusion_beta(pre, attrs[:, None]))


def encode_split(
    encoder, ds: AttributeDataset, split: str, batch_size: int = 32, progress: bool = True
) -> tuple[Tagged, np.ndarray]:
    """Every query and candidate row of `split` (queries first) and its image encoded under the
    row's attribute by the Encoder (decode -> preprocess -> global backbone -> heads -> RoI crops
    -> local branch): `[n_rows, dim]`."""
    queries, candidates = ds.queries(split), ds.candidates(split)
    rows = Tagged(
        np.concatenate([queries.fids, candidates.fids]),
        np.concatenate([queries.attrs, candidates.attrs]),
        np.concatenate([queries.values, candidates.values]),
    )
    paths = ds.split(split).paths
    vecs = np.zeros((len(rows), encoder.dim), dtype=np.float32)
    bar = tqdm(total=len(rows), desc=f"encode {split}", unit="img", disable=not progress, dynamic_ncols=True)
    with ThreadPoolExecutor(2) as pool:
        for a in range(len(ds.attributes)):
            idx = np.flatnonzero(rows.attrs == a)
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                images = list(pool.map(load_image, [paths[f] for f in rows.fids[chunk]]))
                vecs[chunk] = encoder.encode_attribute(images, a, batch_size)
                bar.update(len(chunk))
    bar.close()
    return rows, vecs


def map_of_rows(ds: AttributeDataset, split: str, vecs: np.ndarray) -> MapReport:
    """Per-attribute MAP of `encode_split`'s row vectors."""
    queries, candidates = ds.queries(split), ds.candidates(split)
    nq = len(queries)
    return map_from_vectors(ds.attributes, queries, vecs[:nq], candidates, vecs[nq:])


def evaluate_encoder(
    encoder, ds: AttributeDataset, split: str, batch_size: int = 32, progress: bool = True
) -> MapReport:
    """Encode every query and candidate image of `split` under its own attribute with the Encoder
    and compute MAP."""
    _, vecs = encode_split(encoder, ds, split, batch_size, progress)
    return map_of_rows(ds, split, vecs)
