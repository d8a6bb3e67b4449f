"""DS-TransUNet (3D): Transformer Interactive Fusion, deep supervision, sizes, presets."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

import medswin.models.ds_transunet as dst  # registers the presets
from medswin.data.spec import get_dataset_spec
from medswin.layers.swin import SwinEncoder3D
from medswin.models import create_model, list_models, model_info
from medswin.models.ds_transunet import DSTransUNet, group_norm_groups
from medswin.training.losses import base_loss, make_loss

PRESETS = ["ds_transunet_base", "ds_transunet_small", "ds_transunet_tiny"]


def _tiny(in_channels=1, out_channels=3, **kwargs):
    return create_model("ds_transunet_tiny", in_channels=in_channels, out_channels=out_channels, **kwargs)


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Record every ``scaled_dot_product_attention`` call (q/k shapes and mask) and run the real one."""
    calls = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        mask = kwargs.get("attn_mask", args[0] if args else None)
        calls.append({"q": tuple(q.shape), "k": tuple(k.shape), "mask": mask})
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


# ---------------------------------------------------------------------------------------------- TIF


@pytest.mark.parametrize("size", [(64, 64, 64), (64, 64, 96)])
def test_tif_token_counts_and_shapes(size):
    model = _tiny().eval()
    enc = model.encoder
    c_l, c_s = enc.fine.out_channels, enc.coarse.out_channels
    x = torch.randn(1, 1, *size)
    seen: dict[int, list[int]] = {}
    hooks = [
        f.t_l.register_forward_hook(lambda m, i, o, k=k: seen.setdefault(k, []).append(i[0].shape[1]))
        for k, f in enumerate(enc.fusions)
    ]
    with torch.no_grad():
        fine, coarse = enc.forward_streams(x)
        feats = [fusion(e, r) for fusion, e, r in zip(enc.fusions, fine, coarse)]  # what enc(x) returns
    for h in hooks:
        h.remove()
    assert len(fine) == len(coarse) == len(feats) == 4
    for i, (e, r, f, fusion) in enumerate(zip(fine, coarse, feats, enc.fusions)):
        grid_e = tuple(s // (4 * 2**i) for s in size)
        grid_r = tuple(math.ceil(s / (8 * 2**i)) for s in size)  # patch merging rounds odd grids up
        assert e.shape == (1, *grid_e, c_l[i]) and r.shape == (1, *grid_r, c_s[i])
        n_e, n_r = math.prod(grid_e), math.prod(grid_r)
        exact = all(ge == 2 * gr for ge, gr in zip(grid_e, grid_r))
        assert exact == (size == (64, 64, 64) or i < 3)
        if exact:
            assert n_e == 8 * n_r, (i, grid_e, grid_r)
        else:  # 96 along one axis: coarse stage 4 is (1, 1, 2) against the fine (2, 2, 3)
            assert grid_r == (1, 1, 2) and grid_e == (2, 2, 3)
        assert seen[i] == [n_e + 1]  # T_l sees the prepended global token ...
        with torch.no_grad():
            e_new, r_new = fusion.fuse_tokens(e, r)
        assert e_new.shape == e.shape and r_new.shape == r.shape  # ... and it is dropped again
        assert f.shape == (1, c_l[i], *grid_e) == (1, enc.out_channels[i], *(s // enc.reductions[i] for s in size))
    assert enc.reductions == [4, 8, 16, 32]
    assert fine[0].shape[1:4] == (16, 16, size[2] // 4)  # stage-1 fusion attends over all 16^3 (16^2 x 24) tokens


def _layer_norm64(x, norm):
    return F.layer_norm(x, x.shape[-1:], norm.weight.double(), norm.bias.double(), norm.eps)


def _brute_force_layer(layer, x):
    """float64 pre-norm transformer layer with explicit softmax attention over the whole sequence."""
    b, n, _ = x.shape
    h, d = layer.num_heads, layer.head_dim
    qkv = _layer_norm64(x, layer.norm1) @ layer.qkv.weight.double().T
    q, k, v = qkv.view(b, n, 3, h, d).permute(2, 0, 3, 1, 4)
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1)  # (b, h, n, n)
    att = (probs @ v).transpose(1, 2).reshape(b, n, h * d)
    x = x + att @ layer.proj.weight.double().T + layer.proj.bias.double()
    hid = F.gelu(_layer_norm64(x, layer.norm2) @ layer.mlp.linear1.weight.double().T + layer.mlp.linear1.bias.double())
    return x + hid @ layer.mlp.linear2.weight.double().T + layer.mlp.linear2.bias.double()


def test_tif_attention_is_global_sdpa_and_matches_float64_reference(sdpa_calls):
    fusion = _tiny().encoder.fusions[0].eval()  # C_l = C_s = 24
    with torch.no_grad():
        for p in fusion.parameters():  # non-trivial norms and biases
            p.add_(0.1 * torch.randn_like(p))
    e = torch.randn(2, 8, 8, 8, 24)  # N_e = 512
    r = torch.randn(2, 4, 4, 4, 24)  # N_r = 64
    with torch.no_grad():
        e_new, r_new = fusion.fuse_tokens(e, r)

    # global SDPA: one call per stream over the whole sequence (+1 global token), no mask
    assert len(sdpa_calls) == 2
    by_len = {c["q"][2]: c for c in sdpa_calls}
    assert by_len[64 + 1]["q"] == by_len[64 + 1]["k"] == (2, 3, 65, 32)  # T_s: 3 heads of 32
    assert by_len[512 + 1]["q"] == by_len[512 + 1]["k"] == (2, 1, 513, 64)  # T_l: 1 head of 64
    assert all(c["mask"] is None for c in sdpa_calls)

    e64, r64 = e.double().reshape(2, -1, 24), r.double().reshape(2, -1, 24)
    lin = lambda t, m: t @ m.weight.double().T + m.bias.double()  # noqa: E731
    with torch.no_grad():
        g_e = lin(_layer_norm64(e64, fusion.norm_fine).mean(1, keepdim=True), fusion.fine_to_coarse)
        g_r = lin(_layer_norm64(r64, fusion.norm_coarse).mean(1, keepdim=True), fusion.coarse_to_fine)
        ref_r = _brute_force_layer(fusion.t_s, torch.cat([g_e, r64], 1))[:, 1:]
        ref_e = _brute_force_layer(fusion.t_l, torch.cat([g_r, e64], 1))[:, 1:]
    torch.testing.assert_close(r_new.double().reshape(2, -1, 24), ref_r, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(e_new.double().reshape(2, -1, 24), ref_e, atol=2e-5, rtol=1e-5)
    # the global token matters: without it the result differs
    with torch.no_grad():
        no_global = _brute_force_layer(fusion.t_l, e64)
    assert (no_global - ref_e).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------- model


def test_deep_supervision_outputs_loss_weights_and_gradients():
    spec = get_dataset_spec("btcv")
    assert spec.out_channels == 14
    model = _tiny(in_channels=spec.num_channels, out_channels=spec.out_channels).train()
    assert model.deep_supervision_weights == {"out": 0.6, "aux1": 0.2, "aux2": 0.2}
    size = (32, 32, 64)  # small to keep the test fast (the coarse stage 4 is resized here)
    x = torch.randn(1, 1, *size)
    target = torch.randint(0, 14, (1, 1, *size))
    outs = model(x)
    assert isinstance(outs, dict) and set(outs) == {"out", "aux1", "aux2"}
    for v in outs.values():
        assert v.shape == (1, 14, *size) and torch.isfinite(v).all()
    assert (outs["aux1"] < 0).any() and (outs["aux2"] < 0).any()  # raw logits, no ReLU

    loss = make_loss(spec, model)(outs, target)
    plain = base_loss(spec)
    with torch.no_grad():
        parts = {k: plain(v, target) for k, v in outs.items()}
        expected = 0.6 * parts["out"] + 0.2 * parts["aux1"] + 0.2 * parts["aux2"]
    torch.testing.assert_close(loss.detach(), expected, atol=1e-6, rtol=1e-6)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []

    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 14, *size)


def test_non_multiple_of_64_uses_coarse_interpolation_and_bad_sizes_raise():
    model = _tiny(in_channels=2, out_channels=3).eval()
    x = torch.randn(1, 2, 64, 64, 96)
    with torch.no_grad():
        fine, coarse = model.encoder.forward_streams(x)
        e4, r4 = model.encoder.fusions[3].fuse_tokens(fine[3], coarse[3])
        out = model(x)
    assert out.shape == (1, 3, 64, 64, 96) and torch.isfinite(out).all()
    assert r4.shape[1:4] == (1, 1, 2) and e4.shape[1:4] == (2, 2, 3)
    # the coarse map is resized (nearest) to the fine grid: source index floor(dst * in / out)
    r_map = dst.tokens_to_map(r4)
    resized = dst._resize_nearest(r_map, (2, 2, 3))
    assert resized.shape[2:] == (2, 2, 3)
    torch.testing.assert_close(resized, r_map[:, :, [0, 0]][:, :, :, [0, 0]][:, :, :, :, [0, 0, 1]])
    # exactly-half grids take the x2 upsampling
    small = torch.randn(1, 5, 2, 3, 4)
    torch.testing.assert_close(dst._resize_nearest(small, (4, 6, 8)), F.interpolate(small, scale_factor=2.0))

    for bad in [(48, 48, 48), (64, 64, 80)]:
        with pytest.raises(ValueError, match=r"not a multiple of 32.*multiples of 64.*e\.g\. to \(64, 64, (64|96)\)"):
            model.size_rule.check(bad)
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.randn(1, 2, 48, 48, 48))
    model.size_rule.check((32, 64, 96))  # any multiple of 32 is accepted


def test_group_norm_groups_adapt_to_channels():
    assert [group_norm_groups(c) for c in (24, 40, 96, 7, 33, 64, 1)] == [24, 20, 32, 7, 11, 32, 1]
    with torch.device("meta"):
        model = DSTransUNet(
            1,
            2,
            feature_size=40,
            coarse_feature_size=24,
            depths=(1, 1, 1, 1),
            num_heads=(1, 2, 4, 8),
            coarse_depths=(1, 1, 1, 1),
            coarse_num_heads=(1, 2, 4, 8),
            window_size=4,
        )
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == group_norm_groups(m.num_channels) for m in norms)
    assert model.encoder.fusions[0].conv.conv1.norm.num_groups == 20  # 40 channels
    assert model.encoder.fusions[1].conv.conv1.norm.num_groups == 20  # 80 channels
    assert model.encoder.fusions[2].conv.conv1.norm.num_groups == 32  # 160 channels
    tiny = _tiny()
    assert tiny.encoder.fusions[0].conv.conv1.norm.num_groups == 24  # 24 channels


def test_eval_determinism_and_encoder_contract():
    model = _tiny(in_channels=2, out_channels=3).eval()
    x = torch.randn(1, 2, 32, 64, 64)
    with torch.no_grad():
        a, b = model(x), model(x)
        feats = model.encoder(x)
    assert torch.equal(a, b) and a.shape == (1, 3, 32, 64, 64)
    assert model.encoder.out_channels == [24, 48, 96, 192] and model.encoder.reductions == [4, 8, 16, 32]
    for f, c, r in zip(feats, model.encoder.out_channels, model.encoder.reductions):
        assert f.shape == (1, c, *(s // r for s in x.shape[2:]))
    assert model.size_divisor == 32 and model.in_channels == 2 and model.out_channels == 3
    assert model.config["feature_size"] == 24 and model.config["stem_channels"] == (16, 32)


_PARAMS_RE = re.compile(r"\((\d+\.\d\d)M parameters for 1 -> 14 channels")


@pytest.mark.parametrize("name", PRESETS)
def test_preset_parameter_counts_match_docstrings(name):
    builder = getattr(dst, name)
    documented = _PARAMS_RE.search(" ".join(builder.__doc__.split()))
    assert documented, builder.__doc__
    params = model_info(name, in_channels=1, out_channels=14)["params"]
    assert f"{params / 1e6:.2f}" == documented.group(1)
    assert f"{documented.group(1)}M" in dst.__doc__  # the module docstring lists the same count
    info = model_info(name)
    assert info["size_divisor"] == 32 and info["default_roi"] == (96, 96, 96) and "DS-TransUNet" in info["paper"]


def test_registry_presets_and_kwargs():
    assert list_models("ds_transunet_*") == PRESETS
    with pytest.raises(TypeError, match="feature_size"):
        create_model("ds_transunet_tiny", in_channels=1, out_channels=2, img_size=(96, 96, 96))
    model = create_model("ds_transunet_tiny", in_channels=1, out_channels=2, stem_channels=(8, 16))
    assert model.stem1.out_channels == 8 and model.stem2.conv2.conv.out_channels == 16


# ---------------------------------------------------------------------------------------------- Swin core


def test_swin_encoder_pyramid_layout_is_opt_in():
    kwargs = dict(depths=(1, 1, 1), num_heads=(1, 2, 4), window_size=(4, 4, 4), patch_size=(4, 4, 4))
    default = SwinEncoder3D(1, 8, **kwargs)
    pyramid = SwinEncoder3D(1, 8, out_layout="swin", **kwargs)
    assert not any("out_norms" in k for k in default.state_dict())
    assert all(s.downsample is not None for s in default.stages)
    assert pyramid.stages[-1].downsample is None and len(pyramid.out_norms) == 3
    # same parameter names otherwise: the pyramid encoder loads the default one's weights
    missing, unexpected = pyramid.load_state_dict(default.state_dict(), strict=False)
    assert unexpected == [
        "stages.2.downsample.reduction.weight",
        "stages.2.downsample.norm.weight",
        "stages.2.downsample.norm.bias",
    ]
    assert all(k.startswith("out_norms.") for k in missing)
    x = torch.randn(1, 1, 32, 32, 64)
    with torch.no_grad():
        feats = pyramid(x)
        ref = default(x)
    assert pyramid.out_channels == [8, 16, 32] and pyramid.reductions == [4, 8, 16]
    assert [tuple(f.shape) for f in feats] == [(1, 8 * 2**i, 8 // 2**i, 8 // 2**i, 16 // 2**i) for i in range(3)]
    assert len(ref) == 4 and ref[1].shape == (1, 16, 4, 4, 8)  # MONAI layout unchanged
    # pre-merge output of stage 0 == the stage's blocks on the embedding, through out_norms[0]
    with torch.no_grad():
        tokens = pyramid.embed(x)
        manual = pyramid.out_norms[0](pyramid.stages[0].forward_blocks(tokens))
    torch.testing.assert_close(feats[0], dst.tokens_to_map(manual))
    with pytest.raises(ValueError, match="out_layout"):
        SwinEncoder3D(1, 8, out_layout="timm", **kwargs)
