"""Contract tests for memf.models: every registered model and every entity fusion, on tiny padded batches."""

from __future__ import annotations

import math

import pytest
import torch

from memf.core.registry import Registry
from memf.data.contract import ENTITIES
from memf.models import (
    DEMO_OPTIONS,
    ENTITY_FUSIONS,
    MODEL_OPTIONS,
    MODELS,
    PAPER_OPTIONS,
    ModelOutput,
    batch_dims,
    build_model,
)
from memf.models.baselines import HierarchicalPairwise, MFHPair, SelfAttentionFusion, TensorFusion
from memf.models.blocks import masked_mean
from memf.models.common import ModelConfig
from memf.models.memf import IntraCommodityAttention
from memf.models.options import ENTITY_FUSION_NAMES

torch.set_num_threads(1)

B, M, C = 3, 4, 3
TINY = {"width": 16, "heads": 2, "layers": 1, "dropout": 0.0, "numeric_hidden": 8}
# Model-specific options that keep the baselines tiny too.
TINY_EXTRA = {
    "mfb": {"mfb_out": 8},
    "mfh": {"mfb_out": 8},
    "tfn": {"tfn_dim": 2, "tfn_hidden": 8},
}


def make_batch(seed: int = 0, n: int = B) -> dict[str, torch.Tensor]:
    """A padded batch: streams with 4, 2, 1 items and 3, 1, 2 clips (cycled for larger n), field dims 8-12."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    items = torch.tensor([4, 2, 1] * n)[:n]
    clips = torch.tensor([3, 1, 2] * n)[:n]
    item_mask = torch.arange(M)[None, :] < items[:, None]
    clip_mask = torch.arange(C)[None, :] < clips[:, None]
    batch = {
        "anchor/text": r(n, 2, 12), "anchor/image": r(n, 1, 10), "anchor/numeric": r(n, 3),
        "room/text": r(n, 2, 12), "room/image": r(n, 1, 10), "room/numeric": r(n, 1),
        "commodity/text": r(n, M, 3, 12), "commodity/image": r(n, M, 1, 10), "commodity/numeric": r(n, M, 2),
        "commodity/mask": item_mask,
        "video/x": r(n, C, 9), "video/mask": clip_mask.clone(),
        "audio/x": r(n, C, 8), "audio/mask": clip_mask.clone(),
        "target": r(n),
    }
    # Padded positions hold zeros, as in the padded tensor file.
    for key in ("commodity/text", "commodity/image", "commodity/numeric"):
        batch[key][~item_mask] = 0.0
    for kind in ("video", "audio"):
        batch[f"{kind}/x"][~batch[f"{kind}/mask"]] = 0.0
    return batch


def tiny(name: str, dims: dict, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, dims, **{**TINY, **TINY_EXTRA.get(name, {}), **options})


# (model name, extra options): every registered model, memf with every entity fusion, and every pooling choice.
POOLS = [{"field_pool": "attention", "commodity_pool": "attention", "clip_pool": "attention"},
         {"commodity_pool": "mean_count", "clip_pool": "mean_count", "input_norm": "layernorm"}]
CASES = (
    [(name, {}) for name in MODELS]
    + [("memf", {"entity_fusion": f}) for f in ENTITY_FUSIONS]
    + [("memf", pools) for pools in POOLS]
    + [("vtfsa", {"token_pool": p, "clip_pool": p}) for p in ("mean_count", "attention")]
)
IDS = [name + "".join(f"-{v}" for v in opts.values()) for name, opts in CASES]


@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_forward_backward(name: str, options: dict) -> None:
    batch = make_batch()
    model = tiny(name, batch_dims(batch), **options)
    model.train()
    out = model(batch)
    assert isinstance(out, ModelOutput)
    assert out.pred.shape == (B,)
    assert torch.isfinite(out.pred).all()
    ((out.pred - batch["target"]) ** 2).mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"


@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_padding_invariance(name: str, options: dict) -> None:
    batch = make_batch()
    model = tiny(name, batch_dims(batch), **options).eval()
    noisy = {k: v.clone() for k, v in batch.items()}
    item_pad = ~batch["commodity/mask"]
    for key in ("commodity/text", "commodity/image", "commodity/numeric"):
        noisy[key][item_pad] = torch.randn_like(noisy[key][item_pad]) * 5
    for kind in ("video", "audio"):
        pad = ~batch[f"{kind}/mask"]
        noisy[f"{kind}/x"][pad] = torch.randn_like(noisy[f"{kind}/x"][pad]) * 5
    assert item_pad.any() and (~batch["video/mask"]).any()
    with torch.no_grad():
        a, b = model(batch), model(noisy)
    torch.testing.assert_close(a.pred, b.pred, rtol=1e-5, atol=1e-5)
    # A real item's values do change the prediction (the test can fail).
    noisy["commodity/text"][0, 0] += 3.0 * torch.randn_like(noisy["commodity/text"][0, 0])  # not a constant shift,
    # which a LayerNorm of the inputs (input_norm) would remove
    with torch.no_grad():
        assert not torch.allclose(model(noisy).pred, b.pred)


def pad_sets(batch: dict[str, torch.Tensor], extra: int) -> dict[str, torch.Tensor]:
    """The same streams with ``extra`` more padded item and clip slots (zeros, masks False)."""
    out = dict(batch)
    for key, value in batch.items():
        if key.partition("/")[0] in ("commodity", "video", "audio"):
            pad = torch.zeros((value.shape[0], extra, *value.shape[2:]), dtype=value.dtype)
            out[key] = torch.cat([value, pad], dim=1)
    return out


@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_predictions_do_not_depend_on_the_padded_length(name: str, options: dict) -> None:
    """The same streams padded to their own longest lists (M, C) and to M + 3, C + 3 predict the same: a batch of the
    padded store is padded to its own longest lists, so nothing may depend on the axes' length."""
    batch = make_batch()
    longer = pad_sets(batch, 3)
    model = tiny(name, batch_dims(longer), **options).eval()  # built for the longer axes, as for a store's longest
    with torch.no_grad():
        a, b = model(batch), model(longer)
    torch.testing.assert_close(a.pred, b.pred, rtol=1e-6, atol=1e-6)
    if a.attention is not None:
        torch.testing.assert_close(a.attention, b.attention, rtol=1e-6, atol=1e-6)
    # One stream alone, cut to its own lists (no padded slot at all), predicts as it does in the batch.
    own = {e: int(batch[f"{e}/mask"][2].sum()) for e in ("commodity", "video", "audio")}
    with torch.no_grad():
        alone = model({k: v[2:3, : own.get(k.partition("/")[0])] for k, v in batch.items() if k != "target"})
    assert own == {"commodity": 1, "video": 2, "audio": 2}
    torch.testing.assert_close(alone.pred, a.pred[2:3], rtol=1e-6, atol=1e-6)


