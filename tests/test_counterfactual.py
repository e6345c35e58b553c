"""The counterfactual truth of what-if variants (memf.simulate.counterfactual): the plan reproduces the ground truth
in every world, and each swap changes exactly the contributions the formulas say, by the amounts they say."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from memf.data.contract import DEFAULT_COLUMNS
from memf.simulate import read_latents, simulate, simulate_latents
from memf.simulate.counterfactual import ANCHOR_DRIVEN_CLIPS, Variant, counterfactual_truth
from memf.simulate.latent import AUDIO_WEIGHTS, COMMODITY_WEIGHTS, COUPLING, ragged_mean
from memf.simulate.worlds import WORLDS, FitWorld
from simulate_support import read, tiny

SIGNALS = {"default": None, "cross_modal": "match", "fit": "fit", "dynamics": "trend"}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny dataset of every world, with enough clips per stream for a trend."""
    out = {}
    for world in WORLDS:
        out[world] = tmp_path_factory.mktemp("cf") / world
        simulate(out[world], tiny(world=world, clips_per_stream=[2, 4]), DEFAULT_COLUMNS)
    return out


class Truth:
    """A dataset's latents by object and its recorded constants, to recompute the formulas by hand."""

    def __init__(self, root: Path) -> None:
        self.report = json.loads((root / "ground_truth.json").read_text())
        self.gt = read(root, "ground_truth")
        latents = read_latents(root)
        index = ["stream_id", "object_id", "position"]
        self.wide = {e: latents.filter(pl.col("entity") == e).pivot("factor", index=index, values="value").sort(
            "stream_id", "position") for e in ("anchor", "commodity", "room", "video", "audio")}

    def anchor_of(self, sid: str) -> dict:
        return self.wide["anchor"].filter(pl.col("stream_id") == sid).row(0, named=True)

    def items_of(self, sid: str) -> pl.DataFrame:
        return self.wide["commodity"].filter(pl.col("stream_id") == sid)

    def scaled(self, name: str, raw_delta: float) -> float:
        """The change of contrib_<name> when its raw term moves by ``raw_delta``."""
        return self.report["effects"][name] * raw_delta / self.report["calibration"][name]["sd"]

    def row(self, sid: str) -> dict:
        return self.gt.filter(pl.col("stream_id") == sid).row(0, named=True)


def _commodity_raw(items: pl.DataFrame) -> float:
    """The raw commodity term of docs/simulator.md, by hand."""
    w, p = COMMODITY_WEIGHTS, items["price"].to_numpy()
    return (w["best_appeal"] * items["appeal"].max() + w["discount"] * items["discount"].mean() + w["price"] * p.mean()
            + w["spread"] * p.std() + w["n_items"] * math.log(items.height))


def _contribs(frame: pl.DataFrame, row: int = 0) -> dict[str, float]:
    return {c.removeprefix("contrib_"): v for c, v in frame.row(row, named=True).items() if c.startswith("contrib_")}


@pytest.mark.parametrize("world", list(WORLDS))
def test_the_plan_reproduces_the_ground_truth(datasets: dict[str, Path], world: str) -> None:
    gt = read(datasets[world], "ground_truth")
    truth = counterfactual_truth(datasets[world], [Variant(s) for s in gt["stream_id"]])
    assert truth["stream_id"].to_list() == gt["stream_id"].to_list() and set(truth["label"]) == {"as planned"}
    assert truth["variant"].to_list() == list(range(gt.height))
    for column in [c for c in gt.columns if c == "expected_log_sales" or c.startswith("contrib_")]:
        np.testing.assert_allclose(truth[column].to_numpy(), gt[column].to_numpy(), rtol=0, atol=1e-9)
    assert {c for c in truth.columns if c.startswith("contrib_")} == {c for c in gt.columns if c.startswith("contrib_")}


@pytest.mark.parametrize("world", list(WORLDS))
def test_another_anchor_changes_what_involves_the_anchor_by_the_formula(datasets: dict[str, Path], world: str) -> None:
    t = Truth(datasets[world])
    sids = t.gt["stream_id"].to_list()
    pairs = [(s, o) for s in sids for o in sids if t.anchor_of(s)["object_id"] != t.anchor_of(o)["object_id"]][::7]
    truth = counterfactual_truth(datasets[world], [Variant(s, anchor_id=t.anchor_of(o)["object_id"]) for s, o in pairs])
    signal = SIGNALS[world]
    for row, (s, o) in enumerate(pairs):
        got, plan = _contribs(truth, row), {k.removeprefix("contrib_"): v for k, v in t.row(s).items()}
        old, new = t.anchor_of(s), t.anchor_of(o)
        dk = new["skill"] - old["skill"]
        best = t.items_of(s)["appeal"].max()
        expected = {
            "anchor": t.scaled("anchor", (new["reach"] + new["skill"] - old["reach"] - old["skill"]) / math.sqrt(2)),
            "interaction": t.scaled("interaction", dk * best),
            # the clips' stream level follows the anchor's skill: every video and audio energy moves by c * dk
            "video": t.scaled("video", COUPLING * dk),
            "audio": t.scaled("audio", AUDIO_WEIGHTS["energy"] * COUPLING * dk),
            "commodity": 0.0, "room": 0.0,
        }
        if signal in ("match", "trend"):
            expected[signal] = 0.0  # the items' colours and the clips' slope do not involve the anchor
        if signal == "fit":
            items = t.items_of(s)
            cats, price = items["category"].to_numpy().astype(int), items["price"].to_numpy()
            fit = [np.mean(FitWorld.table[int(a["field"]), cats] + a["audience"] * price) for a in (old, new)]
            expected["fit"] = t.scaled("fit", fit[1] - fit[0])
        for name, delta in expected.items():
            assert got[name] - plan[name] == pytest.approx(delta, abs=1e-9), (world, s, o, name)
        assert truth["expected_log_sales"][row] - t.row(s)["expected_log_sales"] == pytest.approx(
            sum(got.values()) - sum(v for k, v in plan.items() if k in got), abs=1e-9)


