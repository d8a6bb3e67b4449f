"""Readers on real files (the genuine CT series in the pydicom wheel, NIfTI/NRRD/MHA written here)
and bad-input cases, each raising a DataError that names the file and the problem."""

from __future__ import annotations

import gzip
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
from medswin.data import headers as headers_module
from medswin.data.io import (
    SimpleITKReader,
    Volume,
    check_image,
    check_label,
    check_pair,
    inspect_dicom_series,
    load_channels,
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
    _expect(err, path, "not gzip-compressed (starts with text: 'this is not an image")


def test_corrupt_nrrd(tmp_path):
    path = tmp_path / "c.nrrd"
    path.write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 10 10 10\nencoding: raw\n\n")
    with pytest.raises(DataError) as err:
        load_volume(path)
    _expect(err, path, "cannot read (RuntimeError: ReadImageInformation: Error reading")
    assert "type (float) and encoding (raw) require endian info" in str(err.value)  # teem's reason, not its chain
    assert "SimpleITK-build" not in str(err.value)


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


def test_sheared_affine_round_trips_without_a_qform(tmp_path):
    sheared = AFFINE.copy()
    sheared[0, 2] = 0.7  # the k axis leans along x: columns not orthogonal, no qform can hold it
    path = write_nifti(_image(), sheared, tmp_path / "sheared.nii.gz")
    header = nib.load(str(path)).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (0, 1)
    vol = load_volume(path)  # no "qform and sform disagree"
    np.testing.assert_allclose(vol.affine, sheared, atol=1e-5)


def test_orthogonal_oblique_affine_keeps_its_qform(tmp_path):
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    oblique = np.eye(4)
    oblique[:3, :3] = rotation @ np.diag([0.8, 0.9, 2.5])
    oblique[:3, 3] = [12.5, 30.0, -40.0]
    path = write_nifti(_image(), oblique, tmp_path / "oblique.nii")
    header = nib.load(str(path)).header
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 1)
    np.testing.assert_allclose(header.get_qform(), oblique, atol=1e-5)
    for reader in ("nibabel", "sitk"):
        np.testing.assert_allclose(load_volume(path, reader=reader).affine, oblique, atol=1e-5)
    assert not list(tmp_path.glob(".tmp-*"))  # atomic_write left no temporary file


def test_nibabel_header_affine_matches_written_file(tmp_path):
    path = write_nifti(np.zeros((3, 4, 5), np.uint8) + 1, AFFINE, tmp_path / "lab.nii.gz")
    assert nib.load(str(path)).get_data_dtype() == np.uint8
    np.testing.assert_allclose(nib.load(str(path)).affine, AFFINE)


# ------------------------------------------------------------------ header checks: NIfTI (built here, then edited)


