"""Datalists for every folder layout, k-fold splits, and `medswin data check` reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medswin.cli import main
from medswin.data import DataError
from medswin.data.check import check_dataset
from medswin.data.datalist import build_datalist, detect_layout, kfold_split, to_monai
from medswin.data.io import write_nifti
from medswin.data.spec import get_dataset_spec
from medswin.data.synthetic import make_brats_phantom, make_phantom, write_synthetic_dataset

SHAPE = (24, 20, 16)


def _ct_cases(n=3):
    return [make_phantom(SHAPE, num_classes=3, modality="ct", spacing=(0.8, 0.8, 2.5), seed=i) for i in range(n)]


@pytest.mark.parametrize("layout", ["decathlon", "nnunet", "btcv", "flat"])
def test_single_channel_layouts(tmp_path, layout):
    root = write_synthetic_dataset(tmp_path / layout, layout, _ct_cases(), channel_names=["CT"])
    assert detect_layout(root) == layout
    sections = build_datalist(root)
    items = sections["training"] + sections.get("validation", [])
    assert len(items) == 3
    for it in items:
        assert len(it["image"]) == 1 and it["image"][0].exists() and it["label"].exists()


def test_btcv_without_monai_json(tmp_path):
    root = write_synthetic_dataset(tmp_path / "btcv", "btcv", _ct_cases(), btcv_dataset_json=False)
    items = build_datalist(root)["training"]
    assert [it["case"] for it in items] == ["img0001", "img0002", "img0003"]
    assert items[0]["label"].name == "label0001.nii.gz"


def test_btcv_monai_json_keeps_its_split(tmp_path):
    root = write_synthetic_dataset(tmp_path / "btcv", "btcv", _ct_cases())
    sections = build_datalist(root)
    assert len(sections["training"]) == 2 and len(sections["validation"]) == 1


@pytest.mark.parametrize("year,et", [(2021, 4), (2023, 3)])
def test_brats_layouts(tmp_path, year, et):
    cases = [make_brats_phantom((24, 24, 20), enhancing_label=et, seed=i) for i in range(2)]
    root = write_synthetic_dataset(tmp_path / f"brats{year}", "brats", cases, brats_year=year)
    assert detect_layout(root) == "brats"
    spec = get_dataset_spec(f"brats{year}")
    items = build_datalist(root, spec)["training"]
    assert len(items) == 2 and len(items[0]["image"]) == 4
    suffixes = ["_flair", "_t1", "_t1ce", "_t2"] if year == 2021 else ["-t2f", "-t1n", "-t1c", "-t2w"]
    assert [p.name.split(items[0]["case"])[1] for p in items[0]["image"]] == [s + ".nii.gz" for s in suffixes]
    report = check_dataset(root, spec, progress=False)
    assert report.ok, report.text()
    # the 2021 spec rejects 2023 labels (ET = 3) and says so
    if year == 2023:
        wrong = check_dataset(root, get_dataset_spec("brats2021"), layout="brats", progress=False)
        assert not wrong.ok


def test_nnunet_multichannel_and_missing_channel(tmp_path):
    cases = [make_phantom(SHAPE, channels=2, seed=i) for i in range(2)]
    root = write_synthetic_dataset(tmp_path / "nn", "nnunet", cases, channel_names=["T1", "T2"])
    items = build_datalist(root)["training"]
    assert [len(it["image"]) for it in items] == [2, 2]
    (root / "imagesTr" / "case_001_0001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case 'case_001' lacks channel file\(s\) \['case_001_0001.nii.gz'\]"):
        build_datalist(root)


def test_decathlon_multichannel_4d_files(tmp_path):
    cases = [make_phantom(SHAPE, channels=2, seed=i) for i in range(2)]
    root = write_synthetic_dataset(tmp_path / "msd", "decathlon", cases, channel_names=["T1", "T2"])
    d = to_monai(build_datalist(root)["training"])
    assert isinstance(d[0]["image"], str) and d[0]["label"].endswith("labelsTr/case_000.nii.gz")


def test_unknown_layout_is_a_clear_error(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match="cannot tell the dataset layout"):
        detect_layout(tmp_path)


def test_kfold_split_is_seeded_disjoint_and_complete():
    items = [{"case": str(i)} for i in range(11)]
    folds = [kfold_split(items, 5, f, seed=3) for f in range(5)]
    vals = [c["case"] for _, val in folds for c in val]
    assert sorted(vals, key=int) == [str(i) for i in range(11)]  # every case validated exactly once
    for train, val in folds:
        assert not {c["case"] for c in train} & {c["case"] for c in val}
    assert kfold_split(items, 5, 2, seed=3) == folds[2]
    assert kfold_split(items, 5, 2, seed=4) != folds[2]
    with pytest.raises(ValueError, match="fold must be"):
        kfold_split(items, 5, 5)


def _spec_file(tmp_path, name="synth-ct", labels=None):
    spec = {
        name: {
            "description": "synthetic CT",
            "channel_names": ["CT"],
            "labels": labels or {"background": 0, "a": 1, "b": 2},
            "file_ending": ".nii.gz",
            "layout": "decathlon",
            "target_spacing": [1.5, 1.5, 2.0],
            "normalization": {"type": "ct", "a_min": -175, "a_max": 250},
            "roi_size": [32, 32, 32],
            "licence": "synthetic",
            "source": "medswin tests",
        }
    }
    path = tmp_path / "datasets.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_data_check_cli_clean_dataset(tmp_path, capsys):
    root = write_synthetic_dataset(tmp_path / "ok", "decathlon", _ct_cases(2), channel_names=["CT"])
    assert main(["data", "check", str(root), "--dataset", "synth-ct", "--datasets", str(_spec_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "2 case(s) checked" in out and "no problems found" in out and "0.8x0.8x2.5 mm (2)" in out


def test_data_check_reports_every_problem(tmp_path, capsys):
    root = write_synthetic_dataset(tmp_path / "bad", "decathlon", _ct_cases(4), channel_names=["CT"])
    ph = _ct_cases(1)[0]
    # case 0: label with a value outside the spec
    bad_label = ph.label.copy()
    bad_label[0, 0, 0] = 7
    write_nifti(bad_label, ph.affine, root / "labelsTr" / "case_000.nii.gz")
    # case 1: label on another grid
    write_nifti(ph.label[:, :, :-2], ph.affine, root / "labelsTr" / "case_001.nii.gz")
    # case 2: label missing; case 3: image with NaN
    (root / "labelsTr" / "case_002.nii.gz").unlink()
    img = ph.image[0].copy()
    img[3, 3, 3] = np.nan
    write_nifti(img, ph.affine, root / "imagesTr" / "case_003.nii.gz")
    code = main(["data", "check", str(root), "--dataset", "synth-ct", "--datasets", str(_spec_file(tmp_path))])
    out = capsys.readouterr().out
    assert code == 1
    assert "4 problem(s)" in out
    assert "case_000.nii.gz: label values [7] are not in dataset 'synth-ct' labels [0, 1, 2]" in out
    assert "case_001.nii.gz: label shape (24, 20, 14) does not match image shape (24, 20, 16)" in out
    assert "case_002.nii.gz: label file missing" in out
    assert "case_003.nii.gz: image contains 1 NaN/inf voxel(s)" in out


def test_data_check_channel_files_on_different_grids(tmp_path, capsys):
    cases = [make_phantom(SHAPE, channels=2, seed=0)]
    root = write_synthetic_dataset(tmp_path / "nn", "nnunet", cases, channel_names=["T1", "T2"])
    write_nifti(cases[0].image[1][:, :, :-1], cases[0].affine, root / "imagesTr" / "case_000_0001.nii.gz")
    spec = get_dataset_spec("msd_task01_braintumour")  # declares the Decathlon layout
    report = check_dataset(root, spec, progress=False)
    assert report.problems == [
        f"{root}: does not fit the decathlon layout declared by dataset 'msd_task01_braintumour' (dataset.json has "
        "no 'training' list); it looks like the nnunet layout: fix the layout or the folder"
    ]
    report = check_dataset(root, spec, layout="nnunet", progress=False)  # --layout nnunet
    assert any("case_000_0001.nii.gz: channel file is on a different grid" in p for p in report.problems)
