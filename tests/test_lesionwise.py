"""BraTS 2023+ lesion-wise metrics on hand-built cases whose answers are computed by hand: a found lesion, a
missed one and a false positive (Dice 1/3), fragments merged by the dilation, small lesions left out, empty
masks; and ``medswin evaluate --lesion-wise`` writing them to every output."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from medswin.cli import main
from medswin.data.io import write_nifti
from medswin.evaluation import CHALLENGES, lesion_wise_case, lesion_wise_scores

SPACING = (1.0, 1.0, 1.0)


def _cube(mask: np.ndarray, corner: tuple[int, int, int], size: int = 5) -> None:
    x, y, z = corner
    mask[x : x + size, y : y + size, z : z + size] = True


def test_found_missed_and_false_positive_give_one_third():
    gt, pred = np.zeros((40, 40, 40), bool), np.zeros((40, 40, 40), bool)
    _cube(gt, (5, 5, 5))  # 125 mm^3: found exactly
    _cube(pred, (5, 5, 5))
    _cube(gt, (25, 5, 5))  # 125 mm^3: missed
    _cube(pred, (5, 25, 25))  # a false positive far from every lesion
    s = lesion_wise_scores(pred, gt, SPACING, dilation=3, min_volume_mm3=50)
    assert s["lesion_dice"] == pytest.approx(1 / 3)  # (1 + 0) / (2 lesions + 1 false positive)
    assert s["lesion_hd95"] == pytest.approx((0 + 374 + 374) / 3)
    assert (s["lesion_tp"], s["lesion_fn"], s["lesion_fp"]) == (1, 1, 1)


def test_nearby_fragments_are_one_lesion_and_a_partial_match_scores_its_dice():
    gt, pred = np.zeros((40, 40, 40), bool), np.zeros((40, 40, 40), bool)
    _cube(gt, (5, 5, 5))
    _cube(gt, (12, 5, 5))  # 2 voxels away: merged by a dilation of 3, two lesions without one
    _cube(pred, (5, 5, 5))  # finds the first fragment only
    merged = lesion_wise_scores(pred, gt, SPACING, dilation=3, min_volume_mm3=50)
    assert (merged["lesion_tp"], merged["lesion_fn"], merged["lesion_fp"]) == (1, 0, 0)
    assert merged["lesion_dice"] == pytest.approx(2 * 125 / (250 + 125))  # one lesion of 250 voxels, 125 found
    apart = lesion_wise_scores(pred, gt, SPACING, dilation=0, min_volume_mm3=50)
    assert (apart["lesion_tp"], apart["lesion_fn"]) == (1, 1) and apart["lesion_dice"] == pytest.approx(0.5)


def test_small_lesions_are_left_out_and_empty_masks():
    gt, pred = np.zeros((40, 40, 40), bool), np.zeros((40, 40, 40), bool)
    _cube(gt, (5, 5, 5))
    _cube(pred, (5, 5, 5))
    _cube(gt, (25, 25, 25), size=3)  # 27 mm^3 <= 50: not counted, although missed
    s = lesion_wise_scores(pred, gt, SPACING, dilation=3, min_volume_mm3=50)
    assert s["lesion_dice"] == 1.0 and s["lesion_hd95"] == 0.0 and (s["lesion_tp"], s["lesion_fn"]) == (1, 0)
    assert len(s["lesions"]) == 2  # reported, but left out of the score
    # the same small lesion at 2 x 2 x 2 mm voxels is 216 mm^3 > 50: counted, and missed
    s = lesion_wise_scores(pred, gt, (2.0, 2.0, 2.0), dilation=3, min_volume_mm3=50)
    assert s["lesion_fn"] == 1 and s["lesion_dice"] == pytest.approx(0.5)
    empty = np.zeros((20, 20, 20), bool)
    both = lesion_wise_scores(empty, empty, SPACING)
    assert (both["lesion_dice"], both["lesion_hd95"], both["lesion_tp"], both["lesion_fn"], both["lesion_fp"]) == (
        1.0,
        0.0,
        0,
        0,
        0,
    )
    only_pred = empty.copy()
    _cube(only_pred, (2, 2, 2))
    s = lesion_wise_scores(only_pred, empty, SPACING)
    assert (s["lesion_dice"], s["lesion_hd95"], s["lesion_fp"]) == (0.0, 374.0, 1)


def test_regions_and_challenge_parameters():
    assert CHALLENGES["BraTS-GLI"] == (3, 50.0) and CHALLENGES["BraTS-MET"] == (1, 2.0)
    gt = np.zeros((30, 30, 30), np.uint8)
    gt[5:10, 5:10, 5:10] = 2  # edema only: WT, not TC / ET
    gt[6:9, 6:9, 6:9] = 3  # 27 voxels of ET inside: ET and TC lesions below the GLI threshold, above MET's
    scores = lesion_wise_case(gt.copy(), gt, SPACING, {"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)}, "BraTS-GLI")
    assert scores["WT"]["lesion_tp"] == 1 and scores["ET"]["lesion_tp"] == 0  # 27 mm^3 left out under GLI
    met = lesion_wise_case(gt.copy(), gt, SPACING, {"ET": (3,)}, "BraTS-MET")
    assert met["ET"]["lesion_tp"] == 1
    with pytest.raises(ValueError, match="unknown BraTS challenge 'BraTS-XYZ'"):
        lesion_wise_case(gt, gt, SPACING, {"ET": (3,)}, "BraTS-XYZ")


def test_cli_evaluate_lesion_wise_writes_every_output(capsys, tmp_path):
    gt = np.zeros((40, 40, 40), np.uint8)
    pred = np.zeros_like(gt)
    gt[5:10, 5:10, 5:10] = 3  # an enhancing lesion, found
    pred[5:10, 5:10, 5:10] = 3
    gt[25:30, 5:10, 5:10] = 3  # one missed
    pred[5:10, 25:30, 25:30] = 3  # one false positive
    affine = np.eye(4)
    write_nifti(gt, affine, tmp_path / "gt" / "BraTS-GLI-00001-000.nii.gz")
    write_nifti(pred, affine, tmp_path / "pred" / "BraTS-GLI-00001-000.nii.gz")
    out = tmp_path / "report"
    argv = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--dataset", "brats2023"]
    assert main([*argv, "--out", str(out)]) == 0  # default on for brats2023 (BraTS-GLI)
    printed = capsys.readouterr().out
    assert "lesion-wise Dice" in printed and "| 0.3333 |" in printed and "1 / 1 / 1" in printed
    rows = {r["class"]: r for r in csv.DictReader((out / "per_case.csv").open())}
    assert float(rows["ET"]["lesion_dice"]) == pytest.approx(1 / 3) and rows["ET"]["lesion_fp"] == "1"
    assert float(rows["ET"]["dice"]) == pytest.approx(0.5)  # legacy whole-volume Dice: 125 x 2 / (250 + 250)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["per_class"]["ET"]["lesion_dice"]["mean"] == pytest.approx(1 / 3)
    assert summary["per_class"]["ET"]["lesion_fn"]["total"] == 1
    assert "lesion-wise HD95" in (out / "summary.md").read_text()
    assert main([*argv, "--out", str(tmp_path / "legacy"), "--no-lesion-wise"]) == 0
    assert "lesion_dice" not in (tmp_path / "legacy" / "per_case.csv").read_text()
    capsys.readouterr()
    from medswin.data.spec import get_dataset_spec
    from medswin.evaluation import evaluate_pairs

    with pytest.raises(ValueError, match="lesion-wise metrics score BraTS regions; dataset 'btcv' defines none"):
        evaluate_pairs([], get_dataset_spec("btcv"), lesion_wise="BraTS-GLI")
