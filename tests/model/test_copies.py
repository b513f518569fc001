"""The copy benchmark (model/data/copies.py), its evaluation metrics (model/copy_eval.py), the
label-free calibration's pieces (model/copy_calibration.py) and the instance-aware sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from asen_search.model.augment import rephotograph
from asen_search.model.copy_calibration import (
    CopyCalibration,
    NoCopyThreshold,
    balanced_line,
    lookalike_pairs,
)
from asen_search.model.copy_eval import CHANGES, Encoded, _rank_metrics, evaluate_scores, judged_modified
from asen_search.model.data.copies import (
    ATTRIBUTE_PARTS,
    CopyRecord,
    change,
    generate_copies,
    new_design,
    read_copies,
)
from asen_search.model.data.dataset import Tagged, load_dataset
from asen_search.model.data.synth import ATTRIBUTES
from asen_search.model.data.synth_draw import GARMENT_PARTS, SeededParts, make_shape, render_garment
from asen_search.model.training.instance import InstanceSampler
from asen_search.service.cli.main import main


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("copies")
    assert main(["synth", str(out), "--copies", "--designs", "3", "--background", "4", "--workers", "1"]) == 0
    return out


def _garment(design, photo_seed: int) -> np.ndarray:
    parts = SeededParts(dict(zip(GARMENT_PARTS, design.seeds)), np.random.default_rng(photo_seed))
    named = design.named()
    shape = make_shape(named["sleeve_length"], named["garment_length"], parts)
    return np.asarray(render_garment(named, shape, 120.0, parts))


def test_a_design_is_the_same_garment_whatever_the_photograph() -> None:
    design = new_design(np.random.default_rng(1))
    assert np.array_equal(_garment(design, 1), _garment(design, 2))


def test_a_copy_changes_its_attributes_and_only_their_parts() -> None:
    rng = np.random.default_rng(2)
    design = new_design(rng)
    for a, (name, _) in enumerate(ATTRIBUTES):
        copy = change(design, [a], rng)
        assert copy.values[a] != design.values[a]
        assert [v for i, v in enumerate(copy.values) if i != a] == [
            v for i, v in enumerate(design.values) if i != a
        ]
        redrawn = {GARMENT_PARTS[i] for i, (x, y) in enumerate(zip(design.seeds, copy.seeds)) if x != y}
        assert redrawn == set(ATTRIBUTE_PARTS[name])
        assert not np.array_equal(_garment(design, 0), _garment(copy, 0))


def test_the_benchmark_is_a_dataset_with_copy_records(bench: Path) -> None:
    dataset = load_dataset(bench)
    meta = json.loads((bench / "meta.json").read_text())
    assert meta["copy_benchmark"]["designs"] == 3 and "never for training" in meta["copy_benchmark"]["note"]
    assert not (bench / "label_train.txt").exists()  # nothing to train on
    for split in ("valid", "test"):
        records = read_copies(bench, split)
        assert len(records) == 3
        n_images = len(dataset.split(split))
        assert n_images == 3 * (1 + 5 + 4) + 4
        named = {r.design for r in records} | {p for r in records for p, _ in r.copies + r.distractors}
        assert len(named) == 3 * 10 and all(p.is_file() for p in named)
        assert sorted(len(c) for r in records for _, c in r.copies) == sorted([0, 1, 1, 2, 2] * 3)
        queries = dataset.queries(split)
        assert len(np.unique(queries.fids)) == 3 and len(queries) == 3 * len(ATTRIBUTES)


def test_copies_and_distractors_carry_the_labels_the_records_say(bench: Path) -> None:
    dataset = load_dataset(bench)
    paths = {p.resolve(): fid for fid, p in enumerate(dataset.split("test").paths)}
    labels: dict[int, dict[int, int]] = {}
    for rows in (dataset.queries("test"), dataset.candidates("test")):
        for f, a, v in zip(rows.fids.tolist(), rows.attrs.tolist(), rows.values.tolist()):
            labels.setdefault(f, {})[a] = v
    names = [n for n, _ in ATTRIBUTES]
    for record in read_copies(bench, "test"):
        original = labels[paths[record.design.resolve()]]
        for path, changed in record.copies + record.distractors:
            mine = labels[paths[path.resolve()]]
            assert {names[a] for a in original if mine[a] != original[a]} == set(changed)


def test_the_same_seed_draws_the_same_files_whatever_the_workers(tmp_path: Path, bench: Path) -> None:
    generate_copies(tmp_path, 3, 4, progress=False, workers=2)
    for name in ("filenames_test.txt", "copies_test.jsonl", "query_valid.txt", "candidate_test.txt"):
        assert (tmp_path / name).read_text() == (bench / name).read_text()
    for path in sorted((bench / "images" / "test").iterdir())[:5]:
        assert (tmp_path / "images" / "test" / path.name).read_bytes() == path.read_bytes()


def test_bad_benchmark_settings_and_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 2 designs"):
        generate_copies(tmp_path, 1, 0, progress=False)
    (tmp_path / "copies_test.jsonl").write_text('{"design": "x.jpg"}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_copies(tmp_path, "test")
    with pytest.raises(ValueError, match="asen synth --copies"):
        read_copies(tmp_path, "valid")


def test_rank_metrics_by_hand() -> None:
    # rows: 0 design, 1-2 copies (0 and 2 changed), 3-5 non-copies
    scores = np.array([1.0, 0.9, 0.5, 0.8, 0.6, 0.1])
    others = np.array([False, False, False, True, True, True])
    result = _rank_metrics(scores, [(1, 0), (2, 2)], others)
    assert result["ranks"] == [(1, 0), (3, 2)]
    assert result["all"] == pytest.approx((1 / 1 + 2 / 4) / 2)
    assert result["0"] == pytest.approx(1.0) and result["2"] == pytest.approx(1 / 3)
    encoded = Encoded(
        [Path(f"/x/{i}") for i in range(6)],
        np.zeros((6, 1, 1)),
        np.zeros((6, 1)),
        {Path(f"/x/{i}"): i for i in range(6)},
    )
    # rows 3 and 5 are the design's look-alike distractors: one of them (0.8) passes 0.55
    record = CopyRecord(
        Path("/x/0"),
        ((Path("/x/1"), ()), (Path("/x/2"), ("a", "b"))),
        ((Path("/x/3"), ("a",)), (Path("/x/5"), ())),
    )
    report = evaluate_scores(scores[None], [record], encoded, threshold=0.55)
    assert report["recall@1"]["all"] == 0.5 and report["recall@10"]["all"] == 1.0
    assert report["at_threshold"]["false_matches_per_design"] == 2
    assert report["at_threshold"]["false_match_rate"] == pytest.approx(2 / 3)
    assert report["at_threshold"]["lookalike_false_match_rate"] == pytest.approx(1 / 2)
    assert report["at_threshold"]["copies_found"] == {"all": 0.5, "0": 1.0, "2": 0.0}
    assert set(report["map"]) <= set(CHANGES)


def test_balanced_line_separates_and_lookalikes_share_values() -> None:
    assert balanced_line(np.array([0.8, 0.9, 0.95]), np.array([0.1, 0.3, 0.5])) == pytest.approx(0.8)
    tags = {0: {0: 1}, 1: {0: 1}, 2: {0: 2}, 3: {1: 0, 0: 1}, 4: {1: 1, 0: 1}}
    pairs = {tuple(p) for p in lookalike_pairs(tags, 100, 0).tolist()}
    assert pairs == {(0, 1), (0, 3), (0, 4), (1, 3), (1, 4)}  # 3 and 4 differ in attribute 1
    assert len(lookalike_pairs(tags, 2, 0)) == 2


def test_a_false_match_rate_is_translated_into_the_lowest_score_keeping_it() -> None:
    cal = CopyCalibration(
        2,
        np.array([0.9, 0.8, 0.7, 0.6]),
        np.array([0.0, 0.01, 0.05, 0.2]),
        np.array([0.5, 0.8, 0.9, 1.0]),
        {},
        1000,
        100,
    )
    assert cal.score_for_rate(0.01) == 0.8 and cal.score_for_rate(0.05) == 0.7
    assert cal.rate_at(0.75) == 0.01 and cal.rate_at(0.95) == 0.0
    with pytest.raises(NoCopyThreshold, match="below what 1000 look-alike pairs"):
        cal.score_for_rate(1e-4)
    assert CopyCalibration.from_json(json.loads(json.dumps(cal.to_json()))).score_for_rate(0.01) == 0.8


def test_rephotograph_keeps_colours_and_changes_the_picture() -> None:
    """Every view keeps the hue; some are framed tighter (a crop: another size), some wider (the same
    size, the garment smaller on a blurred canvas); none is the picture unchanged."""
    image = Image.new("RGB", (200, 160), (200, 40, 40))
    ImageDraw.Draw(image).rectangle((60, 40, 140, 120), fill=(120, 20, 20))  # something to frame
    sizes = set()
    for seed in range(12):
        view = rephotograph(image, np.random.default_rng(seed))
        pixels = np.asarray(view).reshape(-1, 3).astype(int)
        reddish = (pixels[:, 0] > pixels[:, 1] + 60) & (pixels[:, 0] > pixels[:, 2] + 60)
        assert reddish.mean() > 0.7
        sizes.add(view.size == image.size)
        if view.size == image.size:
            assert np.abs(np.asarray(view).astype(int) - np.asarray(image).astype(int)).mean() > 5
    assert sizes == {True, False}


def test_instance_rows_pair_an_image_with_its_view_and_another_of_its_value() -> None:
    labels = Tagged(np.array([0, 1, 2, 3, 0, 1]), np.array([0, 0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 2, 3]))
    rows = InstanceSampler(labels, n_images=4, views=2, seed=0).sample(200)
    values = {(f, a): v for f, a, v in zip(labels.fids, labels.attrs, labels.values)}
    for attr, anchor, view, negative in rows.tolist():
        assert view % 4 == anchor and 4 <= view < 12
        assert negative != anchor and values[(negative, attr)] == values[(anchor, attr)]
    assert set(rows[:, 0].tolist()) == {0}  # attribute 1's values each have one image: no negative there


def test_judged_modified_by_hand() -> None:
    """Lines at 0.5: a copy scoring 0.2 under `b` is judged to have modified `b`."""
    unit = np.eye(2)
    design = np.stack([unit[0], unit[0]])  # [A=2, D=2]
    same = design
    b_changed = np.stack([unit[0], np.array([0.2, np.sqrt(1 - 0.04)])])
    both_changed = np.stack([unit[1], unit[1]])
    vectors = np.stack([design, same, b_changed, both_changed])
    paths = [Path(f"/x/{i}") for i in range(4)]
    encoded = Encoded(paths, vectors, np.zeros((4, 1)), {p: i for i, p in enumerate(paths)})
    record = CopyRecord(paths[0], ((paths[1], ()), (paths[2], ("b",)), (paths[3], ("b",))), ())
    judged = judged_modified(encoded, [record], ["a", "b"], {"a": 0.5, "b": 0.5})
    # judged: {}, {b}, {a, b}; changed: {}, {b}, {b}
    assert judged["copies"] == 3 and judged["exact"] == pytest.approx(2 / 3)
    assert judged["precision"] == pytest.approx(2 / 3) and judged["recall"] == 1.0
    assert judged["per_attribute"]["a"] == {"precision": 0.0, "recall": None}
    assert judged["per_attribute"]["b"] == {"precision": 1.0, "recall": 1.0}