def test_a_batch_longer_than_the_model_axes_or_with_disagreeing_sets_is_refused() -> None:
    batch = make_batch()
    model = tiny("memf", batch_dims(batch))
    with pytest.raises(ValueError, match=r"batch\['commodity/text'\]: shape \(3, 7, 3, 12\), expected \(B, <=4, 3, 12\)"):
        model(pad_sets(batch, 3))
    with pytest.raises(ValueError, match=r"batch\['commodity/image'\]: shape"):
        model({**batch, "commodity/image": batch["commodity/image"][:, :2]})


@pytest.mark.parametrize(("name", "options"), CASES, ids=IDS)
def test_attention(name: str, options: dict) -> None:
    batch = make_batch()
    model = tiny(name, batch_dims(batch), **options).eval()
    with torch.no_grad():
        out = model(batch)
    if model.attention_labels is None:
        assert out.attention is None
        return
    e = len(model.attention_labels)
    assert model.attention_labels == ENTITIES
    assert out.attention.shape == (B, e, e)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(B, e))


def test_attention_only_from_transformer_fusion() -> None:
    dims = batch_dims(make_batch())
    assert tiny("memf", dims).attention_labels == ENTITIES
    for fusion in ("mean", "fc", "lstm", "cnn"):
        assert tiny("memf", dims, entity_fusion=fusion).attention_labels is None
    for name in ("memf_modality_first", "mfb", "mfh", "tfn", "vtfsa", "cmmt"):
        assert tiny(name, dims).attention_labels is None


def test_quad_intra_equals_loop_over_commodities() -> None:
    torch.manual_seed(1)
    cfg = ModelConfig(width=16, heads=2, layers=1, dropout=0.0)
    intra = IntraCommodityAttention(cfg).eval()
    x = torch.randn(B, M, 5, 16)
    with torch.no_grad():
        vectorised = intra(x)
        looped = torch.stack([intra(x[:, m]) for m in range(M)], dim=1)
    torch.testing.assert_close(vectorised, looped)


