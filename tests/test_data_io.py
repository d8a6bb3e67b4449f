"""Readers on real files (the genuine CT series in the pydicom wheel, NIfTI/NRRD/MHA written here)
and bad-input cases, each raising a DataError that names the file and the problem."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest
import SimpleITK as sitk
from monai.transforms import LoadImage

from medswin.data import DataError
from medswin.data.io import (
    SimpleITKReader,
    Volume,
    check_image,
    check_label,
    check_pair,
    inspect_dicom_series,
    load_volume,
    write_like,
    write_nifti,
)

CT5N = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892001" / "CT5N"
AFFINE = np.array([[0.0, -0.9, 0.0, 12.5], [-0.8, 0.0, 0.0, 30.0], [0.0, 0.0, 2.5, -40.0], [0, 0, 0, 1]])


# ------------------------------------------------------------------ the genuine DICOM series


def test_ct_series_reads_identically_through_every_reader():
    via_sitk = load_volume(CT5N, reader="sitk")
    via_pydicom = load_volume(CT5N, reader="pydicom")
    meta_tensor = LoadImage(reader=SimpleITKReader(), image_only=True)(str(CT5N))
    assert via_sitk.spatial_shape == via_pydicom.spatial_shape == tuple(meta_tensor.shape) == (16, 16, 5)
    np.testing.assert_allclose(via_sitk.spacing, (0.488281, 0.488281, 2.5), atol=1e-6)
    # slice order differs (SimpleITK ascending z, PydicomReader descending), world coordinates agree
    assert via_sitk.affine[2, 2] > 0 > via_pydicom.affine[2, 2]
    np.testing.assert_allclose(via_sitk.corner_coordinates(), via_pydicom.corner_coordinates(), atol=1e-3)
    np.testing.assert_allclose(np.asarray(meta_tensor.affine), via_sitk.affine, atol=1e-6)
    # the same world point holds the same value (HU: rescale intercept -1024 applied by both)
    np.testing.assert_allclose(via_sitk.array[0], via_pydicom.array[0][:, :, ::-1])
    np.testing.assert_allclose(np.asarray(meta_tensor), via_sitk.array[0])
    assert via_sitk.array.min() < -800  # air in HU, not raw stored values
    # slice positions from the headers: z = -1.2375 ... 8.7625 mm, 2.5 mm apart
    series = inspect_dicom_series(CT5N)
    np.testing.assert_allclose(series.positions, [-1.2375, 1.2625, 3.7625, 6.2625, 8.7625], atol=1e-4)
    assert series.spacing == pytest.approx(2.5)
    np.testing.assert_allclose(via_sitk.world([0, 0, 0]), [72.2, 143.0, -1.2375], atol=1e-4)


# ------------------------------------------------------------------ NIfTI / NRRD / MHA


def _image(shape=(12, 10, 8)):
    rng = np.random.default_rng(0)
    return rng.normal(100, 20, size=shape).astype(np.float32)


def test_nifti_round_trip_keeps_a_non_trivial_affine(tmp_path):
    arr = _image()
    path = write_nifti(arr, AFFINE, tmp_path / "img.nii.gz")
    for reader in ("nibabel", "sitk"):
        vol = load_volume(path, reader=reader)
        np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-5)
        np.testing.assert_allclose(vol.array[0], arr)
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)  # not left with mkstemp's private mode


@pytest.mark.parametrize("ending", [".nrrd", ".mha"])
def test_nrrd_and_mha_through_simpleitk(tmp_path, ending):
    arr = _image()
    nifti = load_volume(write_nifti(arr, AFFINE, tmp_path / "ref.nii.gz"))
    img = sitk.ReadImage(str(tmp_path / "ref.nii.gz"))
    path = tmp_path / f"img{ending}"
    sitk.WriteImage(img, str(path))
    vol = load_volume(path)
    np.testing.assert_allclose(vol.affine, nifti.affine, atol=1e-5)
    np.testing.assert_allclose(vol.array, nifti.array)
    loaded = LoadImage(reader=SimpleITKReader(), image_only=True)(str(path))
    np.testing.assert_allclose(np.asarray(loaded.affine), nifti.affine, atol=1e-5)


def test_four_d_nifti_is_channel_first_and_write_like_uses_the_reference_grid(tmp_path):
    arr = np.stack([_image(), _image() + 1], -1)
    vol = load_volume(write_nifti(arr, AFFINE, tmp_path / "mc.nii.gz"))
    assert vol.channels == 2 and vol.spatial_shape == (12, 10, 8)
    out = load_volume(write_like(np.ones((12, 10, 8), np.uint8), vol, tmp_path / "pred.nii.gz"))
    np.testing.assert_allclose(out.affine, AFFINE, atol=1e-6)
    with pytest.raises(ValueError, match="does not match the reference grid"):
        write_like(np.ones((3, 3, 3)), vol, tmp_path / "bad.nii.gz")


# ------------------------------------------------------------------ bad inputs: files


def _expect(exc_info, path, fragment):
    msg = str(exc_info.value)
    assert str(path) in msg or Path(path).name in msg, msg
    assert fragment in msg, msg


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as err:
        load_volume(tmp_path / "nope.nii.gz")
    _expect(err, "nope.nii.gz", "file not found")


def test_truncated_nifti(tmp_path):
    path = write_nifti(_image((40, 40, 40)), AFFINE, tmp_path / "t.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        load_volume(path)
    _expect(err, path, "corrupt or truncated")


def test_garbage_with_nifti_ending(tmp_path):
    path = tmp_path / "g.nii.gz"
    path.write_bytes(b"this is not an image" * 10)
    with pytest.raises(DataError) as err:
        load_volume(path)
    _expect(err, path, "cannot read NIfTI")


def test_corrupt_nrrd(tmp_path):
    path = tmp_path / "c.nrrd"
    path.write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 10 10 10\nencoding: raw\n\n")
    with pytest.raises(DataError) as err:
        load_volume(path)
    _expect(err, path, "cannot read")


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(DataError) as err:
        load_volume(path)
    _expect(err, path, "unsupported file type")


def test_nibabel_reader_on_a_non_nifti(tmp_path):
    path = tmp_path / "x.mha"
    sitk.WriteImage(sitk.GetImageFromArray(_image()), str(path))
    with pytest.raises(DataError) as err:
        load_volume(path, reader="nibabel")
    _expect(err, path, "NIfTI files")


# ------------------------------------------------------------------ bad inputs: volume checks


def _vol(arr, path="case.nii.gz", affine=AFFINE):
    arr = np.asarray(arr)
    return Volume(arr if arr.ndim == 4 else arr[None], np.asarray(affine, float), path)


def test_nan_in_image():
    arr = _image()
    arr[1, 2, 3] = np.nan
    with pytest.raises(DataError) as err:
        check_image(_vol(arr))
    _expect(err, "case.nii.gz", "1 NaN/inf")


def test_inf_in_image():
    arr = _image()
    arr[0, 0, 0] = np.inf
    with pytest.raises(DataError) as err:
        check_image(_vol(arr))
    _expect(err, "case.nii.gz", "NaN/inf")


def test_all_zero_image():
    with pytest.raises(DataError) as err:
        check_image(_vol(np.zeros((4, 4, 4), np.float32)))
    _expect(err, "case.nii.gz", "empty")


def test_wrong_channel_count():
    with pytest.raises(DataError) as err:
        check_image(_vol(np.ones((2, 4, 4, 4))), expected_channels=4, channel_names=["FLAIR", "T1", "T1ce", "T2"])
    _expect(err, "case.nii.gz", "2 channel(s), expected 4 (FLAIR, T1, T1ce, T2)")


def test_label_values_not_in_spec():
    with pytest.raises(DataError) as err:
        check_label(_vol(np.array([[[0, 1], [3, 5]]]), "lab.nii.gz"), [0, 1, 2], "mni-tissue")
    _expect(err, "lab.nii.gz", "label values [3, 5] are not in dataset 'mni-tissue' labels [0, 1, 2]")


def test_label_with_fractional_values():
    with pytest.raises(DataError) as err:
        check_label(_vol(np.array([[[0.0, 0.5], [1.0, 1.0]]]), "lab.nii.gz"), [0, 1])
    _expect(err, "lab.nii.gz", "non-integer")


def test_multichannel_label():
    with pytest.raises(DataError) as err:
        check_label(_vol(np.zeros((2, 3, 3, 3)), "lab.nii.gz"), [0, 1])
    _expect(err, "lab.nii.gz", "2 channels, expected 1")


def test_image_label_shape_mismatch():
    with pytest.raises(DataError) as err:
        check_pair(_vol(_image()), _vol(np.zeros((12, 10, 9)), "lab.nii.gz"))
    _expect(err, "lab.nii.gz", "does not match image shape")


def test_image_label_affine_mismatch():
    shifted = AFFINE.copy()
    shifted[0, 3] += 2.0
    with pytest.raises(DataError) as err:
        check_pair(_vol(_image()), _vol(np.zeros((12, 10, 8)), "lab.nii.gz", shifted))
    _expect(err, "lab.nii.gz", "affine differs")


# ------------------------------------------------------------------ bad inputs: DICOM series


@pytest.fixture
def series(tmp_path):
    """A writable copy of the genuine CT series (files named after their instance number)."""
    folder = tmp_path / "series"
    folder.mkdir()
    for f in sorted(CT5N.iterdir()):
        ds = pydicom.dcmread(f)
        ds.save_as(folder / f"slice{int(ds.InstanceNumber):02d}.dcm")
    return folder


def _edit(path: Path, fn):
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path)


def test_two_series_in_a_folder_are_listed(series):
    for name in ("slice09.dcm", "slice10.dcm"):
        _edit(
            series / name,
            lambda ds: (setattr(ds, "SeriesInstanceUID", "1.2.3.4"), setattr(ds, "SeriesDescription", "scout")),
        )
    with pytest.raises(DataError) as err:
        load_volume(series)
    _expect(err, series, "contains 2 DICOM series")
    assert "1.2.3.4 (scout, 2 files)" in str(err.value)
    assert load_volume(series, series_uid="1.2.3.4").spatial_shape == (16, 16, 2)


def test_unknown_series_uid(series):
    with pytest.raises(DataError) as err:
        load_volume(series, series_uid="9.9.9")
    _expect(err, series, "no series '9.9.9'")


def test_missing_slice(series):
    (series / "slice08.dcm").unlink()
    with pytest.raises(DataError) as err:
        load_volume(series)
    _expect(err, series, "missing slice(s): gap of 5.000 mm")


def test_duplicate_slice(series):
    shutil.copy(series / "slice08.dcm", series / "slice08_copy.dcm")
    _edit(series / "slice08_copy.dcm", lambda ds: setattr(ds, "SOPInstanceUID", ds.SOPInstanceUID + ".1"))
    with pytest.raises(DataError) as err:
        load_volume(series, reader="pydicom")
    _expect(err, series, "duplicate slices")


def test_uneven_spacing_is_an_error_above_tolerance(series):
    _edit(series / "slice08.dcm", lambda ds: setattr(ds, "ImagePositionPatient", [-72.2, -143.0, 3.2625]))
    with pytest.raises(DataError) as err:
        load_volume(series)
    _expect(err, series, "uneven slice spacing")


def test_slightly_uneven_spacing_only_warns(series):
    _edit(series / "slice08.dcm", lambda ds: setattr(ds, "ImagePositionPatient", [-72.2, -143.0, 3.7725]))
    with pytest.warns(UserWarning, match="slice spacing varies"):
        vol = load_volume(series)
    assert vol.spatial_shape == (16, 16, 5)


def test_inconsistent_orientation(series):
    _edit(series / "slice07.dcm", lambda ds: setattr(ds, "ImageOrientationPatient", [0, 1, 0, 0, 0, -1]))
    with pytest.raises(DataError) as err:
        load_volume(series)
    _expect(err, series, "inconsistent slice orientation")


def test_slice_without_pixel_data(series):
    _edit(series / "slice09.dcm", lambda ds: delattr(ds, "PixelData"))
    with pytest.raises(DataError) as err:
        load_volume(series)
    _expect(err, "slice09.dcm", "no pixel data")


def test_truncated_dicom_file(series):
    path = series / "slice07.dcm"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])
    with pytest.raises(DataError) as err:
        load_volume(series)
    _expect(err, "slice07.dcm", "truncated")


def test_folder_without_dicom_files(tmp_path):
    (tmp_path / "readme.txt").write_text("not dicom")
    with pytest.raises(DataError) as err:
        load_volume(tmp_path)
    _expect(err, tmp_path, "no DICOM files")


def test_non_dicom_files_in_a_series_folder_are_skipped(series):
    (series / "notes.txt").write_text("scanned on tuesday")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_volume(series).spatial_shape == (16, 16, 5)


def test_positions_missing(series):
    _edit(series / "slice06.dcm", lambda ds: delattr(ds, "ImagePositionPatient"))
    with pytest.raises(DataError) as err:
        load_volume(series)
    _expect(err, "slice06.dcm", "cannot place the slice")


def test_nibabel_header_affine_matches_written_file(tmp_path):
    path = write_nifti(np.zeros((3, 4, 5), np.uint8) + 1, AFFINE, tmp_path / "lab.nii.gz")
    assert nib.load(str(path)).get_data_dtype() == np.uint8
    np.testing.assert_allclose(nib.load(str(path)).affine, AFFINE)
