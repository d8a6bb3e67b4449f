"""The real demo dataset built from the MNI ICBM152 2009a template in the nilearn wheel."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from medswin.cli import main
from medswin.data import DataError
from medswin.data import demo as demo_module
from medswin.data.check import check_dataset
from medswin.data.io import load_volume
from medswin.data.spec import get_dataset_spec

# documented in README "Datasets" (deterministic: derived from the template files)
EXPECTED = {
    "1mm": {
        "training": ([197, 233, 114], [3688709, 124516, 901872, 517617]),
        "test": ([197, 233, 75], [3100041, 35598, 189016, 117920]),
    },
    "2mm": {
        "training": ([99, 117, 57], [468167, 15174, 113572, 63318]),
        "test": ([99, 117, 38], [396351, 4063, 24604, 15136]),
    },
}


@pytest.fixture(scope="module")
def mni(tmp_path_factory):
    out = tmp_path_factory.mktemp("mni")
    assert main(["data", "prepare", "mni-tissue", str(out)]) == 0
    return out


@pytest.mark.parametrize("res", ["1mm", "2mm"])
def test_shapes_label_counts_and_world_alignment(mni, res):
    folder = mni / f"mni-tissue-{res}"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "CSF", "2": "GM", "3": "WM"}
    assert meta["split_world_z_mm"] == 42.0
    for section, sub, name in (("training", "Tr", "mni_inferior"), ("test", "Ts", "mni_superior")):
        shape, counts = EXPECTED[res][section]
        label = load_volume(folder / f"labels{sub}" / f"{name}.nii.gz")
        image = load_volume(folder / f"images{sub}" / f"{name}.nii.gz")
        assert list(label.spatial_shape) == shape == list(image.spatial_shape)
        assert np.bincount(label.array.ravel().astype(int), minlength=4).tolist() == counts
        np.testing.assert_allclose(label.affine, image.affine)
    # the slabs meet at z = 42 mm: test slab starts one voxel above the last training slice
    train = load_volume(folder / "labelsTr" / "mni_inferior.nii.gz")
    test = load_volume(folder / "labelsTs" / "mni_superior.nii.gz")
    step = train.spacing[2]
    assert test.world([0, 0, 0])[2] == pytest.approx(train.world([0, 0, train.spatial_shape[2] - 1])[2] + step)
    assert test.world([0, 0, 0])[2] == pytest.approx(42.0)


def test_labels_follow_tissue_intensity_and_licence_is_kept(mni):
    folder = mni / "mni-tissue-1mm"
    image = load_volume(folder / "imagesTr" / "mni_inferior.nii.gz").array[0]
    label = load_volume(folder / "labelsTr" / "mni_inferior.nii.gz").array[0]
    means = [image[label == k].mean() for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]  # T1: CSF dark, GM grey, WM bright
    assert "Copyright (C) 1993-2009 Louis Collins" in (folder / "LICENSE-MNI.txt").read_text()


def test_prepared_dataset_passes_the_integrity_check(mni):
    report = check_dataset(mni / "mni-tissue-2mm", get_dataset_spec("mni-tissue"), progress=False)
    assert report.ok and report.cases == 2, report.text()


def test_missing_nilearn_gives_the_install_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(demo_module.importlib.util, "find_spec", lambda name: None if name == "nilearn" else real(name))
    with pytest.raises(DataError, match=r"pip install 'medswin\[demo\]'"):
        demo_module.build_mni_tissue(tmp_path)
