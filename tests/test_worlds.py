"""Tests of the simulator's worlds (memf.simulate.worlds): deterministic, their ground truth follows their formula,
their signal takes its share of the variance and needs the kind of fusion the world is about."""

from __future__ import annotations

import colorsys
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from PIL import Image
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from memf.data.contract import DEFAULT_COLUMNS
from memf.simulate import SimulatorConfig, World, read_latents, simulate, simulate_latents
from memf.simulate.latent import CONTRIBUTIONS, ragged_mean
from memf.simulate.vocab import AUDIENCE_TAGS, BROADCASTER_FIELDS, CATEGORIES, COLOURS, FIELD_SELLS
from memf.simulate.worlds import WORLDS
from simulate_support import TINY, files, read, tiny

REPO = Path(__file__).resolve().parents[1]
#: World -> its signal's contribution and the entities credited with it.
SIGNALS = {"cross_modal": ("match", {"commodity": 1.0}), "fit": ("fit", {"anchor": 0.5, "commodity": 0.5}),
           "dynamics": ("trend", {"video": 1.0})}
#: Enough clips per stream for the trend to show.
WORLD_TINY = {"clips_per_stream": [2, 4]}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """A tiny dataset of every world (the default one included), same seed and sizes."""
    out = {}
    for world in WORLDS:
        out[world] = tmp_path_factory.mktemp("world") / world
        simulate(out[world], tiny(**WORLD_TINY, world=world), DEFAULT_COLUMNS)
    return out


def _report(root: Path) -> dict:
    return json.loads((root / "ground_truth.json").read_text())


@pytest.mark.parametrize("world", list(SIGNALS))
def test_a_world_is_deterministic_and_keeps_the_default_worlds_other_values(
        datasets: dict[str, Path], world: str, tmp_path: Path) -> None:
    again = tmp_path / "again"
    simulate(again, tiny(**WORLD_TINY, world=world), DEFAULT_COLUMNS)
    first, second = files(datasets[world]), files(again)
    assert first.keys() == second.keys() and [n for n in first if first[n] != second[n]] == []

    base, mine = datasets["default"], datasets[world]
    # The world draws from its own random stream: the default latents and the noise are unchanged.
    np.testing.assert_array_equal(read(mine, "ground_truth")["noise"], read(base, "ground_truth")["noise"])
    assert read(mine, "streams").drop("sales").equals(read(base, "streams").drop("sales"))
    kept = read_latents(base)  # every default latent, except the video energies that the trend moves
    kept = kept.filter(pl.col("entity") != "video") if world == "dynamics" else kept
    assert kept.join(read_latents(mine), on=kept.columns, how="anti").height == 0
    unchanged = {"cross_modal": ("anchors",), "fit": ("items",), "dynamics": ("anchors", "items")}[world]
    for table in unchanged:
        assert read(mine, table).equals(read(base, table)), table
    if world == "cross_modal":  # the title gains the colour word and nothing else changes in the text
        items, base_items = read(mine, "items"), read(base, "items")
        assert items.drop("title", "image").equals(base_items.drop("title", "image"))
        colour_words = {c.zh for c in COLOURS} | {c.en for c in COLOURS}
        for title, old in zip(items["title"], base_items["title"], strict=True):
            words = title.split(" ")
            assert len(set(words) & colour_words) == 1
            assert [w for w in words if w not in colour_words] == old.split(" ")
    if world == "fit":  # the anchor's field and audience tag change its text; the rest is the default's
        anchors, base_anchors = read(mine, "anchors"), read(base, "anchors")
        assert anchors.drop("broadCasterField", "categoryName", "tags").equals(
            base_anchors.drop("broadCasterField", "categoryName", "tags"))
    if world == "dynamics":  # the audio clips are the default's; the video clips follow the new energies
        wavs = [name for name in first if name.endswith(".wav")]
        assert wavs and all(first[name] == files(base)[name] for name in wavs)


def _fit_table() -> np.ndarray:
    """The field x category fit, recomputed from its definition: double-centred "field sells category", sd 1."""
    w = np.array([weight for _, weight, _ in BROADCASTER_FIELDS], dtype=float)
    pi = np.array([c.weight for c in CATEGORIES])
    w, pi = w / w.sum(), pi / pi.sum()
    m = np.array([[c.en in FIELD_SELLS[f] for c in CATEGORIES] for f, _, _ in BROADCASTER_FIELDS], dtype=float)
    mean_f, mean_c, grand = m @ pi, w @ m, w @ m @ pi
    centred = m - mean_f[:, None] - mean_c[None, :] + grand
    assert np.allclose(w @ centred, 0.0) and np.allclose(centred @ pi, 0.0)  # no main effect of either entity
    return centred / math.sqrt(float(w @ centred**2 @ pi))


