"""What a user runs, with what users really give it: every bad input ends in ONE line naming the file and the
problem (exit 2, no traceback), nothing is written at the output path, and the input's bytes are unchanged.

Everything goes through the CLI (``main([...])`` in process; a real process where a signal or the full
stderr matters), so a check that exists in the data layer but is bypassed on a user's path fails here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medswin.cli import main
from medswin.data.io import write_nifti

CT5N = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892001" / "CT5N"
PREDICT = ["--model", "swin_unetr_tiny", "--dataset", "btcv", "--roi", "64", "64", "32", "--amp", "fp32"]


def _digest(path: Path) -> str:
    """Hash of a file, or of every file under a folder (names and bytes)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _error_line(capsys) -> str:
    """The one error line of a failed command (log lines from the logging module are allowed besides)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line and not line.startswith(("INFO ", "WARNING ", "DEBUG "))]
    assert len(lines) == 1, err
    return lines[0]


def _fails(capsys, args: list[str], inputs: list[Path], fragments: list[str], output: Path | None = None) -> str:
    """Run ``args``; exit 2, one line with every fragment, the inputs unchanged, nothing at ``output``."""
    before = [_digest(p) for p in inputs]
    assert main(args) == 2
    line = _error_line(capsys)
    for fragment in fragments:
        assert fragment in line, line
    assert [_digest(p) for p in inputs] == before
    if output is not None:
        assert not output.exists(), f"{output} was written"
    return line


@pytest.fixture
def broken_series(tmp_path):
    """The genuine CT series of the pydicom wheel with one middle slice removed."""
    folder = tmp_path / "ct_missing_slice"
    shutil.copytree(CT5N, folder)
    slices = sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    slices[2].unlink()
    return folder


# ---------------------------------------------------------------------------------------------
# never touch an input
# ---------------------------------------------------------------------------------------------


def test_predict_refuses_to_overwrite_its_input(capsys, tmp_path):
    scan = write_nifti(
        np.random.default_rng(0).random((20, 18, 12), dtype=np.float32) * 100, np.eye(4), tmp_path / "scan.nii.gz"
    )
    line = _fails(
        capsys, ["predict", "-i", str(scan), "-o", str(scan), *PREDICT], [scan], ["is the input", "scan.nii.gz"]
    )
    assert line.startswith(f"medswin predict: error: {scan}: ")
    link = tmp_path / "link.nii.gz"  # a symbolic link to the input resolves to it
    link.symlink_to(scan)
    _fails(capsys, ["predict", "-i", str(scan), "-o", str(link), *PREDICT], [scan], ["is the input"])


def test_predict_never_writes_into_a_dicom_series_or_its_input_folder_unless_asked(capsys, tmp_path):
    series = tmp_path / "series"
    shutil.copytree(CT5N, series)
    _fails(
        capsys,
        ["predict", "-i", str(series), "-o", str(series / "seg.nii.gz"), *PREDICT],
        [series],
        ["lies inside the input DICOM series folder"],
        series / "seg.nii.gz",
    )
    cases = tmp_path / "cases"
    for name in ("a.nii.gz", "b.nii.gz"):
        write_nifti(np.random.default_rng(1).random((20, 18, 12), dtype=np.float32), np.eye(4), cases / name)
    _fails(capsys, ["predict", "-i", str(cases), "-o", str(cases), *PREDICT], [cases], ["a.nii.gz", "is the input"])
    _fails(
        capsys,
        ["predict", "-i", str(cases), "-o", str(cases / "preds"), *PREDICT],
        [cases],
        ["lies inside the input folder", "--allow-output-in-input"],
        cases / "preds",
    )
    assert main(["predict", "-i", str(cases), "-o", str(cases / "preds"), *PREDICT, "--allow-output-in-input"]) == 0
    assert sorted(p.name for p in (cases / "preds").iterdir()) == ["a.nii.gz", "b.nii.gz"]


def test_train_refuses_a_run_folder_inside_the_data(capsys, synth_dataset):
    data, spec_file = synth_dataset
    args = ["train", "--dataset", "synth-ct", "--datasets", str(spec_file), "--data", str(data)]
    _fails(capsys, [*args, "--out", str(data / "run")], [data], ["lies inside the input folder"], data / "run")


# ---------------------------------------------------------------------------------------------
# one reader path: broken DICOM series through predict, train and pretrain
# ---------------------------------------------------------------------------------------------


def test_a_series_with_a_missing_slice_fails_predict_train_and_pretrain(capsys, tmp_path, broken_series):
    out = tmp_path / "seg.nii.gz"
    _fails(
        capsys,
        ["predict", "-i", str(broken_series), "-o", str(out), *PREDICT],
        [broken_series],
        [str(broken_series), "missing slice(s)"],
        out,
    )
    # the same series as the image of a training case
    root = tmp_path / "dataset"
    root.mkdir()
    write_nifti(np.zeros((16, 16, 4), np.uint8), np.eye(4), root / "label.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps({"training": [{"image": str(broken_series), "label": "./label.nii.gz"}]})
    )
    entry = {"channel_names": ["CT"], "labels": {"background": 0, "organ": 1}, "file_ending": "dicom"}
    (tmp_path / "d.yaml").write_text(json.dumps({"dicom-ct": {**entry, "roi_size": [64, 64, 32]}}))
    run = tmp_path / "run"
    _fails(
        capsys,
        [
            "train",
            "--dataset",
            "dicom-ct",
            "--datasets",
            str(tmp_path / "d.yaml"),
            "--data",
            str(root),
            "--out",
            str(run),
            "--epochs",
            "1",
        ],
        [broken_series, root],
        ["missing slice(s)"],
    )
    assert not (run / "checkpoint_last.pt").exists()
    # and as one of the unlabeled volumes of pretraining
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copytree(broken_series, scans / "patient1")
    _fails(
        capsys,
        [
            "pretrain",
            "--model",
            "swin_unetr_tiny",
            "--data",
            str(scans),
            "--out",
            str(tmp_path / "ssl"),
            "--roi",
            "64",
            "64",
            "64",
            "--epochs",
            "1",
        ],
        [scans],
        ["patient1", "missing slice(s)"],
    )


def test_a_series_with_one_slice_of_another_pixel_spacing_fails(capsys, tmp_path):
    series = tmp_path / "series"
    shutil.copytree(CT5N, series)
    first = sorted(series.iterdir())[1]
    ds = pydicom.dcmread(first)
    ds.PixelSpacing = [0.6, 0.6]
    ds.save_as(first)
    out = tmp_path / "seg.nii.gz"
    _fails(
        capsys, ["predict", "-i", str(series), "-o", str(out), *PREDICT], [series], ["inconsistent pixel spacing"], out
    )


# ---------------------------------------------------------------------------------------------
# one line for every unreadable file
# ---------------------------------------------------------------------------------------------


def _nifti_bytes(tmp_path: Path) -> bytes:
    path = write_nifti(np.ones((8, 8, 8), np.float32), np.eye(4), tmp_path / "ref.nii")
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.mark.parametrize(
    "name,content,fragment",
    [
        ("empty.nii.gz", b"", "empty file (0 bytes)"),
        ("garbage.nii.gz", bytes(range(256)) * 4, "not gzip-compressed"),
        ("notes.nii", b"patient notes, not an image\n" * 20, "not a NIfTI file (starts with text"),
        ("raw.nii.gz", None, "not gzip-compressed (an uncompressed NIfTI?): rename it to .nii"),
        ("scan.xyz", b"\x00" * 400, "unsupported file type '.xyz'"),
    ],
)
def test_unreadable_files_are_one_line_saying_what_the_file_is(capsys, tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(_nifti_bytes(tmp_path) if content is None else content)
    out = tmp_path / "out" / "seg.nii.gz"
    line = _fails(capsys, ["predict", "-i", str(path), "-o", str(out), *PREDICT], [path], [str(path), fragment], out)
    assert "suitable reader" not in line and "install" not in line  # not MONAI's multi-reader essay


def _header_edit(tmp_path: Path, name: str, edit) -> Path:
    img = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    edit(img)
    path = tmp_path / name
    nib.save(img, path)
    return path


def _raw_nifti(tmp_path: Path, name: str, edit) -> Path:
    """An uncompressed NIfTI whose header ``edit(header)`` changed, written byte by byte (nibabel would repair it)."""
    header = nib.Nifti1Header()
    header.set_data_shape((8, 8, 8))
    header.set_data_dtype(np.float32)
    header.set_qform(np.diag([1.0, 1.0, 2.0, 1.0]), code=1)
    header["vox_offset"] = 352
    edit(header)
    path = tmp_path / name
    path.write_bytes(header.binaryblock + b"\x00" * 4 + np.ones(512, np.float32).tobytes())
    return path


def _nan_spacing(header) -> None:
    header["pixdim"][2] = np.nan


def _huge_header(tmp_path: Path) -> Path:
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.float32)
    header.set_qform(np.eye(4), code=1)
    path = tmp_path / "huge.nii"
    path.write_bytes(header.binaryblock + b"\x00" * 4 + np.zeros(64, np.float32).tobytes())
    return path


@pytest.mark.parametrize(
    "make,fragment",
    [
        (
            lambda t: _header_edit(t, "zero.nii.gz", lambda i: i.set_sform(np.diag([1.0, 0.0, 2.0, 1.0]), code=1)),
            "has a zero",
        ),
        (lambda t: _raw_nifti(t, "nan.nii", _nan_spacing), "NaN"),
        (
            lambda t: _header_edit(
                t,
                "singular.nii.gz",
                lambda i: i.set_sform(np.array([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]), code=1),
            ),
            "singular affine",
        ),
        (_huge_header, "more than the limit"),
        (
            lambda t: (
                nib.save(nib.Nifti1Image(np.ones((6, 6, 6, 2, 3), np.float32), np.eye(4)), t / "five.nii.gz")
                or t / "five.nii.gz"
            ),
            "5D image of shape",
        ),
        (
            lambda t: (
                nib.save(nib.Nifti1Image(np.ones((6, 6, 6), np.complex64), np.eye(4)), t / "cplx.nii.gz")
                or t / "cplx.nii.gz"
            ),
            "complex-valued data (complex64)",
        ),
    ],
)
def test_broken_headers_are_one_line_before_any_voxel_is_read(capsys, tmp_path, make, fragment):
    path = make(tmp_path)
    out = tmp_path / "seg.nii.gz"
    _fails(capsys, ["predict", "-i", str(path), "-o", str(out), *PREDICT], [path], [path.name, fragment], out)


# ---------------------------------------------------------------------------------------------
# devices, precision, resume
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "device,fragment",
    [("gpu", "unknown device 'gpu': use auto, cpu, cuda or cuda:N"), ("cuda:7", "cuda:7")],
)
def test_devices_that_cannot_work_are_one_line(capsys, tmp_path, device, fragment):
    scan = write_nifti(np.ones((8, 8, 8), np.float32), np.eye(4), tmp_path / "scan.nii.gz")
    out = tmp_path / "seg.nii.gz"
    _fails(capsys, ["predict", "-i", str(scan), "-o", str(out), *PREDICT, "--device", device], [scan], [fragment], out)


def test_fp16_on_the_cpu_is_refused_and_emulated_bf16_warns(capsys, tmp_path, monkeypatch, caplog):
    import medswin.amp

    scan = write_nifti(np.ones((8, 8, 8), np.float32), np.eye(4), tmp_path / "scan.nii.gz")
    predict = [*PREDICT[:-2]]
    predict[predict.index("--roi") + 2] = "32"  # one 64x32x32 window: bf16 runs emulated (~16x slower) on AVX2
    args = ["predict", "-i", str(scan), "-o", str(tmp_path / "seg.nii.gz"), *predict, "--device", "cpu"]
    _fails(capsys, [*args, "--amp", "fp16"], [scan], ["fp16 autocast is only supported on CUDA"])
    monkeypatch.setattr(medswin.amp, "cpu_has_fast_bf16", lambda: False)
    medswin.amp._warn_emulated_bf16.cache_clear()
    with caplog.at_level("WARNING", logger="medswin.amp"):
        assert main([*args, "--amp", "bf16"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "medswin.amp"]
    assert len(warnings) == 1 and "no native bf16" in warnings[0] and "slower than fp32" in warnings[0]


def test_resume_without_a_checkpoint_is_one_line_before_any_data_is_read(capsys, tmp_path, synth_dataset):
    data, spec_file = synth_dataset
    run = tmp_path / "run"
    _fails(
        capsys,
        [
            "train",
            "--dataset",
            "synth-ct",
            "--datasets",
            str(spec_file),
            "--data",
            str(data),
            "--out",
            str(run),
            "--resume",
        ],
        [data],
        ["--resume: no checkpoint at", "checkpoint_last.pt"],
    )


def test_train_needs_a_dataset_name(capsys, tmp_path):
    _fails(capsys, ["train", "--data", str(tmp_path)], [], ["no dataset: pass --dataset NAME"])


# ---------------------------------------------------------------------------------------------
# a real process: killed at a random moment, the output path holds nothing
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_predict_killed_with_sigkill_leaves_nothing_at_the_output_path(tmp_path):
    scan = write_nifti(
        np.random.default_rng(2).random((96, 96, 64), dtype=np.float32) * 300,
        np.diag([1.5, 1.5, 2, 1]),
        tmp_path / "scan.nii.gz",
    )
    before = _digest(scan)
    out = tmp_path / "pred" / "scan_seg.nii.gz"
    args = [sys.executable, "-m", "medswin", "predict", "-i", str(scan), "-o", str(out), *PREDICT, "--mirror"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    delays = np.random.default_rng(int(time.time())).uniform(0.5, 4.0, size=2)
    for delay in delays:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(float(delay))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert not out.exists(), f"killed after {delay:.2f} s, {out} exists"
        assert _digest(scan) == before
    done = subprocess.run(args[:-1], env=env, capture_output=True, text=True, timeout=600)  # no --mirror: 8x less
    assert done.returncode == 0, done.stderr
    assert nib.load(out).shape == (96, 96, 64) and _digest(scan) == before
