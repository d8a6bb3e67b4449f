"""Evaluation metrics and reports: hand-made shapes with known values, MONAI as the independent
reference, every empty-mask convention, BraTS regions, file matching and the written report."""

from __future__ import annotations

import csv
import json
import logging
import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice
from scipy import ndimage

from medswin.data import DataError
from medswin.data.io import write_nifti
from medswin.data.spec import get_dataset_spec
from medswin.data.synthetic import make_phantom
from medswin.evaluation import (
    BRATS_EMPTY_HD95,
    binary_metrics,
    case_metrics,
    evaluate_pairs,
    markdown_table,
    match_cases,
    summarize,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRICS = ("dice", "hd95", "nsd", "volume_pred_ml", "volume_gt_ml", "volume_diff_ml", "centroid_error_mm", "identified")


def box(shape, lo, hi) -> np.ndarray:
    """Boolean mask of ``shape`` with the box ``lo <= index < hi`` set."""
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return mask


def ball(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape).astype(np.float64)
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def blob(shape, seed: int, level: float = 0.05) -> np.ndarray:
    """Random smooth blob(s), possibly touching the image border."""
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=shape), 2.0) > level


def monai_metrics(pred: np.ndarray, gt: np.ndarray, spacing, tolerance: float) -> dict[str, float]:
    """MONAI's Dice, HD95 and NSD of one binary pair (one-hot with a background channel, which is dropped)."""
    p = torch.from_numpy(np.stack([~pred, pred])[None].astype(np.float32))
    g = torch.from_numpy(np.stack([~gt, gt])[None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": compute_dice(p, g, include_background=False).item(),
            "hd95": compute_hausdorff_distance(p, g, percentile=95, spacing=list(spacing)).item(),
            "nsd": compute_surface_dice(p, g, [tolerance], spacing=list(spacing)).item(),
        }


# ------------------------------------------------------------------ known values


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5, 6, 8])
def test_cubes_offset_by_k_voxels_dice_by_hand(k):
    shape, side, spacing = (24, 12, 12), 6, (0.8, 1.0, 1.5)
    gt = box(shape, (2, 3, 3), (2 + side, 3 + side, 3 + side))
    pred = box(shape, (2 + k, 3, 3), (2 + k + side, 3 + side, 3 + side))
    m = binary_metrics(pred, gt, spacing)
    overlap = max(side - k, 0) * side * side
    assert m["dice"] == pytest.approx(2 * overlap / (2 * side**3), abs=1e-12)
    voxel_ml = 0.8 * 1.0 * 1.5 / 1000
    assert m["volume_pred_ml"] == pytest.approx(side**3 * voxel_ml)
    assert m["volume_gt_ml"] == pytest.approx(side**3 * voxel_ml)
    assert m["volume_diff_ml"] == pytest.approx(0.0, abs=1e-12)
    if k == 0:
        assert m["hd95"] == 0.0 and m["nsd"] == 1.0
    elif k == 1:  # 0.8 mm shift along x: every surface voxel within the 1 mm tolerance
        assert m["hd95"] == 0.8 and m["nsd"] == 1.0
    else:
        assert m["hd95"] >= 1.0 and m["nsd"] < 1.0
    ref = monai_metrics(pred, gt, spacing, 1.0)
    for key in ("dice", "hd95", "nsd"):
        assert m[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-6), key


def test_parallel_sheets_every_surface_distance_is_the_gap():
    """One-voxel-thick sheets are all surface: every distance is ``k * spacing_z`` in both directions."""
    shape, spacing = (10, 10, 12), (0.7, 1.3, 2.5)
    gt = box(shape, (2, 2, 3), (8, 8, 4))
    for k, tolerance, nsd in ((2, 5.0, 1.0), (2, 4.9, 0.0), (3, 8.0, 1.0)):
        pred = box(shape, (2, 2, 3 + k), (8, 8, 4 + k))
        m = binary_metrics(pred, gt, spacing, nsd_tolerance_mm=tolerance)
        assert m["hd95"] == pytest.approx(k * 2.5, rel=1e-6)
        assert m["dice"] == 0.0
        assert m["nsd"] == nsd