def _raw_signal(world: str, latents: pl.DataFrame, stream_ids: list[str]) -> np.ndarray:
    """The world's raw signal per stream, recomputed from latents.parquet alone."""
    wide = latents.pivot("factor", index=["stream_id", "entity", "object_id", "position"], values="value")
    if world == "cross_modal":
        per = wide.filter(pl.col("entity") == "commodity").group_by("stream_id").agg(
            s=(2.0 * (pl.col("photo_colour") == pl.col("title_colour")) - 1.0).mean())
    elif world == "fit":
        table = _fit_table()
        anchors = wide.filter(pl.col("entity") == "anchor").select("stream_id", "field", "audience")
        items = wide.filter(pl.col("entity") == "commodity").select("stream_id", "category", "price").join(
            anchors, on="stream_id")
        fit = table[items["field"].to_numpy().astype(int), items["category"].to_numpy().astype(int)]
        per = items.with_columns(phi=pl.Series(fit) + pl.col("audience") * pl.col("price")).group_by(
            "stream_id").agg(s=pl.col("phi").mean())
    else:
        rows = []
        for (sid,), clips in wide.filter(pl.col("entity") == "video").sort("position").group_by(
                "stream_id", maintain_order=True):
            n = clips.height
            z = np.linspace(-1.0, 1.0, n)
            rows.append((sid, float(np.polyfit(z, clips["energy"].to_numpy(), 1)[0]) if n > 1 else 0.0))
        per = pl.DataFrame(rows, schema=["stream_id", "s"], orient="row")
    got = dict(zip(per["stream_id"], per["s"], strict=True))
    return np.array([got[sid] for sid in stream_ids])


@pytest.mark.parametrize("world", list(SIGNALS))
def test_a_worlds_ground_truth_follows_its_formula(datasets: dict[str, Path], world: str) -> None:
    root = datasets[world]
    report, base = _report(root), _report(datasets["default"])
    signal, credit = SIGNALS[world]
    share = report["world"]["settings"]["share"]
    assert report["world"]["name"] == world and share == WORLDS[world].defaults["share"]
    assert report["world"]["credit"] == {signal: credit} and signal in report["world"]["formula"]
    gt = read(root, "ground_truth")
    assert gt.columns == ["stream_id", "expected_log_sales", *(f"contrib_{n}" for n in (*CONTRIBUTIONS, signal)),
                          "noise", "log_sales"]

    # The default contributions are the default world's, shrunk by sqrt(1 - share) to make room for the signal.
    for name in CONTRIBUTIONS:  # (the trend has mean 0 over a stream's clips: the video contribution stays too)
        assert report["effects"][name] == pytest.approx(TINY["effects"][name] * math.sqrt(1.0 - share))
        np.testing.assert_allclose(gt[f"contrib_{name}"], math.sqrt(1.0 - share)
                                   * read(datasets["default"], "ground_truth")[f"contrib_{name}"], atol=1e-9)
    # The signal: recomputed from latents.parquet, standardised by its population calibration, with sd sqrt(share V0).
    raw = _raw_signal(world, read_latents(root), gt["stream_id"].to_list())
    cal = report["calibration"][signal]
    np.testing.assert_allclose(gt[f"contrib_{signal}"], report["effects"][signal] * (raw - cal["mean"]) / cal["sd"],
                               atol=1e-9)
    total = sum(gt[f"contrib_{n}"].to_numpy() for n in (*CONTRIBUTIONS, signal))
    np.testing.assert_allclose(gt["expected_log_sales"], TINY["log_sales_mean"] + total, atol=1e-12)
    np.testing.assert_allclose(gt["log_sales"], gt["expected_log_sales"] + gt["noise"], atol=1e-12)
    assert report["oracle_r2"] == pytest.approx(r2_score(np.log1p(read(root, "streams")["sales"].to_numpy()),
                                                         gt["expected_log_sales"].to_numpy()))

    importance = report["importance"]
    for kind in ("variance_share", "covariance_share", "entity_covariance_share"):
        assert sum(importance[kind].values()) == pytest.approx(1.0)
    cov = importance["covariance_share"]
    for entity in ("anchor", "commodity", "room", "video", "audio"):
        expected = cov[entity] + cov["interaction"] / 2 * (entity in ("anchor", "commodity")) \
            + cov[signal] * credit.get(entity, 0.0)
        assert importance["entity_covariance_share"][entity] == pytest.approx(expected)
    factors = report["latent_factors"]
    assert {k: v for k, v in factors.items() if k != "anchor" and k != "commodity"} == \
        {k: v for k, v in base["latent_factors"].items() if k != "anchor" and k != "commodity"}
    extra = {"cross_modal": {"commodity": {"photo_colour": "categorical(6)", "title_colour": "categorical(6)"}},
             "fit": {"anchor": {"field": "categorical(8)", "audience": "continuous"}}, "dynamics": {}}[world]
    for entity in ("anchor", "commodity"):
        assert factors[entity] == {**base["latent_factors"][entity], **extra.get(entity, {})}


