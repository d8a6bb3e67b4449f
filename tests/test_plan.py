"""``medswin data plan``: the spacing, roi and normalisation rules on synthetic datasets with known answers, the
measured memory fit, corrupt cases listed, and the written plan trains (``medswin train --plan``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from medswin.cli import main
from medswin.data.fingerprint import fingerprint_dataset
from medswin.data.io import write_nifti
from medswin.data.synthetic import make_phantom
from medswin.training.plan import (
    PlanError,
    fit_roi,
    make_plan,
    measure_step,
    plan_spacing,
    plan_strides,
    roi_candidates,
)


def _dataset(root, spacings, shape=(40, 40, 24), modality="mri", corrupt: int = 0):
    """A flat dataset (images/ + labels/) with one phantom per spacing; ``corrupt`` garbage cases added."""
    for i, spacing in enumerate(spacings):
        ph = make_phantom(shape, num_classes=3, modality=modality, spacing=spacing, seed=i)
        image = ph.image[0] if modality == "ct" else np.clip(ph.image[0], 0, None)
        write_nifti(image, ph.affine, root / "images" / f"case_{i}.nii.gz")
        write_nifti(ph.label.astype(np.uint8), ph.affine, root / "labels" / f"case_{i}.nii.gz")
    for j in range(corrupt):
        (root / "images" / f"broken_{j}.nii.gz").write_bytes(b"not a nifti file at all")
        (root / "labels" / f"broken_{j}.nii.gz").write_bytes(b"nor this")
    return root


def _linear_memory(entry, model, roi, model_kwargs=None):
    """A stand-in for the measured step: 1 GB per million voxels of the roi (for the rule tests)."""
    voxels = float(np.prod(roi))
    return {"peak_gb": voxels / 1e6, "seconds_per_step": voxels / 1e6}


def test_spacing_rules_isotropic_anisotropic_and_mixed():
    assert plan_spacing([(1.0, 1.0, 1.0)] * 3 + [(0.8, 0.8, 0.8)])[0] == [1.0, 1.0, 1.0]
    target, why = plan_spacing([(0.7, 0.7, 5.0)] * 4 + [(0.7, 0.7, 2.5)])
    # median 0.7 x 0.7 x 5 is anisotropic (7.1 > 3): z takes the 10th percentile of 5, 5, 5, 5, 2.5 = 3.5
    assert target == [0.7, 0.7, 3.5] and "10th percentile" in why
    target, _ = plan_spacing([(0.8, 0.8, 1.0), (1.0, 1.0, 1.2), (0.9, 0.7, 1.1)])  # mixed, isotropic rule
    assert target == [0.9, 0.8, 1.1]


def test_per_axis_strides_for_anisotropic_spacing():
    assert plan_strides([1.0, 1.0, 1.0]) == [[2, 2, 2]] * 5
    # 0.7 x 0.7 x 3.25: z waits twice (3.25 >= 2 x 0.7, then >= 2 x 1.4), then every axis halves
    assert plan_strides([0.7, 0.7, 3.25]) == [[2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]


def test_cswin_plan_takes_per_axis_strides(tmp_path):
    root = _dataset(tmp_path / "ct", [(0.7, 0.7, 5.0)] * 2, shape=(96, 96, 12), modality="ct")
    fp = fingerprint_dataset(root, workers=0, progress=False)
    plan = make_plan(fp, "aniso", model="cswin_unet_tiny", memory_gb=0.5, measure=_linear_memory)
    strides = plan["train"]["model_kwargs"]
    assert strides == {"stem_stride": [2, 2, 1], "merge_strides": [[2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]}
    roi = plan["entry"]["roi_size"]  # z: a multiple of 8 (2 x 2 x 2), x and y of 32
    assert roi[0] % 32 == 0 and roi[1] % 32 == 0 and roi[2] % 8 == 0 and roi[2] < 32
    from medswin.models import create_model

    model = create_model("cswin_unet_tiny", in_channels=1, out_channels=3, **strides)
    assert tuple(model(torch.zeros(1, 1, *roi)).shape) == (1, 3, *roi)


def test_roi_follows_the_median_shape_and_the_divisor():
    candidates = roi_candidates([300, 300, 40], [32, 32, 32], [64, 64, 64])
    assert candidates[0] == [256, 256, 64]  # capped at 256 per side and at the median shape rounded up (64)
    assert all(r[0] == r[1] and r[2] == 64 and r[0] % 32 == 0 for r in candidates)
    roi, trials = fit_roi(candidates, lambda r: {**_linear_memory(None, None, r), "fits": np.prod(r) / 1e6 <= 1.5})
    assert roi == [128, 128, 64] and len(trials) <= 4  # 1.05 M voxels fit, 160 x 160 x 64 (1.6 M) does not
    with pytest.raises(PlanError, match=r"the smallest roi \[64, 64, 64\] needs 0.26 GB .* raise --memory-gb"):
        fit_roi(candidates, lambda r: {**_linear_memory(None, None, r), "fits": False})


def test_anisotropic_ct_plan(tmp_path):
    spacings = [(0.7, 0.7, 5.0)] * 3 + [(0.7, 0.7, 2.5)]
    root = _dataset(tmp_path / "ct", spacings, shape=(64, 64, 12), modality="ct")
    fp = fingerprint_dataset(root, workers=0, progress=False)
    assert fp["modality"] == "CT" and fp["num_cases"] == 4 and not fp["failed"]
    plan = make_plan(fp, "aniso-ct", memory_gb=0.5, measure=_linear_memory)
    entry = plan["entry"]
    assert entry["target_spacing"] == [0.7, 0.7, 3.25]  # 10th percentile of 2.5, 5, 5, 5: 2.5 + 0.3 x 2.5
    # median extent 64 x 0.7 = 44.8 mm in x, y -> 64 voxels; z 12 x 5 = 60 mm -> 18 voxels at 3.25 mm
    assert plan["decisions"][2]["value"] == [64, 64, 18]
    assert entry["roi_size"] == [64, 64, 32]  # the smallest the 5-level model takes (32^3 leaves a 1^3 bottleneck)
    norm = entry["normalization"]
    stats = [c["channels"][0] for c in fp["cases"]]
    assert norm["type"] == "ct" and norm["a_min"] == pytest.approx(np.median([s["p0.5"] for s in stats]), abs=0.01)
    mean = np.mean([s["mean"] for s in stats])
    std = np.sqrt(np.mean([s["std"] ** 2 for s in stats]))
    assert norm["b_max"] == pytest.approx((norm["a_max"] - mean) / std, abs=1e-3)


def test_the_demo_dataset_is_planned_as_the_demo_trains_it(tmp_path):
    from medswin.data.demo import build_mni_tissue
    from medswin.data.spec import load_dataset_specs

    data = build_mni_tissue(tmp_path)["2mm"]
    fp = fingerprint_dataset(data, workers=0, progress=False)
    assert fp["modality"] == "MRI" and fp["labels"] == {"background": 0, "CSF": 1, "GM": 2, "WM": 3}
    # a budget of 0.131 "GB" = 131072 voxels under the linear stand-in: the demo's 64 x 64 x 32 patch
    plan = make_plan(fp, "mni", memory_gb=0.131072, measure=_linear_memory)
    demo = load_dataset_specs()["mni-tissue"]
    assert plan["entry"]["roi_size"] == list(demo.roi_size) == [64, 64, 32]
    assert plan["entry"]["target_spacing"] == list(demo.target_spacing)
    assert plan["entry"]["normalization"] == demo.normalization
    assert plan["entry"]["channel_names"] == ["T1"]


def test_mri_plan_normalisation_labels_and_a_corrupt_case(tmp_path):
    root = _dataset(tmp_path / "mri", [(1.0, 1.0, 1.0)] * 2, corrupt=1)
    fp = fingerprint_dataset(root, workers=2, progress=False)  # worker processes
    assert [f["case"] for f in fp["failed"]] == ["broken_0"] and fp["failed"][0]["error"]
    assert len(fp["cases"]) == 2 and fp["modality"] == "MRI"
    assert fp["labels"] == {"background": 0, "label_1": 1, "label_2": 2}
    fractions = fp["cases"][0]["class_fractions"]
    assert sum(fractions.values()) == pytest.approx(1.0)
    plan = make_plan(fp, "mri", memory_gb=1.0, measure=_linear_memory)
    assert plan["entry"]["normalization"] == {"type": "zscore", "nonzero": True, "channel_wise": True}
    assert plan["entry"]["target_spacing"] == [1.0, 1.0, 1.0]


@pytest.mark.slow
def test_measured_step_fits_the_budget_and_too_small_a_budget_is_one_line(tmp_path):
    root = _dataset(tmp_path / "mri", [(1.0, 1.0, 1.0)] * 2)
    fp = fingerprint_dataset(root, workers=0, progress=False)
    plan = make_plan(fp, "mri", memory_gb=6.0)  # real trial steps in fresh processes
    trial = next(t for t in plan["trials"] if t["roi"] == plan["entry"]["roi_size"])
    assert 0.05 < trial["peak_gb"] <= 6.0 and trial["seconds_per_step"] > 0
    again = measure_step(plan["entry"], "swin_unetr_tiny", plan["entry"]["roi_size"])
    assert again["peak_gb"] <= 6.0 and again["peak_gb"] == pytest.approx(trial["peak_gb"], rel=0.3)
    with pytest.raises(PlanError, match=r"the smallest roi \[64, 64, 32\] needs .* GB .* more than the budget"):
        make_plan(fp, "mri", memory_gb=0.01)


def test_cli_plan_explain_then_train_with_the_plan(capsys, tmp_path):
    root = _dataset(tmp_path / "data", [(1.0, 1.0, 1.5)] * 2, corrupt=1)
    out = tmp_path / "plan"
    argv = ["data", "plan", str(root), "--name", "synth-plan", "--out", str(out), "--memory-gb", "4", "--explain"]
    assert main([*argv, "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "target_spacing: [1.0, 1.0, 1.5]" in printed and "roi_size: [64, 64, 32]" in printed
    assert "1 case(s) could not be read" in printed and "broken_0" in printed
    assert json.loads((out / "fingerprint.json").read_text())["num_cases"] == 3
    entry = yaml.safe_load((out / "datasets.yaml").read_text())["synth-plan"]
    assert entry["roi_size"] == [64, 64, 32] and entry["layout"] == "flat"
    train = ["train", "--plan", str(out), "--epochs", "1", "--iterations-per-epoch", "1", "--val-every", "0"]
    (root / "images" / "broken_0.nii.gz").unlink()  # training reads every case: the broken one goes
    (root / "labels" / "broken_0.nii.gz").unlink()
    assert main([*train, "--out", str(tmp_path / "run"), "--amp", "fp32"]) == 0
    assert (tmp_path / "run" / "checkpoint_last.pt").is_file()
    assert main(["train", "--plan", str(tmp_path)]) == 2
    assert "no train.yaml there" in capsys.readouterr().err
