"""Recall of composed queries (index/composed.py) at catalogue scale: `FaissCatalogue.search_composed`
against a brute-force weighted sum, per index kind and per `per_part` (the candidates each positive part
contributes before the exact rescoring), with the latency of each setting.

    .venv/bin/python -m bench.composed_recall --checkpoint /tmp/composerun/data/model/best.pt \\
        --images /tmp/composerun/data/data/images --items 100000 --queries 300 --json /tmp/composed_recall.json
    .venv/bin/python -m bench.composed_recall --items 100000 --queries 300 --parents shared \\
        --kinds Flat HNSW32:ef_search=256 --json /tmp/composed_recall_shared.json
    .venv/bin/python -m bench.composed_recall --items 100000 --queries 200 --kinds Flat HNSW32:ef_search=256 \\
        --per-part 16384 46341 --json /tmp/composed_recall_large.json
    .venv/bin/python -m bench.composed_recall --items 100000 --queries 300 --kinds IVF1024,SQ8:nprobe=128 \\
        --per-part 800 1600 3200 --json /tmp/composed_recall_ivf128.json

(each under 10 minutes on 2 cores once the real vectors are cached, 2.5 minutes the first time;
`--items 20000 --queries 60` checks the whole pipeline in under a minute.)

Vectors: bench/index_scale.py's generator, once per attribute. Up to `--real` demo images are encoded by
the trained model for every attribute (cached as .npy under `--work-dir`, shared with index_scale); each
real image is one catalogue item with its real vector under every attribute (same rows in every
attribute). The catalogue is filled up to `--items` with synthetic items: per attribute, a real vector
(the parent) plus zero-mean Gaussian noise shaped like that attribute's real covariance, re-normalised,
the noise scale bisected so that a synthetic vector's median cosine to its nearest real vector equals
the real vectors' median nearest-neighbour cosine (index_scale.calibrate).
- `--parents independent` (default): each attribute draws its own parent, so a synthetic item's
  attributes are independent of one another (its neckline says nothing of its colour). Real items'
  attribute embeddings come from one image and are somewhat correlated (printed: a real item's top-50
  neighbours under two attributes share about 2.5 times as many items as independence would give), so
  this is the harder case for candidates drawn from one part's index: its recall is conservative.
- `--parents shared`: one parent image per synthetic item for every attribute, so its attributes vary
  together (measured: the neighbour overlap lies between independence and the real items').
Printed for both: the mean correlation between two attributes' cosines over random item pairs, and the
top-50 neighbour overlap between two attributes among 1,500 items (real ones; random catalogue ones).

Queries (`--queries`, a third of each kind): 2 or 3 parts over distinct random attributes; the first
weight is positive, the others of random sign, every magnitude uniform in [0.1, 1]. Part vectors are:
- item: one random catalogue item's vectors, that item excluded (as the service does for `item_id`);
- mixed: each part a different random item's vector (mix and match), those items excluded;
- perturbed: one random item's vectors plus calibrated noise (an unseen similar garment), none excluded.

Brute force: every item's weighted sum of inner products over the generated float32 vectors (numpy),
the top 10 (excluded items left out). recall@10 = |returned ∩ brute-force top 10| / 10, mean over the
queries; lo95 is a one-sided 95% bootstrap lower bound of that mean (2,000 resamples of the queries).
Columns: recall by query kind; "all positive" (no negative weight) and "neg-dominant" (the negative
weights outweigh the positive ones) subsets; "returned": the share of `per_part` that a positive part's
own search returns (first 60 queries; HNSW returns about as many items as efSearch lets it visit, IVF
no more than its probed lists hold); "vs stored": for an index whose stored vectors are quantised
(SQ8: the rescoring reads decoded vectors), recall against the brute force over the decoded vectors,
which isolates what the candidate union misses from the quantisation's own error.

Each kind is measured with every `--per-part` value (the candidate way, even on Flat, where the parts'
own searches are exact: the loss of the candidate union alone) and with the default (`per_part=None`:
the exact path on Flat, `COMPOSED_CANDIDATES` on the others). On the others, the exact way (taken when
no part is positive: every item scored from its decoded vectors) is timed on the first 60 queries with
every weight made negative. Latency: wall time of one `search_composed` call per query (k=10),
faiss.omp_set_num_threads(--threads, default 2). The choice per kind is the smallest measured
`per_part` whose lo95 (vs brute force, or vs stored for quantised storage) is at least `--target-recall`.

Candidate depth: for every true top-10 item, 1 + its best rank under a positive part, i.e. the smallest
`per_part` that makes it a candidate with exact per-part searches, computed for every `per_part` at
once: the `per_part` needed for the target, overall, for queries with and without a negative weight,
and for the union in which each negative part also contributes its top items under the negated vector
(the items least like it), which is what `candidate_keys` / `candidate_search` do (Flat's candidate
rows measure it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

K = 10
KINDS = ("item", "mixed", "perturbed")
PER_PART = (50, 100, 200, 400, 800, 1600, 3200)
OVERLAP_K = 50
SCAN_QUERIES = 60  # queries timed on the exact way over decoded vectors (a full scan each)
DEFAULT_KINDS = ("Flat", "HNSW32:ef_search=256", "IVF1024,SQ8:nprobe=32")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- vectors


@dataclass
class Catalogue:
    """Generated vectors, one contiguous `[n, dim]` array per attribute, and what was measured of them."""

    names: list[str]
    columns: list[np.ndarray]
    models: list[Any]  # index_scale.NoiseModel per attribute
    real_rows: np.ndarray
    info: dict[str, Any]


def make_catalogue(args: argparse.Namespace, rng: np.random.Generator) -> Catalogue:
    """Real vectors for every attribute, then synthetic items around them (see the module docstring)."""
    from bench.index_scale import calibrate, cosine_stats, nn_cosine, noise_model, real_vectors, unit

    reals, names, n_attr = [], [], None
    a = 0
    while n_attr is None or a < n_attr:
        spec = argparse.Namespace(
            checkpoint=args.checkpoint,
            images=args.images,
            real=args.real,
            seed=args.seed,
            attribute=a,
            work_dir=args.work_dir,
        )
        vectors, meta = real_vectors(spec)
        reals.append(unit(vectors.astype(np.float32)))
        names.append(str(meta["attribute_name"]))
        n_attr = min(int(meta["n_attributes"]), args.attributes or int(meta["n_attributes"]))
        a += 1
    if len({len(r) for r in reals}) != 1:
        raise SystemExit(
            f"the attributes encoded different image counts {[len(r) for r in reals]}: clear the cache"
        )
    n_real, dim = reals[0].shape
    if args.items < n_real:
        raise SystemExit(f"--items {args.items} is below the {n_real} real items")

    rows = rng.permutation(args.items)
    real_rows, synth_rows = np.sort(rows[:n_real]), rows[n_real:]
    real_order = np.argsort(rows[:n_real])  # real item j goes to row rows[j]
    shared = rng.integers(0, n_real, len(synth_rows))
    columns, models, calibration = [], [], []
    for a, real in enumerate(reals):
        real_nn = nn_cosine(real, real, exclude_self=True)
        model = noise_model(real, args.noise)
        synth_nn = calibrate(model, real, float(np.median(real_nn)), rng)
        column = np.empty((args.items, dim), dtype=np.float32)
        column[real_rows] = real[real_order]
        parents = shared if args.parents == "shared" else rng.integers(0, n_real, len(synth_rows))
        for lo in range(0, len(synth_rows), 50_000):
            column[synth_rows[lo : lo + 50_000]] = model.sample(real[parents[lo : lo + 50_000]], rng)
        columns.append(column)
        models.append(model)
        calibration.append(
            {
                "attribute": names[a],
                "scale": model.scale,
                "real_nn_cosine": cosine_stats(real_nn),
                "synthetic_to_real_nn_cosine": cosine_stats(synth_nn),
            }
        )
        log(
            f"{names[a]}: noise scale {model.scale:.4f}, NN cosine real {cosine_stats(real_nn)['median']}, "
            f"synthetic->real {cosine_stats(synth_nn)['median']}"
        )

    sample = rng.choice(args.items, n_real, replace=False)
    info = {
        "real_items": n_real,
        "dim": dim,
        "attributes": names,
        "parents": args.parents,
        "noise": args.noise,
        "calibration": calibration,
        "cross_attribute_correlation": {
            "real": cross_correlation([c[real_rows] for c in columns], rng),
            "catalogue": cross_correlation(columns, rng),
        },
        "neighbour_overlap": {
            "real": neighbour_overlap([c[real_rows] for c in columns]),
            "catalogue_sample": neighbour_overlap([c[sample] for c in columns]),
            "random": round(OVERLAP_K / (n_real - 1), 4),
        },
    }
    return Catalogue(names, columns, models, real_rows, info)


def cross_correlation(columns: list[np.ndarray], rng: np.random.Generator, pairs: int = 20_000) -> float:
    """Mean over attribute pairs of the Pearson correlation between the two attributes' cosines of
    random item pairs (0: an item's similarity under one attribute says nothing of another)."""
    n = len(columns[0])
    i, j = rng.integers(0, n, pairs), rng.integers(0, n, pairs)
    keep = i != j
    sims = np.stack([np.einsum("nd,nd->n", c[i[keep]], c[j[keep]]) for c in columns])
    corr = np.corrcoef(sims)
    return round(float(corr[~np.eye(len(columns), dtype=bool)].mean()), 4)


def neighbour_overlap(columns: list[np.ndarray]) -> float:
    """Mean over items and attribute pairs of |top-OVERLAP_K neighbours under one attribute ∩ under the
    other| / OVERLAP_K, among the given items (OVERLAP_K / (n - 1) if attributes were independent)."""
    tops = []
    for c in columns:
        sims = c @ c.T
        np.fill_diagonal(sims, -np.inf)
        tops.append(np.argpartition(-sims, OVERLAP_K, axis=1)[:, :OVERLAP_K])
    n = len(columns[0])
    overlaps = []
    for a in range(len(tops)):
        for b in range(a + 1, len(tops)):
            rows = np.repeat(np.arange(n), OVERLAP_K)
            mask_a = np.zeros((n, n), dtype=bool)
            mask_a[rows, tops[a].ravel()] = True
            overlaps.append(mask_a[rows, tops[b].ravel()].sum() / (n * OVERLAP_K))
    return round(float(np.mean(overlaps)), 4)


# ---------------------------------------------------------------------------------------------- queries


@dataclass
class Query:
    kind: str
    attributes: list[int]
    vectors: np.ndarray  # [parts, dim]
    weights: list[float]
    exclude: list[int]  # rows

    @property
    def negative_dominant(self) -> bool:
        """The negative weights outweigh the positive ones."""
        return -sum(w for w in self.weights if w < 0) > sum(w for w in self.weights if w > 0)


def make_queries(cat: Catalogue, n: int, rng: np.random.Generator) -> list[Query]:
    n_items, n_attr = len(cat.columns[0]), len(cat.columns)
    queries = []
    for q in range(n):
        kind = KINDS[q % len(KINDS)]
        parts = int(rng.integers(2, 4))
        attrs = [int(a) for a in rng.choice(n_attr, parts, replace=False)]
        magnitudes = rng.uniform(0.1, 1.0, parts)
        signs = np.concatenate([[1.0], rng.choice([-1.0, 1.0], parts - 1)])
        weights = [round(float(w), 3) for w in signs * magnitudes]
        if kind == "mixed":
            rows = [int(r) for r in rng.choice(n_items, parts, replace=False)]
            vectors = np.stack([cat.columns[a][r] for a, r in zip(attrs, rows)])
            exclude = rows
        else:
            row = int(rng.integers(n_items))
            vectors = np.stack([cat.columns[a][row] for a in attrs])
            exclude = [row]
            if kind == "perturbed":
                vectors = np.concatenate(
                    [cat.models[a].sample(vectors[p : p + 1].copy(), rng) for p, a in enumerate(attrs)]
                )
                exclude = []
        queries.append(Query(kind, attrs, np.ascontiguousarray(vectors, dtype=np.float32), weights, exclude))
    return queries


def brute_force(columns: list[np.ndarray], query: Query) -> tuple[np.ndarray, np.ndarray]:
    """Rows and scores of the exact top K by the weighted sum, best first."""
    total = np.zeros(len(columns[0]), dtype=np.float64)
    for a, v, w in zip(query.attributes, query.vectors, query.weights):
        total += w * (columns[a] @ v).astype(np.float64)
    total[query.exclude] = -np.inf
    top = np.argpartition(-total, K)[:K]
    top = top[np.argsort(-total[top], kind="stable")]
    return top, total[top]


def candidate_depth(
    columns: list[np.ndarray], query: Query, top: np.ndarray, negative_parts: bool = False
) -> np.ndarray:
    """For each of the exact top items `top` `[K]`: the smallest `per_part` that puts it in the candidate
    union, 1 + its best rank (0 = first) under any positive part, excluded items left out: what
    `candidate_search` over exact per-part searches (Flat) finds, computed for every `per_part` at once.
    `negative_parts`: a negative part also contributes its top items under the negated vector (the
    items least like it), which `candidate_search` does not do: the depth such a union would need."""
    depth = np.full(len(top), np.iinfo(np.int64).max, dtype=np.int64)
    for a, v, w in zip(query.attributes, query.vectors, query.weights):
        if w < 0 and negative_parts:
            v = -v
        elif w <= 0:
            continue
        scores = columns[a] @ v
        scores[query.exclude] = -np.inf
        ranks = (scores[None, :] > scores[top][:, None]).sum(axis=1)
        depth = np.minimum(depth, ranks + 1)
    return depth


@dataclass
class Depth:
    """The candidate depth needed, from `candidate_depth` over all queries."""

    predicted: dict[int, float]  # per_part -> predicted recall@10 (exact parts)
    needed_mean: int  # smallest per_part with mean recall >= target
    needed_lo95: int | None  # smallest per_part (on the grid) with lo95 >= target
    needed_mean_positive: int  # the same, queries without a negative weight only
    needed_mean_negative: int  # queries with a negative weight
    needed_mean_negative_parts: int  # all queries, negative parts contributing (negated) candidates
    predicted_negative_parts: dict[int, float]
    depth_percentiles: dict[str, int]  # of the true top-10 items' depths


def depth_report(
    depths: np.ndarray,
    with_negative_parts: np.ndarray,
    positive_only: np.ndarray,
    target: float,
    per_parts: list[int],
    n: int,
    rng: np.random.Generator,
) -> Depth:
    """`depths`, `with_negative_parts` `[queries, K]` (candidate_depth without and with negative parts)."""

    def needed(d: np.ndarray) -> int:
        flat = np.sort(d.ravel())
        return int(flat[max(0, int(np.ceil(target * len(flat))) - 1)]) if len(flat) else 0

    grid = sorted({*per_parts, *(int(round(2 ** (e / 4))) for e in range(16, int(4 * np.log2(n)) + 1)), n})
    needed_lo95 = next((p for p in grid if lower_bound((depths <= p).mean(axis=1), rng) >= target), None)
    pct = np.percentile(depths.ravel(), [50, 90, 99, 100])
    return Depth(
        {p: float((depths <= p).mean()) for p in grid},
        needed(depths),
        needed_lo95,
        needed(depths[positive_only]),
        needed(depths[~positive_only]),
        needed(with_negative_parts),
        {p: float((with_negative_parts <= p).mean()) for p in grid},
        {f"p{q}": int(v) for q, v in zip((50, 90, 99, 100), pct)},
    )


@dataclass
class Row:
    index: str
    per_part: str
    path: str
    recall: float
    lo95: float
    recall_stored: float | None
    lo95_stored: float | None
    by_kind: dict[str, float]
    recall_all_positive: float
    lo95_all_positive: float
    recall_negative_dominant: float
    returned: float | None  # a positive part's search: results returned / per_part asked
    worst: float
    mean_ms: float
    p50_ms: float
    p99_ms: float


@dataclass
class Result:
    index: str
    factory: str
    params: dict[str, int]
    build_s: float
    stored_lossy: bool
    exact_path_identical: int | None = None  # Flat default: queries whose ids and order equal brute force
    exact_path_max_score_diff: float | None = None
    scan_recall: float | None = None  # the exact way over decoded vectors (no positive part)
    scan_mean_ms: float | None = None
    rows: list[Row] = field(default_factory=list)
    choice: int | None = None
    choice_all_positive: int | None = None  # the same rule on the queries without a negative weight


def parse_kind(spec: str) -> tuple[str, dict[str, int]]:
    """ "HNSW32:ef_search=256" -> ("HNSW32", {"ef_search": 256})."""
    factory, _, knobs = spec.partition(":")
    params = {}
    for knob in filter(None, knobs.split(":")):
        key, _, value = knob.partition("=")
        params[key] = int(value)
    return factory, params


def lower_bound(per_query: np.ndarray, rng: np.random.Generator, resamples: int = 2000) -> float:
    """One-sided 95% bootstrap lower bound of the mean."""
    means = per_query[rng.integers(0, len(per_query), (resamples, len(per_query)))].mean(axis=1)
    return float(np.percentile(means, 5))


def overlap(found: list[np.ndarray], truth: list[np.ndarray]) -> np.ndarray:
    return np.array([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth)])