def _population(world: str, n: int = 16_000, **settings: float) -> World:
    """``n`` streams of ``world`` with the demo settings (``settings`` override the world's), without media."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())["simulator"]
    worlds = dict(cfg["worlds"], **({world: settings} if settings else {}))
    return simulate_latents(dict(cfg, n_streams=n, n_anchors=n // 4, world=world, worlds=worlds))


@pytest.mark.parametrize(("world", "share"), [("cross_modal", 0.3), ("fit", 0.3), ("fit", 0.6), ("dynamics", 0.3)])
def test_a_worlds_signal_takes_its_share_and_leaves_the_target_law(world: str, share: float) -> None:
    signal = SIGNALS[world][0]
    base = _population("default").report()
    mine = _population(world, share=share)
    report = mine.report()
    assert report["importance"]["covariance_share"][signal] == pytest.approx(share, abs=0.03)
    rest = sum(v for name, v in mine.contributions.items() if name != signal)
    assert abs(np.corrcoef(rest, mine.contributions[signal])[0, 1]) < 0.03  # a term of its own
    assert report["target"]["sd"] == pytest.approx(base["target"]["sd"], abs=0.03)
    assert report["oracle_r2"] == pytest.approx(base["oracle_r2"], abs=0.02)
    assert report["contribution_sd"][signal] == pytest.approx(report["effects"][signal], rel=0.05)


def _ridge_r2(x: np.ndarray, y: np.ndarray) -> float:
    """Out-of-sample R^2 of a ridge fitted on the first half of the streams."""
    half = len(y) // 2
    model = Ridge(alpha=1e-3).fit(x[:half], y[:half])
    return float(r2_score(y[half:], model.predict(x[half:])))


def _pooled(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.add.reduceat(x, offsets[:-1], axis=0) / np.diff(offsets)[:, None]


def test_cross_modal_signal_is_not_in_either_modality_alone() -> None:
    world = _population("cross_modal")
    lat, y = world.latents, world.contributions["match"]  # the signal: its oracle R^2 is 1
    off, n = lat.item_offsets, lat.n_streams
    photo, title = np.eye(len(COLOURS))[lat.item_photo_colour], np.eye(len(COLOURS))[lat.item_title_colour]
    size = 1.0 / np.diff(off)[:, None]
    photo_only = _ridge_r2(np.hstack([_pooled(photo, off), size]), y)
    title_only = _ridge_r2(np.hstack([_pooled(title, off), size]), y)
    assert photo_only < 0.5 and title_only < 0.5  # the bar: less than half the oracle ...
    assert photo_only < 0.02 and title_only < 0.02  # ... and in fact nothing
    fused = _pooled((photo[:, :, None] * title[:, None, :]).reshape(len(photo), -1), off)  # per item, then pooled
    assert _ridge_r2(np.hstack([fused, size]), y) > 0.99
    # Pooling each modality first and fusing the pools recovers only the part of chance matches across items.
    hp, ht = _pooled(photo, off), _pooled(title, off)
    late = np.hstack([hp, ht, (hp[:, :, None] * ht[:, None, :]).reshape(n, -1), size])
    assert 0.1 < _ridge_r2(late, y) < 0.7
    # On the target, a model with every other contribution right but one modality falls short of the oracle.
    other = (world.expected_log_sales - y)[:, None]
    oracle = r2_score(world.target, world.expected_log_sales)
    assert _ridge_r2(np.hstack([other, _pooled(photo, off), size]), world.target) < oracle - 0.2


def test_fit_signal_is_a_pure_cross_entity_interaction() -> None:
    world = _population("fit")
    lat, y = world.latents, world.contributions["fit"]
    off, a = lat.item_offsets, lat.stream_anchor
    field = np.eye(len(BROADCASTER_FIELDS))[lat.anchor_field[a]]
    audience = lat.anchor_audience[a][:, None]
    categories = _pooled(np.eye(len(CATEGORIES))[lat.item_category], off)
    price = ragged_mean(lat.item_price, off)[:, None]
    assert _ridge_r2(np.hstack([field, audience, categories, price]), y) < 0.02  # entity by entity: nothing
    cross = np.hstack([(field[:, :, None] * categories[:, None, :]).reshape(len(y), -1), audience * price])
    assert _ridge_r2(cross, y) > 0.99


def test_dynamics_signal_needs_the_clip_order() -> None:
    world = _population("dynamics")
    lat, y = world.latents, world.contributions["trend"]
    off, e = lat.video_offsets, lat.video_energy
    count = np.eye(int(np.diff(off).max()))[np.diff(off) - 1]
    mean = ragged_mean(e, off)
    sd = np.sqrt(np.maximum(ragged_mean(e**2, off) - mean**2, 0.0))
    order_free = np.column_stack([mean, sd, np.maximum.reduceat(e, off[:-1]), np.minimum.reduceat(e, off[:-1]),
                                  count])
    assert _ridge_r2(order_free, y) < 0.02
    last_minus_first = (e[off[1:] - 1] - e[off[:-1]])[:, None] * count
    assert _ridge_r2(np.hstack([order_free, last_minus_first]), y) > 0.9


def _mean_hue(path: Path) -> float:
    """Circular mean of the hue, weighted by saturation x value: what a colour-sensitive global feature sees."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255.0
    hsv = np.array([colorsys.rgb_to_hsv(*px) for px in rgb])
    angle, weight = 2 * np.pi * hsv[:, 0], hsv[:, 1] * hsv[:, 2]
    return float(np.arctan2((weight * np.sin(angle)).sum(), (weight * np.cos(angle)).sum()) / (2 * np.pi)) % 1.0


