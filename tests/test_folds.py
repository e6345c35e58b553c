"""memf.data.folds: the folds partition the streams, fold 0 is the paper's 80/20 split, grouped folds share no anchor."""

import numpy as np
import pytest

from memf.data.folds import FIXED_ROLE, SPLIT_CODE, FoldPlan, assign_folds, split_of

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


# --- the fixed protocol (learning curves) -------------------------------------------------------------------------

FIXED = FoldPlan.from_config({"seed": 5, "mode": "fixed", "validation": 50, "test": 100, "train_sizes": [40, 120, 300],
                              "replicates": [3, 2, 1]})


def test_the_fixed_protocol_shares_validation_and_test_and_nests_each_replicates_training_sets():
    role = FIXED.assign(IDS)
    assert FIXED.k == 6 and FIXED.runs == ((40, 0), (40, 1), (40, 2), (120, 0), (120, 1), (300, 0))
    splits = [FIXED.split(role, k, IDS) for k in range(FIXED.k)]
    for split in splits:  # the same validation and test streams in every run fold, never in a training set
        assert ((split == SPLIT_CODE["test"]) == (role == FIXED_ROLE["test"])).all()
        assert ((split == SPLIT_CODE["val"]) == (role == FIXED_ROLE["val"])).all()
    assert (role == FIXED_ROLE["test"]).sum() == 100 and (role == FIXED_ROLE["val"]).sum() == 50
    train = [set(np.flatnonzero(s == SPLIT_CODE["train"])) for s in splits]
    assert [len(t) for t in train] == [40, 40, 40, 120, 120, 300]
    assert train[0] < train[3] < train[5] and train[1] < train[4]  # nested within a replicate
    assert train[0] != train[1] != train[2]  # replicates draw other subsets
    assert all((s[role == FIXED_ROLE["pool"]] != SPLIT_CODE["test"]).all() for s in splits)


def test_a_streams_fixed_role_and_rank_do_not_depend_on_the_other_streams():
    """Dropping streams downstream (a pad drop) moves no other stream between roles or subsets."""
    role = FIXED.assign(IDS)
    keep = np.arange(len(IDS)) % 7 != 3
    ids = [s for s, k in zip(IDS, keep) if k]
    train_all = FIXED.split(role, 3, IDS)[keep]
    train_kept = FIXED.split(role[keep], 3, ids)
    assert ((train_kept == SPLIT_CODE["test"]) == (train_all == SPLIT_CODE["test"])).all()
    chosen_all = set(np.flatnonzero(train_all == SPLIT_CODE["train"]))
    assert set(np.flatnonzero(train_kept == SPLIT_CODE["train"])) >= chosen_all  # refilled, never reshuffled


def test_the_fixed_protocol_needs_a_pool_as_large_as_its_largest_size_and_round_trips_its_record():
    with pytest.raises(ValueError, match="the largest, 300, needs 450 streams"):
        FIXED.assign(IDS[:449])
    assert FoldPlan.from_record(FIXED.record()) == FIXED
    assert FoldPlan.from_record({"k": 5, "seed": 1}) == FoldPlan(5, 1)
    assert (FoldPlan(5).split(assign_folds(IDS, ANCHORS, folds=5, seed=0), 2) ==
            split_of(assign_folds(IDS, ANCHORS, folds=5, seed=0), 2, 5)).all()
