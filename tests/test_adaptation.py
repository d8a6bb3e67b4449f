"""Test-time adaptation (TENT, ETTA): which parameters move, that the prediction uses them, exact reset,
episodic vs continual, the whole-volume ETTA gradient, the predictor and the CLI."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from medswin.adaptation import Etta, Tent, normalized_entropy, select_parameters
from medswin.cli import main
from medswin.data.io import load_volume, write_nifti
from medswin.data.spec import load_dataset_specs
from medswin.data.synthetic import make_phantom
from medswin.inference import Predictor, predict_logits, window_plan
from medswin.inference.sliding_window import gaussian_importance
from medswin.models import create_model, list_models, model_kind

TINY_3D = [n for n in list_models("*_tiny") if model_kind(n) == "volume"]
ROI = (64, 32, 32)


def _model(name: str = "swin_unetr_tiny", out_channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, in_channels=1, out_channels=out_channels).eval()


def _volume(shape=ROI, seed: int = 0, gamma: float = 1.0) -> torch.Tensor:
    """A z-scored MRI phantom ``(1, 1, *shape)``; ``gamma`` != 1 is a contrast shift."""
    image = make_phantom(shape, num_classes=3, modality="mri", noise=0.05, seed=seed).image[0]
    image = np.clip(image, 0, None) ** gamma
    t = torch.from_numpy(((image - image.mean()) / image.std()).astype(np.float32))
    return t[None, None]


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _mean_entropy(adapter, image) -> float:
    return float(normalized_entropy(adapter.blended_logits(image)).mean())


class Toy(nn.Module):
    """A small conv net with the model contract (``encoder`` + head): GroupNorm and affine InstanceNorm."""

    size_divisor = 1

    def __init__(self, norms: bool = True) -> None:
        super().__init__()
        norm1 = nn.GroupNorm(2, 8) if norms else nn.Identity()
        norm2 = nn.InstanceNorm3d(8, affine=True) if norms else nn.InstanceNorm3d(8)  # affine=False: nothing to adapt
        self.encoder = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1), norm1, nn.GELU(), nn.Conv3d(8, 8, 3, padding=1), norm2, nn.GELU()
        )
        self.head = nn.Conv3d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


# ---------------------------------------------------------------------------------------------
# parameters and entropy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY_3D)
def test_default_parameters_are_the_encoder_norm_affines(name):
    model = _model(name)
    chosen = dict(select_parameters(model))
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm3d)
    norms = [
        (f"encoder.{n}" if n else "encoder", m)
        for n, m in model.encoder.named_modules()
        if isinstance(m, norm_types) and getattr(m, "weight", None) is not None
    ]
    expected = {f"{n}.{a}" for n, m in norms for a in ("weight", "bias") if getattr(m, a, None) is not None}
    assert len(norms) > 0 and set(chosen) == expected
    params = dict(model.named_parameters())
    assert all(chosen[n] is params[n] for n in chosen)
    assert 0 < sum(p.numel() for p in chosen.values()) < 0.05 * sum(p.numel() for p in model.parameters())


def test_normalized_entropy_values():
    assert torch.allclose(normalized_entropy(torch.zeros(2, 4, 3, 3, 3)), torch.ones(2, 3, 3, 3))
    confident = torch.tensor([30.0, 0.0, 0.0]).view(1, 3, 1, 1, 1)
    assert float(normalized_entropy(confident)) < 1e-10
    logits = torch.randn(1, 3, 2, 2, 2)
    p = torch.softmax(logits, 1)
    torch.testing.assert_close(normalized_entropy(logits), -(p * p.log()).sum(1) / math.log(3))
    assert torch.allclose(normalized_entropy(torch.zeros(1, 2, 2, 2, 2), sigmoid=True), torch.ones(1, 2, 2, 2))
    q = torch.sigmoid(logits)
    manual = (-(q * q.log() + (1 - q) * (1 - q).log()) / math.log(2)).mean(1)
    torch.testing.assert_close(normalized_entropy(logits, sigmoid=True), manual)
    with pytest.raises(ValueError, match="at least 2 classes"):
        normalized_entropy(torch.zeros(1, 1, 2, 2, 2))


def test_no_adaptable_parameters_is_a_clear_error():
    expected = r"Toy has no adaptable parameters: .*LayerNorm, GroupNorm or affine InstanceNorm under model.encoder"
    with pytest.raises(ValueError, match=expected):
        Tent(Toy(norms=False), roi_size=(8, 8, 8))
    with pytest.raises(ValueError, match="Sequential has no .encoder module"):
        Tent(nn.Sequential(nn.Conv3d(1, 2, 1)), roi_size=(8, 8, 8))
    with pytest.raises(ValueError, match=r"no parameter\(s\) 'encoder.1.weihgt' \(closest: encoder.1.weight"):
        Tent(Toy(), params=["encoder.1.weihgt"])
    with pytest.raises(ValueError, match="biplanar"):
        Tent(create_model(list_models("swin_x2s*")[0], in_channels=1, out_channels=2))
    with pytest.raises(ValueError, match="give roi_size="):
        Tent(Toy()).adapt(torch.zeros(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match=r"expects one volume \(1, C, D, H, W\)"):
        Tent(Toy(), roi_size=(8, 8, 8)).adapt(torch.zeros(2, 1, 8, 8, 8))


def test_explicit_parameter_names_override_the_default():
    model = Toy()
    before = _state(model)
    adapter = Tent(model, lr=1e-2, params=["head.bias", "encoder.0.weight"], roi_size=(8, 8, 8), amp="fp32")
    assert adapter.parameter_names == ["head.bias", "encoder.0.weight"]
    adapter.adapt(_volume((12, 12, 12)))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"head.bias", "encoder.0.weight"}
    assert all(p.requires_grad and p.grad is None for p in model.parameters())  # flags restored, no grads left


# ---------------------------------------------------------------------------------------------
# every registered 3D model (one 64x32x32 window: the smallest input every 5-level model takes)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY_3D)
def test_only_the_chosen_parameters_change_and_reset_restores_outputs_exactly(name):
    model = _model(name)
    image = _volume(ROI, gamma=2.0)
    with torch.no_grad():
        original = model(image)
    before = _state(model)
    adapter = Tent(model, lr=1e-3, roi_size=ROI, amp="fp32")
    report = adapter.adapt(image)
    assert report.windows == 1 and len(report.losses) == 1 and 0 < report.losses[0] <= 1
    chosen = set(adapter.parameter_names)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed <= chosen and len(changed) > 0.5 * len(chosen)  # every other parameter and buffer is bit-identical
    with torch.no_grad():
        assert (model(image) - original).abs().max() > 1e-6
    adapter.reset()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(image), original)


@pytest.mark.parametrize("name", TINY_3D)
def test_etta_lowers_the_entropy_of_a_shifted_volume(name):
    model = _model(name)
    image = _volume(ROI, gamma=2.5, seed=1)
    # Adam: at random initialisation the norm-affine gradients are ~1e-5, too small for plain SGD to show
    adapter = Etta(model, steps=1, lr=1e-2, optimizer="adam", roi_size=ROI, amp="fp32")
    before = adapter.adapt(image).losses[0]  # the whole-volume entropy before the step
    after = _mean_entropy(adapter, image)
    assert after < before - 1e-5


def test_tent_loss_is_the_patch_entropy_and_drops():
    model = Toy()
    image = _volume((16, 16, 16), gamma=2.5, seed=1)
    adapter = Tent(model, steps=2, lr=1e-2, roi_size=(16, 16, 16), amp="fp32")
    before = _mean_entropy(adapter, image)
    report = adapter.adapt(image)
    assert report.losses[0] == pytest.approx(before, abs=1e-6)  # one window: patch entropy = volume entropy
    assert report.losses[1] < report.losses[0] and _mean_entropy(adapter, image) < report.losses[1]


# ---------------------------------------------------------------------------------------------
# the prediction uses the adapted parameters; the ETTA gradient is the whole-volume gradient
# ---------------------------------------------------------------------------------------------


def test_windows_and_blending_match_monai_sliding_window_inference():
    image = _volume((20, 14, 26), seed=2)  # padded on y, overlapping windows on x and z
    plan = window_plan(image.shape[2:], (16, 16, 16), 0.5)
    assert plan.padded_shape == (20, 16, 26) and plan.pad == (0, 0, 1, 1, 0, 0) and len(plan.slices) == 6
    # the adapters' windows are the engine's, in MONAI's order; voxels only the first window covers
    # weigh exactly its importance
    assert plan.slices[0] == (slice(0, 16), slice(0, 16), slice(0, 16))
    importance = gaussian_importance((16, 16, 16), 0.125, "cpu")
    assert torch.equal(plan.summed_weights()[0, 0, 2, 8, :8], importance[2, 8, :8])
    model = Toy().eval()
    adapter = Tent(model, roi_size=(16, 16, 16), amp="fp32")
    expected = predict_logits(model, image, (16, 16, 16), amp="fp32")
    torch.testing.assert_close(adapter.blended_logits(image), expected, atol=1e-6, rtol=1e-5)


def test_prediction_uses_the_adapted_parameters():
    model = _model()
    image = _volume(ROI, gamma=2.0)
    unadapted = predict_logits(model, image, ROI, amp="fp32")
    adapter = Etta(model, steps=1, lr=1e-2, optimizer="adam", roi_size=ROI, amp="fp32")
    adapted = adapter.predict(image)
    assert (adapted - unadapted).abs().max() > 1e-4
    manual = create_model("swin_unetr_tiny", in_channels=1, out_channels=3).eval()
    manual.load_state_dict(model.state_dict())  # a separate model holding the adapted weights
    torch.testing.assert_close(adapted, predict_logits(manual, image, ROI, amp="fp32"), atol=1e-5, rtol=1e-5)


def test_predictor_adapts_before_predicting(synth_dataset):
    spec = load_dataset_specs([synth_dataset[1]])["synth-ct"]
    image, roi = _volume((16, 16, 24), gamma=2.0), (16, 16, 16)
    model = Toy()
    adapter = Etta(model, steps=2, lr=1e-2)  # roi, overlap, amp and sigmoid come from the predictor
    predictor = Predictor(model, spec, roi_size=roi, amp="fp32", adapter=adapter)
    assert (adapter.roi_size, adapter.overlap, adapter.amp, adapter.sigmoid) == (roi, 0.5, "fp32", False)
    plain = Predictor(copy.deepcopy(model), spec, roi_size=roi, amp="fp32").probabilities(image)
    probs = predictor.probabilities(image)
    manual = copy.deepcopy(model)  # the adapted weights, in a model without adapter
    expected = Predictor(manual, spec, roi_size=roi, amp="fp32").probabilities(image)
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=1e-5)
    assert (probs - plain).abs().max() > 1e-4
    torch.testing.assert_close(predictor.probabilities(image), probs, atol=0, rtol=0)  # episodic: same again
    mirrored = Predictor(model, spec, roi_size=roi, amp="fp32", mirror=True, adapter=adapter).probabilities(image)
    manual_mirrored = Predictor(manual, spec, roi_size=roi, amp="fp32", mirror=True).probabilities(image)
    torch.testing.assert_close(mirrored, manual_mirrored, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="wraps a different model object"):
        Predictor(manual, spec, roi_size=roi, amp="fp32", adapter=adapter)


def _whole_volume_gradient(model, image, roi, entropy_filter):
    """Reference: MONAI's sliding-window blend with the full autograd graph, entropy, autograd."""
    params = dict(select_parameters(model))
    with torch.enable_grad():
        logits = sliding_window_inference(image, roi, 1, model, overlap=0.5, mode="gaussian")
        h = normalized_entropy(logits)
        keep = torch.ones_like(h) if entropy_filter is None else (h.detach() < entropy_filter).float()
        loss = (h * keep).sum() / keep.sum()
        return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