def run_queries(
    catalogue: Any, parts: list[list[Any]], excludes: list[list[str]], per_part: int | None
) -> tuple[list[Any], np.ndarray]:
    """Results and milliseconds of one `search_composed` call per query (after 5 warm-up calls)."""
    for q in range(min(5, len(parts))):
        catalogue.search_composed(parts[q], K, exclude=excludes[q], per_part=per_part)
    found, times = [], []
    for q in range(len(parts)):
        t0 = time.perf_counter()
        found.append(catalogue.search_composed(parts[q], K, exclude=excludes[q], per_part=per_part))
        times.append(time.perf_counter() - t0)
    return found, np.array(times) * 1000


def returned_share(
    catalogue: Any,
    queries: list[Query],
    parts: list[list[Any]],
    excludes: list[list[str]],
    per_part: int,
    sample: int = 60,
) -> float:
    """Mean share of `per_part` that the first positive part's own search returns (on the first `sample`
    queries): an index may return fewer than asked (HNSW about as many as its search visits)."""
    shares = []
    for q in range(min(sample, len(queries))):
        part = next(p for p in parts[q] if p.weight > 0)
        wanted = min(max(per_part, K), len(catalogue) - len(excludes[q]))
        shares.append(
            len(catalogue.search(part.vector, part.attribute, wanted, exclude=excludes[q])) / wanted
        )
    return float(np.mean(shares))


