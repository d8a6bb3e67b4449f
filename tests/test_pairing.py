"""Pairing predictions with ground truth in every built-in layout: by case id, by the layout's naming key
(BTCV ``img`` / ``label``, Swin-X2S ``_labels``, BraTS ``-seg``), and with ``--gt`` a dataset folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medswin.cli import main
from medswin.data.errors import DataError
from medswin.data.io import write_nifti
from medswin.evaluation import match_cases
from medswin.evaluation.metrics import pairing_key

LABEL = np.zeros((8, 8, 8), np.uint8)
LABEL[2:6, 2:6, 2:6] = 1


def _write(path):
    write_nifti(LABEL, np.eye(4), path)
    return path


def _pairs(pred_dir, gt_dir):
    return [(case, p.name, g.name) for case, p, g in match_cases(pred_dir, gt_dir)]


def test_pairing_keys():
    assert pairing_key("img0061") == pairing_key("label0061") == "0061"
    assert pairing_key("case_7_labels") == "case_7" and pairing_key("BraTS-GLI-00001-000-seg") == "BraTS-GLI-00001-000"
    assert pairing_key("liver_3") == "liver_3" and pairing_key("_labels") == "_labels"


def test_btcv_label_folder_and_dataset_folder(tmp_path):
    for n in ("0061", "0062"):
        _write(tmp_path / "preds" / f"img{n}.nii.gz")
        _write(tmp_path / "labelsTs" / f"label{n}.nii.gz")
        _write(tmp_path / "btcv" / "RawData" / "Training" / "img" / f"img{n}.nii.gz")
        _write(tmp_path / "btcv" / "RawData" / "Training" / "label" / f"label{n}.nii.gz")
    assert _pairs(tmp_path / "preds", tmp_path / "labelsTs") == [
        ("label0061", "img0061.nii.gz", "label0061.nii.gz"),
        ("label0062", "img0062.nii.gz", "label0062.nii.gz"),
    ]
    assert [c for c, _, _ in _pairs(tmp_path / "preds", tmp_path / "btcv")] == ["img0061", "img0062"]


def test_nnunet_decathlon_flat_brats_and_biplanar(tmp_path):
    for case in ("liver_1", "liver_2"):  # nnU-Net labelsTs: same names
        _write(tmp_path / "nn_preds" / f"{case}.nii.gz")
        _write(tmp_path / "nnunet" / "labelsTs" / f"{case}.nii.gz")
    assert [c for c, _, _ in _pairs(tmp_path / "nn_preds", tmp_path / "nnunet" / "labelsTs")] == ["liver_1", "liver_2"]

    decathlon = tmp_path / "Task03_Liver"  # a Decathlon dataset folder as --gt
    for case in ("liver_1", "liver_2"):
        _write(decathlon / "imagesTr" / f"{case}.nii.gz")
        _write(decathlon / "labelsTr" / f"{case}.nii.gz")
    meta = {"labels": {"0": "background", "1": "liver"}, "modality": {"0": "CT"}}
    meta["training"] = [
        {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ("liver_1", "liver_2")
    ]
    (decathlon / "dataset.json").write_text(json.dumps(meta))
    assert [c for c, _, _ in _pairs(tmp_path / "nn_preds", decathlon)] == ["liver_1", "liver_2"]

    flat = tmp_path / "flat"
    for case in ("liver_1", "liver_2"):
        _write(flat / "images" / f"{case}.nii.gz")
        _write(flat / "labels" / f"{case}.nii.gz")
    assert [c for c, _, _ in _pairs(tmp_path / "nn_preds", flat)] == ["liver_1", "liver_2"]

    brats = tmp_path / "brats"  # case folders, -seg label files
    for case in ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000"):
        for suffix in ("-t2f", "-t1n", "-t1c", "-t2w", "-seg"):
            _write(brats / case / f"{case}{suffix}.nii.gz")
        _write(tmp_path / "brats_preds" / f"{case}.nii.gz")
    pairs = _pairs(tmp_path / "brats_preds", brats)
    assert [(c, g) for c, _, g in pairs] == [
        ("BraTS-GLI-00001-000", "BraTS-GLI-00001-000-seg.nii.gz"),
        ("BraTS-GLI-00002-000", "BraTS-GLI-00002-000-seg.nii.gz"),
    ]
    for case in ("spine_1", "spine_2"):  # Swin-X2S predictions {case}_labels
        _write(tmp_path / "x2s_preds" / f"{case}_labels.nii.gz")
        _write(tmp_path / "x2s" / "labelsTs" / f"{case}.nii.gz")
    assert _pairs(tmp_path / "x2s_preds", tmp_path / "x2s" / "labelsTs")[0] == (
        "spine_1",
        "spine_1_labels.nii.gz",
        "spine_1.nii.gz",
    )


def test_a_missing_prediction_is_still_named(tmp_path):
    _write(tmp_path / "preds" / "img0061.nii.gz")
    for n in ("0061", "0062"):
        _write(tmp_path / "labelsTs" / f"label{n}.nii.gz")
    with pytest.raises(DataError, match="no prediction for 1 of 2 ground-truth case"):
        match_cases(tmp_path / "preds", tmp_path / "labelsTs")


def test_cli_evaluate_btcv_names_from_the_readme(capsys, tmp_path):
    for n in ("0061", "0062"):
        _write(tmp_path / "preds" / f"img{n}.nii.gz")
        _write(tmp_path / "labelsTs" / f"label{n}.nii.gz")
    argv = ["evaluate", "--pred", str(tmp_path / "preds"), "--gt", str(tmp_path / "labelsTs"), "--dataset", "btcv"]
    assert main([*argv, "--out", str(tmp_path / "report")]) == 0
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["num_cases"] == 2 and summary["per_class"]["spleen"]["dice"]["mean"] == 1.0
    capsys.readouterr()
