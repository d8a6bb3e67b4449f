"""Every raise site of the data layer (medswin.data and medswin.ssl.data) triggered by a bad input built here.

Each test asserts the message, and for a DataError that ``str(err)`` starts with the file it names.  Where a
user meets the error through the CLI (``medswin data ...``, ``predict``, ``pretrain``) the test goes that way:
exit code 2 and one line on stderr ``medswin COMMAND: error: <file>: <problem>``.  Failures that cannot be made
with real files here (out of memory, permission denied as root, I/O errors) are provoked with monkeypatch.
"""

from __future__ import annotations

import builtins
import errno
import gzip
import importlib.util
import io
import json
import os
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest
import SimpleITK as sitk

from medswin.cli import main
from medswin.data import headers as headers_module
from medswin.data import io as io_module
from medswin.data import sniff as sniff_module
from medswin.data.datalist import build_datalist, detect_layout, kfold_split, layout_problem
from medswin.data.demo import template_dir
from medswin.data.dicom import list_dicom_series
from medswin.data.drr import fit_geometry, load_view, project
from medswin.data.errors import DataError
from medswin.data.io import Volume, check_image, load_channels, load_volume, write_nifti
from medswin.data.loading import LoadVolumed, run_pipeline
from medswin.data.sniff import sniff
from medswin.data.spec import parse_spec
from medswin.data.synthetic import make_phantom, write_synthetic_dataset
from medswin.data.transforms import LabelToRegions, train_transforms
from medswin.ssl.data import find_volumes

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
CT5N = TEST_FILES / "dicomdirtests" / "98892001" / "CT5N"
PREDICT = ["--model", "swin_unetr_tiny", "--dataset", "btcv", "--roi", "64", "64", "32", "--amp", "fp32"]
CT1 = {"ct1": {"channel_names": ["CT"], "labels": {"background": 0, "organ": 1}, "file_ending": ".nii.gz"}}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _raises(fn, path, fragment: str, error: type[Exception] = DataError) -> str:
    """``fn()`` raises ``error`` whose message starts with ``path`` (when given) and holds ``fragment``."""
    with pytest.raises(error) as err:
        fn()
    msg = str(err.value)
    if path is not None:
        assert msg.startswith(f"{path}: "), msg
    assert fragment in msg, msg
    assert "\n" not in msg, msg
    return msg


