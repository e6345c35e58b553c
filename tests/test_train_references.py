"""memf.training.references: pooled features, the three reference models, and their run folders."""

import numpy as np
import polars as pl
import pytest
from threadpoolctl import threadpool_limits
from train_support import tiny_padded

from memf.core.io import read_json
from memf.core.metrics import METRICS, regression_metrics
from memf.training.padded import write_padded
from memf.training.references import fit_reference, pooled_features, run_reference
from memf.training.runs import REFERENCE_FILES, read_predictions


def test_pooled_features_are_masked_means():
    padded = tiny_padded(20)
    x, blocks = pooled_features(padded)
    widths = dict(blocks)
    assert x.shape == (20, sum(widths.values()))
    assert widths["anchor/text"] == 6 and widths["anchor/numeric"] == 3 and widths["commodity/numeric"] == 2
    # Changing a padded item changes nothing; changing a real one does.
    i = int(np.flatnonzero(~padded.arrays["commodity/mask"].all(1))[0])
    j = int(np.flatnonzero(~padded.arrays["commodity/mask"][i])[0])
    padded.arrays["commodity/numeric"][i, j] = 1e6
    np.testing.assert_array_equal(pooled_features(padded)[0], x)
    offset = sum(w for k, w in blocks[: [k for k, _ in blocks].index("commodity/numeric")])
    mask = padded.arrays["commodity/mask"][i]
    expected = padded.arrays["commodity/numeric"][i][mask].mean(0)
    np.testing.assert_allclose(x[i, offset:offset + 2], expected, rtol=1e-6)


def test_mean_predicts_the_train_mean():
    padded = tiny_padded(50)
    pred, info = fit_reference("mean", padded, {}, seed=0)
    assert np.allclose(pred, padded.target[padded.split == 0].mean())
    assert info["mean"] == pytest.approx(float(padded.target[padded.split == 0].mean()))


def test_ridge_and_hgb_learn_and_choose_on_validation_only():
    padded = tiny_padded(200, noise=0.2)
    test = padded.split == 2
    for name in ("ridge", "hgb"):
        with threadpool_limits(1):
            pred, info = fit_reference(name, padded, {"max_iter": 60} if name == "hgb" else {}, seed=0)
        assert regression_metrics(padded.target[test], pred[test])["r2"] > 0.3, name
        corrupt = tiny_padded(200, noise=0.2)
        corrupt.target[test] = -corrupt.target[test]
        with threadpool_limits(1):
            pred2, info2 = fit_reference(name, corrupt, {"max_iter": 60} if name == "hgb" else {}, seed=0)
        np.testing.assert_allclose(pred2[~test], pred[~test])  # test targets never influence fit or choice
        assert info2 == info


def test_unknown_reference_or_option_is_refused():
    with pytest.raises(ValueError, match="not one of"):
        fit_reference("lasso", tiny_padded(20), {}, 0)
    with pytest.raises(ValueError, match="unknown options"):
        fit_reference("ridge", tiny_padded(20), {"alpha": 1.0}, 0)


def test_reference_run_folder(tmp_path):
    path = tmp_path / "p.h5"
    write_padded(path, tiny_padded(60))
    metrics = run_reference(path, tmp_path / "ridge", experiment="ridge", model_name="ridge", options={}, feature_set="demo", seed=0)
    assert sorted(p.name for p in (tmp_path / "ridge").iterdir()) == sorted(REFERENCE_FILES)
    test = read_predictions(tmp_path / "ridge" / "predictions.parquet").filter(pl.col("split") == "test")
    again = regression_metrics(test["y_true"].to_numpy(), test["y_pred"].to_numpy())
    assert all(metrics[m] == pytest.approx(again[m], abs=1e-12) for m in METRICS)
    assert read_json(tmp_path / "ridge" / "model.json")["fitted"]["alpha"] > 0