@pytest.mark.parametrize("dropped", [("audio",), ("commodity",), ("anchor", "room", "video")])
def test_drop_entities_removes_parameters(dropped: tuple[str, ...]) -> None:
    full_batch = make_batch()
    batch = {k: v for k, v in full_batch.items() if k.split("/")[0] not in dropped}
    full = tiny("memf", batch_dims(full_batch))
    model = tiny("memf", batch_dims(batch), drop_entities=list(dropped))
    kept = tuple(e for e in ENTITIES if e not in dropped)
    assert model.entities == kept
    names = [n for n, _ in model.named_parameters()]
    for entity in dropped:
        assert not any(n.startswith(f"encoders.{entity}.") for n in names)
        assert any(n.startswith(f"encoders.{entity}.") for n, _ in full.named_parameters())
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in full.parameters())
    out = model.eval()(batch)
    assert out.pred.shape == (B,)
    assert out.attention.shape == (B, len(kept), len(kept))


def test_masked_mean_ignores_padding_and_empty_rows() -> None:
    x = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]]])
    valid = torch.tensor([[True, True, False], [False, False, False]])
    torch.testing.assert_close(masked_mean(x, valid), torch.tensor([[2.0], [0.0]]))


def test_no_valid_clip_gives_no_nan() -> None:
    batch = make_batch()
    batch["audio/mask"][1] = False
    batch["audio/x"][1] = 0.0
    for name in ("memf", "memf_modality_first"):
        model = tiny(name, batch_dims(batch)).eval()
        assert torch.isfinite(model(batch).pred).all()


def test_mfb_output_has_unit_norm() -> None:
    torch.manual_seed(2)
    pair = MFHPair(16, 12, factor=5, out=7, blocks=1, dropout=0.0)
    z = pair(torch.randn(B, 16), torch.randn(B, 12))
    assert z.shape == (B, 7)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(B))
    cfg = ModelConfig(width=16, mfb_out=8)
    chain = HierarchicalPairwise(("text", "image", "numeric", "video", "audio"), cfg, blocks=1)
    torch.testing.assert_close(chain(torch.randn(B, 5, 16)).norm(dim=-1), torch.ones(B))


