"""Prediction: back on the input grid (anisotropic, non-RAS, DICOM), mirroring, post-processing, inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
import torch

from medswin.data import DataError
from medswin.data.io import load_volume, write_nifti
from medswin.data.spec import get_dataset_spec, load_dataset_specs
from medswin.data.synthetic import make_phantom
from medswin.data.inputs import resolve_inputs
from medswin.inference import Predictor, predict_logits
from medswin.inference.postprocess import keep_largest_component, regions_to_labels
from medswin.models import create_model

CT5N = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892001" / "CT5N"
NON_RAS = np.array([[0.0, -0.9, 0.0, 10.0], [-0.8, 0.0, 0.0, 20.0], [0.0, 0.0, 3.0, -30.0], [0, 0, 0, 1]])


@pytest.fixture
def spec(synth_dataset):
    return load_dataset_specs([synth_dataset[1]])["synth-ct"]


def _predictor(spec, **kw):
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=spec.out_channels)
    return Predictor(model, spec, roi_size=(64, 64, 32), amp="fp32", **kw)


def test_prediction_lands_on_the_input_grid(tmp_path, spec):
    ph = make_phantom((50, 44, 14), num_classes=3, modality="ct", seed=3)
    path = write_nifti(ph.image[0], NON_RAS, tmp_path / "case.nii.gz")
    out = _predictor(spec).predict_file(path, tmp_path / "seg" / "case.nii.gz")
    seg = load_volume(out)
    assert seg.spatial_shape == (50, 44, 14)
    np.testing.assert_allclose(seg.affine, NON_RAS, atol=1e-5)
    assert set(np.unique(seg.array)) <= {0, 1, 2}


def test_mirroring_averages_the_logits_of_the_eight_flips_of_each_window(spec):
    predictor = _predictor(spec, mirror=True)
    image = torch.randn(1, 1, 64, 64, 32)  # one window: the window's flips are the volume's
    manual = []
    for axes in [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]:
        x = torch.flip(image, axes) if axes else image
        logits = predict_logits(predictor.model, x, (64, 64, 32), amp="fp32")
        manual.append(torch.flip(logits, axes) if axes else logits)
    expected = torch.softmax(torch.stack(manual).mean(0), 1)  # nnU-Net: mean logits, then softmax
    torch.testing.assert_close(predictor.probabilities(image), expected, atol=1e-6, rtol=1e-5)
    plain = _predictor(spec).probabilities(image)
    assert not torch.allclose(plain, predictor.probabilities(image))


@pytest.mark.parametrize("year,et", [(2021, 4), (2023, 3)])
def test_brats_regions_back_to_labels(year, et):
    regions = get_dataset_spec(f"brats{year}").regions  # TC, WT, ET
    probs = torch.zeros(3, 4, 1, 1)
    probs[:, 0] = torch.tensor([0.1, 0.2, 0.1]).view(3, 1, 1)  # nothing
    probs[:, 1] = torch.tensor([0.1, 0.9, 0.1]).view(3, 1, 1)  # WT only -> edema 2
    probs[:, 2] = torch.tensor([0.8, 0.9, 0.2]).view(3, 1, 1)  # TC -> necrosis 1
    probs[:, 3] = torch.tensor([0.8, 0.9, 0.7]).view(3, 1, 1)  # ET -> enhancing
    assert regions_to_labels(probs, regions)[:, 0, 0].tolist() == [0, 2, 1, et]


def test_largest_component_removes_islands():
    labels = torch.zeros(20, 20, 20, dtype=torch.int64)
    labels[2:10, 2:10, 2:10] = 1
    labels[15:17, 15:17, 15:17] = 1  # island
    labels[12:14, 2:4, 2:4] = 2
    out = keep_largest_component(labels)
    assert int((out == 1).sum()) == 512 and int((out == 2).sum()) == 8


def test_roi_and_channel_errors_are_clear(tmp_path, spec):
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=3)
    with pytest.raises(ValueError, match="not a multiple of 32"):
        Predictor(model, spec, roi_size=(48, 48, 48))
    two = write_nifti(np.random.rand(40, 40, 20, 2).astype(np.float32), np.eye(4), tmp_path / "two.nii.gz")
    with pytest.raises(DataError, match=r"two.nii.gz: image has 2 channel\(s\), expected 1 \(CT\)"):
        _predictor(spec).predict(two)
    with pytest.raises(DataError, match="nope.nii.gz: file not found"):
        _predictor(spec).predict(tmp_path / "nope.nii.gz")


def _always_class(model, k):
    with torch.no_grad():
        model.decoder.head.conv.weight.zero_()
        model.decoder.head.conv.bias.fill_(-10.0)
        model.decoder.head.conv.bias[k] = 10.0
    return model


def test_dicom_series_input_to_nifti_and_dicom_seg(tmp_path, spec):
    model = _always_class(create_model("swin_unetr_tiny", in_channels=1, out_channels=3), 1)
    predictor = Predictor(model, spec, roi_size=(64, 64, 32), amp="fp32")
    nifti = load_volume(predictor.predict_file(CT5N, tmp_path / "ct5n.nii.gz"))
    source = load_volume(CT5N)
    assert nifti.spatial_shape == source.spatial_shape == (16, 16, 5)
    np.testing.assert_allclose(nifti.affine, source.affine, atol=1e-4)
    assert (nifti.array == 1).all()
    seg_path = predictor.predict_file(CT5N, tmp_path / "seg" / "ct5n.dcm", fmt="dicom-seg")
    seg = pydicom.dcmread(seg_path)
    assert seg.Modality == "SEG" and seg.SegmentSequence[0].SegmentLabel == "organ"
    source_uid = pydicom.dcmread(next(CT5N.iterdir())).SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source_uid
    with pytest.raises(DataError, match="needs a DICOM series folder"):
        predictor.predict_file(tmp_path / "ct5n.nii.gz", tmp_path / "x.dcm", fmt="dicom-seg")


def test_resolve_inputs_for_every_kind_of_input(tmp_path, synth_dataset):
    data, _ = synth_dataset
    vol = write_nifti(np.ones((8, 8, 8), np.float32), np.eye(4), tmp_path / "one.nii.gz")
    assert resolve_inputs(vol) == [("one", [vol])]
    series = tmp_path / "series"
    shutil.copytree(CT5N, series)
    assert resolve_inputs(series) == [("series", [series])]
    folder = tmp_path / "cases"
    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b.nii.gz"):
        write_nifti(np.ones((8, 8, 8), np.float32), np.eye(4), folder / name)
    cases = resolve_inputs(folder)
    assert [c for c, _ in cases] == ["a", "b"] and len(cases[0][1]) == 2
    assert len(resolve_inputs(data)) == 3  # a Decathlon dataset folder: its training cases
    assert [c for c, _ in resolve_inputs(data / "dataset.json")] == ["case_000", "case_001", "case_002"]
    with pytest.raises(DataError, match="input not found"):
        resolve_inputs(tmp_path / "missing")