def measure(
    spec: str,
    cat: Catalogue,
    queries: list[Query],
    truth: list[np.ndarray],
    per_parts: list[int],
    target: float,
    rng: np.random.Generator,
) -> Result:
    from asen_search.index import COMPOSED_CANDIDATES, FaissCatalogue, Part

    factory, params = parse_kind(spec)
    n = len(cat.columns[0])
    ids = [f"i{r:07d}" for r in range(n)]
    start = time.perf_counter()
    catalogue = FaissCatalogue.create(cat.names, cat.columns[0].shape[1], "bench-composed-recall", factory)
    catalogue.add(ids, np.stack(cat.columns, axis=1))
    if params:
        catalogue.set_search_params(**params)
    build_s = time.perf_counter() - start
    log(f"[{spec}] built in {build_s:.1f} s")

    # quantised storage: the rescoring reads decoded vectors; brute force over those too
    probe = np.arange(0, n, max(1, n // 50))
    lossy = any(
        float(np.abs(catalogue.vector(ids[r], cat.names[0]) - cat.columns[0][r]).max()) > 1e-6 for r in probe
    )
    stored_truth = None
    if lossy:
        stored: list[np.ndarray] = [np.empty_like(c) for c in cat.columns]
        for chunk, vectors, _ in catalogue.iter_items(20_000):
            rows = np.array([int(i[1:]) for i in chunk])
            for a in range(len(stored)):
                stored[a][rows] = vectors[:, a]
        stored_truth = [brute_force(stored, q)[0] for q in queries]
        del stored
    result = Result(spec, factory, params, build_s, lossy)

    def as_parts(q: Query, sign: float = 1.0) -> list[Any]:
        return [Part(cat.names[a], v, sign * w) for a, v, w in zip(q.attributes, q.vectors, q.weights)]

    parts = [as_parts(q) for q in queries]
    excludes = [[ids[r] for r in q.exclude] for q in queries]
    kinds = np.array([q.kind for q in queries])
    dominant = np.array([q.negative_dominant for q in queries])
    positive_only = np.array([min(q.weights) > 0 for q in queries])
    for per_part in [*per_parts, None]:
        found, ms = run_queries(catalogue, parts, excludes, per_part)
        hit_rows = [np.array([int(h.id[1:]) for h in hits], dtype=np.int64) for hits in found]
        recall = overlap(hit_rows, truth)
        stored_recall = None if stored_truth is None else overlap(hit_rows, stored_truth)
        exact_path = per_part is None and factory == "Flat"
        returned = (
            None
            if exact_path
            else returned_share(catalogue, queries, parts, excludes, per_part or COMPOSED_CANDIDATES)
        )
        label = (
            "default (exact)"
            if exact_path
            else (f"default ({COMPOSED_CANDIDATES})" if per_part is None else str(per_part))
        )
        row = Row(
            spec,
            label,
            "exact" if exact_path else "candidates",
            float(recall.mean()),
            lower_bound(recall, rng),
            None if stored_recall is None else float(stored_recall.mean()),
            None if stored_recall is None else lower_bound(stored_recall, rng),
            {k: float(recall[kinds == k].mean()) for k in KINDS},
            float(recall[positive_only].mean()) if positive_only.any() else float("nan"),
            lower_bound(recall[positive_only], rng) if positive_only.any() else float("nan"),
            float(recall[dominant].mean()) if dominant.any() else float("nan"),
            returned,
            float(recall.min()),
            float(ms.mean()),
            float(np.percentile(ms, 50)),
            float(np.percentile(ms, 99)),
        )
        result.rows.append(row)
        log(
            f"  per_part {label:>16}: recall@10 {row.recall:.4f} (lo95 {row.lo95:.4f}"
            f"{'' if row.recall_stored is None else f', vs stored {row.recall_stored:.4f}'}), "
            f"mean {row.mean_ms:.2f} ms, p50 {row.p50_ms:.2f} ms"
        )
        if exact_path:
            truth_scores = [brute_force(cat.columns, q)[1] for q in queries]
            result.exact_path_identical = sum(np.array_equal(h, t) for h, t in zip(hit_rows, truth))
            result.exact_path_max_score_diff = max(
                float(np.abs(np.array([h.score for h in hits]) - s).max())
                for hits, s in zip(found, truth_scores)
            )
    if factory != "Flat":
        # what the exact way costs on this index: the same queries with every weight made negative have
        # no positive part, so search_composed scores every item from its decoded vectors
        negated = [
            Query(q.kind, q.attributes, q.vectors, [-abs(w) for w in q.weights], q.exclude)
            for q in queries[:SCAN_QUERIES]
        ]
        found, ms = run_queries(catalogue, [as_parts(q) for q in negated], excludes, None)
        reference = [brute_force(cat.columns, q)[0] for q in negated]
        result.scan_recall = float(
            overlap([np.array([int(h.id[1:]) for h in hits]) for hits in found], reference).mean()
        )
        result.scan_mean_ms = float(ms.mean())
        log(
            f"  exact scan (weights -|w|): recall@10 {result.scan_recall:.4f}, mean {result.scan_mean_ms:.2f} ms"
        )
    measured = [row for row in result.rows if row.per_part.isdigit()]
    result.choice = next(
        (
            int(row.per_part)
            for row in measured
            if (row.lo95_stored if row.lo95_stored is not None else row.lo95) >= target
        ),
        None,
    )
    result.choice_all_positive = next(
        (int(row.per_part) for row in measured if row.lo95_all_positive >= target), None
    )
    del catalogue
    return result


# ---------------------------------------------------------------------------------------------- report


def table(results: list[Result]) -> str:
    head = (
        "| index | per_part | path | recall@10 | lo95 | vs stored (lo95) | item | mixed | perturbed "
        "| all positive (lo95) | neg-dominant | returned | worst query | mean ms | p50 ms | p99 ms |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        for i, row in enumerate(r.rows):
            stored = "-" if row.recall_stored is None else f"{row.recall_stored:.4f} ({row.lo95_stored:.4f})"
            returned = "-" if row.returned is None else f"{row.returned:.3f}"
            lines.append(
                f"| {r.index if i == 0 else ''} | {row.per_part} | {row.path} | {row.recall:.4f} | "
                f"{row.lo95:.4f} | {stored} | {row.by_kind['item']:.4f} | {row.by_kind['mixed']:.4f} | "
                f"{row.by_kind['perturbed']:.4f} | "
                f"{row.recall_all_positive:.4f} ({row.lo95_all_positive:.4f}) | "
                f"{row.recall_negative_dominant:.4f} | {returned} | {row.worst:.1f} | "
                f"{row.mean_ms:.2f} | {row.p50_ms:.2f} | {row.p99_ms:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/composerun/data/model/best.pt"))
    parser.add_argument(
        "--images",
        type=Path,
        default=Path("/tmp/composerun/data/data/images"),
        help="folder searched recursively for .jpg/.jpeg/.png",
    )
    parser.add_argument("--real", type=int, default=1500, help="at most this many real images")
    parser.add_argument("--attributes", type=int, default=0, help="use the first N attributes (0: all)")
    parser.add_argument("--items", type=int, default=100_000, help="catalogue items (real + synthetic)")
    parser.add_argument("--queries", type=int, default=300, help="composed queries (a third of each kind)")
    parser.add_argument(
        "--parents",
        choices=("independent", "shared"),
        default="independent",
        help="a synthetic item's parent image: one per attribute, or one for all",
    )
    parser.add_argument("--noise", choices=("shaped", "isotropic"), default="shaped")
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=list(DEFAULT_KINDS),
        metavar="FACTORY[:knob=value]",
        help="index kinds, search knobs after ':' (ef_search, nprobe)",
    )
    parser.add_argument("--per-part", type=int, nargs="+", default=list(PER_PART))
    parser.add_argument("--target-recall", type=float, default=0.99)
    parser.add_argument("--threads", type=int, default=2, help="faiss.omp_set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/idxscale"), help="real-vector cache")
    parser.add_argument("--json", type=Path, default=Path("/tmp/composed_recall.json"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench/index_scale.py; read when faiss loads
    args.work_dir.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter()

    import faiss

    from asen_search.index import COMPOSED_CANDIDATES

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    cat = make_catalogue(args, rng)
    log(
        f"catalogue: {args.items} items x {len(cat.names)} attributes x dim {cat.info['dim']} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    queries = make_queries(cat, args.queries, rng)
    start = time.perf_counter()
    truth = [brute_force(cat.columns, q)[0] for q in queries]
    depths = np.stack([candidate_depth(cat.columns, q, t) for q, t in zip(queries, truth)])
    with_negative = np.stack(
        [candidate_depth(cat.columns, q, t, negative_parts=True) for q, t in zip(queries, truth)]
    )
    positive_only = np.array([min(q.weights) > 0 for q in queries])
    depth = depth_report(
        depths, with_negative, positive_only, args.target_recall, args.per_part, args.items, rng
    )
    log(
        f"brute force and candidate depths for {len(queries)} queries in {time.perf_counter() - start:.1f} s: "
        f"per_part for mean recall >= {args.target_recall}: {depth.needed_mean} (lo95: {depth.needed_lo95})"
    )

    results = [
        measure(spec, cat, queries, truth, sorted(args.per_part), args.target_recall, rng)
        for spec in args.kinds
    ]

    corr = cat.info["cross_attribute_correlation"]
    parts_count = np.bincount([len(q.weights) for q in queries], minlength=4)
    print(f"command: {' '.join(sys.argv)}")
    print(
        f"{args.items:,} items x {len(cat.names)} attributes ({', '.join(cat.names)}) x dim {cat.info['dim']}: "
        f"{cat.info['real_items']} real + {args.items - cat.info['real_items']:,} synthetic, parents "
        f"{args.parents}; faiss {faiss.__version__}, {args.threads} threads, {os.cpu_count()} CPUs"
    )
    shared = cat.info["neighbour_overlap"]
    print(
        f"cross-attribute correlation of pairwise cosines: real items {corr['real']}, catalogue {corr['catalogue']}; "
        f"top-{OVERLAP_K} neighbour overlap between two attributes among {cat.info['real_items']} items: real "
        f"{shared['real']}, random catalogue items {shared['catalogue_sample']} (independent: {shared['random']})"
        + ("; synthetic attributes independent" if args.parents == "independent" else "")
    )
    print(
        f"{len(queries)} queries ({', '.join(f'{sum(q.kind == k for q in queries)} {k}' for k in KINDS)}; "
        f"{parts_count[2]} of 2 parts, {parts_count[3]} of 3; "
        f"{sum(any(w < 0 for w in q.weights) for q in queries)} with a negative weight, "
        f"{sum(q.negative_dominant for q in queries)} negative-dominant); k={K}; "
        f"COMPOSED_CANDIDATES={COMPOSED_CANDIDATES}"
    )
    print()
    print(table(results))
    print()
    for r in results:
        extra = ""
        if r.exact_path_identical is not None:
            extra = (
                f"; exact path: {r.exact_path_identical}/{len(queries)} queries identical to brute force "
                f"(ids and order), max score difference {r.exact_path_max_score_diff:.2e}"
            )
        basis = "recall vs stored (decoded) vectors" if r.stored_lossy else "recall vs brute force"
        pick = (
            f"smallest per_part with lo95 >= {args.target_recall} ({basis}): {r.choice}"
            if r.choice is not None
            else f"no measured per_part reaches lo95 >= {args.target_recall} ({basis})"
        )
        pick += (
            f"; on the queries without a negative weight (vs brute force): "
            f"{r.choice_all_positive if r.choice_all_positive is not None else 'none measured'}"
        )
        print(f"{r.index} (build {r.build_s:.1f} s): {pick}{extra}")
        if r.scan_mean_ms is not None:
            print(
                f"    exact way over its decoded vectors (the first {SCAN_QUERIES} queries, every weight -|w|: no "
                "positive part): "
                f"recall@10 {r.scan_recall:.4f} vs brute force, mean {r.scan_mean_ms:.2f} ms"
            )
    print()
    print(
        f"candidate depth (exact per-part searches, for every per_part at once): the {K * len(queries)} true top-{K} "
        f"items' best rank + 1 under a positive part: median {depth.depth_percentiles['p50']}, p90 "
        f"{depth.depth_percentiles['p90']}, p99 {depth.depth_percentiles['p99']}, max {depth.depth_percentiles['p100']}"
    )
    print(
        f"positive parts alone: smallest per_part with mean recall@10 >= {args.target_recall}: {depth.needed_mean} "
        f"({depth.needed_mean / args.items:.1%} of the catalogue); queries without a negative weight "
        f"{depth.needed_mean_positive}, with one {depth.needed_mean_negative}; with lo95 >= {args.target_recall} "
        f"(grid 2^(i/4)): {depth.needed_lo95}"
    )
    shown = [
        p
        for p in depth.predicted
        if p in args.per_part or p >= 1000 and (p & (p - 1)) == 0 or p == args.items
    ]
    print("predicted recall@10: " + ", ".join(f"{p}: {depth.predicted[p]:.4f}" for p in shown))
    print(
        f"with negative parts drawing their top per_part under the negated vector (what the index does): "
        f"mean recall@10 >= {args.target_recall} from per_part {depth.needed_mean_negative_parts}; predicted "
        + ", ".join(f"{p}: {depth.predicted_negative_parts[p]:.4f}" for p in shown if p <= 4096)
    )
    print(f"total wall time {time.perf_counter() - wall:.0f} s")

    report = {
        "command": sys.argv,
        "items": args.items,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "composed_candidates": COMPOSED_CANDIDATES,
        "target_recall": args.target_recall,
        "k": K,
        "vectors": cat.info,
        "queries": [
            {
                "kind": q.kind,
                "attributes": [cat.names[a] for a in q.attributes],
                "weights": q.weights,
                "excluded": len(q.exclude),
            }
            for q in queries
        ],
        "candidate_depth": asdict(depth),
        "results": [asdict(r) for r in results],
        "wall_s": time.perf_counter() - wall,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"json: {args.json}")


if __name__ == "__main__":
    main()
