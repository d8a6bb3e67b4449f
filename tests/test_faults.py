"""Faults a long unattended run meets: SIGKILL at a random moment, a full disk, a read-only folder, two
processes writing the same output, a resampling that would not fit in memory.  After each, the outputs are
complete or absent (never half-written), the inputs unchanged, and a rerun finishes the work."""

from __future__ import annotations

import csv
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medswin.checkpoint import save_checkpoint
from medswin.cli import main
from medswin.data.io import load_volume, write_nifti
from medswin.data.spec import parse_spec
from medswin.data.synthetic import make_phantom, make_spine_phantom, write_synthetic_dataset
from medswin.models import create_model

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SPEC = {
    "channel_names": ["CT"],
    "labels": {"background": 0, "organ": 1, "lesion": 2},
    "file_ending": ".nii.gz",
    "target_spacing": [1.5, 1.5, 2.0],
    "normalization": {"type": "ct", "a_min": -175, "a_max": 250},
    "roi_size": [64, 64, 32],
}
RNG = random.Random()  # a random moment on every run: the test must hold wherever the kill lands


def _medswin(*args: str) -> list[str]:
    return [sys.executable, "-m", "medswin", *map(str, args)]


def _kill_after(cmd: list[str], ready, extra_s: tuple[float, float], timeout: float = 300) -> bool:
    """Start ``cmd``, wait until ``ready()``, then a random ``extra_s`` more, then SIGKILL; True if it was still
    running when killed."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(RNG.uniform(*extra_s))
    running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return running


def _no_temp_files(folder: Path) -> None:
    left = [p for p in folder.rglob(".tmp-*")]
    assert left == [], left


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained swin_unetr_tiny checkpoint for 3 classes (what `medswin predict --model` reads)."""
    torch.manual_seed(0)
    model = create_model("swin_unetr_tiny", in_channels=1, out_channels=3)
    spec = parse_spec("faults-ct", SPEC)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    run_info = {
        "model": model.state_dict(),
        "model_name": "swin_unetr_tiny",
        "model_kwargs": {},
        "in_channels": 1,
        "out_channels": 3,
        "roi_size": [64, 64, 32],
        "spec": spec.to_dict(),
    }
    return save_checkpoint(run_info, path)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort") / "cases"
    for i in range(5):
        ph = make_phantom((40, 40, 24), num_classes=3, modality="ct", spacing=(1.5, 1.5, 2.0), seed=10 + i)
        write_nifti(ph.image[0], ph.affine, folder / f"case{i}.nii.gz")
    return folder


# ---------------------------------------------------------------------------------------------
# SIGKILL, then the same command finishes the work
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_predict_killed_over_a_cohort_then_skip_existing_finishes_only_the_missing_ones(
    tmp_path, checkpoint, cohort, caplog
):
    reference = tmp_path / "reference"
    assert main(["predict", "-i", str(cohort), "-o", str(reference), "--model", str(checkpoint), "--amp", "fp32"]) == 0
    out = tmp_path / "preds"
    cmd = _medswin("predict", "-i", cohort, "-o", out, "--model", checkpoint, "--amp", "fp32")
    _kill_after(cmd, lambda: out.is_dir() and any(out.glob("*.nii.gz")), (0.0, 1.5))
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    # wherever the kill landed, what is there is complete
    for name in before:
        np.testing.assert_array_equal(nib.load(out / name).get_fdata(), nib.load(reference / name).get_fdata())
    with caplog.at_level("INFO", logger="medswin.inference.predictor"):
        assert main([*map(str, cmd[3:]), "--skip-existing"]) == 0  # the same command, in this process
    if before:
        assert f"{len(before)} of 5 case(s) already predicted" in caplog.text
    for name, mtime in before.items():  # the finished ones were left alone
        assert (out / name).stat().st_mtime_ns == mtime
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"case{i}.nii.gz" for i in range(5)]
    for i in range(5):
        name = f"case{i}.nii.gz"
        np.testing.assert_array_equal(nib.load(out / name).get_fdata(), nib.load(reference / name).get_fdata())
    _no_temp_files(out)


