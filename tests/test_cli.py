"""The ``medswin`` command line: model table, errors, and the demo's outputs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medswin.cli import main
from medswin.data.synthetic import make_phantom


def test_models_table(capsys):
    assert main(["models", "swin_unetr_*"]) == 0
    out = capsys.readouterr().out
    assert "swin_unetr_tiny" in out and "swin_unetr_base" in out and "62.19M" in out


def test_models_json(capsys):
    assert main(["models", "swin_unetr_tiny", "--json", "--out-channels", "14"]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert info["name"] == "swin_unetr_tiny" and info["size_divisor"] == 32


def test_unknown_model_is_one_clear_line(capsys):
    assert main(["demo", "--model", "swin_unetr_nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'swin_unetr_nope'" in err and "Traceback" not in err


def test_bad_roi_is_explained(capsys, tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--size", "64", "64", "64", "--roi", "48", "48", "48"]) == 2
    assert "multiple of 32" in capsys.readouterr().err


def test_phantom_is_seeded_and_labelled():
    a, b = make_phantom((32, 40, 48), num_classes=4, seed=3), make_phantom((32, 40, 48), num_classes=4, seed=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert set(np.unique(a.label)) <= {0, 1, 2, 3} and (a.label > 0).mean() > 0.02
    # class k is brighter than class k-1 on average (the phantom's contrast)
    means = [a.image[0][a.label == k].mean() for k in np.unique(a.label)]
    assert means == sorted(means)


@pytest.mark.slow
def test_demo_writes_labels_on_the_volume_grid(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--size", "96", "64", "64", "--amp", "fp32"]) == 0
    labels = nib.load(tmp_path / "labels.nii.gz")
    phantom = nib.load(tmp_path / "phantom.nii.gz")
    assert labels.shape == (96, 64, 64)
    assert np.allclose(labels.affine, phantom.affine) and np.allclose(labels.header.get_zooms(), (1.5, 1.5, 2.0))
    assert set(np.unique(np.asarray(labels.dataobj))) <= {0, 1, 2}
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["seconds"] > 0 and timing["precision"] == "torch.float32"
    assert not list(tmp_path.glob(".tmp-*"))  # atomic writes leave no temp files
    assert "took" in capsys.readouterr().out
