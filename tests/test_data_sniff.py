"""Byte-level identification (medswin.data.sniff): every file is generated here, then its bytes edited;
each bad one must raise one DataError naming the file and saying what it is and what is wrong."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest
import SimpleITK as sitk

from medswin.data import DataError
from medswin.data import sniff as sniff_module
from medswin.data.formats import READABLE_ENDINGS
from medswin.data.io import load_volume
from medswin.data.sniff import HEAD_BYTES, sniff, sniff_view

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
CT_SLICE = next(p for p in sorted((TEST_FILES / "dicomdirtests" / "98892001" / "CT5N").iterdir()))


def _nifti_bytes(shape=(6, 5, 4)) -> bytes:
    arr = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    return nib.Nifti1Image(arr, np.eye(4)).to_bytes()


def _raises(path, fragment, fn=sniff):
    with pytest.raises(DataError) as err:
        fn(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: "), msg
    assert fragment in msg, msg
    assert "\n" not in msg, msg
    return msg


# ------------------------------------------------------------------ the file itself


def test_missing_file(tmp_path):
    _raises(tmp_path / "nope.nii.gz", "file not found")


def test_broken_symbolic_link(tmp_path):
    link = tmp_path / "ct.nii.gz"
    link.symlink_to(tmp_path / "gone.nii.gz")
    _raises(link, "file not found (broken symbolic link to")


def test_symbolic_link_loop(tmp_path):
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    a.symlink_to(b)
    b.symlink_to(a)
    _raises(a, "symbolic link loop")
    _raises(a, "symbolic link loop", load_volume)


def test_folder_where_a_file_is_expected(tmp_path):
    folder = tmp_path / "ct.nii.gz"
    folder.mkdir()
    _raises(folder, "is a folder, not a file")
    _raises(folder, "is a folder, not a file", load_volume)  # named like a volume: not taken for a DICOM folder


def test_named_pipe_is_not_read(tmp_path):
    fifo = tmp_path / "ct.nii"
    os.mkfifo(fifo)
    _raises(fifo, "not a regular file (a named pipe)")


def test_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "ct.nii"
    path.write_bytes(_nifti_bytes())
    monkeypatch.setattr(sniff_module.os, "access", lambda *_: False)  # root can read anything: simulate
    _raises(path, "permission denied")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_for_real(tmp_path):
    path = tmp_path / "ct.nii"
    path.write_bytes(_nifti_bytes())
    path.chmod(0)
    _raises(path, "permission denied", load_volume)


def test_empty_file(tmp_path):
    path = tmp_path / "ct.nii.gz"
    path.touch()
    _raises(path, "empty file (0 bytes)")


# ------------------------------------------------------------------ .nii.gz


def test_uncompressed_nifti_named_nii_gz(tmp_path):
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(_nifti_bytes())
    _raises(path, "not gzip-compressed (an uncompressed NIfTI?): rename it to .nii", load_volume)


def test_text_named_nii_gz(tmp_path):
    path = tmp_path / "ct.nii.gz"
    path.write_text("<html><body>404 Not Found</body></html>\n" * 3)
    _raises(path, "not gzip-compressed (starts with text: '<html><body>404 Not Found</body></html>")


def test_binary_named_nii_gz(tmp_path):
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(bytes(range(256)))
    _raises(path, "not gzip-compressed (unknown content, starts with 0x0001020304050607)")


def test_other_format_named_nii_gz_gets_a_hint(tmp_path):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkUInt8), str(tmp_path / "x.nrrd"))
    shutil.copy(tmp_path / "x.nrrd", path)
    _raises(path, "not gzip-compressed (its content looks like a NRRD header: rename it to .nrrd)")


def test_gzip_of_something_else(tmp_path):
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(gzip.compress(b"patient,age\n1,54\n" * 40))
    _raises(path, "not a NIfTI file inside the gzip (starts with text: 'patient,age 1,54")


def test_gzip_compressed_twice(tmp_path):
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(gzip.compress(gzip.compress(_nifti_bytes())))
    _raises(path, "gzip-compressed twice: unpack it once (gunzip)")


def test_gzip_with_a_truncated_nifti_header(tmp_path):
    path = tmp_path / "ct.nii.gz"
    path.write_bytes(gzip.compress(_nifti_bytes()[:200]))
    _raises(path, "truncated NIfTI header (200 of 348 bytes)")


def test_corrupt_gzip_stream(tmp_path):
    path = tmp_path / "ct.nii.gz"
    data = bytearray(gzip.compress(_nifti_bytes()))
    data[10:40] = b"\xff" * 30  # the deflate stream right after the 10-byte gzip header
    path.write_bytes(bytes(data))
    _raises(path, "corrupt gzip data at the start of the file")


def test_valid_nii_gz_facts(tmp_path):
    raw = _nifti_bytes()
    path = tmp_path / "ct.NII.GZ"  # endings are case-insensitive
    path.write_bytes(gzip.compress(raw))
    facts = sniff(path)
    assert facts.ending == ".nii.gz" and facts.size == path.stat().st_size
    assert facts.gzip_isize == len(raw)
    assert facts.header == raw[:348] and len(facts.head) <= HEAD_BYTES


# ------------------------------------------------------------------ .nii


def test_gzip_named_nii(tmp_path):
    path = tmp_path / "ct.nii"
    path.write_bytes(gzip.compress(_nifti_bytes()))
    _raises(path, "gzip-compressed: rename it to .nii.gz", load_volume)


def test_text_named_nii(tmp_path):
    path = tmp_path / "ct.nii"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 1234\n")
    _raises(path, "not a NIfTI file (starts with text: 'version https://git-lfs.github.com/spec/...')")


def test_binary_named_nii(tmp_path):
    path = tmp_path / "ct.nii"
    path.write_bytes(struct.pack("<i", 1234) + bytes(500))
    _raises(path, "not a NIfTI file (header size 1234, expected 348 or 540)")


def test_dicom_named_nii_gets_a_hint(tmp_path):
    path = tmp_path / "ct.nii"
    shutil.copy(CT_SLICE, path)
    _raises(path, "not a NIfTI file (its content looks like a DICOM file: rename it to .dcm, or pass the folder")


def test_truncated_nifti_header(tmp_path):
    path = tmp_path / "ct.nii"
    path.write_bytes(_nifti_bytes()[:100])
    _raises(path, "truncated NIfTI header (100 of 348 bytes)")


def test_analyze_header_without_nifti_magic(tmp_path):
    data = bytearray(_nifti_bytes())
    data[344:348] = bytes(4)
    path = tmp_path / "ct.nii"
    path.write_bytes(bytes(data))
    _raises(path, "not a NIfTI file (header size 348 but no NIfTI magic: an Analyze 7.5 file?)")


def test_header_of_a_hdr_img_pair(tmp_path):
    data = bytearray(_nifti_bytes())
    data[344:348] = b"ni1\x00"
    path = tmp_path / "ct.nii"
    path.write_bytes(bytes(data))
    _raises(path, "its voxels are in a separate .img file")


def test_big_endian_and_nifti2_files_pass(tmp_path):
    arr = np.arange(120, dtype=">i2").reshape(6, 5, 4)
    big = nib.Nifti1Image(arr, np.eye(4))
    big.header.set_data_dtype(">i2")
    nib.save(nib.Nifti1Image(arr, np.eye(4), header=big.header.as_byteswapped(">")), tmp_path / "big.nii")
    assert (tmp_path / "big.nii").read_bytes()[:4] == struct.pack(">i", 348)
    assert sniff(tmp_path / "big.nii").header[:4] == struct.pack(">i", 348)
    loaded = load_volume(tmp_path / "big.nii").array
    np.testing.assert_array_equal(loaded[0], arr)
    assert loaded.dtype == np.int16 and loaded.dtype.isnative  # torch refuses big-endian arrays
    nib.save(nib.Nifti2Image(arr.astype(np.float32), np.eye(4)), tmp_path / "two.nii.gz")
    assert len(sniff(tmp_path / "two.nii.gz").header) == 540
    np.testing.assert_array_equal(load_volume(tmp_path / "two.nii.gz").array[0], arr)


# ------------------------------------------------------------------ NRRD, MetaImage, DICOM


def test_not_a_nrrd(tmp_path):
    path = tmp_path / "ct.nrrd"
    path.write_text("type: float\ndimension: 3\n")
    _raises(path, "not a NRRD file (starts with text: 'type: float dimension: 3')", load_volume)


def test_nifti_named_nrrd_gets_a_hint(tmp_path):
    path = tmp_path / "ct.nrrd"
    path.write_bytes(_nifti_bytes())
    _raises(path, "not a NRRD file (its content looks like a NIfTI header: rename it to .nii)")


def test_not_a_metaimage(tmp_path):
    path = tmp_path / "ct.mha"
    path.write_bytes(b"\x00\x01" * 100)
    _raises(path, "not a MetaImage file (unknown content, starts with 0x0001000100010001)")
    path.write_text("just some notes\nabout the scan\n")
    _raises(path, "not a MetaImage file (starts with text: 'just some notes about the scan')")


def test_not_a_dicom_file(tmp_path):
    path = tmp_path / "slice.dcm"
    path.write_bytes(bytes(200))
    _raises(path, "not a DICOM file (unknown content, starts with 0x0000000000000000)", load_volume)


@pytest.mark.parametrize("name", ["ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm", "CT_small.dcm"])
def test_dicom_with_and_without_preamble_pass(name):
    assert sniff(TEST_FILES / name).ending == ".dcm"


def test_implicit_vr_dicom_without_preamble_passes(tmp_path):
    ds = pydicom.dcmread(CT_SLICE)
    ds.preamble = None
    del ds.file_meta
    path = tmp_path / "bare.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[:2] == b"\x08\x00" and path.read_bytes()[128:132] != b"DICM"
    assert sniff(path).ending == ".dcm"


def test_every_writer_output_passes(tmp_path):
    image = sitk.GetImageFromArray(np.ones((4, 5, 6), np.int16))
    for ending in (".nii", ".nii.gz", ".nrrd", ".mha"):
        sitk.WriteImage(image, str(tmp_path / f"x{ending}"))
        assert sniff(tmp_path / f"x{ending}").ending == ending
    sitk.WriteImage(image, str(tmp_path / "x.mhd"))  # header + separate .raw
    assert sniff(tmp_path / "x.mhd").ending == ".mhd"


def test_every_readable_ending_has_a_content_check():
    assert set(sniff_module._CHECKS) == set(READABLE_ENDINGS)


# ------------------------------------------------------------------ unknown endings


def test_unsupported_file_type_lists_what_medswin_reads(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    msg = _raises(path, "unsupported file type '.txt' (medswin reads .nii.gz, .nii, .nrrd, .nhdr, .mha, .mhd, .dcm")
    assert msg.endswith("and DICOM series folders)"), msg


@pytest.mark.parametrize(
    "name, content, hint",
    [
        ("ct.bak", "nifti", "its content looks like a NIfTI header: rename it to .nii"),
        ("ct.gz", "nifti-gz", "its content looks like a gzip-compressed NIfTI: rename it to .nii.gz"),
        ("ct.mha.gz", "gzip", "its content is gzip-compressed: unpack it first"),
        ("IM0001", "dicom", "its content looks like a DICOM file: rename it to .dcm, or pass the folder of its series"),
        ("ct.meta", "mha", "its content looks like a MetaImage header: rename it to .mha"),
    ],
)
def test_unsupported_ending_with_recognisable_content(tmp_path, name, content, hint):
    path = tmp_path / name
    if content == "nifti":
        path.write_bytes(_nifti_bytes())
    elif content == "nifti-gz":
        path.write_bytes(gzip.compress(_nifti_bytes()))
    elif content == "gzip":
        path.write_bytes(gzip.compress(b"ObjectType = Image\n"))
    elif content == "dicom":
        shutil.copy(CT_SLICE, path)
    else:
        sitk.WriteImage(sitk.Image([3, 3, 3], sitk.sitkUInt8), str(tmp_path / "x.mha"))
        shutil.copy(tmp_path / "x.mha", path)
    msg = _raises(path, "unsupported file type", load_volume)
    assert msg.endswith(hint), msg
    if "." not in name:
        assert "unsupported file type (no file ending; medswin reads" in msg


# ------------------------------------------------------------------ X-ray views (sniff_view)

PNG_START = b"\x89PNG\r\n\x1a\n" + bytes(24)
JPEG_START = b"\xff\xd8\xff\xe0" + bytes(24)


@pytest.mark.parametrize("name, data", [("v.png", PNG_START), ("v.jpg", JPEG_START), ("v.JPEG", JPEG_START)])
def test_view_pictures_pass_on_their_signature(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    facts = sniff_view(path)
    assert facts.ending == name.lower()[1:] and facts.size == len(data)


def test_nifti_views_are_sniffed_like_volumes(tmp_path):
    path = tmp_path / "v.nii.gz"
    path.write_bytes(gzip.compress(_nifti_bytes((6, 5, 1))))
    assert sniff_view(path).header[:4] == struct.pack("<i", 348)
    path.write_bytes(_nifti_bytes((6, 5, 1)))
    _raises(path, "not gzip-compressed (an uncompressed NIfTI?): rename it to .nii", sniff_view)


@pytest.mark.parametrize(
    "name, data, fragment",
    [
        ("v.png", JPEG_START, "not a PNG file (its content looks like a JPEG picture: rename it to .jpg)"),
        ("v.jpg", PNG_START, "not a JPEG file (its content looks like a PNG picture: rename it to .png)"),
        ("v.png", b"hello", "not a PNG file (starts with text: 'hello')"),
        ("v.jpeg", "nifti", "not a JPEG file (its content looks like a NIfTI header: rename it to .nii)"),
        ("v.png", b"", "empty file (0 bytes)"),
        ("v.txt", b"hello", "unsupported file type '.txt' (X-ray views are .nii.gz, .nii, .png, .jpg, .jpeg)"),
        ("v.nrrd", b"NRRD0004\n", "unsupported file type '.nrrd' (X-ray views are"),
        ("view", PNG_START, "(no file ending; X-ray views are .nii.gz, .nii, .png, .jpg, .jpeg); its content looks "),
    ],
)
def test_bad_view_files(tmp_path, name, data, fragment):
    path = tmp_path / name
    path.write_bytes(_nifti_bytes() if data == "nifti" else data)
    _raises(path, fragment, sniff_view)
    _raises(tmp_path / "gone.png", "file not found", sniff_view)
