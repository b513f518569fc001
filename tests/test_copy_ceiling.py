"""bench/copy_ceiling.py: the copy score of perfect class labels, and look-alikes set aside."""

from pathlib import Path

import numpy as np

from asen_search.copy_score import copy_scores
from asen_search.model.copy_eval import Encoded, evaluate_scores
from asen_search.model.data.copies import CopyRecord
from bench.copy_ceiling import label_similarities, lookalikes_aside


def test_perfect_labels_tie_a_copy_with_its_lookalike() -> None:
    # rows: 0 the design, 1 its copy (nothing changed), 2 a look-alike (same values), 3-5 background,
    # 6 an image unlabelled under attribute 1 (never a match there)
    table = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1], [0, -1, 0]])
    paths = [Path(f"/x/{i}.jpg") for i in range(len(table))]
    encoded = Encoded(
        paths, np.zeros((len(paths), 3, 1)), np.zeros((len(paths), 1)), {p: i for i, p in enumerate(paths)}
    )
    records = [CopyRecord(paths[0], ((paths[1], ()),), ((paths[2], ()),))]
    same = label_similarities(table, np.array([0]))
    assert same[0, 6].tolist() == [1.0, 0.0, 1.0] and same[0, 2].tolist() == [1.0, 1.0, 1.0]
    aps = set()
    for seed in range(20):  # the copy ties with the look-alike: first or second, at random
        scores = copy_scores(same + np.random.default_rng(seed).random(same.shape) * 1e-6, 3)
        aps.add(round(evaluate_scores(scores, records, encoded)["map"]["all"], 6))
        aside = lookalikes_aside(scores, records, encoded)
        assert aside[0, 2] == -np.inf and evaluate_scores(aside, records, encoded)["map"]["all"] == 1.0
    assert aps == {0.5, 1.0}
