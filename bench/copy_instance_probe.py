"""Probe: can an instance head learned from new photographs alone find the copy benchmark's copies?

A trained checkpoint stays as it is (class MAP untouched); beside it, per attribute, a linear map of the
attention-pooled features of both heads (the standardised cell features the spatial attention pools,
before the channel attention) is trained with InfoNCE so that two new photographs of one train image
(model/augment.py, the views the instance term uses) are nearer than other train images (with `--hard`,
only other images of the same value under that attribute count as negatives). Then, on the copy
benchmark's test split, each attribute's score is `alpha * class cosine + (1 - alpha) * instance
cosine` and the copy score (mean of the best A - m) ranks every image against each design.

    .venv/bin/python -m bench.copy_instance_probe --checkpoint runs/default-s0/best.pt --data data/demo \\
        --copies data/copies --work runs/probe --json probe.json [--hard]

Features are kept in WORK (`train.npz`, `test.npz`), so a second run with other head settings only
trains. The pooled features are read by wrapping `SpatialAttention.pool` (a probe, not an API).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from asen_search.copy_score import copy_scores
from asen_search.model.copy_eval import Encoded, evaluate_scores
from asen_search.model.data.copies import read_copies
from asen_search.model.data.dataset import load_dataset
from asen_search.model.encoder import Encoder
from asen_search.model.nn import attention
from asen_search.model.nn.preprocess import load_image
from asen_search.model.training.instance import view_paths


def encode(checkpoint: Path, paths: list[Path], out: Path) -> None:
    """Fused class embeddings `[N, A, D]` and both heads' pooled features `[N, A, G C]` of `paths`."""
    encoder = Encoder.from_checkpoint(checkpoint, "cpu", extras=False, runtime="torch")
    model = encoder.model
    seen: dict[str, list[np.ndarray]] = {"g": [], "l": []}
    original = attention.SpatialAttention.pool
    global_asa = model.global_head.asa

    def pool(self, feats, attr):  # type: ignore[no-untyped-def]
        pooled, att = original(self, feats, attr)
        key = "g" if self is global_asa else "l"
        seen[key].append(pooled.detach().reshape(-1, pooled.shape[-1]).float().numpy().astype(np.float16))
        return pooled, att

    attention.SpatialAttention.pool = pool  # type: ignore[method-assign]
    try:
        fused = [
            encoder.encode([load_image(p) for p in paths[s : s + 16]]).astype(np.float16)
            for s in range(0, len(paths), 16)
        ]
    finally:
        attention.SpatialAttention.pool = original  # type: ignore[method-assign]
    n, a = len(paths), len(encoder.attributes)
    np.savez(
        out,
        fused=np.concatenate(fused),
        g=np.concatenate(seen["g"]).reshape(n, a, -1),
        l=np.concatenate(seen["l"]).reshape(n, a, -1),
        paths=np.array([str(p.resolve()) for p in paths]),
    )


def features(z: np.lib.npyio.NpzFile) -> torch.Tensor:
    parts = [F.normalize(torch.from_numpy(z[k].astype(np.float32)), dim=-1) for k in ("g", "l")]
    return torch.cat(parts, -1)


