"""memf.training.references: pooled features (masked means, set statistics) by blocks, the reduction of wide
features, the reference models, that their fitted transforms and choices see the fold's training and validation parts
only, that a job pools once, that memory follows the reduced features, and the saved models."""

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import skops.io as sio
from sklearn.svm import SVR
from threadpoolctl import threadpool_limits

from memf.core.io import DataError
from memf.core.metrics import regression_metrics
from memf.padding.store import PaddedStore, write_padded
from memf.training import references
from memf.training.fit import JobSpec, fit_experiment
from memf.training.matrix import (
    COUNT_KEYS,
    POOLED_BLOCKS,
    REFERENCE_FILES,
    REFERENCE_MODEL_FILE,
    pooled_widths,
    reduced_widths,
)
from memf.training.prepare import fold_data
from memf.training.reference_fit import ReferenceFitter
from memf.training.references import (
    ReferenceInputs,
    fit_reference,
    load_reference,
    pool_block,
)
from memf.training.runs import read_predictions
from memf.training.settings import TuningSettings, parse_space
from train_support import tiny_fold, tiny_padded

ROOT = Path(__file__).resolve().parents[1]
#: Forces the reduction on the tiny data (pooled widths 47 and 149): blocks wider than 3 become 3 components.
REDUCED = {"reduce_above": 10, "components": 3}


def _all_at_once(padded, pooling):
    """The pooling as it was before it went by blocks (commit 7df2306): every stream at once, in float64."""
    blocks, names = [], []
    for key, mask_key in POOLED_BLOCKS:
        x = padded.arrays[key].astype(np.float64)
        if pooling == "set":
            x = references._set_stats(x, padded.arrays[mask_key]) if mask_key is not None else x.reshape(len(x), -1)
        else:
            if mask_key is not None:
                x = references._masked_mean(x, padded.arrays[mask_key])
            if not key.endswith("/numeric") and x.ndim == 3:
                x = x.mean(axis=1)
        blocks.append(x)
        names.append((key, x.shape[1]))
    if pooling == "set":
        counts = np.stack([padded.arrays[k].sum(axis=1) for k in COUNT_KEYS], axis=1).astype(np.float64)
        blocks.append(counts)
        names.append(("counts", 3))
    return np.concatenate(blocks, axis=1), names


@pytest.mark.parametrize("pooling", ["mean", "set"])
def test_blockwise_pooling_equals_the_pooling_of_every_stream_at_once(pooling, tmp_path):
    padded = tiny_padded(40)
    before, names = _all_at_once(padded, pooling)
    assert pooled_widths(padded.dims(), pooling) == names  # the torch-free catalog's widths are the code's
    data = tiny_fold(padded, tmp_path / "f1.h5")
    rows = np.arange(40)
    np.testing.assert_array_equal(pool_block(padded.arrays, pooling), before.astype(np.float32))
    whole = pool_block(next(iter(data.blocks(rows, 40))), pooling)
    for size in (1, 7):  # blocks padded to their own longest lists pool to the same features
        got = np.concatenate([pool_block(b, pooling) for b in data.blocks(rows, size)])
        np.testing.assert_array_equal(got, whole)


def test_pooled_features_are_masked_means():
    padded = tiny_padded(20)
    x = pool_block(padded.arrays, "mean")
    widths = dict(pooled_widths(padded.dims(), "mean"))
    assert x.shape == (20, sum(widths.values())) and x.dtype == np.float32
    assert widths["anchor/text"] == 6 and widths["anchor/numeric"] == 3 and widths["commodity/numeric"] == 2
    # Changing a padded item changes nothing; changing a real one does.
    i = int(np.flatnonzero(~padded.arrays["commodity/mask"].all(1))[0])
    j = int(np.flatnonzero(~padded.arrays["commodity/mask"][i])[0])
    padded.arrays["commodity/numeric"][i, j] = 1e6
    np.testing.assert_array_equal(pool_block(padded.arrays, "mean"), x)
    names = list(widths)
    offset = sum(widths[k] for k in names[: names.index("commodity/numeric")])
    mask = padded.arrays["commodity/mask"][i]
    expected = padded.arrays["commodity/numeric"][i][mask].mean(0)
    np.testing.assert_allclose(x[i, offset:offset + 2], expected, rtol=1e-6)


