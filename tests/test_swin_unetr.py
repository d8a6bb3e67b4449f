"""Swin UNETR: MONAI weight compatibility (outputs and gradients), checkpoint formats, size checks."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import SwinUNETR as MonaiSwinUNETR
from monai.networks.nets import UNet

from medswin.models import SwinUNETR, WeightLoadError, create_model, load_monai_checkpoint
from medswin.models.swin_unetr import monai_to_medswin


def _random_monai(feature_size=12, use_v2=False, in_channels=2, out_channels=3):
    model = MonaiSwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size, use_v2=use_v2)
    with torch.no_grad():  # MONAI initialises some tensors to zero; randomise everything
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("use_v2", [False, True])
def test_monai_outputs_equal_to_1e5(use_v2):
    ref = _random_monai(use_v2=use_v2).eval()
    ours = SwinUNETR.from_monai(ref.state_dict()).eval()
    assert ours.config["use_v2"] is use_v2
    x = torch.randn(1, 2, 64, 64, 96)  # non-cubic; stage 4 (2x2x3) is smaller than the window
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_monai_gradients_match():
    ref = _random_monai()
    ours = SwinUNETR.from_monai(ref.state_dict())
    x = torch.randn(1, 2, 64, 64, 64)
    ref(x).square().mean().backward()
    ours(x).square().mean().backward()
    ref_grads = {k: p.grad for k, p in ref.named_parameters()}
    ours_as_monai = monai_to_medswin(ref_grads)[0]
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ours_as_monai[name], atol=1e-6, rtol=1e-3, msg=name)


@pytest.mark.parametrize("use_v2", [False, True])
def test_saves_back_to_monai_format(use_v2):
    ours = create_model("swin_unetr_tiny", in_channels=1, out_channels=4, use_v2=use_v2)
    ref = MonaiSwinUNETR(in_channels=1, out_channels=4, feature_size=12, use_v2=use_v2)
    ref.load_state_dict(ours.to_monai_state_dict(), strict=True)
    x = torch.randn(1, 1, 64, 64, 64)
    ours.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ref(x), ours(x), atol=1e-5, rtol=0)


def _ssl_checkpoint(ref: MonaiSwinUNETR) -> dict:
    """MONAI's released SSL format: encoder at top level under ``module.``, ``mlp.fc1/fc2``, plus heads."""
    state = {}
    for key, value in ref.swinViT.state_dict().items():
        state["module." + key.replace("mlp.linear1", "mlp.fc1").replace("mlp.linear2", "mlp.fc2")] = value
    state["module.rotation_head.weight"] = torch.randn(4, 192)
    state["module.contrastive_head.weight"] = torch.randn(512, 192)
    state["module.norm.weight"] = torch.randn(192)
    return {"epoch": 100, "state_dict": state}


def test_ssl_encoder_checkpoint_loads_every_encoder_key(tmp_path):
    ref = _random_monai(in_channels=1, out_channels=14)
    path = tmp_path / "model_swinvit.pt"
    torch.save(_ssl_checkpoint(ref), path)
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=14)
    report = load_monai_checkpoint(model, str(path))
    encoder_keys = [k for k in model.state_dict() if k.startswith("encoder.")]
    assert sorted(report.loaded) == sorted(encoder_keys)
    assert report.missing == []  # decoder keys are not expected from an encoder checkpoint
    assert len(report.derived) == 8  # MONAI's relative_position_index buffers, recomputed here
    assert "module.rotation_head.weight" in report.unexpected
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(model.encoder(x), ref.swinViT(x, normalize=True)):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_checkpoint_of_another_architecture_is_an_error(tmp_path):
    unet = UNet(3, 1, 2, channels=(8, 16, 32), strides=(2, 2))
    path = tmp_path / "unet.pt"
    torch.save(unet.state_dict(), path)
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=2)
    with pytest.raises(WeightLoadError, match="none of its .* keys match"):
        load_monai_checkpoint(model, str(path))


def test_checkpoint_of_another_size_is_an_error():
    small = MonaiSwinUNETR(in_channels=1, out_channels=2, feature_size=24)
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=2)
    with pytest.raises(WeightLoadError, match="wrong shape"):
        model.load_monai_state_dict(small.state_dict())


def test_corrupt_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=2)
    with pytest.raises(WeightLoadError, match="broken.pt"):
        load_monai_checkpoint(model, str(path))


def test_from_monai_infers_the_configuration():
    ref = MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=24, depths=(2, 4, 2, 2), use_v2=True)
    model = SwinUNETR.from_monai(ref.state_dict())
    assert model.config["feature_size"] == 24 and model.config["depths"] == (2, 4, 2, 2)
    assert model.in_channels == 4 and model.out_channels == 3 and model.config["use_v2"]


@pytest.mark.parametrize(
    "shape,message",
    [
        ((1, 1, 64, 64, 65), "not a multiple of 32"),
        ((1, 1, 32, 32, 32), "at least 64"),
        ((1, 2, 64, 64, 64), "expected input"),
    ],
)
def test_bad_input_sizes_explain_what_works(shape, message):
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=2)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))


@pytest.mark.slow
def test_gradient_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    plain = create_model("swin_unetr_tiny", in_channels=1, out_channels=2)
    ckpt = create_model("swin_unetr_tiny", in_channels=1, out_channels=2, use_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 1, 64, 64, 64)
    plain(x).sum().backward()
    ckpt(x).sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_bf16_autocast_runs_and_stays_close_to_fp32():
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=3).eval()
    x = torch.randn(1, 1, 64, 32, 32)  # bf16 is emulated (~16x slower) on CPUs without AVX512-BF16/AMX
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_swin_v2_attention_option():
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=2, attn="v2")
    out = model(torch.randn(1, 1, 64, 64, 64))
    assert out.shape == (1, 2, 64, 64, 64) and torch.isfinite(out).all()
    assert any("cpb_mlp" in k for k in model.state_dict())
    with pytest.raises(ValueError, match="no MONAI equivalent"):
        model.to_monai_state_dict()