def train_head(
    views: torch.Tensor, labels: torch.Tensor, dim: int, tau: float, epochs: int, hard: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """views `[V, n, A, F]`, labels `[n, A]` -> (mean `[A, F]`, maps `[A, F, dim]`)."""
    torch.manual_seed(0)
    n_views, n, a, f = views.shape
    mean = views.reshape(-1, a, f).mean(0)
    maps = torch.nn.Parameter(torch.randn(a, f, dim) * f**-0.5)
    opt = torch.optim.Adam([maps], lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        for idx in torch.randperm(n).split(256):
            i, j = rng.choice(n_views, 2, replace=False)
            x = F.normalize(torch.einsum("naf,afd->nad", views[i, idx] - mean, maps), dim=-1)
            y = F.normalize(torch.einsum("naf,afd->nad", views[j, idx] - mean, maps), dim=-1)
            logits = torch.einsum("iad,jad->aij", x, y) / tau
            if hard:  # negatives of the same value only (an unlabelled image: no negatives there)
                lab = labels[idx].T
                other = (lab[:, :, None] != lab[:, None, :]) | (lab[:, :, None] < 0)
                logits = logits.masked_fill(other & ~torch.eye(len(idx), dtype=torch.bool), -1e4)
            target = torch.arange(len(idx)).expand(a, -1).reshape(-1)
            loss = F.cross_entropy(logits.reshape(-1, len(idx)), target) + F.cross_entropy(
                logits.transpose(1, 2).reshape(-1, len(idx)), target
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    return mean, maps.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument(
        "--data", type=Path, required=True, help="the labelled dataset the model was trained on"
    )
    parser.add_argument("--copies", type=Path, required=True, help="a copy benchmark (asen synth --copies)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--train-images", type=int, default=1200)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--tau", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hard", action="store_true", help="negatives of the same value only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)

    ds = load_dataset(args.data)
    train = list(ds.split("train").paths)
    pick = sorted(np.random.default_rng(0).choice(len(train), args.train_images, replace=False))
    chosen = [train[i] for i in pick]
    if not (args.work / "train.npz").is_file():
        views = view_paths(chosen, args.views, args.work / "views")
        encode(args.checkpoint, chosen + [p for v in views for p in v], args.work / "train.npz")
    if not (args.work / "test.npz").is_file():
        encode(args.checkpoint, list(load_dataset(args.copies).split("test").paths), args.work / "test.npz")

    # value of every attribute per chosen image (-1 where an image is not labelled for it)
    tagged = ds.train_labels()
    table = np.full((len(train), len(ds.attributes)), -1, dtype=np.int64)
    table[tagged.fids, tagged.attrs] = tagged.values
    labels = torch.from_numpy(table[pick])
    tr = np.load(args.work / "train.npz")
    x = features(tr)
    views_t = x.reshape(args.views + 1, len(pick), *x.shape[1:])
    mean, maps = train_head(views_t, labels, args.dim, args.tau, args.epochs, args.hard)

    z = np.load(args.work / "test.npz")
    paths = [Path(p) for p in z["paths"]]
    rows = {p: i for i, p in enumerate(paths)}
    records = read_copies(args.copies, "test")
    encoded = Encoded(paths, z["fused"].astype(np.float32), np.zeros((len(paths), 1), np.float32), rows)
    q = np.array([rows[r.design.resolve()] for r in records])
    cls = z["fused"].astype(np.float32)
    inst = F.normalize(torch.einsum("naf,afd->nad", features(z) - mean, maps), dim=-1).numpy()
    s_cls = np.einsum("qad,nad->qna", cls[q], cls)
    s_inst = np.einsum("qad,nad->qna", inst[q], inst)
    n_attr = cls.shape[1]
    report = []
    for alpha in (1.0, 0.7, 0.5, 0.3, 0.0):
        for m in (1, 2):
            r = evaluate_scores(
                copy_scores(alpha * s_cls + (1 - alpha) * s_inst, n_attr - m), records, encoded
            )
            row = {"alpha": alpha, "m": m, "map": r["map"], "recall@10": r["recall@10"]["all"]}
            report.append(row)
            print(
                f"alpha {alpha} m {m}: copy mAP {r['map']['all']:.3f} (0/1/2 changed "
                f"{r['map']['0']:.3f}/{r['map']['1']:.3f}/{r['map']['2']:.3f}) R@10 {r['recall@10']['all']:.3f}"
            )
    # other aggregations of the class cosines alone: z-scores against all pairs of the split or against
    # the design's own scores, and the design's rank percentile, before the mean of the best A - m
    iu = np.triu_indices(len(cls), 1)
    pairs = np.einsum("nad,mad->nma", cls, cls)[iu]
    ways = {
        "z over all pairs": (s_cls - pairs.mean(0)) / pairs.std(0),
        "z per design": (s_cls - s_cls.mean(1, keepdims=True)) / s_cls.std(1, keepdims=True),
        "rank per design": s_cls.argsort(1).argsort(1) / s_cls.shape[1],
    }
    for name, scores in ways.items():
        for m in (1, 2):
            r = evaluate_scores(copy_scores(scores, n_attr - m), records, encoded)
            report.append({"aggregation": name, "m": m, "map": r["map"], "recall@10": r["recall@10"]["all"]})
            print(f"{name}, m {m}: copy mAP {r['map']['all']:.3f} R@10 {r['recall@10']['all']:.3f}")
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": report}, indent=1)
        )


if __name__ == "__main__":
    main()