def test_set_statistics_see_the_best_item_the_spread_and_the_count():
    padded = tiny_padded(20)
    x = pool_block(padded.arrays, "set")
    blocks = pooled_widths(padded.dims(), "set")
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


def test_the_reduction_rule_leaves_narrow_features_and_shrinks_wide_blocks(tmp_path):
    widths = [("anchor/text", 3072), ("anchor/numeric", 8), ("video/x", 100), ("counts", 3)]
    assert reduced_widths(widths, 4000, 256) == widths  # 3,183 features: at most reduce_above, kept
    assert reduced_widths(widths, 3000, 256) == [("anchor/text", 256), ("anchor/numeric", 8), ("video/x", 100),
                                                 ("counts", 3)]
    assert reduced_widths(widths, 3000, 256, n_train=50)[0] == ("anchor/text", 50)
    data = tiny_fold(tiny_padded(120), tmp_path / "f2.h5")
    fitted = fit_reference("ridge", data, {"pooling": "set", **REDUCED}, 0)
    blocks = pooled_widths(data.dims(), "set")
    assert fitted.info["reduced"] and fitted.info["n_features"] == 149
    assert fitted.info["n_model_features"] == sum(w for _, w in reduced_widths(blocks, 10, 3))
    assert not fit_reference("ridge", data, {"pooling": "set"}, 0).info["reduced"]  # 149 <= 8192: as before


def test_mean_predicts_the_train_mean(tmp_path):
    data = tiny_fold(tiny_padded(50), tmp_path / "f3.h5")
    fitted = fit_reference("mean", data, {}, seed=0)
    assert np.allclose(fitted.pred, data.target("train").mean())
    assert fitted.info["mean"] == pytest.approx(float(data.target("train").mean()))


CASES = [("ridge", {}), ("ridge", {"pooling": "set"}), ("hgb", {"max_iter": 60}), ("hgb", {"max_iter": 60, "pca": 3}),
         ("ridge", {"pooling": "set", **REDUCED}), ("hgb", {"pooling": "set", "max_iter": 60, "pca": 2, **REDUCED})]
CASE_IDS = ["ridge", "ridge-set", "hgb", "hgb-pca", "ridge-reduced", "hgb-pca-reduced"]


@pytest.mark.parametrize("options", CASES, ids=CASE_IDS)
def test_references_learn_and_never_see_test_targets(options, tmp_path):
    name, opts = options
    clean = tiny_fold(tiny_padded(200, noise=0.2), tmp_path / "f4.h5")
    test = clean.rows["test"]
    with threadpool_limits(1):
        fitted = fit_reference(name, clean, opts, seed=0)
    assert regression_metrics(clean.target("test"), fitted.pred[test])["r2"] > 0.3
    corrupt_padded = tiny_padded(200, noise=0.2)
    corrupt_padded.target[corrupt_padded.fold == 0] *= -1
    with threadpool_limits(1):
        again = fit_reference(name, tiny_fold(corrupt_padded, tmp_path / "f5.h5"), opts, seed=0)
    np.testing.assert_allclose(again.pred, fitted.pred)  # test targets never influence a fit, a transform or a choice
    assert again.info == fitted.info


def test_scaler_and_pca_are_fitted_on_the_training_part_only(tmp_path):
    """Moving the features of streams outside the training part changes no prediction of a training stream: the
    scaler, the reduction and the PCA never saw them (for hgb only the test streams move: the validation part picks
    its length)."""
    padded = tiny_padded(120)
    data = tiny_fold(padded, tmp_path / "f6.h5")
    train, test = data.rows["train"], data.rows["test"]
    cases = (("ridge", {}, "val+test"), ("ridge", {"pooling": "set"}, "val+test"),
             ("ridge", {"pooling": "set", **REDUCED}, "val+test"), ("hgb", {"max_iter": 20, "pca": 4}, "test"),
             ("hgb", {"max_iter": 20, "pca": 2, **REDUCED}, "test"))
    for name, opts, moved_part in cases:
        other = tiny_padded(120)
        rows = np.concatenate([data.rows["val"], test]) if moved_part == "val+test" else test
        for key in ("anchor/text", "commodity/image", "video/x"):
            other.arrays[key][rows] = other.arrays[key][rows] * 3 + 7
        with threadpool_limits(1):
            a = fit_reference(name, data, opts, seed=0).pred
            b = fit_reference(name, tiny_fold(other, tmp_path / f"{name}-{moved_part}-{len(opts)}.h5"), opts, seed=0).pred
        np.testing.assert_allclose(a[train], b[train], err_msg=name, rtol=1e-6)
        assert not np.allclose(a[test], b[test]), name  # the test streams did move