def _nifti(tmp_path, name="x.nii.gz", arr=None, edit=None, affine=AFFINE, dtype=None, image_class=nib.Nifti1Image):
    """Write ``arr`` as NIfTI with both qform and sform set, after ``edit(header)`` on the stored header bytes."""
    arr = _image((6, 5, 4)) if arr is None else arr
    img = image_class(arr, affine, dtype=dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    data = bytearray(img.to_bytes())
    if edit is not None:
        size = img.header.sizeof_hdr
        header = img.header.__class__(binaryblock=bytes(data[:size]), check=False)
        edit(header)
        data[:size] = header.binaryblock
    path = tmp_path / name
    path.write_bytes(gzip.compress(bytes(data), mtime=0) if name.endswith(".gz") else bytes(data))
    return path


def _fails(path, fragment, **kwargs):
    with pytest.raises(DataError) as err:
        load_volume(path, **kwargs)
    _expect(err, path, fragment)
    assert "\n" not in str(err.value)
    return str(err.value)


def _set(field, value, index=None):
    def edit(header):
        if index is None:
            header[field] = value
        else:
            header[field][index] = value

    return edit


def test_two_d_nifti(tmp_path):
    path = _nifti(tmp_path, arr=_image((6, 5)))
    _fails(path, "2D image of shape (6, 5): medswin reads 3D volumes")


@pytest.mark.parametrize("unit, step, shown", [("sec", 2.5, "2.5 s"), ("msec", 800.0, "0.8 s"), ("hz", 2.0, "2 hz")])
def test_four_d_time_series_loads_as_channels_and_says_so_on_a_channel_mismatch(tmp_path, unit, step, shown):
    def edit(header):
        header.set_xyzt_units("mm", unit)
        header["pixdim"][4] = step

    arr = _image((6, 5, 4, 3))
    path = _nifti(tmp_path, arr=arr, edit=edit)
    for reader in ("nibabel", "sitk"):  # e.g. MSD BrainTumour files mark their channel axis with seconds
        vol = load_volume(path, reader=reader)
        assert vol.channels == 3 and vol.spatial_shape == (6, 5, 4)
        assert vol.meta["time_axis"] == {"volumes": 3, "step": shown}
        np.testing.assert_allclose(vol.array[2], arr[..., 2])
        check_image(vol, expected_channels=3)  # the right channel count: no complaint
        with pytest.raises(DataError) as err:
            check_image(vol, expected_channels=1)
        _expect(
            err,
            path,
            f"image has 3 channel(s), expected 1; the 4th dimension is a time axis (3 volumes, step {shown}): "
            "pick one volume first, e.g. nibabel img.slicer[..., k]",
        )
    plain = load_volume(_nifti(tmp_path, "plain.nii.gz", arr=arr))
    assert "time_axis" not in plain.meta
    with pytest.raises(DataError) as err:
        check_image(plain, expected_channels=1)
    assert str(err.value).endswith("image has 3 channel(s), expected 1")


def test_four_d_without_time_units_and_single_time_point_are_channels(tmp_path):
    assert load_volume(_nifti(tmp_path, arr=_image((6, 5, 4, 3)))).channels == 3

    def one_volume(header):
        header.set_xyzt_units("mm", "sec")
        header["pixdim"][4] = 2.0

    assert load_volume(_nifti(tmp_path, "one.nii.gz", arr=_image((6, 5, 4, 1)), edit=one_volume)).channels == 1


def test_five_d_vector_image_is_channels(tmp_path):
    arr = _image((6, 5, 4, 1, 3))
    vol = load_volume(_nifti(tmp_path, arr=arr))
    assert vol.channels == 3 and vol.spatial_shape == (6, 5, 4)
    np.testing.assert_allclose(vol.array[2], arr[:, :, :, 0, 2])


@pytest.mark.parametrize("shape", [(6, 5, 4, 2, 3), (6, 5, 4, 1, 1, 2)])
def test_other_five_and_six_d_images(tmp_path, shape):
    path = _nifti(tmp_path, arr=_image(shape))
    _fails(path, f"{len(shape)}D image of shape {shape}: medswin reads 3D volumes (channels in the 4th dimension)")


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_nifti(tmp_path, dtype):
    path = _nifti(tmp_path, arr=_image().astype(dtype), dtype=dtype)
    name = np.dtype(dtype).name
    _fails(path, f"complex-valued data ({name}): take the magnitude (abs) first")
    _fails(path, f"complex-valued data ({name})", reader="sitk")


@pytest.mark.parametrize("fields, kind", [("RGB", "rgb24"), ("RGBA", "rgba32")])
def test_rgb_nifti(tmp_path, fields, kind):
    arr = np.zeros((6, 5, 4), dtype=[(c, "u1") for c in fields])
    _fails(_nifti(tmp_path, arr=arr), f"RGB colour data ({kind}): medswin reads grey-level intensities")


def test_int64_and_float16_load(tmp_path, monkeypatch):
    arr = np.arange(120, dtype=np.int64).reshape(6, 5, 4) * 2**33
    vol = load_volume(_nifti(tmp_path, arr=arr, dtype=np.int64))
    assert vol.array.dtype == np.int64
    np.testing.assert_array_equal(vol.array[0], arr)
    # no NIfTI/NRRD/MetaImage data type is half precision; a reader that returns float16 is widened
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", lambda self, *a, **k: np.ones(self.shape, np.float16))
    assert load_volume(_nifti(tmp_path, "h.nii.gz")).array.dtype == np.float32


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (_set("dim", 9, 0), "corrupt NIfTI header (dim[0] is 9, expected 1 to 7)"),
        (_set("dim", -4, 3), "corrupt NIfTI header (negative size in shape (6, 5, -4))"),
        (_set("dim", 0, 2), "header declares shape (6, 0, 4), which holds no voxels"),
        (_set("datatype", 3), "unknown NIfTI data type code 3 (corrupt header?)"),
        (_set("datatype", 1), "unsupported NIfTI data type binary (code 1)"),
    ],
)
def test_corrupt_header_fields(tmp_path, edit, fragment):
    _fails(_nifti(tmp_path, edit=edit), fragment)