@pytest.mark.parametrize("filtered", [False, True])
def test_etta_gradient_is_the_whole_volume_gradient(filtered):
    model, image, roi = Toy().eval(), _volume((16, 16, 24), gamma=2.0), (16, 16, 16)
    entropy_filter = None
    if filtered:  # a filter that keeps about half of the voxels
        entropy_filter = float(normalized_entropy(predict_logits(model, image, roi, amp="fp32")).median())
    reference = _whole_volume_gradient(model, image, roi, entropy_filter)
    before = _state(model)
    adapter = Etta(model, steps=1, lr=1.0, momentum=0.0, entropy_filter=entropy_filter, roi_size=roi, amp="fp32")
    assert adapter.adapt(image).windows == 2
    for name, g in reference.items():  # SGD with lr 1: the update is minus the gradient
        step = before[name] - model.state_dict()[name]
        torch.testing.assert_close(step, g, atol=1e-7 + 1e-3 * float(g.abs().max()), rtol=1e-3)
    assert max(float(g.abs().max()) for g in reference.values()) > 1e-7


# ---------------------------------------------------------------------------------------------
# episodic vs continual, window subsets
# ---------------------------------------------------------------------------------------------


def test_episodic_resets_per_volume_and_continual_keeps_adapting():
    a, b = _volume((16, 16, 16), seed=3, gamma=2.0), _volume((16, 16, 16), seed=4, gamma=0.5)
    model = Toy()
    original = _state(model)
    episodic = Tent(model, lr=1e-2, roi_size=(16, 16, 16), amp="fp32")
    episodic.adapt(a)
    after_a = _state(model)
    episodic.adapt(b)
    episodic_b = _state(model)
    episodic.adapt(b)  # b alone, from the original weights
    assert all(torch.equal(v, episodic_b[k]) for k, v in model.state_dict().items())
    episodic.reset()
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())

    continual = Tent(model, lr=1e-2, roi_size=(16, 16, 16), amp="fp32", episodic=False)
    continual.adapt(a)
    assert all(torch.equal(v, after_a[k]) for k, v in model.state_dict().items())  # same first step
    continual.adapt(b)  # from the a-adapted weights and Adam state
    changed = [k for k in episodic_b if not torch.equal(model.state_dict()[k], episodic_b[k])]
    assert set(changed) == set(continual.parameter_names)
    assert continual.last_report.reset is False and episodic.last_report.reset is True