def test_adding_an_appealing_item_raises_the_commodity_contribution_by_the_formula(datasets: dict[str, Path]) -> None:
    t = Truth(datasets["default"])
    items = t.wide["commodity"]
    star = items.sort("appeal").row(-1, named=True)  # the most appealing item of the dataset
    sid = items.filter(pl.col("stream_id") != star["stream_id"]).group_by("stream_id").agg(
        pl.col("appeal").max()).sort("appeal").row(0)[0]  # the stream whose best item is the least appealing
    mine = t.items_of(sid)
    truth = counterfactual_truth(datasets["default"], [Variant(sid, items=[*mine["object_id"], star["object_id"]])])
    got, plan = _contribs(truth), {k.removeprefix("contrib_"): v for k, v in t.row(sid).items()}
    more = pl.concat([mine, items.filter(pl.col("object_id") == star["object_id"])])
    delta = t.scaled("commodity", _commodity_raw(more) - _commodity_raw(mine))
    assert delta > 0 and got["commodity"] - plan["commodity"] == pytest.approx(delta, abs=1e-9)
    k = t.anchor_of(sid)["skill"]
    assert got["interaction"] - plan["interaction"] == pytest.approx(
        t.scaled("interaction", k * (star["appeal"] - mine["appeal"].max())), abs=1e-9)
    kept = ("anchor", "room", "video", "audio")
    assert [got[n] for n in kept] == [plan[n] for n in kept]


@pytest.mark.parametrize("world", ["cross_modal", "fit"])
def test_another_streams_anchor_items_and_room_bring_its_contributions(datasets: dict[str, Path], world: str) -> None:
    gt = read(datasets[world], "ground_truth")
    t = Truth(datasets[world])
    s, o = gt["stream_id"][0], gt["stream_id"][5]
    truth = counterfactual_truth(datasets[world], [
        Variant(s, anchor_id=t.anchor_of(o)["object_id"], items=t.items_of(o)["object_id"].to_list(), room_from=o),
        Variant(s, room_from=o, label="o's room")])
    other, plan = t.row(o), t.row(s)
    for name in ("anchor", "commodity", "room", "interaction", SIGNALS[world]):
        assert truth[f"contrib_{name}"][0] == pytest.approx(other[f"contrib_{name}"], abs=1e-9)
    items = "+".join(t.items_of(o)["object_id"])
    assert truth["label"].to_list() == [f"anchor {t.anchor_of(o)['object_id']}; items {items}; room of {o}", "o's room"]
    # Only the room moves with the room: the clips stay the plan's.
    got = _contribs(truth, 1)
    assert got == {**{k.removeprefix("contrib_"): v for k, v in plan.items() if k.startswith("contrib_")},
                   "room": other["contrib_room"]}


def test_the_clips_stream_level_follows_the_anchors_skill() -> None:
    """The generative model behind ANCHOR_DRIVEN_CLIPS: the stream mean of video and audio energy has slope
    COUPLING on the anchor's skill; audio tempo none."""
    lat = simulate_latents(tiny(n_streams=20_000, n_anchors=20_000, clips_per_stream=[3, 3])).latents
    k = lat.anchor_skill[lat.stream_anchor]
    slopes = {name: np.polyfit(k, ragged_mean(getattr(lat, name), getattr(lat, f"{name.split('_')[0]}_offsets")), 1)[0]
              for name in ("video_energy", "audio_energy", "audio_tempo")}
    assert set(ANCHOR_DRIVEN_CLIPS) == {"video_energy", "audio_energy"}
    assert slopes["video_energy"] == pytest.approx(COUPLING, abs=0.03)
    assert slopes["audio_energy"] == pytest.approx(COUPLING, abs=0.03) and abs(slopes["audio_tempo"]) < 0.03


def test_bad_references_are_named(datasets: dict[str, Path]) -> None:
    root = datasets["default"]
    sid = read(root, "ground_truth")["stream_id"][0]
    cases = {
        "variant 1: unknown stream_id 's99999'": [Variant(sid), Variant("s99999")],
        "variant 0: unknown anchor_id 'a9999'": [Variant(sid, anchor_id="a9999")],
        "variant 0: unknown item_id 'i999999'": [Variant(sid, items=["i999999"])],
        "variant 0: unknown room_from stream 'x'": [Variant(sid, room_from="x")],
        "no variants": [],
    }
    for message, variants in cases.items():
        with pytest.raises(ValueError, match=message):
            counterfactual_truth(root, variants)
    with pytest.raises(ValueError, match=f"variant of {sid}: items is empty"):
        Variant(sid, items=[])
    with pytest.raises(ValueError, match=f"variant of {sid}: item 'i000001' listed twice"):
        Variant(sid, items=["i000001", "i000002", "i000001"])