class CountingBlocks:
    """A fold whose block reads are counted (streams read)."""

    def __init__(self, data):
        self.data, self.rows, self.read = data, data.rows, 0

    def __len__(self):
        return len(self.data)

    def target(self, split):
        return self.data.target(split)

    def blocks(self, rows, size):
        self.read += len(rows)
        return self.data.blocks(rows, size)


@pytest.mark.parametrize("reduced", [False, True], ids=["unreduced", "reduced"])
def test_features_are_pooled_once_per_job_and_pooling(reduced, tmp_path):
    data = tiny_fold(tiny_padded(100), tmp_path / "f8.h5")
    counting = CountingBlocks(data)
    inputs = ReferenceInputs(counting)
    extra = REDUCED if reduced else {}
    for alpha in (0.1, 1.0, 10.0):
        fit_reference("ridge", inputs, {"alpha": alpha, "pooling": "set", **extra}, 0)
    fit_reference("hgb", inputs, {"max_iter": 5, "pooling": "set", **extra}, 0)  # the same features
    n_train = len(data.rows["train"])
    one_pass = 1 + (2 * n_train + 100 if reduced else 100)  # the first stream (widths); scaler and PCA; every stream
    assert counting.read == one_pass
    fit_reference("ridge", inputs, {"pooling": "mean", **extra}, 0)
    assert counting.read > one_pass  # another pooling: pooled once more


def _write_fold(tmp_path, n=100):
    path = tmp_path / "fs.h5"
    write_padded(path, tiny_padded(n))
    return path


def _reference_job(tmp_path, path, name, model, options, seeds=(0, 1), space=None):
    spec = JobSpec(experiment=name, model=model, feature_set="fs", fold=0, seeds=seeds, options=options, space=space)
    fit_experiment(path, tmp_path / name, spec, {"device": "cpu"}, fitter=ReferenceFitter,
                   tuning_dir=tmp_path / "tuning" / name,
                   tuning=TuningSettings(trials=3, startup_trials=1, prune_warmup_epochs=1))
    return tmp_path / name


def test_a_job_pools_once_for_every_trial_and_seed(tmp_path, monkeypatch):
    calls = []
    real = references.pool_block
    monkeypatch.setattr(references, "pool_block", lambda block, pooling: calls.append(len(block["video/x"]))
                        or real(block, pooling))
    path = _write_fold(tmp_path, 300)
    space = parse_space("ridge", {"model.alpha": {"log_uniform": [0.01, 100.0]}})
    _reference_job(tmp_path, path, "ridge", "ridge", {}, seeds=(0, 1, 2), space=space)
    assert sum(calls) == 300  # 3 trials and 3 seeds: every stream pooled once


@pytest.mark.parametrize("options", [("mean", {})] + CASES, ids=["mean"] + CASE_IDS)
def test_saved_models_reproduce_the_runs_predictions(tmp_path, options):
    model, opts = options
    path = _write_fold(tmp_path)
    run = _reference_job(tmp_path, path, "ref", model, opts)
    assert sorted(p.name for p in run.iterdir()) == sorted(REFERENCE_FILES)
    loaded = load_reference(run)
    assert sorted(loaded) == [0, 1]
    data = fold_data(PaddedStore(path), 0)  # numeric inputs standardised as model.json's numeric_scaler says
    preds = read_predictions(run / "predictions.parquet")
    for seed, predictor in loaded.items():
        got = predictor.predict(data.blocks(np.arange(100), 33))
        expected = preds.filter(pl.col("seed") == seed)
        assert expected["stream_id"].to_list() == data.store.stream_id.tolist()
        np.testing.assert_allclose(got, expected["y_pred"].to_numpy(), rtol=0, atol=1e-6)


def test_a_file_with_other_types_is_refused_in_one_line(tmp_path):
    path = _write_fold(tmp_path)
    run = _reference_job(tmp_path, path, "ref", "ridge", {}, seeds=(0,))
    good = sio.load(run / REFERENCE_MODEL_FILE, trusted=list(references.TRUSTED_TYPES))
    for bad, message in ((Fraction(1, 3), r"untrusted types \['fractions.Fraction'\]"),
                         (SVR(), "the estimator is a SVR, expected Ridge or HistGradientBoostingRegressor")):
        good["seeds"]["0"]["estimator"] = bad
        sio.dump(good, run / REFERENCE_MODEL_FILE)
        with pytest.raises(DataError, match=message) as err:
            load_reference(run)
        assert "\n" not in str(err.value)


