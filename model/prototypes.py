"""Attribute-value prototypes: search by value ("show me V-necks") and auto-tagging.

A prototype is the normalised mean embedding, in one attribute's space, of training images with one
value of that attribute. Tagging scores an image's vector under each attribute against that
attribute's prototypes; the confidence is a softmax of those cosines at a temperature fitted on the
validation split (temperature scaling: the one parameter that minimises the negative log-likelihood
of the true values), so that a stated confidence of 0.9 is right about 90% of the time.

Stored in the checkpoint's `extra["prototypes"]` (`asen train` adds them at the end; `asen
prototypes` adds them to an existing checkpoint). Checkpoints without them have `None`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from tqdm import tqdm

from asen_search.model.data.dataset import Attribute, AttributeDataset, Tagged
from asen_search.model.thresholds import Thresholds, compute_thresholds

if TYPE_CHECKING:
    from PIL import Image

PER_VALUE = 200  # training images averaged per value (the mean of a sample; `--per-value 0`: all)
CALIBRATION_PER_VALUE = 100  # validation rows per value used to fit the temperature
RELIABILITY_BINS = 10
_TEMPERATURES = np.exp(np.linspace(np.log(1e-4), np.log(1.0), 400))  # the grid searched for the fit


class RowEncoder(Protocol):
    """What computing prototypes needs of a model: `Encoder` (model/encoder.py) is one. Stated here,
    not imported, because the encoder imports this module for `Prototypes`."""

    @property
    def dim(self) -> int: ...

    @property
    def attribute_names(self) -> list[str]: ...

    def encode_requests(self, requests: Sequence[tuple[Image.Image, Sequence[int]]]) -> list[np.ndarray]: ...


class NoPrototype(ValueError):
    """A value query or a tag request the checkpoint cannot answer (no prototypes, or none for
    that value)."""


@dataclass
class Prototypes:
    """Per attribute: one unit vector per value (`[n_values, dim]`; a value without training
    images has a row of NaN) and the calibrated softmax temperature."""

    attributes: tuple[Attribute, ...]
    vectors: dict[str, np.ndarray]
    counts: dict[str, list[int]]
    temperature: dict[str, float]

    # ---------------------------------------------------------------- look-ups
    def vector(self, attribute: str, value: str) -> np.ndarray:
        """The prototype `[dim]` of `value` under `attribute`; NoPrototype naming what is known."""
        attr = self._attribute(attribute)
        if value not in attr.values:
            raise NoPrototype(
                f"attribute {attribute!r} has no value {value!r}; its values: {list(attr.values)}"
            )
        row = self.vectors[attribute][attr.values.index(value)]
        if not np.isfinite(row).all():
            raise NoPrototype(f"value {value!r} of {attribute!r} had no training images: it has no prototype")
        return row

    def _attribute(self, name: str) -> Attribute:
        for attr in self.attributes:
            if attr.name == name:
                return attr
        raise NoPrototype(
            f"unknown attribute {name!r}; known attributes: {[a.name for a in self.attributes]}"
        )

    def probabilities(self, attribute: str, vectors: np.ndarray) -> np.ndarray:
        """Calibrated probabilities `[n, n_values]` of each value for vectors `[n, dim]` under
        `attribute` (values without a prototype get 0)."""
        return _softmax(self.similarities(attribute, vectors), self.temperature[attribute])

    def similarities(self, attribute: str, vectors: np.ndarray) -> np.ndarray:
        """Cosines `[n, n_values]` to each value's prototype (-inf where a value has none)."""
        protos = self.vectors[attribute]
        known = np.isfinite(protos).all(axis=1)
        sims = np.full((len(vectors), len(protos)), -np.inf, dtype=np.float64)
        sims[:, known] = np.asarray(vectors, dtype=np.float64) @ protos[known].T.astype(np.float64)
        return sims

    def value_probabilities(self, vectors: np.ndarray) -> dict[str, np.ndarray]:
        """One image's vectors `[n_attributes, dim]` -> {attribute: calibrated probabilities `[n_values]`}."""
        return {
            attr.name: self.probabilities(attr.name, vectors[a : a + 1])[0]
            for a, attr in enumerate(self.attributes)
        }

    def tag(self, vectors: np.ndarray) -> dict[str, tuple[str, float]]:
        """One image's vectors `[n_attributes, dim]` -> {attribute: (predicted value, confidence)}."""
        tags = {}
        for attr, probs in zip(self.attributes, self.value_probabilities(vectors).values()):
            best = int(np.argmax(probs))
            tags[attr.name] = (attr.values[best], float(probs[best]))
        return tags

    # ---------------------------------------------------------------- storage
    def to_extra(self) -> dict[str, Any]:
        """Plain lists and floats (a checkpoint is read with torch's weights-only loader)."""
        return {
            a.name: {
                "values": list(a.values),
                "vectors": self.vectors[a.name].tolist(),
                "counts": list(self.counts[a.name]),
                "temperature": self.temperature[a.name],
            }
            for a in self.attributes
        }

    @classmethod
    def from_extra(cls, attributes: Sequence[Attribute], extra: dict[str, Any] | None) -> Prototypes | None:
        """None when the checkpoint has no prototypes; ValueError when they do not fit its attributes."""
        if not extra:
            return None
        vectors, counts, temperature = {}, {}, {}
        for attr in attributes:
            entry = extra.get(attr.name)
            if entry is None or list(entry["values"]) != list(attr.values):
                raise ValueError(
                    f"the stored prototypes do not match attribute {attr.name!r}: recompute them "
                    "with `asen prototypes`"
                )
            vectors[attr.name] = np.asarray(entry["vectors"], dtype=np.float32)
            counts[attr.name] = [int(c) for c in entry["counts"]]
            temperature[attr.name] = float(entry["temperature"])
        return cls(tuple(attributes), vectors, counts, temperature)