def test_concentric_cubes_anisotropic_hd95_equals_the_known_distance():
    """Outer box = inner box grown by (4, 2, 1) voxels at spacing (0.5, 1, 2): a 2 mm gap on every face.

    Inner surface -> outer surface: exactly 2 mm everywhere.  Outer surface voxel ``q`` -> inner
    surface: the inner box's nearest point is ``q`` clamped into it, so the distance is
    ``|(q - clamp(q)) * spacing|``.  HD95 is the larger of the two directed 95th percentiles.
    """
    spacing = np.array([0.5, 1.0, 2.0])
    margin = np.array([4, 2, 1])
    lo_in, hi_in = np.array([6, 4, 3]), np.array([14, 9, 7])  # inclusive index ranges
    lo_out, hi_out = lo_in - margin, hi_in + margin
    shape = tuple(int(v) for v in hi_out + 3)
    inner = box(shape, lo_in, hi_in + 1)
    outer = box(shape, lo_out, hi_out + 1)

    q = np.argwhere(outer)
    on_shell = np.any((q == lo_out) | (q == hi_out), axis=1)
    q = q[on_shell]
    outer_to_inner = np.linalg.norm((q - np.clip(q, lo_in, hi_in)) * spacing, axis=1)
    expected = max(float(np.percentile(outer_to_inner, 95)), 2.0)

    assert expected > 2.0  # the corners matter: the directed inner -> outer 2 mm alone is not HD95
    for pred, gt in ((inner, outer), (outer, inner)):  # symmetric
        assert binary_metrics(pred, gt, tuple(spacing))["hd95"] == pytest.approx(expected, rel=1e-6)
    # NSD: below the 2 mm gap no surface voxel is within tolerance; at 2 mm every inner one is
    assert binary_metrics(inner, outer, tuple(spacing), nsd_tolerance_mm=1.99)["nsd"] == 0.0
    n_inner = int(np.count_nonzero(inner & ~ndimage.binary_erosion(inner)))
    n_outer_ok = int(np.count_nonzero(outer_to_inner <= 2.0))
    m = binary_metrics(inner, outer, tuple(spacing), nsd_tolerance_mm=2.0)
    assert m["nsd"] == pytest.approx((n_inner + n_outer_ok) / (n_inner + len(q)), abs=1e-12)
    ref = monai_metrics(inner, outer, spacing, 2.0)
    assert m["hd95"] == pytest.approx(ref["hd95"], rel=1e-6, abs=1e-6)
    assert m["nsd"] == pytest.approx(ref["nsd"], abs=1e-6)


def test_concentric_spheres():
    shape, centre = (24, 24, 24), (11.5, 12.0, 11.0)
    small, big = ball(shape, centre, 5.0), ball(shape, centre, 7.0)
    m = binary_metrics(small, big, (1.0, 1.0, 1.0), nsd_tolerance_mm=1.0)
    n_small, n_big = int(small.sum()), int(big.sum())
    assert m["dice"] == pytest.approx(2 * n_small / (n_small + n_big), abs=1e-12)
    assert 1.0 <= m["hd95"] <= 3.0  # radii differ by 2 voxels
    assert m["volume_diff_ml"] == pytest.approx((n_small - n_big) / 1000)
    ref = monai_metrics(small, big, (1.0, 1.0, 1.0), 1.0)
    for key in ("dice", "hd95", "nsd"):
        assert m[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-6), key
    same = binary_metrics(small, small.copy(), (1.0, 1.0, 1.0))
    assert (same["dice"], same["hd95"], same["nsd"]) == (1.0, 0.0, 1.0)