def test_world_latents_show_in_the_data(datasets: dict[str, Path]) -> None:
    # cross_modal: the photo's mean hue names its colour, the title names its own.
    root = datasets["cross_modal"]
    wide = read_latents(root).filter(pl.col("entity") == "commodity").pivot(
        "factor", index="object_id", values="value")
    items = read(root, "items").join(wide, left_on="item_id", right_on="object_id")
    hues = np.array([c.hue for c in COLOURS])
    seen = [int(np.argmin(np.abs((_mean_hue(root / p) - hues + 0.5) % 1.0 - 0.5))) for p in items["image"]]
    assert np.mean(np.array(seen) == items["photo_colour"].to_numpy()) >= 0.95
    for title, colour in zip(items["title"], items["title_colour"].cast(pl.Int64), strict=True):
        assert COLOURS[colour].zh in title.split(" ") or COLOURS[colour].en in title.split(" ")
    for path in items["image"]:  # never greyscale: the colour must show
        with Image.open(root / path) as img:
            assert img.mode != "L"

    # fit: the anchor's field is its broadCasterField; its audience tag rises with the audience's price level.
    root = datasets["fit"]
    latents = read_latents(root).filter(pl.col("entity") == "anchor").unique(["object_id", "factor"])
    wide = latents.pivot("factor", index="object_id", values="value")
    anchors = read(root, "anchors").join(wide, left_on="anchor_id", right_on="object_id")
    assert [BROADCASTER_FIELDS[int(f)][0] for f in anchors["field"]] == anchors["broadCasterField"].to_list()
    tier = [next(i for i, tags in enumerate(AUDIENCE_TAGS) if set(tags) & set(t.split(","))) for t in anchors["tags"]]
    assert np.corrcoef(anchors["audience"].to_numpy(), tier)[0, 1] > 0.5


def test_world_settings_are_checked() -> None:
    assert SimulatorConfig.from_dict(TINY).world == "default"
    assert SimulatorConfig.from_dict(tiny(worlds={"fit": {"share": 0.5}})).worlds == {
        "cross_modal": {"share": 0.3}, "fit": {"share": 0.5}, "dynamics": {"share": 0.3}}
    with pytest.raises(ValueError, match="simulator.world: 'mixed'"):
        SimulatorConfig.from_dict(tiny(world="mixed"))
    with pytest.raises(ValueError, match=r"simulator.worlds: unknown key\(s\) \['default'\]"):
        SimulatorConfig.from_dict(tiny(worlds={"default": {"share": 0.1}}))
    with pytest.raises(ValueError, match="simulator.worlds.fit.share"):
        SimulatorConfig.from_dict(tiny(worlds={"fit": {"share": 1.5}}))
    with pytest.raises(ValueError, match=r"simulator.worlds.dynamics: unknown key\(s\) \['slope'\]"):
        SimulatorConfig.from_dict(tiny(worlds={"dynamics": {"slope": 1.0}}))
    # The workflow's schema and config.yaml offer exactly the registered worlds, with the registry's defaults.
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]["simulator"]["properties"]
    assert props["world"]["enum"] == list(WORLDS) and props["world"]["default"] == "default"
    defaults = {name: cls.defaults for name, cls in WORLDS.items() if cls.defaults}
    assert {name: {k: v["default"] for k, v in spec["properties"].items()}
            for name, spec in props["worlds"]["properties"].items()} == defaults
    assert yaml.safe_load((REPO / "config.yaml").read_text())["simulator"]["worlds"] == defaults