def _softmax(sims: np.ndarray, temperature: float) -> np.ndarray:
    logits = sims / temperature
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    probs: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probs


def fit_temperature(sims: np.ndarray, labels: np.ndarray) -> float:
    """The softmax temperature minimising the mean negative log-likelihood of `labels` `[n]` given
    cosines `[n, n_values]` (a grid search over 1e-4..1: the loss of one parameter)."""
    rows = np.arange(len(labels))
    known = np.isfinite(sims[rows, labels]) if len(labels) else np.zeros(0, dtype=bool)
    sims, labels, rows = sims[known], labels[known], np.arange(int(known.sum()))
    if not len(labels):
        return 0.05
    best, best_loss = 0.05, np.inf
    for t in _TEMPERATURES:
        logits = sims / t
        logits = logits - logits.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(logits).sum(axis=1))
        loss = float(np.mean(log_z - logits[rows, labels]))
        if loss < best_loss:
            best, best_loss = float(t), loss
    return best


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = RELIABILITY_BINS) -> dict[str, Any]:
    """Per confidence bin: rows, mean confidence, accuracy; and the expected calibration error."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    out: dict[str, Any] = {"edges": edges.tolist(), "count": [], "confidence": [], "accuracy": []}
    ece = 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        conf = float(confidence[mask].mean()) if n else None
        acc = float(correct[mask].mean()) if n else None
        out["count"].append(n)
        out["confidence"].append(conf)
        out["accuracy"].append(acc)
        if n:
            ece += n / len(confidence) * abs(acc - conf)  # type: ignore[operator]
    out["ece"] = ece
    return out


# -------------------------------------------------------------------- computing them
def sample_rows(rows: Tagged, n_attributes: int, per_value: int, seed: int = 0) -> Tagged:
    """At most `per_value` rows of each (attribute, value), drawn image by image in a random order
    (all when 0): an image's rows are taken together, so few images are decoded and run through the
    global backbone."""
    if per_value <= 0:
        return rows
    rng = np.random.default_rng(seed)
    by_image: dict[int, list[int]] = {}
    for i, fid in enumerate(rows.fids.tolist()):
        by_image.setdefault(fid, []).append(i)
    images = list(by_image)
    taken: dict[tuple[int, int], int] = {}
    keep = []
    for f in rng.permutation(len(images)).tolist():
        for i in by_image[images[f]]:
            key = (int(rows.attrs[i]), int(rows.values[i]))
            if taken.get(key, 0) < per_value:
                taken[key] = taken.get(key, 0) + 1
                keep.append(i)
    pick = np.sort(np.array(keep, dtype=np.int64))
    return Tagged(rows.fids[pick], rows.attrs[pick], rows.values[pick])


def encode_rows(
    encoder: RowEncoder,
    paths: Sequence[Any],
    rows: Tagged,
    batch_images: int = 16,
    progress: bool = True,
    desc: str = "encode",
) -> np.ndarray:
    """Each row's image encoded under the row's attribute: `[len(rows), dim]`. An image is decoded
    and run through the global backbone once for all its rows (`Encoder.encode_requests`)."""
    from asen_search.model.nn.preprocess import load_image

    by_image: dict[int, list[int]] = {}
    for i, fid in enumerate(rows.fids.tolist()):
        by_image.setdefault(fid, []).append(i)
    fids = list(by_image)
    out = np.zeros((len(rows), encoder.dim), dtype=np.float32)
    bar = tqdm(total=len(rows), desc=desc, unit="row", disable=not progress, dynamic_ncols=True)
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(fids), batch_images):
            chunk = fids[start : start + batch_images]
            images = list(pool.map(load_image, [paths[f] for f in chunk]))
            requests = [(image, [int(rows.attrs[i]) for i in by_image[f]]) for image, f in zip(images, chunk)]
            for f, vectors in zip(chunk, encoder.encode_requests(requests)):
                out[by_image[f]] = vectors
            bar.update(sum(len(by_image[f]) for f in chunk))
    bar.close()
    return out


def prototypes_from_vectors(
    attributes: Sequence[Attribute], rows: Tagged, vectors: np.ndarray, dim: int
) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    """Normalised mean vector per (attribute, value) of rows `[n]` with vectors `[n, dim]`."""
    protos, counts = {}, {}
    for a, attr in enumerate(attributes):
        table = np.full((len(attr.values), dim), np.nan, dtype=np.float32)
        numbers = []
        for v in range(len(attr.values)):
            mask = (rows.attrs == a) & (rows.values == v)
            numbers.append(int(mask.sum()))
            if mask.any():
                mean = vectors[mask].astype(np.float64).mean(axis=0)
                norm = np.linalg.norm(mean)
                if norm > 0:
                    table[v] = (mean / norm).astype(np.float32)
        protos[attr.name], counts[attr.name] = table, numbers
    return protos, counts


def split_rows(ds: AttributeDataset, split: str) -> Tagged:
    """Every labelled row of a split: the train labels, or a valid/test split's queries and
    candidates together."""
    if split == "train":
        return ds.train_labels()
    queries, candidates = ds.queries(split), ds.candidates(split)
    return Tagged(
        np.concatenate([queries.fids, candidates.fids]),
        np.concatenate([queries.attrs, candidates.attrs]),
        np.concatenate([queries.values, candidates.values]),
    )


def compute_prototypes(
    encoder: RowEncoder,
    ds: AttributeDataset,
    per_value: int = PER_VALUE,
    calibration_per_value: int = CALIBRATION_PER_VALUE,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Prototypes, dict[str, Any], Thresholds | None]:
    """Prototypes from the training split and temperatures fitted on the validation split (1.0
    where the dataset has none); also a short report, and the score thresholds' precision curves
    from the same validation rows (model/thresholds.py; None without a validation split)."""
    if [a.name for a in ds.attributes] != encoder.attribute_names:
        raise ValueError(
            f"the dataset's attributes {[a.name for a in ds.attributes]} are not the model's "
            f"{encoder.attribute_names}"
        )
    train = sample_rows(split_rows(ds, "train"), len(ds.attributes), per_value, seed)
    vectors = encode_rows(encoder, ds.split("train").paths, train, progress=progress, desc="prototypes")
    protos, counts = prototypes_from_vectors(ds.attributes, train, vectors, encoder.dim)
    temperature = {a.name: 1.0 for a in ds.attributes}
    report: dict[str, Any] = {"train_rows": len(train)}
    thresholds = None
    if "valid" in ds.splits_available():
        valid = sample_rows(split_rows(ds, "valid"), len(ds.attributes), calibration_per_value, seed)
        vectors = encode_rows(encoder, ds.split("valid").paths, valid, progress=progress, desc="calibration")
        report["valid_rows"] = len(valid)
        tables = Prototypes(tuple(ds.attributes), protos, counts, temperature)
        for a, attr in enumerate(ds.attributes):
            mask = valid.attrs == a
            if mask.any():
                sims = tables.similarities(attr.name, vectors[mask])
                temperature[attr.name] = fit_temperature(sims, valid.values[mask])
        report["temperature"] = dict(temperature)
        thresholds = compute_thresholds(ds.attributes, valid, vectors)
    return Prototypes(tuple(ds.attributes), protos, counts, temperature), report, thresholds
