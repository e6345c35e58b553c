"""memf.data.folds: the folds partition the streams, fold 0 is the paper's 80/20 split, grouped folds share no anchor."""

import numpy as np
import pytest

from memf.data.folds import SPLIT_CODE, assign_folds, split_of

IDS = [f"s{i:04d}" for i in range(503)]
ANCHORS = [f"a{(i * 7) % 61:03d}" for i in range(503)]


def test_folds_partition_the_streams_and_every_stream_is_tested_once():
    fold = assign_folds(IDS, ANCHORS, folds=5, seed=3)
    assert sorted(set(fold.tolist())) == [0, 1, 2, 3, 4]
    sizes = np.bincount(fold)
    assert sizes.max() - sizes.min() <= 1
    tested = np.zeros(len(IDS), int)
    for k in range(5):
        split = split_of(fold, k, 5)
        tested += split == SPLIT_CODE["test"]
        # validation is carved from the training part: test, validation and train never overlap
        assert ((split == SPLIT_CODE["val"]) == (fold == (k + 1) % 5)).all()
    assert (tested == 1).all()


def test_fold_zero_is_the_paper_80_20_split():
    """The seeded permutation's first round(0.2 n) streams are the test part, as a plain 80/20 split would take."""
    n, seed = len(IDS), 11
    fold = assign_folds(IDS, ANCHORS, folds=5, seed=seed)
    perm = np.random.default_rng(seed).permutation(n)
    order = np.argsort(np.array(IDS))
    expected_test = set(order[perm[: round(0.2 * n)]].tolist())
    assert set(np.flatnonzero(fold == 0).tolist()) == expected_test


def test_folds_do_not_depend_on_the_input_row_order():
    fold = assign_folds(IDS, ANCHORS, folds=5, seed=0)
    rev = assign_folds(IDS[::-1], ANCHORS[::-1], folds=5, seed=0)
    assert (fold == rev[::-1]).all()


def test_grouped_folds_share_no_anchor():
    fold = assign_folds(IDS, ANCHORS, folds=5, seed=0, group_by="anchor")
    anchors = np.array(ANCHORS)
    for a in set(ANCHORS):
        assert len(set(fold[anchors == a].tolist())) == 1
    for k in range(5):
        split = split_of(fold, k, 5)
        parts = [set(anchors[split == code].tolist()) for code in SPLIT_CODE.values()]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_bad_fold_settings_are_refused():
    with pytest.raises(ValueError, match="at least 2"):
        assign_folds(IDS, ANCHORS, folds=1, seed=0)
    with pytest.raises(ValueError, match="only 3 streams"):
        assign_folds(IDS[:3], ANCHORS[:3], folds=5, seed=0)
    with pytest.raises(ValueError, match="fewer than split.folds"):
        assign_folds(IDS[:10], ["a"] * 10, folds=5, seed=0, group_by="anchor")
    with pytest.raises(ValueError, match="expected null or one of anchor"):
        assign_folds(IDS, ANCHORS, folds=5, seed=0, group_by="shop")