def test_mfb_sum_pools_contiguous_groups() -> None:
    pair = MFHPair(2, 2, factor=3, out=2, blocks=1, dropout=0.0)
    with torch.no_grad():
        for proj in (pair.proj_x[0], pair.proj_y[0]):
            proj.weight.zero_()
            proj.bias.copy_(torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
    z = pair(torch.zeros(1, 2), torch.zeros(1, 2))
    # Products [1,1,1,0,0,0] pooled in groups of 3 -> [3, 0] -> signed sqrt -> normalised [1, 0].
    torch.testing.assert_close(z, torch.tensor([[1.0, 0.0]]), atol=1e-3, rtol=0)


def test_mfh_blocks_each_normalised() -> None:
    torch.manual_seed(3)
    pair = MFHPair(16, 16, factor=5, out=6, blocks=2, dropout=0.0)
    z = pair(torch.randn(B, 16), torch.randn(B, 16))
    assert z.shape == (B, 12)
    torch.testing.assert_close(z[:, :6].norm(dim=-1), torch.ones(B))
    torch.testing.assert_close(z[:, 6:].norm(dim=-1), torch.ones(B))


def test_tfn_fused_size() -> None:
    cfg = ModelConfig(width=16, tfn_dim=3, tfn_hidden=8)
    tfn = TensorFusion(("text", "image", "numeric", "video", "audio"), cfg)
    assert tfn.fused_size == math.prod([4] * 5)
    x = torch.randn(B, 5, 16)
    fused = tfn.fuse(x)
    assert fused.shape == (B, 4**5)
    # Every single-modality vector appears unchanged inside the product (the constant-1 corner).
    first = torch.cat([tfn.reduce[0](x[:, 0]), torch.ones(B, 1)], dim=-1)
    torch.testing.assert_close(fused.view(B, 4, 4, 4, 4, 4)[:, :, 3, 3, 3, 3], first)


def test_vtfsa_identity_at_init() -> None:
    sa = SelfAttentionFusion(("a", "b", "c"), ModelConfig(width=16))
    x = torch.randn(B, 3, 16)
    torch.testing.assert_close(sa.attend(x), x)
    with torch.no_grad():
        sa.gamma.fill_(1.0)
    assert not torch.allclose(sa.attend(x), x)


def test_memf_overfits_tiny_batch() -> None:
    batch = make_batch(seed=5, n=16)
    torch.manual_seed(0)
    model = build_model("memf", batch_dims(batch), **TINY).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    target = batch["target"]
    for _ in range(200):
        opt.zero_grad()
        loss = ((model(batch).pred - target) ** 2).mean()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        mse = ((model(batch).pred - target) ** 2).mean().item()
    assert mse < 1e-3 * target.var().item(), mse


def test_unknown_model_and_options_raise() -> None:
    dims = batch_dims(make_batch())
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope", dims)
    with pytest.raises(ValueError, match="unknown option 'widht'"):
        build_model("memf", dims, widht=16)
    with pytest.raises(ValueError, match="option 'mfb_factor' does not apply"):
        build_model("memf", dims, mfb_factor=5)
    with pytest.raises(ValueError, match="option 'entity_fusion' does not apply"):
        build_model("memf_lstm", dims, entity_fusion="cnn")
    with pytest.raises(ValueError, match="option 'entity_fusion' is 'gru', expected one of transformer"):
        build_model("memf", dims, entity_fusion="gru")
    with pytest.raises(ValueError, match="drop_entities"):
        build_model("memf", dims, drop_entities=["anchors"])
    with pytest.raises(ValueError, match="drop_entities"):
        build_model("memf", dims, drop_entities=list(ENTITIES))
    with pytest.raises(ValueError, match="not divisible by heads"):
        build_model("memf", dims, width=10, heads=3)
    with pytest.raises(ValueError, match="'dropout' is 1.5"):
        build_model("memf", dims, dropout=1.5)
    with pytest.raises(ValueError, match="'layers' is True"):
        build_model("memf", dims, layers=True)
    with pytest.raises(ValueError, match="'width' is 0"):
        build_model("memf", dims, width=0)


def test_bad_dims_and_batches_raise() -> None:
    batch = make_batch()
    dims = batch_dims(batch)
    with pytest.raises(ValueError, match="unknown input key 'anchor/txt'"):
        build_model("memf", {**dims, "anchor/txt": (2, 12)})
    with pytest.raises(ValueError, match=r"dims\['commodity/text'\]"):
        build_model("memf", {**dims, "commodity/text": (M + 1, 3, 12)})
    no_audio = {k: v for k, v in dims.items() if not k.startswith("audio/")}
    with pytest.raises(ValueError, match=r"dims\['audio/x'\]"):
        build_model("memf", no_audio)
    model = tiny("memf", dims)
    with pytest.raises(ValueError, match=r"batch\['anchor/text'\]: shape"):
        model({**batch, "anchor/text": torch.randn(B, 3, 12)})
    with pytest.raises(ValueError, match="expected torch.bool"):
        model({**batch, "video/mask": batch["video/mask"].float()})
    with pytest.raises(ValueError, match="missing input 'room/numeric'"):
        model({k: v for k, v in batch.items() if k != "room/numeric"})


def test_registry_refuses_duplicates() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        reg.register("a")(2)
    with pytest.raises(ValueError, match="already registered"):
        MODELS.register("memf")(lambda dims: None)
    assert list(MODELS) == [
        "memf", "memf_mean", "memf_fc", "memf_lstm", "memf_cnn", "memf_modality_first",
        "mfb", "mfh", "tfn", "vtfsa", "cmmt",
    ]
    assert list(ENTITY_FUSIONS) == ["transformer", "mean", "fc", "lstm", "cnn"] == list(ENTITY_FUSION_NAMES)
    # The torch-free catalog the workflow checks configs against lists exactly the registered models.
    assert list(MODEL_OPTIONS) == list(MODELS)
    for name in MODELS:
        assert MODELS[name].accepted_options == ModelConfig.__dataclass_fields__.keys() & MODELS[name].accepted_options


def test_presets_build_and_spec_round_trips() -> None:
    batch = make_batch()
    dims = batch_dims(batch)
    assert PAPER_OPTIONS == {"width": 512, "heads": 8, "layers": 6, "dropout": 0.1}
    paper = build_model("memf", dims, **PAPER_OPTIONS)
    assert paper.encoders["anchor"].encoder.blocks[0].attn.embed_dim == 512
    assert len(paper.encoders["anchor"].encoder.blocks) == 6
    for name in MODELS:
        model = build_model(name, dims, **DEMO_OPTIONS, **TINY_EXTRA.get(name, {})).eval()
        rebuilt = build_model(model.spec["name"], model.spec["dims"], **model.spec["options"]).eval()
        rebuilt.load_state_dict(model.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(model(batch).pred, rebuilt(batch).pred)