@pytest.mark.slow
def test_data_prepare_killed_then_rerun_gives_the_uninterrupted_dataset(tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert main(["data", "prepare", "mni-tissue", str(clean)]) == 0
    cmd = _medswin("data", "prepare", "mni-tissue", killed)
    _kill_after(cmd, lambda: killed.is_dir(), (0.0, 1.0))
    for f in killed.rglob("[!.]*.nii.gz"):  # every file present is whole (hidden .tmp- files are not outputs)
        nib.load(f).get_fdata()
    assert main([*map(str, cmd[3:])]) == 0  # the same command again, in this process
    files = sorted(p.relative_to(clean) for p in clean.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(killed) for p in killed.rglob("*") if p.is_file())
    for rel in files:
        if rel.name.endswith(".nii.gz"):
            np.testing.assert_array_equal(nib.load(killed / rel).get_fdata(), nib.load(clean / rel).get_fdata())
        else:
            assert (killed / rel).read_bytes() == (clean / rel).read_bytes(), rel
    _no_temp_files(killed)


SPINE = {
    "spine-ct": {
        "channel_names": ["CT"],
        "labels": {"background": 0, "L1": 1, "L2": 2, "L3": 3, "L4": 4},
        "file_ending": ".nii.gz",
    }
}


@pytest.mark.slow
def test_prepare_x2s_killed_then_rerun_gives_the_uninterrupted_dataset(tmp_path):
    spec_file = tmp_path / "spine.yaml"
    spec_file.write_text(json.dumps(SPINE))
    cases = [make_spine_phantom((48, 48, 64), seed=i) for i in range(4)]
    ct = write_synthetic_dataset(
        tmp_path / "spine", "flat", cases, channel_names=["CT"], labels=SPINE["spine-ct"]["labels"]
    )
    before = sorted((p, p.read_bytes()) for p in ct.rglob("*") if p.is_file())
    args = ["data", "prepare-x2s", ct, "--dataset", "spine-ct", "--datasets", spec_file, "--size", "64", "64", "-o"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert main([*map(str, args), str(clean)]) == 0
    cmd = _medswin(*args, killed)
    _kill_after(cmd, lambda: (killed / "imagesTr").is_dir(), (0.0, 1.0))
    assert not (killed / "dataset.json").exists() or json.loads((killed / "dataset.json").read_text())
    assert main([*map(str, cmd[3:])]) == 0  # the same command again, in this process
    assert (
        json.loads((killed / "dataset.json").read_text())["training"]
        == json.loads((clean / "dataset.json").read_text())["training"]
    )
    for f in clean.rglob("*.nii.gz"):
        rel = f.relative_to(clean)
        np.testing.assert_array_equal(nib.load(killed / rel).get_fdata(), nib.load(f).get_fdata())
    _no_temp_files(killed)
    assert sorted((p, p.read_bytes()) for p in ct.rglob("*") if p.is_file()) == before  # the CT dataset untouched


def _losses(out: Path) -> list[float]:
    return [float(r["train_loss"]) for r in csv.DictReader((out / "metrics.csv").open())]


@pytest.mark.slow
def test_pretrain_killed_then_resume_repeats_the_uninterrupted_run(tmp_path):
    scans = tmp_path / "scans"
    for i in range(2):
        ph = make_phantom((64, 64, 64), num_classes=2, modality="ct", seed=20 + i)
        write_nifti(ph.image[0], ph.affine, scans / f"s{i}.nii.gz")
    common = ["--model", "swin_unetr_tiny", "--data", scans, "--roi", "64", "32", "32", "--epochs", "3"]
    common += [
        "--iterations-per-epoch",
        "1",
        "--num-samples",
        "1",
        "--amp",
        "fp32",
        "--seed",
        "0",
        "--ct",
        "--tasks",
        "simmim",
    ]
    full, killed = tmp_path / "full", tmp_path / "killed"
    full_run = subprocess.run(_medswin("pretrain", *common, "--out", full), env=ENV, capture_output=True)
    assert full_run.returncode == 0  # a process like the killed one (same threads: the same float results)
    reference = _losses(full)
    cmd = _medswin("pretrain", *common, "--out", killed)
    ready = lambda: (killed / "metrics.csv").is_file() and len(_losses(killed)) >= 1  # noqa: E731
    _kill_after(cmd, ready, (0.0, 0.5))
    if len(_losses(killed)) < 3:  # killed before the end: resume from the last checkpoint
        done = subprocess.run([*cmd, "--resume"], env=ENV, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert _losses(killed) == reference  # bit for bit (one thread: see tests/test_training.py)
    assert (killed / "encoder.pt").is_file()


# ---------------------------------------------------------------------------------------------
# the file system says no
# ---------------------------------------------------------------------------------------------


def _scan(tmp_path: Path) -> Path:
    ph = make_phantom((40, 40, 24), num_classes=3, modality="ct", spacing=(1.5, 1.5, 2.0), seed=3)
    return write_nifti(ph.image[0], ph.affine, tmp_path / "in" / "scan.nii.gz")


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line and not line.startswith(("INFO ", "WARNING ", "DEBUG "))]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "where,code,fragment",
    [
        ("write", errno.ENOSPC, "no space left on the device: free space or write elsewhere"),
        ("write", errno.EDQUOT, "disk quota exceeded: free space or write elsewhere"),
        ("open", errno.EACCES, "permission denied: write into a folder you may write to"),
        ("rename", errno.EROFS, "read-only file system: write elsewhere"),
    ],
)
def test_a_full_disk_or_a_read_only_folder_is_one_line_and_leaves_no_partial_file(
    capsys, tmp_path, monkeypatch, checkpoint, where, code, fragment
):
    import medswin.data.atomic as atomic

    scan = _scan(tmp_path)
    out = tmp_path / "out" / "seg.nii.gz"
    out.parent.mkdir()
    if where == "write":  # the writer fills part of the temporary file, then the disk is full

        def full(img, filename):
            Path(filename).write_bytes(b"\x1f\x8b partial")
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(nib, "save", full)
    elif where == "open":  # a folder the process may not write to (root ignores modes: the error is injected)
        monkeypatch.setattr(atomic.tempfile, "mkstemp", lambda **k: (_ for _ in ()).throw(PermissionError(code, "x")))
    else:  # a file system remounted read-only between writing and renaming
        monkeypatch.setattr(atomic.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(code, os.strerror(code))))
    assert main(["predict", "-i", str(scan), "-o", str(out), "--model", str(checkpoint), "--amp", "fp32"]) == 2
    line = _one_line(capsys)
    assert line == f"medswin predict: error: {out}: cannot write it ({fragment})"
    assert list(out.parent.iterdir()) == []  # no output, no temporary file


