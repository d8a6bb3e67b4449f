"""DICOM-SEG output (medswin.inference.dicom_seg) on a genuine CT series shipped with pydicom."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

import pydicom.data  # noqa: E402, F811

from medswin.data.errors import DataError  # noqa: E402
from medswin.data.io import inspect_dicom_series, load_volume  # noqa: E402
from medswin.inference.dicom_seg import SEGMENT_CATEGORY, SEGMENT_TYPE, write_dicom_seg  # noqa: E402

CT5N = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892001" / "CT5N"
NAMES = {3: "liver", 7: "spleen", 9: "absent lesion"}  # 9 is named but never predicted
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

pytestmark = pytest.mark.skipif(not CT5N.is_dir(), reason="pydicom test series CT5N not available")


def _labels(shape: tuple[int, int, int]) -> np.ndarray:
    """Two labels placed asymmetrically in X, Y and Z: a flip or a transposition changes the map."""
    lab = np.zeros(shape, dtype=np.uint8)
    lab[1:4, 2:9, 1] = 3  # thin in X, long in Y, one slice near the bottom
    lab[0, 0, 1] = 3  # a corner voxel (i=0, j=0)
    lab[10:15, 3:5, 3:5] = 7  # wide in X, narrow in Y, two slices near the top
    lab[15, 12, 4] = 7
    return lab


@pytest.fixture(scope="module")
def series():
    return inspect_dicom_series(CT5N)


@pytest.fixture(scope="module")
def volume():
    return load_volume(CT5N)


@pytest.fixture(scope="module")
def written(tmp_path_factory, volume):
    labels = _labels(volume.spatial_shape)
    out = tmp_path_factory.mktemp("seg") / "new" / "nested" / "pred.dcm"
    result = write_dicom_seg(labels, CT5N, out, NAMES)
    return labels, out, result


def test_load_volume_grid_matches_series_files(series, volume):
    """The convention write_dicom_seg relies on: volume[..., k] is files[k], transposed (X=columns, Y=rows)."""
    assert volume.spatial_shape == (16, 16, 5)
    positions = []
    for k, path in enumerate(series.files):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert hu.std() > 0  # real image content, so the comparison below means something
        np.testing.assert_array_equal(volume.array[0, :, :, k], hu.T)
        # voxel (0, 0, k) sits at the slice's ImagePositionPatient (LPS -> RAS)
        ipp = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
        np.testing.assert_allclose(volume.world([0, 0, k]), LPS_TO_RAS @ ipp, atol=1e-3)
        # +i along the row direction (first half of ImageOrientationPatient), +j along the column direction
        iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        # PixelSpacing = (between rows, between columns)
        row_step, column_step = (float(s) for s in ds.PixelSpacing)
        origin = volume.world([0, 0, k])
        np.testing.assert_allclose(volume.world([1, 0, k]) - origin, LPS_TO_RAS @ iop[:3] * column_step, atol=1e-4)
        np.testing.assert_allclose(volume.world([0, 1, k]) - origin, LPS_TO_RAS @ iop[3:] * row_step, atol=1e-4)
        positions.append(float(ipp[2]))
    assert positions == sorted(positions)  # ascending along the normal (here +z)
    # The files are named in descending position: the sort really reorders them.
    assert [p.name for p in series.files] != sorted(p.name for p in series.files)


def test_segments_and_attributes(written, series):
    _, out, result = written
    assert result == out and out.is_file()
    ds = pydicom.dcmread(out)
    seg = hd.seg.Segmentation.from_dataset(ds)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert ds.SegmentationType == "BINARY"
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["liver", "spleen"]  # 9 is absent: no segment
    assert [int(s.SegmentNumber) for s in ds.SegmentSequence] == [1, 2]
    for item in ds.SegmentSequence:
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "medswin"
        cat = item.SegmentedPropertyCategoryCodeSequence[0]
        typ = item.SegmentedPropertyTypeCodeSequence[0]
        assert (cat.CodeValue, cat.CodingSchemeDesignator, cat.CodeMeaning) == SEGMENT_CATEGORY
        assert (typ.CodeValue, typ.CodingSchemeDesignator, typ.CodeMeaning) == SEGMENT_TYPE
    assert seg.get_segment_numbers() == [1, 2]
    assert ds.Manufacturer == "medswin"
    assert ds.SeriesDescription == "medswin segmentation"
    assert int(ds.SeriesNumber) == 300 and int(ds.InstanceNumber) == 1
    source = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    assert ds.SeriesInstanceUID != series.uid and ds.SOPInstanceUID != source.SOPInstanceUID
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert ds.PatientID == source.PatientID
    # references the source series and its images
    assert len(ds.ReferencedSeriesSequence) == 1
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == series.uid
    referenced = {i.ReferencedSOPInstanceUID for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    source_uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.files}
    assert referenced == source_uids


def test_frames_sit_on_source_slices_and_roundtrip(written, series):
    """Rebuild the (X, Y, Z) map from the raw frames, placed by their ImagePositionPatient alone."""
    labels, out, _ = written
    ds = pydicom.dcmread(out)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    source_ipp = np.array([np.asarray(s.ImagePositionPatient, dtype=np.float64) for s in sources])
    value_of_segment = {1: 3, 2: 7}
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    rebuilt = np.zeros_like(labels)
    frame_slices = set()
    for f, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ipp = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64)
        matches = np.where(np.all(np.abs(source_ipp - ipp) < 1e-3, axis=1))[0]
        assert len(matches) == 1, f"frame {f} at {ipp} is on no source slice"
        k = int(matches[0])
        # the frame's derivation reference names the same source image
        src_ref = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert src_ref == sources[k].SOPInstanceUID
        segment = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        plane = rebuilt[:, :, k]
        plane[frames[f].T > 0] = value_of_segment[segment]
        frame_slices.add(k)
    labelled_slices = {int(k) for k in np.where(labels.any(axis=(0, 1)))[0]}
    assert labelled_slices == {1, 3, 4}
    assert labelled_slices <= frame_slices  # every labelled source slice has a frame at its position
    np.testing.assert_array_equal(rebuilt, labels)


def test_highdicom_readback_matches_labels(written, series, volume):
    labels, out, _ = written
    seg = hd.seg.segread(out)
    # by source instance, in the order of the series (= Z of the load_volume grid)
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.files]
    pixels = seg.get_pixels_by_source_instance(uids, combine_segments=True)  # (Z, Rows, Columns), segment numbers
    back = np.zeros_like(labels)
    for number, value in ((1, 3), (2, 7)):
        back[pixels.transpose(2, 1, 0) == number] = value
    np.testing.assert_array_equal(back, labels)

    # by geometry: each load_volume voxel's world position, looked up in highdicom's (LPS) volume
    hv = seg.get_volume(combine_segments=True)
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in labels.shape), indexing="ij"), -1).reshape(-1, 3)
    ras = (volume.affine @ np.c_[ijk, np.ones(len(ijk))].T)[:3]
    lps = LPS_TO_RAS @ ras
    idx = np.linalg.inv(hv.affine) @ np.r_[lps, np.ones((1, lps.shape[1]))]
    idx = idx[:3].T
    rounded = np.round(idx).astype(int)
    np.testing.assert_allclose(idx, rounded, atol=1e-3)
    inside = np.all((rounded >= 0) & (rounded < np.array(hv.array.shape[:3])), axis=1)
    got = np.zeros(len(ijk), dtype=labels.dtype)
    seg_numbers = hv.array[tuple(rounded[inside].T)]
    got[inside] = np.select([seg_numbers == 1, seg_numbers == 2], [3, 7], 0)
    np.testing.assert_array_equal(got.reshape(labels.shape), labels)


def test_parent_created_and_no_temp_left(written):
    _, out, _ = written
    assert sorted(os.listdir(out.parent)) == ["pred.dcm"]


def test_overwrites_only_the_target(tmp_path, volume):
    labels = _labels(volume.spatial_shape)
    other = tmp_path / "keep.txt"
    other.write_text("untouched")
    out = tmp_path / "seg.dcm"
    out.write_bytes(b"old")
    write_dicom_seg(labels, CT5N, out, NAMES)
    assert pydicom.dcmread(out).Modality == "SEG"
    assert other.read_text() == "untouched"
    assert sorted(os.listdir(tmp_path)) == ["keep.txt", "seg.dcm"]


def test_failed_write_leaves_no_temp_and_keeps_old_file(tmp_path, volume, monkeypatch):
    def broken_save(self, *args, **kwargs):
        Path(args[0]).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hd.seg.Segmentation, "save_as", broken_save)
    out = tmp_path / "seg.dcm"
    out.write_bytes(b"old")
    with pytest.raises(DataError, match=r"seg.dcm: cannot write it \(no space left on the device"):
        write_dicom_seg(_labels(volume.spatial_shape), CT5N, out, NAMES)
    assert out.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["seg.dcm"]


@pytest.mark.parametrize("shape", [(16, 16, 4), (5, 16, 16), (16, 16), (16, 15, 5)])
def test_shape_mismatch_raises(tmp_path, shape):
    with pytest.raises(ValueError, match="shape"):
        write_dicom_seg(np.zeros(shape, dtype=np.uint8), CT5N, tmp_path / "seg.dcm", NAMES)
    assert not (tmp_path / "seg.dcm").exists()


def test_unnamed_label_value_raises(tmp_path, volume):
    labels = _labels(volume.spatial_shape)
    labels[5, 5, 2] = 4
    with pytest.raises(ValueError, match=r"\[4\].*label_names"):
        write_dicom_seg(labels, CT5N, tmp_path / "seg.dcm", NAMES)


def test_empty_label_map_raises(tmp_path, volume):
    with pytest.raises(ValueError, match="no foreground"):
        write_dicom_seg(np.zeros(volume.spatial_shape, np.int64), CT5N, tmp_path / "seg.dcm", NAMES)
    assert not (tmp_path / "seg.dcm").exists()


def test_non_integer_labels_raise(tmp_path, volume):
    with pytest.raises(ValueError, match="integer"):
        write_dicom_seg(np.full(volume.spatial_shape, 0.5), CT5N, tmp_path / "seg.dcm", NAMES)


def test_missing_highdicom_says_how_to_install(tmp_path, volume, monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(ImportError, match=r"pip install 'medswin\[dicom\]'"):
        write_dicom_seg(_labels(volume.spatial_shape), CT5N, tmp_path / "seg.dcm", NAMES)
