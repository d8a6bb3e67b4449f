"""Registry-wide contract, parametrised over every tiny preset."""

from __future__ import annotations

import pytest
import torch

import medswin
from medswin.models import check_input_size, check_roi, create_model, get_entry, list_models, model_info, model_kind

TINY = list_models("*_tiny")


def _inputs(model, batch=1):
    """Arguments for one forward: a volume, or the two X-ray views of a biplanar model."""
    if model_kind(model) == "biplanar":
        return tuple(torch.randn(batch, model.in_channels, *model.img_size) for _ in range(2))
    size = max(64, 2 * model.size_divisor)
    return (torch.randn(batch, model.in_channels, size, size, size),)


def _output_shape(model, inputs, out_channels):
    if model_kind(model) == "biplanar":
        h, w = model.img_size
        return (inputs[0].shape[0], out_channels, h, h, w)
    return (inputs[0].shape[0], out_channels, *inputs[0].shape[2:])


def test_registry_lists_presets_and_package_exports():
    assert {"swin_unetr_tiny", "swin_unetr_small", "swin_unetr_base"} <= set(list_models())
    assert list_models("swin_unetr_t*") == ["swin_unetr_tiny"]
    assert medswin.create_model is create_model
    info = model_info("swin_unetr_base", in_channels=1, out_channels=14)
    assert 62.0e6 < info["params"] < 62.4e6  # the paper's 62.2M
    assert info["size_divisor"] == 32 and info["default_roi"] == (96, 96, 96) and "Swin UNETR" in info["paper"]


@pytest.mark.parametrize("name", list_models())
def test_every_model_accepts_its_own_default_roi_and_says_what_it_takes(name):
    entry = get_entry(name)
    with torch.device("meta"):
        model = create_model(name, in_channels=1, out_channels=2)
    assert entry.kind == model_kind(name) == model_kind(model) == ("biplanar" if "x2s" in name else "volume")
    roi = entry.default_roi
    if entry.kind == "biplanar":  # views (H, W) -> volume (H, H, W)
        assert roi[0] == roi[1] and (roi[0], roi[2]) == model.img_size
        check_input_size(model, (roi[0], roi[2]))
        with pytest.raises(ValueError, match=r"Swin-X2S was built for views of"):
            check_input_size(model, (roi[0] + 32, roi[2]))
    else:
        check_roi(model, roi)
        with pytest.raises(ValueError, match=rf"roi_size .* does not fit {type(model).__name__}"):
            check_roi(model, tuple(r + 16 for r in roi))
    assert model_info(name)["kind"] == entry.kind


def test_unknown_model_suggests_names():
    with pytest.raises(KeyError, match="swin_unetr_tiny"):
        create_model("swin_unetr_tny", in_channels=1, out_channels=2)


@pytest.mark.parametrize("name", TINY)
def test_bad_kwargs_raise_type_error_naming_valid_ones(name):
    from medswin.models import valid_kwargs

    bad = "img_size" if "img_size" not in valid_kwargs(name) else "spatial_dims"  # MONAI removed img_size in 1.5
    with pytest.raises(TypeError, match="feature_size"):
        create_model(name, in_channels=1, out_channels=2, **{bad: (96, 96, 96)})


@pytest.mark.parametrize("name", TINY)
def test_contract_shape_finite_deterministic_encoder(name):
    model = create_model(name, in_channels=2, out_channels=3).eval()
    inputs = _inputs(model)
    with torch.no_grad():
        out = model(*inputs)
        again = model(*inputs)
        feats = model.encoder(inputs[0])
    assert out.shape == _output_shape(model, inputs, 3)
    assert torch.isfinite(out).all()
    assert torch.equal(out, again)
    assert len(feats) == len(model.encoder.out_channels) == len(model.encoder.reductions)
    x = inputs[0]
    for f, c, r in zip(feats, model.encoder.out_channels, model.encoder.reductions):
        assert f.shape == (1, c, *(s // r for s in x.shape[2:]))


@pytest.mark.parametrize("name", [n for n in TINY if "x2s" not in n])
def test_a_sample_alone_equals_the_same_sample_in_a_batch_on_a_non_cubic_roi(name):
    # sliding-window inference feeds single windows: batch 1 and non-cubic rois (64x64x32, the demo
    # patch) take other memory layouts than training batches (a .view() on a strided window once
    # failed there only)
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, out_channels=2).eval()
    x = torch.randn(2, 1, 64, 64, 32)
    with torch.no_grad():
        both = model(x)
        alone = model(x[1:])
    torch.testing.assert_close(alone, both[1:], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_state_dict_round_trip(name, tmp_path):
    model = create_model(name, in_channels=1, out_channels=2).eval()
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    other = create_model(name, in_channels=1, out_channels=2).eval()
    other.load_state_dict(torch.load(path, weights_only=True))
    inputs = _inputs(model)
    with torch.no_grad():
        assert torch.equal(model(*inputs), other(*inputs))


@pytest.mark.slow
@pytest.mark.parametrize("name", TINY)
def test_every_parameter_receives_a_gradient(name):
    model = create_model(name, in_channels=1, out_channels=2).train()
    out = model(*_inputs(model))  # deep supervision / biplanar models return a dict in training mode
    loss = sum(v.square().mean() for v in out.values()) if isinstance(out, dict) else out.square().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_swin_encoder_runs_in_2d_for_biplanar_models():
    from medswin.layers import SwinEncoder3D

    enc = SwinEncoder3D(1, 12, depths=(2, 2, 2, 2), num_heads=(3, 6, 12, 24), window_size=(7, 7), patch_size=(2, 2))
    feats = enc(torch.randn(2, 1, 128, 160))
    assert [tuple(f.shape) for f in feats] == [(2, 12 * 2**i, 64 // 2**i, 80 // 2**i) for i in range(5)]