@pytest.mark.slow
def test_two_processes_writing_the_same_output_leave_one_valid_file(tmp_path, checkpoint):
    scan = _scan(tmp_path)
    out = tmp_path / "out" / "seg.nii.gz"
    cmd = _medswin("predict", "-i", scan, "-o", out, "--model", checkpoint, "--amp", "fp32")
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0, 0]
    assert sorted(p.name for p in out.parent.iterdir()) == ["seg.nii.gz"]
    assert load_volume(out).spatial_shape == (40, 40, 24)


# ---------------------------------------------------------------------------------------------
# resource bounds
# ---------------------------------------------------------------------------------------------


def test_a_resampling_beyond_the_voxel_limit_or_the_memory_is_refused_before_it_starts(capsys, tmp_path, monkeypatch):
    import medswin.data.headers as headers

    scan = _scan(tmp_path)  # 40 x 40 x 24 at 1.5 x 1.5 x 2 mm
    fine = {"fine": {**SPEC, "target_spacing": [0.1, 0.1, 0.1], "roi_size": [64, 64, 32]}}
    (tmp_path / "fine.yaml").write_text(json.dumps(fine))
    out = tmp_path / "seg.nii.gz"
    args = ["predict", "-i", str(scan), "-o", str(out), "--model", "swin_unetr_tiny", "--dataset", "fine"]
    args += ["--datasets", str(tmp_path / "fine.yaml")]
    monkeypatch.setenv("MEDSWIN_MAX_VOXELS", "1e8")
    assert main(args) == 2
    line = _one_line(capsys)
    assert line == (
        f"medswin predict: error: {scan}: resampling from 1.5x1.5x2 mm to 0.1x0.1x0.1 mm would make a 600x600x480 "
        "volume (1.7e8 voxels), more than the limit of 100000000: check the dataset's target_spacing, or raise "
        "the limit (MEDSWIN_MAX_VOXELS)"
    )
    monkeypatch.delenv("MEDSWIN_MAX_VOXELS")
    monkeypatch.setattr(headers, "_available_memory", lambda: 2 * 2**30)  # a 2 GiB machine
    assert main(args) == 2
    line = _one_line(capsys)
    assert "would make a 600x600x480 volume (1.7e8 voxels), needing about 9 GiB, more than the 2 GiB of memory" in line
    assert not out.exists()