def _pixdim_only(values):
    def edit(header):
        header["sform_code"] = 0
        header["qform_code"] = 0
        header["pixdim"][1:4] = values

    return edit


@pytest.mark.parametrize(
    "values, fragment",
    [
        ([1.0, 0.0, 2.0], "voxel spacing (1.0, 0.0, 2.0) mm has a zero: the header's pixdim/affine is broken"),
        ([1.0, -1.0, 2.0], "voxel spacing (1.0, -1.0, 2.0) mm has a negative value"),
        ([np.nan, 1.0, 2.0], "voxel spacing (nan, 1.0, 2.0) mm has a NaN"),
    ],
)
def test_broken_pixdim(tmp_path, values, fragment):
    _fails(_nifti(tmp_path, edit=_pixdim_only(values)), fragment)  # nibabel alone would quietly use 1 or abs()


def test_sform_with_a_zero_column(tmp_path):
    affine = AFFINE.copy()
    affine[:3, 1] = 0
    _fails(_nifti(tmp_path, edit=lambda h: h.set_sform(affine, code=1)), "voxel spacing (0.8, 0.0, 2.5) mm has a zero")


def test_non_finite_affine(tmp_path):
    affine = AFFINE.copy()
    affine[0, 3] = np.inf
    _fails(_nifti(tmp_path, edit=lambda h: h.set_sform(affine, code=1)), "non-finite affine (NaN or inf)")


def test_singular_affine(tmp_path):
    affine = AFFINE.copy()
    affine[:3, 1] = affine[:3, 0]  # two parallel axes

    def edit(header):
        header.set_sform(affine, code=1)
        header["qform_code"] = 0

    _fails(_nifti(tmp_path, edit=edit), "singular affine (determinant 0): its voxel axes are (nearly) parallel")


def test_qform_and_sform_disagree(tmp_path):
    shifted = AFFINE.copy()
    shifted[:3, 3] += [3.0, 4.0, 0.0]
    path = _nifti(tmp_path, edit=lambda h: h.set_sform(shifted, code=1))
    _fails(path, "qform and sform disagree by 5 mm (more than a voxel): fix the header")
    slightly = AFFINE.copy()
    slightly[0, 3] += 0.3  # within a voxel: accepted (the sform is used)
    vol = load_volume(_nifti(tmp_path, "ok.nii.gz", edit=lambda h: h.set_sform(slightly, code=1)))
    np.testing.assert_allclose(vol.affine, slightly, atol=1e-5)


def test_voxel_limit(tmp_path, monkeypatch):
    path = _nifti(tmp_path, edit=_set("dim", [3, 30000, 30000, 30000, 1, 1, 1, 1]))
    _fails(
        path,
        "header declares 30000x30000x30000 voxels (2.7e13), more than the limit of 2147483648 (MEDSWIN_MAX_VOXELS)",
    )
    monkeypatch.setenv("MEDSWIN_MAX_VOXELS", "100")
    _fails(_nifti(tmp_path, "small.nii.gz"), "header declares 6x5x4 voxels (1.2e2), more than the limit of 100")
    monkeypatch.setenv("MEDSWIN_MAX_VOXELS", "lots")
    with pytest.raises(ValueError, match="MEDSWIN_MAX_VOXELS must be a positive number"):
        load_volume(path)


