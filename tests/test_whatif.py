"""What-if variants (memf.whatif) on the tiny run: MEMF's bundle predicts variants of two simulated streams (another
anchor, other items, another room, and a variant that names the stream's own objects); one row per variant, the
plan's prediction is the predict chain's, a variant of the stream's own objects predicts the plan, and the
counterfactual truth of the unchanged variant is the simulator's expected log sales."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from memf.core.io import DataError, read_json
from memf.predict.predictor import load_bundle
from memf.simulate.counterfactual import Variant
from memf.whatif.core import PLANNED, read_variants, what_if


@pytest.fixture(scope="module")
def answered(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, Path, dict]:
    raw = tiny_run / "results/demo/raw"
    streams = pl.read_parquet(raw / "streams.parquet").sort("stream_id")
    items = pl.read_parquet(raw / "items.parquet").sort("stream_id", "position")
    a, b, c = streams["stream_id"][:3].to_list()
    other_anchor = streams.filter(pl.col("anchor_id") != streams["anchor_id"][0])["anchor_id"][0]
    own = {s: items.filter(pl.col("stream_id") == s)["item_id"].to_list() for s in (a, b, c)}
    variants = [
        Variant(a, anchor_id=other_anchor, label="another anchor"),
        Variant(a, items=tuple(own[c][:2]), label="items of c"),
        Variant(a, room_from=b, label="room of b"),
        Variant(a, anchor_id=streams["anchor_id"][0], items=tuple(own[a]), room_from=a, label="its own objects"),
        Variant(b, items=tuple(own[b][:2] + own[c][:1]), label="an item of c"),
    ]
    out = tmp_path_factory.mktemp("whatif") / "out"
    frame = what_if(load_bundle(tiny_run / "results/bundles/memf"), raw, variants, out, workers=1)
    return frame, out, {"a": a, "b": b, "raw": raw}


def test_one_row_per_variant_and_the_plan_is_the_predict_chain_s(answered):
    frame, out, ids = answered
    assert frame.height == 7  # five variants and the two plans added
    assert sorted(frame.filter(pl.col("label") == PLANNED)["stream_id"].to_list()) == sorted([ids["a"], ids["b"]])
    predicted = pl.read_parquet(out / "predictions.parquet")
    plans = frame.filter(pl.col("label") == PLANNED).join(predicted, on="stream_id", suffix="_chain")
    np.testing.assert_allclose(plans["log_sales_pred"], plans["log_sales_pred_chain"], atol=1e-5, rtol=0)
    own = frame.filter(pl.col("label") == "its own objects").row(0, named=True)
    assert abs(own["diff_log"]) < 1e-5 and own["diff_lower"] <= own["diff_log"] <= own["diff_upper"]
    for stream, part in frame.group_by("stream_id"):
        assert sorted(part["rank"].to_list()) == list(range(1, part.height + 1))
    assert (frame["sales_lower"] <= frame["sales_pred"]).all() and (frame["sales_pred"] <= frame["sales_upper"]).all()


def test_the_counterfactual_truth_of_the_plan_is_the_simulator_s(answered):
    frame, out, ids = answered
    truth = pl.read_parquet(ids["raw"] / "ground_truth.parquet").select("stream_id", "expected_log_sales")
    plans = frame.filter(pl.col("label") == PLANNED).join(truth, on="stream_id")
    np.testing.assert_allclose(plans["true_expected_log_sales"], plans["expected_log_sales"], rtol=1e-9)
    assert (plans["true_diff"].abs() < 1e-12).all()
    summary = read_json(out / "whatif.json")["truth"]
    assert summary["streams"] == 2 and 0 <= summary["best_hit_rate"] <= 1 and -1 <= summary["spearman_mean"] <= 1


def test_a_variant_naming_what_the_dataset_does_not_hold_is_refused_in_one_line(tiny_run, answered, tmp_path):
    frame, out, ids = answered
    from memf.whatif.core import predict_variants

    bundle = load_bundle(tiny_run / "results/bundles/memf")
    with pytest.raises(DataError, match=r"variant 1 of .*: anchor 'nobody' is not the anchor of a predicted stream"):
        predict_variants(bundle, out, [Variant(ids["a"]), Variant(ids["a"], anchor_id="nobody")])
    path = tmp_path / "v.csv"
    path.write_text("stream_id,label,items\ns0001,two,i1;i2\n,bad,\n")
    with pytest.raises(DataError, match=r"v.csv variant 1: .*stream_id missing"):
        read_variants(path)


def test_the_cli_writes_the_table(tiny_run, answered, tmp_path):
    frame, out, ids = answered
    path = tmp_path / "variants.yaml"
    path.write_text(f"- {{stream_id: {ids['a']}, room_from: {ids['b']}}}\n")
    done = subprocess.run([sys.executable, "-m", "memf.whatif", str(tiny_run / "results/bundles/memf"),
                           str(ids["raw"]), str(path), str(tmp_path / "o"), "--workers", "1"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pl.read_csv(tmp_path / "o/whatif.csv")
    assert table.height == 2 and set(table["label"]) == {PLANNED, f"room of {ids['b']}"}
    room = table.filter(pl.col("label") != PLANNED).row(0, named=True)
    expected = frame.filter(pl.col("label") == "room of b").row(0, named=True)
    assert room["log_sales_pred"] == pytest.approx(expected["log_sales_pred"], abs=1e-5)
