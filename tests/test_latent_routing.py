"""The latent feature set follows the media: every factor of every world is routed to the arrays whose media render
it (memf.simulate.factors), pad_latents puts it in those arrays only, and every fusion model runs on that layout."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from memf.data.contract import FIELD_ENTITIES
from memf.models import MODELS, build_model
from memf.padding.pad import pad_latents
from memf.padding.store import read_padded
from memf.simulate import attributes, render, simulate_latents, vocab
from memf.simulate.factors import FACTORS, ROUTES, Factor
from memf.simulate.worlds import WORLDS
from simulate_support import tiny, write_latent_dataset

torch.set_num_threads(1)
#: Two values of a continuous factor far enough apart to change every keyword tier, whatever the tier's noise.
LOW, HIGH = -2.5, 2.5
#: The values every factor takes when another one moves.
BASE: dict[str, float] = {"reach": 0.0, "skill": 0.0, "field": 0, "audience": 0.0, "appeal": 0.0, "price": 0.0,
                          "discount": 0.0, "category": 0, "photo_colour": 0, "title_colour": 2,
                          "attractiveness": 0.0, "duration": 0.0, "energy": 0.0, "tempo": 0.0}


def _render(world: str, v: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """Array -> what the simulator renders into that array's media from the latents ``v`` ((entity, factor) ->
    value), wired as the writer wires them, with fixed random draws."""
    def rng() -> np.random.Generator:
        return np.random.default_rng(0)  # the same draws for every call
    a, c, r = (lambda f: v[("anchor", f)]), (lambda f: v[("commodity", f)]), (lambda f: v[("room", f)])
    colours = (c("photo_colour"), c("title_colour")) if world == "cross_modal" else (None, None)
    anchor_text = vocab.anchor_text(rng(), a("reach"), a("skill"))
    if world == "fit":
        anchor_text.update(vocab.anchor_profile(rng(), a("field"), a("audience"), anchor_text["tags"]))
    return {
        "anchor/text": anchor_text,
        "anchor/image": render.anchor_avatar(rng(), 16, a("reach"), a("skill")),
        "anchor/numeric": attributes.anchor_numeric(rng(), a("reach"), a("skill")),
        "commodity/text": vocab.item_text(rng(), c("appeal"), c("price"), c("discount"), c("category"), colours[1]),
        "commodity/image": render.item_photo(rng(), 16, c("appeal"), c("price"), c("discount"), c("category"),
                                             colours[0]),
        "commodity/numeric": attributes.item_numeric(rng(), c("price"), c("discount"), c("category")),
        "room/text": vocab.room_text(rng(), r("attractiveness"), c("category")),  # the first item's category
        "room/image": render.room_cover(rng(), 16, r("attractiveness"), 0.3),
        "room/numeric": attributes.room_numeric(rng(), r("duration")),
        "video/x": render.video_frames(rng(), v[("video", "energy")], 16, 2, 0.3),
        "audio/x": render.audio_wave(rng(), v[("audio", "energy")], v[("audio", "tempo")], 0.05, 8000),
    }


def _same(x: Any, y: Any) -> bool:
    return bool(np.array_equal(x, y)) if isinstance(x, np.ndarray) else x == y


@pytest.mark.parametrize("world", list(WORLDS))
def test_every_factor_is_routed_to_the_arrays_whose_media_it_moves(world: str) -> None:
    model = WORLDS[world]()
    factors = model.all_factors()
    assert [(f.entity, f.name) for f in factors] == [(f.entity, f.name) for f in FACTORS + model.factors]
    assert set(model.reroutes) <= {(f.entity, f.name) for f in FACTORS}
    base = {(f.entity, f.name): BASE[f.name] for f in factors}
    for f in factors:
        assert f.routes and set(f.routes + f.left_out) <= set(ROUTES)
        low, high = (0, 1) if f.kind.startswith("categorical") else (LOW, HIGH)
        one, two = _render(world, {**base, (f.entity, f.name): low}), _render(world, {**base, (f.entity, f.name): high})
        moved = {key for key in one if not _same(one[key], two[key])}
        assert moved == set(f.routes + f.left_out), f"{world}: {f.entity}/{f.name}"


def test_a_factor_is_routed_to_its_own_entitys_arrays() -> None:
    with pytest.raises(ValueError, match="factor anchor/reach: no routes"):
        Factor("anchor", "reach", "anchor_reach", ())
    with pytest.raises(ValueError, match="factor video/energy: route 'room/text' is not one of its entity's arrays"):
        Factor("video", "energy", "video_energy", ("room/text",))
    with pytest.raises(ValueError, match=r"factor room/duration: \['room/numeric'\] both routed and left out"):
        Factor("room", "duration", "room_duration", ("room/numeric",), left_out=("room/numeric",))


@pytest.fixture(scope="module")
def padded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The latent feature set of 40 streams of every world."""
    out = {}
    for world in WORLDS:
        base = tmp_path_factory.mktemp(world)
        write_latent_dataset(simulate_latents(tiny(n_streams=40, n_anchors=10, world=world)), base / "raw",
                             base / "data")
        raw = base / "raw"
        pad_latents(data_dir=base / "data", latents=raw / "latents.parquet", max_items=8, max_clips=5,
                    out=base / "latent.h5", ground_truth_json=raw / "ground_truth.json")
        out[world] = read_padded(base / "latent.h5")
    return out