@pytest.mark.parametrize(
    "seed, shape, spacing, tolerance",
    [
        (0, (20, 18, 14), (0.7, 1.3, 2.1), 1.0),
        (1, (20, 18, 14), (0.6, 0.8, 1.0), 1.5),
        (2, (16, 22, 12), (1.0, 1.0, 3.0), 2.0),
        (3, (18, 18, 18), (0.5, 0.5, 0.5), 0.5),
        (4, (24, 12, 10), (1.25, 0.9, 2.5), 2.5),
        (5, (12, 30, 8), (2.0, 0.75, 1.2), 1.2),
    ],
)
def test_random_blobs_agree_with_monai(seed, shape, spacing, tolerance):
    pred, gt = blob(shape, 2 * seed), blob(shape, 2 * seed + 1)
    assert pred.any() and gt.any()
    m = binary_metrics(pred, gt, spacing, nsd_tolerance_mm=tolerance)
    ref = monai_metrics(pred, gt, spacing, tolerance)
    for key in ("dice", "hd95", "nsd"):
        assert m[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-6), key
    assert 0.0 < m["nsd"] < 1.0 and m["hd95"] > 0.0


def test_non_boolean_masks_and_bad_arguments():
    gt = box((8, 8, 8), (2, 2, 2), (6, 6, 6))
    as_int = binary_metrics(gt.astype(np.uint8) * 3, gt, (1, 1, 1))
    assert as_int["dice"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(gt[:4], gt, (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(gt, gt, (1, 1))
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(gt, gt, (1, 0, 1))
    with pytest.raises(ValueError, match="nsd_tolerance_mm"):
        binary_metrics(gt, gt, (1, 1, 1), nsd_tolerance_mm=-1)


# ------------------------------------------------------------------ empty masks


def test_both_empty():
    empty = np.zeros((6, 7, 8), dtype=bool)
    for brats in (False, True):
        m = binary_metrics(empty, empty, (1.0, 2.0, 3.0), brats=brats)
        assert math.isnan(m.pop("centroid_error_mm")) and math.isnan(m.pop("identified"))
        assert m == {"dice": 1.0, "hd95": 0.0, "nsd": 1.0, **dict.fromkeys(METRICS[3:6], 0.0)}


@pytest.mark.parametrize("side", ["pred_only", "gt_only"])
def test_exactly_one_empty(side):
    shape, spacing = (10, 20, 30), (1.0, 0.5, 2.0)
    empty, full = np.zeros(shape, dtype=bool), box(shape, (2, 2, 2), (5, 6, 7))
    pred, gt = (full, empty) if side == "pred_only" else (empty, full)
    m = binary_metrics(pred, gt, spacing)
    assert m["dice"] == 0.0 and m["nsd"] == 0.0
    assert m["hd95"] == pytest.approx(math.sqrt(10**2 + 10**2 + 60**2))  # image diagonal in mm
    volume = 3 * 4 * 5 * 1.0 * 0.5 * 2.0 / 1000
    assert m["volume_pred_ml"] == pytest.approx(volume if side == "pred_only" else 0.0)
    assert m["volume_gt_ml"] == pytest.approx(0.0 if side == "pred_only" else volume)
    assert m["volume_diff_ml"] == pytest.approx(volume if side == "pred_only" else -volume)
    b = binary_metrics(pred, gt, spacing, brats=True)
    assert b["hd95"] == BRATS_EMPTY_HD95 == 373.13
    assert b["dice"] == 0.0 and b["nsd"] == 0.0


# ------------------------------------------------------------------ classes and BraTS regions


def brats_labels(et: int) -> np.ndarray:
    """Edema 2 (big box), necrosis 1 and enhancing ``et`` inside it."""
    labels = np.zeros((16, 16, 16), dtype=np.int64)
    labels[2:14, 2:14, 2:14] = 2
    labels[5:11, 5:11, 5:8] = 1
    labels[5:11, 5:11, 8:11] = et
    return labels


@pytest.mark.parametrize("dataset, et", [("brats2021", 4), ("brats2023", 3)])
def test_brats_regions_masks(dataset, et):
    spec = get_dataset_spec(dataset)
    gt = brats_labels(et)
    counts = {v: int(np.count_nonzero(gt == v)) for v in (1, 2, et)}
    scores = case_metrics(gt, gt, (1, 1, 1), regions=spec.regions, brats=True)
    assert list(scores) == ["TC", "WT", "ET"]
    assert scores["ET"]["volume_gt_ml"] == pytest.approx(counts[et] / 1000)
    assert scores["TC"]["volume_gt_ml"] == pytest.approx((counts[1] + counts[et]) / 1000)
    assert scores["WT"]["volume_gt_ml"] == pytest.approx((counts[1] + counts[2] + counts[et]) / 1000)
    # enhancing relabelled as necrosis: TC and WT unchanged, ET missed entirely
    pred = np.where(gt == et, 1, gt)
    scores = case_metrics(pred, gt, (1, 1, 1), regions=spec.regions, brats=True)
    assert scores["TC"]["dice"] == 1.0 and scores["WT"]["dice"] == 1.0
    assert scores["ET"]["dice"] == 0.0 and scores["ET"]["hd95"] == 373.13
    # enhancing relabelled as edema: WT unchanged, TC loses the enhancing part
    pred = np.where(gt == et, 2, gt)
    scores = case_metrics(pred, gt, (1, 1, 1), regions=spec.regions)
    assert scores["WT"]["dice"] == 1.0
    assert scores["TC"]["dice"] == pytest.approx(2 * counts[1] / (counts[1] + counts[1] + counts[et]))


def test_brats2021_regions_ignore_label_3():
    """Label 3 is not part of any 2021 region (ET is 4 there)."""
    spec = get_dataset_spec("brats2021")
    gt = brats_labels(4)
    scores = case_metrics(np.where(gt == 4, 3, gt), gt, (1, 1, 1), regions=spec.regions)
    assert scores["ET"]["volume_pred_ml"] == 0.0
    assert scores["WT"]["dice"] < 1.0


def test_case_metrics_per_class_excludes_background():
    gt = brats_labels(3)
    pred = gt.copy()
    pred[2:4] = 0
    scores = case_metrics(pred, gt, (1, 1, 1), classes={"background": 0, "a": 1, "b": 2, "c": 3})
    assert list(scores) == ["a", "b", "c"]
    assert scores["a"]["dice"] == 1.0 and scores["b"]["dice"] < 1.0
    found = case_metrics(pred, gt, (1, 1, 1))
    assert list(found) == ["1", "2", "3"]
    assert found["2"] == scores["b"]


# ------------------------------------------------------------------ files


def write_cases(folder, arrays: dict[str, np.ndarray], affine, ending=".nii.gz"):
    paths = {}
    for case, array in arrays.items():
        paths[case] = write_nifti(array, affine, folder / f"{case}{ending}")
    return paths


@pytest.fixture
def tissue_cases(tmp_path):
    """Three mni-tissue cases (labels 0..3) on an anisotropic grid; predictions degraded differently."""
    spec = get_dataset_spec("mni-tissue")
    affine = np.diag([1.2, 1.0, 2.0, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 3.0)
    gts, preds, images = {}, {}, {}
    for i in range(3):
        case = f"case_{i:03d}"
        phantom = make_phantom((20, 18, 14), num_classes=4, spacing=(1.2, 1.0, 2.0), noise=0.05, seed=i)
        gts[case] = phantom.label
        pred = phantom.label.copy()
        pred[: 2 + 3 * i] = 0  # a slab of the prediction lost, thicker in later cases
        preds[case] = pred
        images[case] = write_nifti(phantom.image[0], affine, tmp_path / "images" / f"{case}.nii.gz")
    write_cases(tmp_path / "gt", gts, affine)
    write_cases(tmp_path / "pred", preds, affine)
    return spec, tmp_path, gts, preds, images, affine


def test_match_and_evaluate_pairs(tissue_cases, caplog):
    spec, root, gts, preds, _, affine = tissue_cases
    write_nifti(gts["case_000"], affine, root / "pred" / "extra_case.nii.gz")  # no truth: ignored
    (root / "pred" / "plans.json").write_text("{}")
    (root / "pred" / ".tmp-abc.nii.gz").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="medswin.evaluation"):
        pairs = match_cases(root / "pred", root / "gt")
    assert [case for case, _, _ in pairs] == ["case_000", "case_001", "case_002"]
    assert all(p.parent == root / "pred" and g.parent == root / "gt" and p.name == g.name for _, p, g in pairs)
    assert "extra_case.nii.gz" in caplog.text
    rows = evaluate_pairs(pairs, spec, nsd_tolerance_mm=2.0)
    assert len(rows) == 3 * 3
    assert [r["class"] for r in rows[:3]] == ["CSF", "GM", "WM"]
    for row in rows:
        direct = case_metrics(
            preds[row["case"]],
            gts[row["case"]],
            (1.2, 1.0, 2.0),
            classes={row["class"]: spec.labels[row["class"]]},
            nsd_tolerance_mm=2.0,
        )
        for key in METRICS:
            # the files' spacing is the NIfTI header's float32 (1.2000000476837158, not 1.2)
            assert row[key] == pytest.approx(direct[row["class"]][key], rel=1e-6, abs=1e-12), key


def test_match_cases_ignores_image_suffixes_and_mixed_endings(tmp_path):
    label = box((6, 6, 6), (1, 1, 1), (4, 4, 4)).astype(np.uint8)
    write_nifti(label, np.eye(4), tmp_path / "gt" / "liver_7.nii")
    write_nifti(label, np.eye(4), tmp_path / "pred" / "liver_7.nii.gz")
    assert [c for c, _, _ in match_cases(tmp_path / "pred", tmp_path / "gt")] == ["liver_7"]
    # an nnU-Net image-style name does not stand in for the label's prediction
    write_nifti(label, np.eye(4), tmp_path / "gt" / "liver_8.nii.gz")
    write_nifti(label, np.eye(4), tmp_path / "pred" / "liver_8_0000.nii.gz")
    with pytest.raises(DataError, match=r"liver_8\.nii\.gz.*found liver_8_0000\* instead"):
        match_cases(tmp_path / "pred", tmp_path / "gt")


def test_missing_prediction_names_the_file(tissue_cases):
    _, root, *_ = tissue_cases
    (root / "pred" / "case_001.nii.gz").unlink()
    with pytest.raises(DataError) as err:
        match_cases(root / "pred", root / "gt")
    assert "case_001.nii.gz" in str(err.value)
    assert err.value.path == str(root / "pred" / "case_001.nii.gz")
    (root / "pred" / "case_002.nii.gz").unlink()
    with pytest.raises(DataError, match=r"2 of 3.*case_001\.nii\.gz.*case_002\.nii\.gz"):
        match_cases(root / "pred", root / "gt")


def test_missing_folders_and_empty_truth(tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    with pytest.raises(DataError, match="not found"):
        match_cases(tmp_path / "nope", tmp_path / "gt")
    with pytest.raises(DataError, match="no ground-truth files"):
        match_cases(tmp_path / "pred", tmp_path / "gt")


def test_grid_mismatch_is_a_data_error(tissue_cases):
    spec, root, gts, preds, _, affine = tissue_cases
    write_nifti(preds["case_001"][:, :, :-1], affine, root / "pred" / "case_001.nii.gz")
    shifted = affine.copy()
    shifted[0, 3] += 5.0
    write_nifti(preds["case_002"], shifted, root / "pred" / "case_002.nii.gz")
    pairs = match_cases(root / "pred", root / "gt")
    with pytest.raises(DataError) as err:
        evaluate_pairs(pairs[1:2], spec)
    assert err.value.path == str(root / "pred" / "case_001.nii.gz") and "shape" in str(err.value)
    with pytest.raises(DataError) as err:
        evaluate_pairs(pairs[2:], spec)
    assert err.value.path == str(root / "pred" / "case_002.nii.gz") and "affine" in str(err.value)


def test_bad_prediction_values_and_unreadable_file(tissue_cases):
    spec, root, gts, preds, _, affine = tissue_cases
    write_nifti(np.where(preds["case_000"] == 3, 7, preds["case_000"]), affine, root / "pred" / "case_000.nii.gz")
    (root / "pred" / "case_001.nii.gz").write_bytes(b"not a nifti")
    pairs = match_cases(root / "pred", root / "gt")
    with pytest.raises(DataError, match=r"case_000\.nii\.gz.*\[7\]"):
        evaluate_pairs(pairs[:1], spec)
    with pytest.raises(DataError, match=r"case_001\.nii\.gz"):
        evaluate_pairs(pairs[1:2], spec)


def test_evaluate_pairs_brats_defaults_to_challenge_conventions(tmp_path):
    spec = get_dataset_spec("brats2023")
    gt = brats_labels(3)
    write_nifti(gt, np.eye(4), tmp_path / "gt" / "BraTS-GLI-00000-000.nii.gz")
    write_nifti(np.where(gt == 3, 1, gt), np.eye(4), tmp_path / "pred" / "BraTS-GLI-00000-000.nii.gz")
    pairs = match_cases(tmp_path / "pred", tmp_path / "gt")
    rows = evaluate_pairs(pairs, spec)
    assert [r["class"] for r in rows] == ["TC", "WT", "ET"]
    assert rows[2]["hd95"] == 373.13 and rows[0]["dice"] == 1.0
    diagonal = math.sqrt(3 * 16**2)
    assert evaluate_pairs(pairs, spec, brats=False)[2]["hd95"] == pytest.approx(diagonal)


# ------------------------------------------------------------------ report


def test_summarize_btcv_means_over_the_13_organs():
    spec = get_dataset_spec("btcv")
    organs = [n for n in sorted(spec.labels, key=spec.labels.__getitem__) if spec.labels[n] != 0]
    assert len(organs) == 13
    rng = np.random.default_rng(0)
    rows = [
        {
            "case": f"c{c}",
            "class": organ,
            "dice": float(rng.uniform()),
            "hd95": float(rng.uniform(0, 20)),
            "nsd": float(rng.uniform()),
        }
        for c in range(3)
        for organ in organs
    ]
    summary = summarize(rows, spec)
    json.dumps(summary, allow_nan=False)
    assert summary["classes"] == organs and summary["num_cases"] == 3
    for organ in organs:
        dice = [r["dice"] for r in rows if r["class"] == organ]
        stats = summary["per_class"][organ]["dice"]
        assert stats["mean"] == pytest.approx(np.mean(dice)) and stats["std"] == pytest.approx(np.std(dice))
        assert stats["median"] == pytest.approx(np.median(dice)) and stats["n"] == 3
    assert summary["mean_dice"] == pytest.approx(np.mean([r["dice"] for r in rows]))
    assert summary["mean_hd95"] == pytest.approx(np.mean([r["hd95"] for r in rows]))
    table = markdown_table(summary)
    assert table.splitlines()[0] == "| class | Dice mean ± std | HD95 mean (mm) | NSD mean |"
    assert len(table.splitlines()) == 2 + 13 + 1 and "| **mean** |" in table.splitlines()[-1]
    with pytest.raises(ValueError, match="no evaluation rows"):
        summarize([], spec)


def test_write_report_writes_every_file(tissue_cases, tmp_path):
    spec, root, gts, preds, images, _ = tissue_cases
    rows = evaluate_pairs(match_cases(root / "pred", root / "gt"), spec)
    out = tmp_path / "report"
    paths = write_report(rows, spec, out, images=images)
    expected = {
        "per_case_csv": "per_case.csv",
        "summary_json": "summary.json",
        "summary_md": "summary.md",
        "boxplot_dice": "boxplot_dice.png",
        "overlay_best": "overlay_best.png",
        "overlay_worst": "overlay_worst.png",
    }
    assert {k: p.name for k, p in paths.items()} == expected
    assert all(p.parent == out and p.is_file() for p in paths.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(expected.values())  # no temp files left

    with open(paths["per_case_csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 * 3 == len(rows)
    assert list(table[0]) == ["case", "class", *METRICS]
    pairs = {(f"case_{i:03d}", c) for i in range(3) for c in ("CSF", "GM", "WM")}
    assert {(r["case"], r["class"]) for r in table} == pairs
    for line, row in zip(table, rows):
        assert float(line["dice"]) == row["dice"] and float(line["hd95"]) == row["hd95"]

    summary = json.loads(paths["summary_json"].read_text())
    for name in ("CSF", "GM", "WM"):
        dice = [r["dice"] for r in rows if r["class"] == name]
        assert summary["per_class"][name]["dice"]["mean"] == pytest.approx(np.mean(dice), abs=1e-12)
        assert summary["per_class"][name]["nsd"]["n"] == 3
    assert summary["mean_dice"] == pytest.approx(np.mean([r["dice"] for r in rows]), abs=1e-12)
    assert summary["mean_hd95"] == pytest.approx(np.mean([r["hd95"] for r in rows]), abs=1e-9)

    markdown = paths["summary_md"].read_text()
    assert markdown_table(summary) in markdown and "mni-tissue" in markdown
    for key in ("boxplot_dice", "overlay_best", "overlay_worst"):
        data = paths[key].read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000, key


def test_write_report_without_images_and_overwrites(tissue_cases, tmp_path, caplog):
    spec, root, *_ = tissue_cases
    rows = evaluate_pairs(match_cases(root / "pred", root / "gt"), spec)
    out = tmp_path / "report"
    out.mkdir()
    (out / "summary.json").write_text("old")
    paths = write_report(rows, spec, out)
    assert set(paths) == {"per_case_csv", "summary_json", "summary_md", "boxplot_dice"}
    assert json.loads((out / "summary.json").read_text())["num_cases"] == 3
    with caplog.at_level(logging.WARNING, logger="medswin.evaluation"):
        paths = write_report(rows, spec, out, images={"no_such_case": "unused.nii.gz"})
    assert "overlay_best" not in paths and "no image given" in caplog.text


def test_centroid_error_and_identification_on_known_centroids():
    shape, spacing = (40, 40, 40), (1.0, 2.0, 0.5)
    gt = box(shape, (10, 10, 10), (14, 14, 14))  # centroid voxel (11.5, 11.5, 11.5)
    near = box(shape, (13, 10, 10), (17, 14, 14))  # +3 voxels along x: 3 mm
    far = box(shape, (10, 22, 10), (14, 26, 14))  # +12 voxels along y: 24 mm
    m = binary_metrics(near, gt, spacing)
    assert m["centroid_error_mm"] == pytest.approx(3.0) and m["identified"] == 1.0
    m = binary_metrics(far, gt, spacing)
    assert m["centroid_error_mm"] == pytest.approx(24.0) and m["identified"] == 0.0
    missed = binary_metrics(np.zeros(shape, bool), gt, spacing)
    assert math.isnan(missed["centroid_error_mm"]) and missed["identified"] == 0.0
    spurious = binary_metrics(gt, np.zeros(shape, bool), spacing)
    assert math.isnan(spurious["identified"])  # nothing to identify: left out of the ID rate
    rows = [
        {"case": "a", "class": "v1", **binary_metrics(near, gt, spacing)},
        {"case": "a", "class": "v2", **binary_metrics(far, gt, spacing)},
        {"case": "a", "class": "v3", **missed},
    ]
    spec = get_dataset_spec("mni-tissue")
    summary = summarize(rows, spec)
    id_rate = np.mean([summary["per_class"][c]["identified"]["mean"] for c in ("v1", "v2", "v3")])
    assert id_rate == pytest.approx(1 / 3) and summary["mean_identified"] == pytest.approx(1 / 3)
    assert "ID rate" in markdown_table(summary, centroids=True)