MEMORY_CHILD = r"""
import json, sys
import numpy as np
from memf.training import references

references.PCA_BATCH = 64  # smaller SVDs: the test's time, not its memory
N, MODEL = int(sys.argv[1]), sys.argv[2]
SHAPES = {"anchor/text": (4, 64), "anchor/image": (1, 256), "anchor/numeric": (8,), "room/text": (2, 64),
          "room/image": (1, 256), "room/numeric": (1,), "commodity/text": (2, 5, 64), "commodity/image": (2, 1, 256),
          "commodity/numeric": (2, 2), "video/x": (2, 64), "audio/x": (2, 64)}


class Lazy:
    # N streams whose padded arrays are drawn when read, never held: the fit's own memory is what is measured.
    def __init__(self, n):
        split = np.arange(n) % 5
        self.rows = {"train": np.flatnonzero(split >= 2), "val": np.flatnonzero(split == 1),
                     "test": np.flatnonzero(split == 0)}
        self.y = np.random.default_rng(0).normal(size=n)

    def target(self, name):
        return self.y[self.rows[name]]

    def blocks(self, rows, size):
        for start in range(0, len(rows), size):
            sel = rows[start:start + size]
            rng = np.random.default_rng(int(sel[0]))
            block = {k: rng.random(size=(len(sel), *s), dtype=np.float32) for k, s in SHAPES.items()}
            for key in ("commodity/mask", "video/mask", "audio/mask"):  # one or two real items or clips
                block[key] = np.arange(2)[None, :] < rng.integers(1, 3, size=len(sel))[:, None]
            block["anchor/numeric"][:, 0] = self.y[sel]
            yield block


options = {"pooling": "set", "reduce_above": 1000, "components": 16}
if MODEL == "hgb":
    options.update(max_iter=10)
fitted = references.fit_reference(MODEL, Lazy(N), options, 0)
# VmHWM, not ru_maxrss: Linux carries the parent's (pytest's) high-water mark into a forked and exec'd child.
status = open("/proc/self/status").read().splitlines()
print(json.dumps({"peak_kib": int(next(line.split()[1] for line in status if line.startswith("VmHWM:"))),
                  "pooled": fitted.info["n_features"], "model_features": fitted.info["n_model_features"]}))
"""


def _measure(n: int, model: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(n), model], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two processes importing torch, 15-25 s a case
@pytest.mark.parametrize("model", ["ridge", "hgb"])
def test_memory_follows_the_reduced_features_not_the_pooled_ones(model):
    """Peak RSS of a fit at 10x the streams is within 1.3x of (the 1x fit plus the 10x reduced float32 matrix); the
    pooled matrix (3,732 features, 14.9 KB a stream) would add 134 MB between 1,000 and 10,000 streams. About 20 s
    (two processes importing torch); marked slow."""
    small, large = _measure(1_000, model), _measure(10_000, model)
    assert small["pooled"] == 3732 and small["model_features"] == 148
    reduced_matrix_kib = 10_000 * 148 * 4 / 1024
    assert large["peak_kib"] <= 1.3 * (small["peak_kib"] + reduced_matrix_kib), (small, large)
    per_stream = (large["peak_kib"] - small["peak_kib"]) * 1024 / 9_000
    assert per_stream < 3732 * 4 / 3, per_stream  # well under a third of one pooled float32 row


def test_unknown_reference_or_option_is_refused(tmp_path):
    data = tiny_fold(tiny_padded(20), tmp_path / "f9.h5")
    with pytest.raises(ValueError, match="not one of"):
        fit_reference("lasso", data, {}, 0)
    with pytest.raises(ValueError, match="unknown options"):
        fit_reference("ridge", data, {"alphas": [1.0]}, 0)
    with pytest.raises(ValueError, match="expected one of mean, set"):
        fit_reference("ridge", data, {"pooling": "max"}, 0)
    with pytest.raises(ValueError, match="option 'components' is 0, expected an integer >= 1"):
        fit_reference("hgb", data, {"components": 0}, 0)