def _names(fields: dict[str, list[str]], suffix: str, prefix: str = "") -> set[str]:
    """Factors named by the entries of one array (one-hot entries ``name=level`` count once)."""
    return {e.split("=")[0].removeprefix(prefix) for e in fields[suffix] if e.startswith(prefix)}


@pytest.mark.parametrize("world", list(WORLDS))
def test_latent_arrays_hold_each_factor_in_its_routes_only(padded: dict[str, Any], world: str) -> None:
    fields = padded[world].attrs["fields"]
    for f in WORLDS[world]().all_factors():
        for route in ROUTES:
            entity, _, suffix = route.partition("/")
            own = _names(fields[entity], suffix) if entity == f.entity else \
                _names(fields[entity], suffix, "first_item.")
            assert (f.name in own) == (route in f.routes), f"{world}: {f.entity}/{f.name} in {route}"
    # One text and one image token per object, each holding something, and some numeric field: no empty modality.
    dims = padded[world].dims()
    assert all(dims[f"{e}/{m}"][-2] == 1 and dims[f"{e}/{m}"][-1] >= 1 for e in FIELD_ENTITIES for m in ("text", "image"))
    assert all(dims[f"{e}/numeric"][-1] >= 1 for e in FIELD_ENTITIES)


def test_cross_modal_colours_sit_in_their_own_tokens(padded: dict[str, Any]) -> None:
    latent = padded["cross_modal"]
    fields, mask = latent.attrs["fields"]["commodity"], latent.arrays["commodity/mask"]
    photo = [i for i, e in enumerate(fields["image"]) if e.startswith("photo_colour=")]
    title = [i for i, e in enumerate(fields["text"]) if e.startswith("title_colour=")]
    assert len(photo) == len(title) == len(vocab.COLOURS)
    assert not any(e.startswith("photo_colour") for e in fields["text"])
    assert not any(e.startswith(("title_colour", "category")) for e in fields["image"])
    shown = latent.arrays["commodity/image"][mask][:, 0, photo]  # [items, 6] one-hot
    named = latent.arrays["commodity/text"][mask][:, 0, title]
    assert (shown.sum(1) == 1).all() and (named.sum(1) == 1).all()
    agree = (shown.argmax(1) == named.argmax(1)).mean()
    assert 0.3 < agree < 0.7  # the title names the photo's colour half the time


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_runs_on_the_latent_layout(padded: dict[str, Any], name: str) -> None:
    latent = padded["fit"]
    torch.manual_seed(0)
    options = {"width": 16, "heads": 2, "layers": 1, "dropout": 0.0, "numeric_hidden": 8}
    options |= {"mfb": {"mfb_out": 8}, "mfh": {"mfb_out": 8}, "tfn": {"tfn_dim": 2, "tfn_hidden": 8}}.get(name, {})
    model = build_model(name, latent.dims(), **options)
    out = model({key: torch.from_numpy(value[:8]) for key, value in latent.arrays.items()})
    assert out.pred.shape == (8,) and torch.isfinite(out.pred).all()
