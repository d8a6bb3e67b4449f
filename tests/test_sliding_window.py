"""The fast sliding-window engine against the plain MONAI reference, each optimisation switched on.

Reference: :func:`medswin.inference.predict_logits` (MONAI ``sliding_window_inference``, Gaussian
blending, sw_batch_size 1).  Float32 paths must give the reference's logits to float32 rounding and
its labels wherever the two best classes are apart by more than that rounding; reduced-precision
paths (bf16 autocast, float16 / bfloat16 accumulators) within their own rounding.  Streaming must
give exactly the direct path's result, with an accumulator bounded by the memory budget.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from medswin.data.io import load_volume, write_nifti
from medswin.data.spec import load_dataset_specs
from medswin.data.synthetic import make_phantom
from medswin.inference import ModelRunner, Predictor, predict_labels, predict_logits
from medswin.inference.sliding_window import SlidingWindow, gaussian_importance, softmax_, window_plan
from medswin.models import create_model, list_models, model_kind

ROI = (64, 32, 32)
SHAPE = (64, 32, 48)  # two windows of ROI at overlap 0.5, starting at z = 0 and z = 16


def _conv_net(out_channels: int = 4) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv3d(1, 6, 3, padding=1), nn.GELU(), nn.Conv3d(6, out_channels, 3, padding=1)).eval()


def _margin(logits: torch.Tensor) -> torch.Tensor:
    """Gap between the best and the second-best class per voxel ``(B, *S)``."""
    top = logits.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


def _labels_agree(labels: torch.Tensor, reference: torch.Tensor, tol: float, min_decided: float = 0.97) -> None:
    """Labels equal the reference's argmax wherever its top-two margin exceeds ``tol`` (and that is
    most voxels, so the check is not vacuous)."""
    decided = _margin(reference) > tol
    assert decided.float().mean() > min_decided
    assert torch.equal(labels.long()[decided], reference.argmax(1)[decided])


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return create_model("swin_unetr_tiny", in_channels=1, out_channels=3).eval()


@pytest.fixture(scope="module")
def volume():
    return torch.randn(1, 1, *SHAPE, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def reference(swin, volume):
    return predict_logits(swin, volume, ROI, amp="fp32")


@pytest.fixture(scope="module")
def direct(swin, volume):
    return SlidingWindow(ROI).logits(ModelRunner(swin, amp="fp32"), volume)


# ------------------------------------------------------------------------------ layout and blending


@pytest.mark.parametrize("shape,batch", [((26, 20, 34), 1), ((20, 30, 12), 2), ((16, 16, 33), 1)])
def test_windows_padding_and_blending_equal_monai(shape, batch):
    net = _conv_net()
    x = torch.randn(batch, 1, *shape)
    with torch.inference_mode():
        expected = sliding_window_inference(x, (16, 16, 16), 1, net, overlap=0.5, mode="gaussian")
    engine, run = SlidingWindow((16, 16, 16)), ModelRunner(net, amp="fp32")
    out = engine.logits(run, x)
    assert out.shape == (batch, 4, *shape) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=1e-5)
    _labels_agree(engine.labels(run, x), expected, 1e-5)
    probs = engine.probabilities(run, x)
    torch.testing.assert_close(probs, torch.softmax(expected, 1), atol=1e-6, rtol=1e-5)
    sigmoid = engine.probabilities(run, x, sigmoid=True)
    torch.testing.assert_close(sigmoid, torch.sigmoid(expected), atol=1e-6, rtol=1e-5)
    plan = window_plan(shape, (16, 16, 16), 0.5)
    assert [s[-1] for s in plan.starts] == sorted(s[-1] for s in plan.starts)  # ordered along the last axis


def test_importance_map_is_monais_float32_and_cached():
    from monai.data.utils import compute_importance_map

    w = gaussian_importance((16, 24, 8), 0.125, "cpu")
    assert w.dtype == torch.float32 and w.shape == (16, 24, 8)
    assert torch.equal(w, compute_importance_map((16, 24, 8), mode="gaussian", sigma_scale=0.125))
    assert gaussian_importance((16, 24, 8), 0.125, "cpu") is w
    assert float(w.min()) == pytest.approx(1e-3)  # MONAI's floor: every voxel keeps a positive weight


def test_in_place_softmax():
    x = torch.randn(2, 5, 3, 4, 6) * 30
    torch.testing.assert_close(softmax_(x.clone(), 1), torch.softmax(x, 1), atol=1e-7, rtol=1e-6)


def test_per_window_mirroring_is_the_mean_of_the_eight_flipped_windows():
    net = _conv_net()
    x = torch.randn(1, 1, 24, 20, 28)

    def mirrored(w: torch.Tensor) -> torch.Tensor:
        axes = [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
        return torch.stack([torch.flip(net(torch.flip(w, a)), a) if a else net(w) for a in axes]).mean(0)

    with torch.inference_mode():
        expected = sliding_window_inference(x, (16, 16, 16), 1, mirrored, overlap=0.5, mode="gaussian")
    out = SlidingWindow((16, 16, 16)).logits(ModelRunner(net, amp="fp32", mirror=True), x)
    torch.testing.assert_close(out, expected, atol=2e-6, rtol=1e-5)


def test_compiled_model_gives_the_same_logits_and_is_compiled_once():
    from medswin.inference import runner

    net = _conv_net()
    x = torch.randn(1, 1, 20, 24, 18)
    with torch.inference_mode():
        expected = sliding_window_inference(x, (16, 16, 16), 1, net, overlap=0.5, mode="gaussian")
    engine = SlidingWindow((16, 16, 16), sw_batch_size=2)
    torch.testing.assert_close(
        engine.logits(ModelRunner(net, amp="fp32", compile="aot_eager"), x), expected, atol=2e-6, rtol=1e-5
    )
    compiled = runner._COMPILED[net]["aot_eager"]
    engine.labels(ModelRunner(net, amp="fp32", compile="aot_eager"), x)
    assert runner._COMPILED[net]["aot_eager"] is compiled


# ------------------------------------------------------------------------------ a real model, each optimisation


def test_default_engine_equals_the_monai_reference(swin, volume, reference, direct):
    assert direct.shape == (1, 3, *SHAPE)
    torch.testing.assert_close(direct, reference, atol=1e-5, rtol=1e-5)
    _labels_agree(direct.argmax(1), reference, 1e-4)


def test_batched_channels_last_windows_equal_the_reference(swin, volume, reference):
    engine = SlidingWindow(ROI, sw_batch_size=3)
    out = engine.logits(ModelRunner(swin, amp="fp32", channels_last=True), volume)
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
    _labels_agree(out.argmax(1), reference, 1e-3)


def test_bf16_autocast_matches_the_reference_under_the_same_autocast(swin, volume, reference):
    expected = predict_logits(swin, volume, ROI, amp="bf16")  # MONAI's inferer under the same autocast
    out = SlidingWindow(ROI).logits(ModelRunner(swin, amp="bf16"), volume)
    scale = float(reference.abs().max())
    # same bf16 window outputs; MONAI rounds the weighted window to bf16 before adding, we do not
    torch.testing.assert_close(out, expected, atol=5e-3 * scale, rtol=0)
    assert float((out - reference).abs().mean()) < 3e-3 * scale  # and near float32
    _labels_agree(out.argmax(1), expected, 1e-2 * scale, min_decided=0.9)


@pytest.mark.parametrize("dtype,rel,decided", [(torch.float16, 2e-3, 0.95), (torch.bfloat16, 1e-2, 0.85)])
def test_half_precision_accumulators(swin, volume, reference, dtype, rel, decided):
    engine = SlidingWindow(ROI, accumulator_dtype=dtype)
    scale = float(reference.abs().max())
    out = engine.logits(ModelRunner(swin, amp="fp32"), volume)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference, atol=rel * scale, rtol=0)
    _labels_agree(out.argmax(1), reference, 2 * rel * scale, min_decided=decided)


def test_streaming_equals_the_direct_path_within_the_budget(swin, volume, direct):
    k, x, y, z = 3, SHAPE[0], SHAPE[1], SHAPE[2]
    budget = 40 * x * y * (4 * k + 4)  # bytes of a 40-plane accumulator + summed weights (the volume has 48)
    engine = SlidingWindow(ROI, streaming=None, memory_budget_gb=budget / 1024**3)
    assert engine.streams(SHAPE, k)
    slabs = []
    for slab in engine.iter_slabs(ModelRunner(swin, amp="fp32"), volume, need_count=True):
        assert slab.weighted.untyped_storage().nbytes() <= 40 * x * y * 4 * k  # never a full-size buffer
        slabs.append((slab.planes, slab.logits(), slab.weighted.argmax(0)))
    assert [s[0] for s in slabs] == [slice(0, 16), slice(16, z)]
    torch.testing.assert_close(torch.cat([s[1] for s in slabs], -1)[None], direct, atol=0, rtol=0)
    assert torch.equal(torch.cat([s[2] for s in slabs], -1)[None], direct.argmax(1))


@pytest.mark.parametrize("budget_planes,num_slabs", [(16, 5), (26, 3), (33, 2)])  # 16 = one window: a slab per start
def test_streamed_labels_and_logits_equal_the_direct_ones(budget_planes, num_slabs):
    net = _conv_net(out_channels=5)
    x = torch.randn(2, 1, 20, 12, 46)  # padded to 20 x 16 x 46; windows start at z = 0, 8, ..., 30
    direct, run = SlidingWindow((16, 16, 16), streaming=False), ModelRunner(net, amp="fp32")
    budget = budget_planes * 20 * 16 * (5 * 4 + 4) / 1024**3
    streamed = SlidingWindow((16, 16, 16), streaming=True, memory_budget_gb=budget)
    labels = streamed.labels(run, x)
    assert labels.dtype == torch.uint8 and labels.shape == (2, 20, 12, 46)
    assert torch.equal(labels, direct.labels(run, x))
    torch.testing.assert_close(streamed.logits(run, x), direct.logits(run, x), atol=0, rtol=0)
    by_function = predict_labels(net, x, (16, 16, 16), amp="fp32", streaming=True, memory_budget_gb=budget)
    assert torch.equal(by_function, labels)
    planes = [s.planes for s in streamed.iter_slabs(run, x[:1], need_count=True)]
    assert len(planes) == num_slabs and planes[0].start == 0 and planes[-1].stop == 46
    assert all(a.stop == b.start for a, b in zip(planes, planes[1:]))  # contiguous, every plane once


def test_streaming_is_chosen_only_over_the_budget():
    engine = SlidingWindow((96, 96, 96))  # 2 GiB default
    assert engine.accumulator_bytes((160, 160, 160), 14) == 160**3 * (14 * 4 + 4)
    assert not engine.streams((160, 160, 160), 14)
    assert engine.streams((512, 512, 300), 14)  # 4.7 GB of float32 classes + weights
    assert not SlidingWindow((96, 96, 96), streaming=False).streams((512, 512, 300), 14)
    assert SlidingWindow((96, 96, 96), streaming=True).streams((100, 100, 100), 2)


MODELS_3D = [n for n in list_models("*_tiny") if model_kind(n) == "volume"]


@pytest.mark.parametrize("name", MODELS_3D)
def test_every_3d_model_equals_the_reference(name):
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, out_channels=2).eval()
    roi = (64, 32, 32)
    x = torch.randn(1, 1, 64, 32, 48)  # two windows
    expected = predict_logits(model, x, roi, amp="fp32")
    out = SlidingWindow(roi, streaming=True, memory_budget_gb=1e-9).logits(ModelRunner(model, amp="fp32"), x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ the predictor


@pytest.fixture
def spec(synth_dataset):
    return load_dataset_specs([synth_dataset[1]])["synth-ct"]


def test_predictor_streaming_gives_the_direct_labels(tmp_path, spec, swin, caplog):
    ph = make_phantom((64, 30, 40), num_classes=3, modality="ct", spacing=(1.5, 1.5, 2.0), seed=5)
    path = write_nifti(ph.image[0], ph.affine, tmp_path / "case.nii.gz")  # already on the model grid
    direct = Predictor(swin, spec, roi_size=ROI, amp="fp32", streaming=False).predict(path)
    budget = 1e-4  # GiB: far below the 64x32x40 accumulator, so the predictor streams by itself
    with caplog.at_level(logging.INFO, logger="medswin.inference.predictor"):
        predictor = Predictor(swin, spec, roi_size=ROI, amp="fp32", memory_budget_gb=budget)
        out = predictor.predict_file(path, tmp_path / "s.nii.gz")
    assert "streaming labels" in caplog.text
    streamed = load_volume(out)
    labels = streamed.array[0] if streamed.array.ndim == 4 else streamed.array
    assert labels.shape == direct.labels.shape == (64, 30, 40)
    np.testing.assert_allclose(streamed.affine, direct.affine, atol=1e-5)
    assert len(np.unique(direct.labels)) > 1
    assert (labels == direct.labels).mean() > 0.9999


def test_predictor_probabilities_use_the_engine_and_equal_the_reference(spec, swin, volume, reference):
    predictor = Predictor(swin, spec, roi_size=ROI, amp="fp32")
    torch.testing.assert_close(predictor.probabilities(volume), torch.softmax(reference, 1), atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------ errors and devices


def test_bad_arguments_are_clear_errors(swin):
    net = _conv_net()
    with pytest.raises(ValueError, match="roi_size must be 3 positive sizes"):
        SlidingWindow((16, 16))
    with pytest.raises(ValueError, match=r"overlap must be in \[0, 1\)"):
        SlidingWindow((16, 16, 16), overlap=1.0)
    with pytest.raises(ValueError, match="accumulator_dtype"):
        SlidingWindow((16, 16, 16), accumulator_dtype=torch.int32)
    with pytest.raises(ValueError, match="accumulate_on"):
        SlidingWindow((16, 16, 16), accumulate_on="gpu")
    with pytest.raises(ValueError, match=r"image must be \(B, C, D, H, W\)"):
        SlidingWindow((16, 16, 16)).logits(net, torch.randn(1, 16, 16, 16))
    with pytest.raises(
        ValueError, match=r"the predictor returned shape \(1, 4, 8, 8, 8\) for 1 window\(s\) of \(16, 16, 16\)"
    ):
        SlidingWindow((16, 16, 16)).logits(lambda w: net(w)[..., :8, :8, :8], torch.randn(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="memory_budget_gb must be > 0"):
        SlidingWindow((16, 16, 16), memory_budget_gb=0)
    with pytest.raises(ValueError, match=r"roi_size \(48, 48, 48\) does not fit SwinUNETR.*not a multiple of 32"):
        predict_labels(swin, torch.randn(1, 1, 64, 64, 64), (48, 48, 48))
    with pytest.raises(ValueError, match=r"takes 1 channel\(s\), the image has 2"):
        SlidingWindow((64, 64, 64)).labels(ModelRunner(swin), torch.randn(1, 2, 64, 64, 64))
    with pytest.raises(ValueError, match="fp16 autocast is only supported on CUDA"):
        ModelRunner(swin, amp="fp16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("accumulate_on,budget", [("cpu", 2.0), ("auto", 2.0), ("auto", 1e-9)])
def test_cuda_model_with_the_accumulator_on_the_cpu(accumulate_on, budget, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    net = _conv_net().cuda()
    x = torch.randn(1, 1, 40, 36, 50)  # on the CPU: the result comes back there
    with torch.inference_mode():
        expected = sliding_window_inference(x.cuda(), (16, 16, 16), 1, net, overlap=0.5, mode="gaussian").cpu()
    engine = SlidingWindow((16, 16, 16), accumulate_on=accumulate_on, memory_budget_gb=budget, sw_batch_size=4)
    run = ModelRunner(net, amp="fp32")
    out = engine.logits(run, x)
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    labels = engine.labels(run, x)
    assert labels.device.type == "cpu"
    _labels_agree(labels, expected, 1e-4)
    slabs = list(engine.iter_slabs(run, x, need_count=False))
    assert all(s.weighted.device.type == ("cpu" if accumulate_on == "cpu" else "cuda") for s in slabs)


def test_cli_memory_budget_streams_or_is_a_clear_error(capsys, tmp_path):
    from medswin.cli import main

    image = np.random.default_rng(0).random((20, 18, 12), dtype=np.float32) * 300
    path = write_nifti(image, np.diag([1.5, 1.5, 2.0, 1.0]), tmp_path / "x.nii.gz")
    args = [
        "predict",
        "-i",
        str(path),
        "-o",
        str(tmp_path / "seg.nii.gz"),
        "--model",
        "swin_unetr_tiny",
        "--dataset",
        "btcv",
        "--roi",
        "64",
        "32",
        "32",
        "--amp",
        "fp32",
    ]
    assert main([*args, "--memory-budget-gb", "0"]) == 2
    err = capsys.readouterr().err
    assert "memory_budget_gb must be > 0" in err and "Traceback" not in err
    assert main([*args, "--memory-budget-gb", "1e-6"]) == 0  # streamed: the 14-class accumulator is over budget
    seg = load_volume(tmp_path / "seg.nii.gz")
    assert seg.spatial_shape == (20, 18, 12)