def test_more_voxels_than_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(headers_module, "_physical_memory", lambda: 100)
    _fails(_nifti(tmp_path), "not enough memory to read 6x5x4 voxels (0.0 GiB; this machine has 0.0 GiB)")


def test_memory_error_while_reading(tmp_path, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError

    path = _nifti(tmp_path)
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", no_memory)
    _fails(path, "not enough memory to read its 6x5x4 voxels")
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", no_memory)
    _fails(path, "not enough memory to read its 6x5x4 voxels", reader="sitk")


def test_uncompressed_nifti_shorter_than_its_header_says(tmp_path):
    path = _nifti(tmp_path, "x.nii")
    path.write_bytes(path.read_bytes()[:-100])
    _fails(path, "header declares 480 bytes of voxel data but the file holds only 380 (truncated, or wrong dimensions)")
    _fails(path, "header declares 480 bytes", reader="sitk")
    grown = _nifti(tmp_path, "grown.nii", edit=_set("dim", 8, 3))
    _fails(grown, "header declares 960 bytes of voxel data but the file holds only 480")


def test_gzip_nifti_shorter_than_its_header_says(tmp_path):
    path = _nifti(tmp_path, "x.nii.gz", edit=_set("dim", 8, 3))  # a complete gzip stream of too few voxels
    _fails(path, "header declares 960 bytes of voxel data but the file once uncompressed holds only 480")


def test_multi_member_gzip_loads(tmp_path):
    raw = _nifti(tmp_path, "x.nii").read_bytes()
    path = tmp_path / "members.nii.gz"  # e.g. bgzip output: the ISIZE trailer covers the last member only
    path.write_bytes(gzip.compress(raw[:400]) + gzip.compress(raw[400:]))
    np.testing.assert_allclose(load_volume(path).array, load_volume(tmp_path / "x.nii").array)


# ------------------------------------------------------------------ header checks: SimpleITK files


def _sitk_file(tmp_path, name, image):
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path


def test_two_d_metaimage(tmp_path):
    path = _sitk_file(tmp_path, "x.mha", sitk.GetImageFromArray(np.ones((4, 5), np.float32)))
    _fails(path, "2D image of shape (5, 4): medswin reads 3D volumes")


def test_four_d_metaimage_is_channels(tmp_path):
    arr = _image((2, 4, 5, 6))  # SimpleITK order (T, Z, Y, X)
    vol = load_volume(_sitk_file(tmp_path, "x.mha", sitk.GetImageFromArray(arr, isVector=False)))
    assert vol.channels == 2 and vol.spatial_shape == (6, 5, 4)
    np.testing.assert_allclose(vol.array[1], arr[1].T)


def test_four_d_vector_metaimage(tmp_path):
    path = _sitk_file(tmp_path, "x.mha", sitk.Image([3, 4, 5, 2], sitk.sitkVectorFloat32, 2))
    _fails(path, "5D image of shape (3, 4, 5, 2, 2): medswin reads 3D volumes (channels in the 4th dimension)")


def test_complex_nrrd(tmp_path):
    path = _sitk_file(tmp_path, "x.nrrd", sitk.Image([3, 4, 5], sitk.sitkComplexFloat32))
    _fails(path, "complex-valued data (complex64): take the magnitude (abs) first")


def _edited_mha(tmp_path, old: bytes, new: bytes, cut: int = 0):
    path = _sitk_file(tmp_path, "x.mha", sitk.GetImageFromArray(np.ones((4, 5, 6), np.float32)))
    data = path.read_bytes()
    assert old in data
    data = data.replace(old, new)
    path.write_bytes(data[: len(data) - cut])
    return path


@pytest.mark.parametrize(
    "old, new, fragment",
    [
        (
            b"ElementSpacing = 1 1 1",
            b"ElementSpacing = 1 -1 1",
            "voxel spacing (1.0, -1.0, 1.0) mm has a negative value",
        ),
        (b"ElementSpacing = 1 1 1", b"ElementSpacing = 1 0 1", "voxel spacing (1.0, 0.0, 1.0) mm has a zero"),
        (b"TransformMatrix = 1 0 0 0 1 0 0 0 1", b"TransformMatrix = 1 0 0 1 0 0 0 0 1", "singular affine"),
        (b"DimSize = 6 5 4", b"DimSize = 60000 50000 40000", "header declares 60000x50000x40000 voxels (1.2e14)"),
    ],
)
def test_broken_metaimage_headers(tmp_path, old, new, fragment):
    _fails(_edited_mha(tmp_path, old, new), fragment)


def test_truncated_metaimage_and_nrrd(tmp_path):
    path = _edited_mha(tmp_path, b"", b"", cut=100)
    _fails(path, "header declares 480 bytes of voxel data but the file holds only 380 (truncated, or wrong dimensions)")
    nrrd = _sitk_file(tmp_path, "x.nrrd", sitk.GetImageFromArray(np.ones((4, 5, 6), np.int16)))
    nrrd.write_bytes(nrrd.read_bytes()[:-40])
    _fails(nrrd, "header declares 240 bytes of voxel data but the file holds only 200")


def test_metaimage_with_a_missing_or_short_data_file(tmp_path):
    path = _sitk_file(tmp_path, "x.mhd", sitk.GetImageFromArray(np.ones((4, 5, 6), np.float32)))
    raw = tmp_path / "x.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    _fails(path, "header declares 480 bytes of voxel data but its data file 'x.raw' holds only 100")
    raw.unlink()
    _fails(path, "its voxel data file 'x.raw' is missing")


# ------------------------------------------------------------------ DICOM series: grids and transfer syntaxes


def test_slice_with_a_different_pixel_spacing(series):
    _edit(series / "slice07.dcm", lambda ds: setattr(ds, "PixelSpacing", [0.5, 0.5]))
    msg = _fails(series, "inconsistent pixel spacing: ")
    assert "slice06.dcm has [0.488281, 0.488281] mm, slice07.dcm has [0.5, 0.5] mm" in msg, msg
    _edit(series / "slice07.dcm", lambda ds: setattr(ds, "PixelSpacing", [0.48828, 0.488281]))  # 2e-6: rounding
    assert load_volume(series).spatial_shape == (16, 16, 5)


def test_slice_with_different_rows(series):
    def crop(ds):
        ds.PixelData = ds.pixel_array[:8].tobytes()
        ds.Rows = 8

    _edit(series / "slice08.dcm", crop)
    _fails(series, "slices of different size: slice06.dcm is 16x16 (Rows x Columns), slice08.dcm is 8x16")


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda ds: delattr(ds, "PixelSpacing"), "missing PixelSpacing: the in-plane voxel size is unknown"),
        (lambda ds: setattr(ds, "PixelSpacing", [0.0, 0.5]), "PixelSpacing [0.0, 0.5] mm is not two positive numbers"),
        (lambda ds: setattr(ds, "PixelSpacing", [-0.5, 0.5]), "PixelSpacing [-0.5, 0.5] mm is not two positive"),
        (lambda ds: delattr(ds, "Rows"), "missing Rows/Columns/BitsAllocated: the pixel data cannot be sized"),
        (
            lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 1, 0, 0]),
            "ImageOrientationPatient [1.0, 0.0, 0.0, 1.0, 0.0, 0.0] is not two perpendicular unit vectors",
        ),
    ],
)
def test_broken_slice_geometry(series, edit, fragment):
    _edit(series / "slice09.dcm", edit)
    with pytest.raises(DataError) as err:
        load_volume(series)
    _expect(err, "slice09.dcm", fragment)