def _cli_fails(capsys, args: list[str], path, fragment: str) -> str:
    """``medswin ARGS`` exits 2 with one error line naming ``path`` first and holding ``fragment``."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line.split("\r")[-1].strip() for line in err.split("\n")]  # tqdm bars end in a carriage return
    lines = [line for line in lines if line and not line.startswith(("INFO ", "WARNING ", "DEBUG "))]
    assert len(lines) == 1, err
    prefix = f"medswin {args[0]}: error: "
    assert lines[0].startswith(f"{prefix}{path}: " if path is not None else prefix), lines[0]
    assert fragment in lines[0], lines[0]
    return lines[0]


def _nifti(path: Path, array: np.ndarray | None = None) -> Path:
    array = np.arange(64, dtype=np.float32).reshape(4, 4, 4) + 1 if array is None else array
    return write_nifti(array, np.eye(4), path)


def _series(tmp_path: Path, name: str = "series") -> Path:
    folder = tmp_path / name
    shutil.copytree(CT5N, folder)
    return folder


def _ct1_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "ct1.yaml"
    path.write_text(json.dumps(CT1))
    return path


def _pretrain(data: Path, out: Path) -> list[str]:
    return ["pretrain", "--model", "swin_unetr_tiny", "--data", str(data), "--out", str(out)] + [
        "--roi",
        "64",
        "64",
        "32",
        "--epochs",
        "1",
    ]


def _patch_header(path: Path, offset: int, fmt: str, value) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))


def _nii_with_forms(path: Path, sform: bool) -> Path:
    """An uncompressed NIfTI with a qform (code 1), and a sform (code 1) too when asked."""
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    img.set_qform(np.eye(4), code=1)
    img.set_sform(np.eye(4) if sform else None, code=1 if sform else 0)
    nib.save(img, path)
    return path


QUATERN_B, QUATERN_C, QOFFSET_X = 256, 260, 268  # NIfTI-1 header byte offsets


# ---------------------------------------------------------------------------------------------
# biplanar.py: medswin data prepare-x2s
# ---------------------------------------------------------------------------------------------


def test_prepare_x2s_refuses_a_multichannel_dataset(capsys, tmp_path):
    out = tmp_path / "x2s"
    _cli_fails(
        capsys,
        ["data", "prepare-x2s", str(tmp_path), "--dataset", "brats2021", "-o", str(out)],
        tmp_path,
        "DRRs need single-channel CT; dataset 'brats2021' has 4 channels",
    )
    assert not out.exists()


def test_prepare_x2s_without_labelled_cases(capsys, tmp_path):
    root = tmp_path / "ct"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"training": [{"image": "./a.nii.gz"}]}))
    args = ["data", "prepare-x2s", str(root), "--dataset", "ct1", "--datasets", str(_ct1_yaml(tmp_path))]
    _cli_fails(capsys, [*args, "-o", str(tmp_path / "x2s")], root, "no labelled cases to convert")
    assert not (tmp_path / "x2s" / "dataset.json").exists()


# ---------------------------------------------------------------------------------------------
# datalist.py
# ---------------------------------------------------------------------------------------------


def test_detect_layout_of_a_missing_folder(tmp_path):
    _raises(lambda: detect_layout(tmp_path / "nope"), tmp_path / "nope", "dataset folder not found")


def test_unknown_layout_is_a_value_error(tmp_path):
    _raises(lambda: layout_problem(tmp_path, "bogus"), None, "unknown layout 'bogus'; use one of decathlon", ValueError)
    _raises(lambda: build_datalist(tmp_path, layout="bogus"), None, "unknown layout 'bogus'", ValueError)


def test_dataset_json_that_is_not_json(capsys, tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "dataset.json").write_text("{training: [")
    _raises(lambda: build_datalist(root), root / "dataset.json", "cannot read the JSON (Expecting property name")
    # medswin data check reports it as the folder's one problem
    assert main(["data", "check", str(root), "--dataset", "ct1", "--datasets", str(_ct1_yaml(tmp_path))]) == 1
    assert f"  - {root / 'dataset.json'}: cannot read the JSON" in capsys.readouterr().out


def test_dataset_json_that_is_not_an_object(tmp_path):
    (tmp_path / "dataset.json").write_text("[1, 2]")
    _raises(lambda: build_datalist(tmp_path), tmp_path / "dataset.json", "expected a JSON object")


def test_decathlon_entry_without_image(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"label": "./l.nii.gz"}]}))
    _raises(
        lambda: build_datalist(tmp_path),
        tmp_path / "dataset.json",
        "an entry of 'training' has no 'image': {'label': './l.nii.gz'}",
    )


def test_biplanar_entry_without_its_sagittal_view(tmp_path):
    entry = {"image_coronal": "./c.nii.gz", "label": "./l.nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [entry]}))
    _raises(
        lambda: build_datalist(tmp_path), tmp_path / "dataset.json", "an entry of 'training' has no 'image_sagittal'"
    )


def test_nnunet_image_without_channel_number(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    bad = tmp_path / "imagesTr" / "case1.nii.gz"
    bad.write_bytes(b"")
    _raises(
        lambda: build_datalist(tmp_path, layout="nnunet"), bad, "not an nnU-Net image name (expected CASE_XXXX.nii.gz)"
    )


def test_brats_folder_without_matching_case_folders(tmp_path):
    (tmp_path / "BraTS_other").mkdir()  # looks like BraTS, but matches neither year's naming
    _raises(lambda: build_datalist(tmp_path), tmp_path, "no case folders matching 'BraTS2021_*'")


def test_btcv_folder_without_img(tmp_path):
    (tmp_path / "RawData").mkdir()  # detected as BTCV, but neither RawData/Training/img/ nor img/ exists
    _raises(lambda: build_datalist(tmp_path), tmp_path, "BTCV layout expects img/ and label/")


def test_dataset_folder_without_cases(tmp_path):
    (tmp_path / "images").mkdir()
    _raises(lambda: build_datalist(tmp_path), tmp_path, "no cases found (flat layout)")


def test_kfold_split_with_fewer_cases_than_folds():
    _raises(
        lambda: kfold_split([{"case": "a"}, {"case": "b"}], 5), None, "2 cases cannot be split into 5 folds", ValueError
    )


# ---------------------------------------------------------------------------------------------
# demo.py: medswin data prepare mni-tissue
# ---------------------------------------------------------------------------------------------


def test_prepare_mni_tissue_with_a_nilearn_that_lacks_the_template(capsys, tmp_path, monkeypatch):
    fake_nilearn = tmp_path / "nilearn"
    (fake_nilearn / "datasets" / "data").mkdir(parents=True)
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "nilearn":
            return SimpleNamespace(submodule_search_locations=[str(fake_nilearn)])
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    folder = fake_nilearn / "datasets" / "data"
    _raises(template_dir, folder, "nilearn is installed but lacks the MNI template file(s)")
    line = _cli_fails(capsys, ["data", "prepare", "mni-tissue", str(tmp_path / "out")], folder, "reinstall nilearn")
    assert "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" in line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# dicom.py (and inputs.py's re-raise): medswin predict on a DICOM folder
# ---------------------------------------------------------------------------------------------


def test_predict_on_a_folder_with_a_truncated_dicom_file(capsys, tmp_path):
    folder = _series(tmp_path)
    first = min(folder.iterdir())
    first.write_bytes(first.read_bytes()[:3300])  # cut inside the data set: pydicom fails mid-element
    out = tmp_path / "seg.nii.gz"
    _cli_fails(
        capsys,
        ["predict", "-i", str(folder), "-o", str(out), *PREDICT],
        first,
        "unreadable DICOM file (OSError: No tag to read",
    )
    assert not out.exists()


def test_predict_on_a_series_whose_pixel_spacing_is_text(capsys, tmp_path):
    folder = _series(tmp_path)
    first = min(folder.iterdir())
    ds = pydicom.dcmread(first)
    del ds.PixelSpacing
    ds.add_new(0x00280030, "LO", ["abc", "def"])
    ds.save_as(first)
    _cli_fails(
        capsys,
        ["predict", "-i", str(folder), "-o", str(tmp_path / "seg.nii.gz"), *PREDICT],
        first,
        "PixelSpacing ['abc', 'def'] is not two numbers",
    )


def test_list_dicom_series_of_a_file(tmp_path):
    scan = _nifti(tmp_path / "scan.nii.gz")
    _raises(lambda: list_dicom_series(scan), scan, "not a folder")


def test_pydicom_reader_on_a_transfer_syntax_it_has_no_decoder_for(tmp_path):
    folder = tmp_path / "mpeg2"
    folder.mkdir()
    ds = pydicom.dcmread(TEST_FILES / "MR_small_RLE.dcm")  # genuine encapsulated pixel data, relabelled as MPEG2
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.save_as(folder / "slice.dcm")
    _raises(
        lambda: load_volume(folder, reader="pydicom"),
        folder,
        "pydicom cannot decode MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100) pixel data: "
        "read it with reader='sitk'",
    )


# ---------------------------------------------------------------------------------------------
# drr.py
# ---------------------------------------------------------------------------------------------


def test_project_an_unknown_view():
    ct = Volume(np.zeros((1, 4, 4, 4), np.float32), np.eye(4), "ct.nii.gz")
    geom = fit_geometry(ct, 8, 8)
    _raises(
        lambda: project(ct, geom, "axial"), None, "view must be one of ('coronal', 'sagittal'), got 'axial'", ValueError
    )


def test_view_that_is_a_corrupt_png(tmp_path):
    view = tmp_path / "coronal.png"
    view.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)  # the signature, then nothing a PNG holds
    _raises(lambda: load_view(view), view, "cannot read the X-ray view (RuntimeError: ")


def test_view_that_is_a_volume(tmp_path):
    view = _nifti(tmp_path / "coronal.nii.gz")
    _raises(lambda: load_view(view), view, "an X-ray view is a 2D image, got shape (4, 4, 4)")


def test_view_with_nan(tmp_path):
    pixels = np.ones((4, 5), np.float32)
    pixels[1, 2] = np.nan
    view = tmp_path / "coronal.nii.gz"
    nib.save(nib.Nifti1Image(pixels, np.eye(4)), view)
    _raises(lambda: load_view(view), view, "the view contains NaN/inf")


def test_data_drr_refuses_a_two_channel_ct(capsys, tmp_path):
    ct = _nifti(tmp_path / "ct.nii.gz", np.ones((4, 4, 4, 2), np.float32))
    out = tmp_path / "drr"
    _cli_fails(capsys, ["data", "drr", str(ct), "-o", str(out)], ct, "a CT for DRRs has one channel, this has 2")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# headers.py: NIfTI headers edited byte by byte
# ---------------------------------------------------------------------------------------------


def test_qform_only_header_with_a_nan_offset(tmp_path):
    path = _nii_with_forms(tmp_path / "scan.nii", sform=False)
    _patch_header(path, QOFFSET_X, "<f", float("nan"))
    _raises(lambda: load_volume(path), path, "non-finite affine (NaN or inf): the header's qform/sform is broken")


def test_qform_that_is_not_a_rotation(tmp_path):
    path = _nii_with_forms(tmp_path / "scan.nii", sform=True)
    _patch_header(path, QUATERN_B, "<f", 1.0)  # b^2 + c^2 > 1: no unit quaternion
    _patch_header(path, QUATERN_C, "<f", 1.0)
    _raises(
        lambda: load_volume(path),
        path,
        "qform and sform cannot both be read (ValueError: w2 should be positive, but is -1",
    )


def test_qform_with_a_nan_offset_next_to_a_good_sform(tmp_path):
    path = _nii_with_forms(tmp_path / "scan.nii", sform=True)
    _patch_header(path, QOFFSET_X, "<f", float("nan"))
    _raises(lambda: load_volume(path), path, "qform and sform disagree (the qform is not finite): fix the header")


def test_out_of_memory_while_opening_a_nifti(tmp_path, monkeypatch):
    path = _nifti(tmp_path / "scan.nii.gz")

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(headers_module.nib, "load", no_memory)
    _raises(lambda: load_volume(path), path, "not enough memory to read its 4x4x4 voxels")


def test_gzip_with_a_long_name_field_and_no_nifti_inside(tmp_path):
    # the name field fills the sniffed bytes, so the header is left to nibabel, which cannot read it
    buf = io.BytesIO()
    with gzip.GzipFile(filename="x" * 2000, mode="wb", fileobj=buf) as f:
        f.write(b"not a nifti " * 100)
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(buf.getvalue())
    _raises(lambda: load_volume(path), path, "cannot read NIfTI (corrupt or truncated file? ImageFileError:")


# ---------------------------------------------------------------------------------------------
# inputs.py: medswin predict -i
# ---------------------------------------------------------------------------------------------


def test_predict_on_a_folder_without_volumes(capsys, tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("no scans here")
    _cli_fails(
        capsys,
        ["predict", "-i", str(folder), "-o", str(tmp_path / "out"), *PREDICT],
        folder,
        "no volumes here (expected NIfTI/NRRD/MHA files, DICOM files or a dataset layout)",
    )


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[{", "cannot read the datalist (Expecting property name"),
        ('"scan.nii.gz"', "a datalist is a list of entries, or a dict with a 'test'/'training' list"),
        ('[{"label": "l.nii.gz"}]', "an entry has no image path: {'label': 'l.nii.gz'}"),
        ('{"test": []}', "the datalist has no entries"),
    ],
)
def test_predict_on_a_bad_datalist(capsys, tmp_path, content, fragment):
    datalist = tmp_path / "cases.json"
    datalist.write_text(content)
    _cli_fails(capsys, ["predict", "-i", str(datalist), "-o", str(tmp_path / "out"), *PREDICT], datalist, fragment)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# io.py
# ---------------------------------------------------------------------------------------------


def test_nrrd_whose_compressed_voxels_are_garbage(tmp_path):
    path = tmp_path / "scan.nrrd"
    header = b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4 4\nendian: little\nencoding: gzip\n\n"
    path.write_bytes(header + b"garbage" * 20)  # the header reads, the voxels do not
    _raises(lambda: load_volume(path), path, "cannot read (RuntimeError: ")


def test_out_of_memory_while_converting_a_simpleitk_image(tmp_path, monkeypatch):
    path = tmp_path / "scan.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((3, 4, 5), np.float32)), str(path))

    def no_memory(image):
        raise MemoryError

    monkeypatch.setattr(io_module, "sitk_array", no_memory)
    _raises(lambda: load_volume(path), path, "not enough memory to read its 5x4x3 voxels")


def test_unknown_reader(tmp_path):
    _raises(
        lambda: load_volume(tmp_path / "a.nii.gz", reader="itk"),
        None,
        "unknown reader 'itk'; use auto, nibabel, sitk or pydicom",
        ValueError,
    )


def test_nibabel_reader_on_a_dicom_folder(tmp_path):
    folder = _series(tmp_path)
    _raises(lambda: load_volume(folder, reader="nibabel"), folder, "nibabel reads NIfTI files (.nii, .nii.gz) only")


def test_pydicom_reader_on_a_file(tmp_path):
    scan = _nifti(tmp_path / "scan.nii.gz")
    _raises(lambda: load_volume(scan, reader="pydicom"), scan, "the pydicom reader expects a DICOM series folder")


def test_load_channels_of_nothing():
    _raises(lambda: load_channels([]), None, "load_channels needs at least one file", ValueError)


def test_check_image_of_an_empty_array():
    # no reader returns zero voxels (the header checks refuse them); a Volume built in memory can hold none
    volume = Volume(np.zeros((1, 0, 4, 4), np.float32), np.eye(4), "made.nii.gz")
    _raises(lambda: check_image(volume), "made.nii.gz", "image is empty (zero voxels)")


def test_data_check_reports_a_label_with_nan(capsys, tmp_path):
    root = tmp_path / "ds"
    _nifti(root / "imagesTr" / "a.nii.gz")
    label = np.zeros((4, 4, 4), np.float32)
    label[1, 1, 1] = np.nan
    label_path = _nifti(root / "labelsTr" / "a.nii.gz", label)
    entry = {"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}
    (root / "dataset.json").write_text(json.dumps({"training": [entry]}))
    assert main(["data", "check", str(root), "--dataset", "ct1", "--datasets", str(_ct1_yaml(tmp_path))]) == 1
    assert f"  - {label_path}: label contains NaN/inf" in capsys.readouterr().out


def test_write_nifti_to_another_ending(tmp_path):
    path = tmp_path / "seg.nrrd"
    _raises(
        lambda: write_nifti(np.zeros((2, 2, 2)), np.eye(4), path),
        None,
        f"{path}: NIfTI outputs must end in .nii or .nii.gz",
        ValueError,
    )
    assert not path.exists()


# ---------------------------------------------------------------------------------------------
# loading.py
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [[], 5])
def test_load_volumed_needs_paths(value):
    load = LoadVolumed(["image"], label_key=None)
    _raises(lambda: load({"image": value}), "<image>", f"must be a file path or a list of paths, got {value!r}")


def test_run_pipeline_passes_a_data_error_through(tmp_path):
    missing = tmp_path / "gone.nii.gz"
    load = LoadVolumed(["image"], label_key=None)
    _raises(lambda: run_pipeline(load, {"image": str(missing)}, "case1"), missing, "file not found")


def test_run_pipeline_names_the_source_of_any_other_failure(tmp_path):
    def pipeline(data):
        try:
            raise ValueError("spacing   must be\npositive")
        except ValueError as exc:
            raise RuntimeError("applying transform Spacingd") from exc

    _raises(
        lambda: run_pipeline(pipeline, {"image": "a.nii.gz"}, tmp_path / "a.nii.gz"),
        tmp_path / "a.nii.gz",
        "cannot load or transform the input (ValueError: spacing must be positive)",
    )


# ---------------------------------------------------------------------------------------------
# sniff.py
# ---------------------------------------------------------------------------------------------


def test_path_through_a_file(tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    path = tmp_path / "notes.txt" / "scan.nii.gz"
    _raises(lambda: load_volume(path), path, "file not found (a part of its path is a file, not a folder)")


def test_folder_that_cannot_be_looked_into(tmp_path, monkeypatch):
    path = _nifti(tmp_path / "scan.nii.gz")
    real_stat = os.stat

    def stat(p, *args, **kwargs):
        if Path(p) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real_stat(p, *args, **kwargs)

    monkeypatch.setattr(sniff_module.os, "stat", stat)
    _raises(lambda: sniff(path), path, "permission denied (cannot look into its folder)")


def test_name_too_long(tmp_path):
    path = tmp_path / ("x" * 300 + ".nii.gz")
    _raises(lambda: sniff(path), path, "cannot access (File name too long)")


@pytest.mark.parametrize(
    ("error", "fragment"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
        (OSError(errno.EIO, "Input/output error"), "cannot read (Input/output error)"),
    ],
)
def test_file_that_cannot_be_opened(tmp_path, monkeypatch, error, fragment):
    path = _nifti(tmp_path / "scan.nii.gz")

    def fake_open(p, *args, **kwargs):
        if Path(p) == path:
            raise error
        return builtins.open(p, *args, **kwargs)

    monkeypatch.setattr(sniff_module, "open", fake_open, raising=False)
    msg = _raises(lambda: load_volume(path), path, fragment)
    assert msg == f"{path}: {fragment}"


@pytest.mark.parametrize(("name", "where"), [("scan.nii", ""), ("scan.nii.gz", " inside the gzip")])
def test_nifti_of_two_bytes(tmp_path, name, where):
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"ab") if name.endswith(".gz") else b"ab")
    _raises(lambda: load_volume(path), path, f"not a NIfTI file{where} (only 2 bytes)")


# ---------------------------------------------------------------------------------------------
# spec.py: medswin data datasets --datasets FILE
# ---------------------------------------------------------------------------------------------

BASE = {"channel_names": ["CT"], "labels": {"background": 0, "organ": 1}, "file_ending": ".nii.gz"}


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({**BASE, "roi_size": ["a", 64, 32]}, "key 'roi_size': expected 3 finite numbers (x, y, z), got ['a', 64, 32]"),
        (["CT"], "entry 'mine' must be a mapping of keys, got list"),
        ({**BASE, "channel_names": ["T1", "T1"]}, "key 'channel_names': duplicate channel names in ['T1', 'T1']"),
        ({**BASE, "labels": ["background", "organ"]}, "key 'labels': expected a mapping name -> integer value"),
        ({**BASE, "regions": {"all": 1}}, "key 'regions': region 'all' must list label values, got 1"),
        (
            {**BASE, "normalization": {"type": "ct", "a_max": 400}},
            "key 'normalization': CT window needs a finite number for 'a_min'",
        ),
        ({**BASE, "task": "classification"}, "key 'task': 'classification' is not one of segmentation, biplanar"),
        (
            {**BASE, "task": "biplanar", "layout": "decathlon"},
            "key 'layout': biplanar datasets (task: biplanar) use the biplanar layout, and only they",
        ),
        ({**BASE, "layout": "brats"}, "key 'case_pattern': the brats layout needs a case folder pattern"),
    ],
)
def test_bad_dataset_entry(capsys, tmp_path, entry, fragment):
    path = tmp_path / "datasets.yaml"
    path.write_text(json.dumps({"mine": entry}))
    line = _cli_fails(capsys, ["data", "datasets", "--datasets", str(path)], path, fragment)
    assert line.startswith(f"medswin data: error: {path}: entry 'mine'")


def test_dataset_file_that_is_a_list(capsys, tmp_path):
    path = tmp_path / "datasets.yaml"
    path.write_text("- mine\n- yours\n")
    _cli_fails(
        capsys, ["data", "datasets", "--datasets", str(path)], path, "expected a mapping of dataset names to entries"
    )


def test_dataset_file_not_found(capsys, tmp_path):
    path = tmp_path / "missing.yaml"
    _cli_fails(capsys, ["data", "datasets", "--datasets", str(path)], path, "dataset file not found")


# ---------------------------------------------------------------------------------------------
# synthetic.py and transforms.py (programming errors: ValueError)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"shape": (8, 8)}, "shape must have 3 axes, got (8, 8)"),
        ({"num_classes": 1}, "num_classes must be >= 2 (background plus at least one object)"),
        ({"modality": "pet"}, "modality must be 'mri' or 'ct', got 'pet'"),
    ],
)
def test_make_phantom_arguments(kwargs, fragment):
    _raises(lambda: make_phantom(**{"shape": (8, 8, 8), **kwargs}), None, fragment, ValueError)


def test_write_synthetic_dataset_unknown_layout(tmp_path):
    _raises(
        lambda: write_synthetic_dataset(tmp_path / "ds", "bids", [], labels={"background": 0, "organ": 1}),
        None,
        "unknown layout 'bids'; use decathlon, nnunet, brats, btcv or flat",
        ValueError,
    )


def test_label_to_regions_without_regions():
    _raises(lambda: LabelToRegions({}), None, "LabelToRegions needs at least one region", ValueError)


def test_train_transforms_without_roi_size():
    spec = parse_spec("mine", BASE)
    _raises(
        lambda: train_transforms(spec),
        None,
        "dataset 'mine' sets no roi_size: give the training patch size (roi_size / --roi)",
        ValueError,
    )


# ---------------------------------------------------------------------------------------------
# ssl/data.py: medswin pretrain --data
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[{", "cannot read the datalist (Expecting property name"),
        ('{"training": {"image": "a.nii.gz"}}', "expected a list of entries, or a dict with a 'training' list"),
        ('{"training": [{"label": "l.nii.gz"}]}', "entry without 'image' in 'training': {'label': 'l.nii.gz'}"),
        ('{"training": [], "validation": ["a.nii.gz"]}', "the datalist has no training entries"),
    ],
)
def test_pretrain_on_a_bad_datalist(capsys, tmp_path, content, fragment):
    datalist = tmp_path / "volumes.json"
    datalist.write_text(content)
    if "validation" in content:
        _nifti(tmp_path / "a.nii.gz")
    _cli_fails(capsys, _pretrain(datalist, tmp_path / "ssl"), datalist, fragment)
    assert not (tmp_path / "ssl").exists()


def test_pretrain_on_a_datalist_listing_a_missing_file(capsys, tmp_path):
    datalist = tmp_path / "volumes.json"
    datalist.write_text('["./gone.nii.gz"]')
    missing = (tmp_path / "gone.nii.gz").resolve()
    _cli_fails(capsys, _pretrain(datalist, tmp_path / "ssl"), missing, "listed in volumes.json but not found")


def test_pretrain_on_a_folder_with_a_truncated_dicom_file(capsys, tmp_path):
    scans = tmp_path / "scans"
    folder = _series(scans, "patient1")
    first = min(folder.iterdir())
    first.write_bytes(first.read_bytes()[:3300])
    _cli_fails(capsys, _pretrain(scans, tmp_path / "ssl"), first, "unreadable DICOM file (OSError:")


def test_pretrain_on_a_folder_holding_two_series(capsys, tmp_path):
    scans = tmp_path / "scans"
    folder = _series(scans, "patient1")
    last = max(folder.iterdir())
    ds = pydicom.dcmread(last)
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(last)
    _cli_fails(
        capsys,
        _pretrain(scans, tmp_path / "ssl"),
        folder,
        "contains 2 DICOM series: put each series in its own folder",
    )


def test_pretrain_on_a_missing_path(capsys, tmp_path):
    _cli_fails(capsys, _pretrain(tmp_path / "nope", tmp_path / "ssl"), tmp_path / "nope", "not found")


def test_pretrain_on_a_file_that_is_not_a_volume(capsys, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("scans are elsewhere")
    _cli_fails(capsys, _pretrain(notes, tmp_path / "ssl"), notes, "not a volume (expected .nii.gz, .nii")


def test_pretrain_on_an_empty_folder(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _cli_fails(
        capsys,
        _pretrain(empty, tmp_path / "ssl"),
        empty,
        "no volumes found (NIfTI/NRRD/MHA files or DICOM series folders, searched recursively)",
    )
    _raises(lambda: find_volumes(empty), empty, "no volumes found")


def test_json_that_is_binary_a_bare_value_or_too_long_a_name_is_one_line(capsys, tmp_path):
    from medswin.cli import main
    from medswin.data.inputs import resolve_inputs

    binary = tmp_path / "list.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    _raises(lambda: find_volumes(binary), binary, "not UTF-8 text (a binary file?)")
    _raises(lambda: resolve_inputs(binary), binary, "not UTF-8 text (a binary file?)")
    bare = tmp_path / "bare.json"
    bare.write_text('"a.nii.gz"')
    assert main(["pretrain", "--model", "swin_unetr_tiny", "--data", str(bare), "--out", str(tmp_path / "o")]) == 2
    assert (
        "bare.json: a datalist is a list of entries or a dict with a 'training' list, not str"
        in capsys.readouterr().err
    )
    long_name = tmp_path / ("x" * 300 + ".nii.gz")
    _raises(lambda: resolve_inputs(long_name), long_name, "cannot access (File name too long)")
    _raises(lambda: load_volume(long_name), long_name, "File name too long")
