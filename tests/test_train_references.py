"""memf.training.references: pooled features (masked means, set statistics), the reference models, and that their
fitted transforms and choices see the fold's training and validation parts only."""

import numpy as np
import pytest
from threadpoolctl import threadpool_limits
from train_support import tiny_fold, tiny_padded

from memf.core.metrics import regression_metrics
from memf.padding.padded import RaggedBlock
from memf.training.references import fit_reference, pooled_features


def test_pooled_features_are_masked_means():
    padded = tiny_padded(20)
    x, blocks = pooled_features([padded.arrays])
    widths = dict(blocks)
    assert x.shape == (20, sum(widths.values()))
    assert widths["anchor/text"] == 6 and widths["anchor/numeric"] == 3 and widths["commodity/numeric"] == 2
    # Changing a padded item changes nothing; changing a real one does.
    i = int(np.flatnonzero(~padded.arrays["commodity/mask"].all(1))[0])
    j = int(np.flatnonzero(~padded.arrays["commodity/mask"][i])[0])
    padded.arrays["commodity/numeric"][i, j] = 1e6
    np.testing.assert_array_equal(pooled_features([padded.arrays])[0], x)
    offset = sum(w for k, w in blocks[: [k for k, _ in blocks].index("commodity/numeric")])
    mask = padded.arrays["commodity/mask"][i]
    expected = padded.arrays["commodity/numeric"][i][mask].mean(0)
    np.testing.assert_allclose(x[i, offset:offset + 2], expected, rtol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "set"])
def test_pooled_features_of_batches_padded_to_their_own_lists_equal_the_whole(pooling):
    """The store's batches (each padded to its own longest lists) pool to exactly the features of the whole."""
    padded = tiny_padded(40)
    whole, blocks = pooled_features([padded.arrays], pooling)
    ragged = RaggedBlock.from_padded(padded)
    batches = [ragged.take(np.arange(start, min(start + 3, 40))).padded() for start in range(0, 40, 3)]
    assert any(b[k].shape[1] < padded.arrays[k].shape[1] for b in batches for k in ("commodity/mask", "video/mask"))
    x, again = pooled_features(batches, pooling)
    assert again == blocks
    np.testing.assert_array_equal(x, whole)


def test_set_statistics_see_the_best_item_the_spread_and_the_count():
    padded = tiny_padded(20)
    x, blocks = pooled_features([padded.arrays], "set")
    names = [k for k, _ in blocks]
    assert names[-1] == "counts" and dict(blocks)["anchor/text"] == 2 * 6  # fields kept apart
    assert dict(blocks)["commodity/numeric"] == 4 * 2  # mean, max, min, sd of each field
    offset = sum(w for k, w in blocks[: names.index("commodity/numeric")])
    for i in range(20):
        real = padded.arrays["commodity/numeric"][i][padded.arrays["commodity/mask"][i]]  # [n_items, 2]
        got = x[i, offset:offset + 8].reshape(4, 2)
        np.testing.assert_allclose(got, np.stack([real.mean(0), real.max(0), real.min(0), real.std(0)]), atol=1e-6)
        counts = x[i, -3:]
        assert counts[0] == padded.arrays["commodity/mask"][i].sum()
        assert counts[1] == padded.arrays["video/mask"][i].sum()


def test_mean_predicts_the_train_mean(tmp_path):
    data = tiny_fold(tiny_padded(50), tmp_path / "p.h5")
    pred, info = fit_reference("mean", data, {}, seed=0)
    assert np.allclose(pred, data.target("train").mean())
    assert info["mean"] == pytest.approx(float(data.target("train").mean()))


@pytest.mark.parametrize("options", [
    ("ridge", {}), ("ridge", {"pooling": "set"}), ("hgb", {"max_iter": 60}), ("hgb", {"max_iter": 60, "pca": 3}),
], ids=["ridge", "ridge-set", "hgb", "hgb-pca"])
def test_references_learn_and_never_see_test_targets(options, tmp_path):
    name, opts = options
    clean = tiny_fold(tiny_padded(200, noise=0.2), tmp_path / "clean.h5")
    test = clean.rows["test"]
    with threadpool_limits(1):
        pred, info = fit_reference(name, clean, opts, seed=0)
    assert regression_metrics(clean.target("test"), pred[test])["r2"] > 0.3
    corrupt_padded = tiny_padded(200, noise=0.2)
    corrupt_padded.target[corrupt_padded.fold == 0] *= -1
    with threadpool_limits(1):
        pred2, info2 = fit_reference(name, tiny_fold(corrupt_padded, tmp_path / "corrupt.h5"), opts, seed=0)
    np.testing.assert_allclose(pred2, pred)  # test targets never influence a fit, a transform or a choice
    assert info2 == info


def test_scaler_and_pca_are_fitted_on_the_training_part_only(tmp_path):
    """Moving the features of streams outside the training part changes no prediction of a training stream: the
    scaler and the PCA never saw them (for hgb only the test streams move: the validation part picks its length)."""
    padded = tiny_padded(120)
    data = tiny_fold(padded, tmp_path / "p.h5")
    train, test = data.rows["train"], data.rows["test"]
    cases = (("ridge", {}, "val+test"), ("ridge", {"pooling": "set"}, "val+test"),
             ("hgb", {"max_iter": 20, "pca": 4}, "test"))
    for name, opts, moved_part in cases:
        other = tiny_padded(120)
        rows = np.concatenate([data.rows["val"], test]) if moved_part == "val+test" else test
        for key in ("anchor/text", "commodity/image", "video/x"):
            other.arrays[key][rows] = other.arrays[key][rows] * 3 + 7
        with threadpool_limits(1):
            a, _ = fit_reference(name, data, opts, seed=0)
            b, _ = fit_reference(name, tiny_fold(other, tmp_path / f"{name}-{moved_part}.h5"), opts, seed=0)
        np.testing.assert_allclose(a[train], b[train], err_msg=name)
        assert not np.allclose(a[test], b[test]), name  # the test streams did move


def test_unknown_reference_or_option_is_refused(tmp_path):
    data = tiny_fold(tiny_padded(20), tmp_path / "p.h5")
    with pytest.raises(ValueError, match="not one of"):
        fit_reference("lasso", data, {}, 0)
    with pytest.raises(ValueError, match="unknown options"):
        fit_reference("ridge", data, {"alphas": [1.0]}, 0)
    with pytest.raises(ValueError, match="expected one of mean, set"):
        fit_reference("ridge", data, {"pooling": "max"}, 0)