def test_series_voxel_limit(series, monkeypatch):
    monkeypatch.setenv("MEDSWIN_MAX_VOXELS", "1000")
    for reader in ("sitk", "pydicom"):
        _fails(series, "header declares 16x16x5 voxels (1.3e3), more than the limit of 1000", reader=reader)


def _compressed_series(tmp_path, source: str, syntax: str | None = None, corrupt: bool = False) -> Path:
    """A one-slice series from a compressed pydicom test file (given a position), optionally relabelled/corrupted."""
    from pydicom.encaps import encapsulate, generate_frames

    ds = pydicom.dcmread(pydicom.data.get_testdata_file(source))
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if syntax:
        ds.file_meta.TransferSyntaxUID = syntax
    if corrupt:  # keep the codestream's first bytes (its header), zero the rest
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        ds.PixelData = encapsulate([frame[:200] + bytes(len(frame) - 200)])
    folder = tmp_path / "compressed"
    folder.mkdir()
    ds.save_as(folder / "slice.dcm")
    return folder


def _pydicom_decodes(folder: Path) -> bool:
    try:
        _ = pydicom.dcmread(next(folder.iterdir())).pixel_array
    except Exception:
        return False
    return True


def test_compressed_series_read_by_sitk_and_refused_by_pydicom_with_the_syntax(tmp_path):
    folder = _compressed_series(tmp_path, "JPEG-lossy.dcm")  # 12-bit JPEG: Pillow cannot, GDCM can
    assert load_volume(folder).spatial_shape == (256, 1024, 1)
    if _pydicom_decodes(folder):
        pytest.skip("a pydicom plugin for 12-bit JPEG is installed")
    _fails(
        folder,
        "cannot decode the JPEG Extended (Process 2 and 4) (1.2.840.10008.1.2.4.51) pixel data (RuntimeError:",
        reader="pydicom",
    )