def test_window_subsets_are_bounded_and_seeded():
    model = Toy()
    image = _volume((24, 24, 24), seed=5)
    adapter = Tent(model, lr=1e-2, roi_size=(8, 8, 8), overlap=0.5, max_patches=3, amp="fp32")
    report = adapter.adapt(image)
    assert report.total_windows == 125 and report.windows == 3
    first = _state(model)
    adapter.adapt(image)
    assert all(torch.equal(v, first[k]) for k, v in model.state_dict().items())
    Tent(model, lr=1e-2, roi_size=(8, 8, 8), max_patches=3, amp="fp32", seed=1).adapt(image)
    assert any(not torch.equal(v, first[k]) for k, v in model.state_dict().items())


def test_mask_excludes_voxels_from_the_loss():
    model = Toy()
    image = _volume((16, 16, 16), seed=6)
    mask = torch.zeros(1, 1, 16, 16, 16, dtype=torch.bool)
    mask[..., :8] = True
    h = normalized_entropy(predict_logits(model, image, (16, 16, 16), amp="fp32"))
    assert abs(float(h[..., :8].mean()) - float(h.mean())) > 1e-4  # the mask matters
    adapter = Etta(model, steps=1, roi_size=(16, 16, 16), amp="fp32")
    assert adapter.adapt(image, mask).losses[0] == pytest.approx(float(h[..., :8].mean()), abs=1e-6)
    with pytest.raises(ValueError, match="mask is empty"):
        adapter.adapt(image, torch.zeros_like(mask))


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_predict_and_adapt(capsys, tmp_path, synth_dataset):
    spec_file = synth_dataset[1]
    cases = tmp_path / "cases"
    for i in range(2):  # small CT phantoms on the spec's grid: one 64x32x32 window each (padded)
        ph = make_phantom((40, 30, 20), num_classes=3, modality="ct", spacing=(1.5, 1.5, 2.0), seed=10 + i)
        write_nifti(ph.image[0], ph.affine, cases / f"case_{i}.nii.gz")
    common = [
        "--model",
        "swin_unetr_tiny",
        "--dataset",
        "synth-ct",
        "--datasets",
        str(spec_file),
        "--roi",
        *map(str, ROI),
        "--amp",
        "fp32",
    ]
    out = tmp_path / "seg.nii.gz"
    assert main(["predict", "-i", str(cases / "case_0.nii.gz"), "-o", str(out), "--adapt", "tent", *common]) == 0
    seg = load_volume(out)
    assert seg.spatial_shape == (40, 30, 20) and set(np.unique(seg.array)) <= {0, 1, 2}

    assert (
        main(
            [
                "adapt",
                "-i",
                str(cases),
                "-o",
                str(tmp_path / "adapted"),
                "--method",
                "etta",
                "--adapt-steps",
                "1",
                "--entropy-filter",
                "0.99",
                "--continual",
                *common,
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "adapted" / "adaptation.json").read_text())
    assert [c["case"] for c in report["cases"]] == ["case_0", "case_1"]
    assert report["settings"]["episodic"] is False and report["settings"]["entropy_filter"] == 0.99
    for c in report["cases"]:
        assert len(c["losses"]) == 1 and 0 < c["losses"][0] < 0.99 and c["reset_before"] is False
    assert all(load_volume(tmp_path / "adapted" / f"case_{i}.nii.gz").spatial_shape == (40, 30, 20) for i in range(2))
    capsys.readouterr()


def test_cli_adaptation_errors(capsys, tmp_path):
    assert main(["predict", "-i", "x.nii.gz", "-o", str(tmp_path), "--model", "swin_unetr_tiny", "--continual"]) == 2
    assert "go with --adapt tent|etta" in capsys.readouterr().err
    x2s = list_models("swin_x2s*")[0]
    assert main(["adapt", "-i", "x.nii.gz", "-o", str(tmp_path), "--model", x2s, "--dataset", "btcv"]) == 2
    assert "not on biplanar" in capsys.readouterr().err
    assert main(["predict", "-i", "x.nii.gz", "-o", str(tmp_path), "--model", x2s, "--adapt", "tent"]) == 2
    assert "not on biplanar" in capsys.readouterr().err
    assert main(["adapt", "-i", "x.nii.gz", "-o", str(tmp_path / "a.nii.gz"), "--model", "swin_unetr_tiny"]) == 2
    assert "give a folder" in capsys.readouterr().err