def test_transfer_syntax_without_a_pydicom_plugin(tmp_path):
    folder = _compressed_series(tmp_path, "JPEG2000.dcm", syntax="1.2.840.10008.1.2.4.202")  # HTJ2K lossless RPCL
    if _pydicom_decodes(folder):
        pytest.skip("pylibjpeg-openjpeg is installed")
    _fails(
        folder,
        "pydicom cannot decode High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only) "
        "(1.2.840.10008.1.2.4.202) pixel data without a plugin (",
        reader="pydicom",
    )


def test_undecodable_compressed_pixel_data(tmp_path):
    folder = _compressed_series(tmp_path, "JPEG2000.dcm", corrupt=True)
    for reader in ("sitk", "pydicom"):
        _fails(
            folder, "cannot decode the JPEG 2000 Image Compression (1.2.840.10008.1.2.4.91) pixel data (", reader=reader
        )


# ------------------------------------------------------------------ check_image, load_channels


def test_all_zero_image_allowed_when_asked():
    check_image(_vol(np.zeros((4, 4, 4), np.float32)), allow_all_zero=True)


def test_load_channels_stacks_files_on_one_grid(tmp_path):
    a = write_nifti(_image(), AFFINE, tmp_path / "t1.nii.gz")
    b = write_nifti(_image() + 1, AFFINE, tmp_path / "t2.nii.gz")
    vol = load_channels([a, b])
    assert vol.channels == 2 and vol.path == str(a) and vol.meta["channel_paths"] == [str(a), str(b)]
    np.testing.assert_allclose(vol.array[1], _image() + 1)
    assert load_channels([a]).channels == 1
    shifted = AFFINE.copy()
    shifted[0, 3] += 5
    c = write_nifti(_image(), shifted, tmp_path / "flair.nii.gz")
    with pytest.raises(DataError) as err:
        load_channels([a, c])
    _expect(err, c, f"channel file is on a different grid than {a} (affine differs by 5 mm)")
    small = write_nifti(_image((6, 5, 4)), AFFINE, tmp_path / "small.nii.gz")
    with pytest.raises(DataError) as err:
        load_channels([a, small])
    _expect(err, small, f"channel file is on a different grid than {a} (shape (6, 5, 4) vs (12, 10, 8))")


def test_check_dataset_uses_load_channels(tmp_path):
    from medswin.data import check

    assert check.load_channels is load_channels and not hasattr(check, "_load_channels")
