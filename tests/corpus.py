"""The bad-input corpus: every kind of broken file, header, scan, DICOM series, label map, config, checkpoint and
argument a user can hand ``medswin``, as DATA, run through the CLI by ``tests/test_corpus.py``.

Each :class:`Case` builds its input in a fresh folder (seeded generators, nothing binary committed) and says what
the command must do with it:

* ``expect="error"``: exit code 2 and ONE stderr line (besides logging lines) ``medswin <command>: error: ...``
  naming the file (or config, or argument) and the problem; no traceback; nothing at the output path; the input's
  bytes unchanged;
* ``expect="report"`` (``medswin data check``, which reports every problem it finds): exit code 1 with the problem
  listed on stdout, naming the file; the input unchanged;
* ``expect="ok"``: an input that is odd but legitimately processable: exit code 0, and ``Run.check`` asserts what
  came out.

``python tests/corpus.py`` prints the README table (``markdown_table()``).
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import shutil
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# the data model
# ---------------------------------------------------------------------------------------------

COMMANDS = (
    "predict",
    "adapt",
    "train",
    "pretrain",
    "evaluate",
    "data check",
    "data prepare-x2s",
    "bundle run",
    "bundle export",
    "export",
)
KINDS = ("files", "headers", "content", "dicom", "labels", "configs", "checkpoints", "arguments")
KIND_OUTCOMES = {
    "files": "refused before any voxel is read, naming the file and what it really is",
    "headers": "refused from the header alone, naming the file and the broken field",
    "content": "NaN/inf and training on an empty scan refused",
    "dicom": "refused naming the series folder (or the slice) and the inconsistency",
    "labels": "refused naming the label file: non-integer, unknown or negative values, another grid",
    "configs": "refused naming the file and the key (or the value the model cannot take)",
    "checkpoints": "refused naming the file; a pickle carrying code is never run",
    "arguments": "refused naming the option and the allowed values",
}


@dataclass
class Resources:
    """What the cases share, built once per test session (see ``tests/test_corpus.py``).

    ``spec_file``: a datasets.yaml with the entry ``corpus-ct`` (CT, labels 0/1/2, roi 64x64x32, no resampling);
    ``ckpt``: a medswin training checkpoint of an untrained ``swin_unetr_tiny`` for ``corpus-ct``;
    ``bundle_state``: the state dict of an untrained 4-class ``swin_unetr_tiny`` (the mni-tissue bundle's network);
    ``other_state``: the state dict of an untrained ``ds_transunet_tiny`` (another model's weights).
    """

    spec_file: Path
    ckpt: Path
    bundle_state: Path
    other_state: Path


@dataclass
class Run:
    """One built case: the CLI arguments, the inputs whose bytes must not change, the path that must not
    exist afterwards, the fragments the error line (or report) must hold, and what must be named in it."""

    argv: list[str]
    inputs: list[Path]
    output: Path | None
    expected: tuple[str, ...]
    names: str | None = None  # the file / config / argument the line must name (default: the first input)
    patch: Callable[[Any], None] | None = None  # gets pytest's monkeypatch (faked permissions)
    check: Callable[[Run, str, str], None] | None = None  # processable cases: (run, stdout, stderr)

    @property
    def named(self) -> str | None:
        return self.names if self.names is not None else (str(self.inputs[0]) if self.inputs else None)


@dataclass(frozen=True)
class Case:
    """A bad (or odd) input: ``build(tmp_path, resources) -> Run``."""

    id: str
    kind: str
    command: str
    title: str
    build: Callable[[Path, Resources], Run]
    expect: str = "error"  # "error" (exit 2), "report" (data check: exit 1, listed), "ok" (processed, exit 0)
    bug: str | None = None  # a known bug: the test is xfail(strict=True) with this reason

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind
        assert self.command in COMMANDS, self.command
        assert self.expect in ("error", "report", "ok"), self.expect


# ---------------------------------------------------------------------------------------------
# generators (seeded)
# ---------------------------------------------------------------------------------------------

AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])
TINY = ["--model", "swin_unetr_tiny", "--dataset", "btcv", "--roi", "64", "64", "32", "--amp", "fp32"]
SPEC = {
    "corpus-ct": {
        "description": "synthetic CT (bad-input corpus)",
        "channel_names": ["CT"],
        "labels": {"background": 0, "organ": 1, "lesion": 2},
        "file_ending": ".nii.gz",
        "layout": "decathlon",
        "normalization": {"type": "ct", "a_min": -175, "a_max": 250},
        "roi_size": [64, 64, 32],
        "licence": "synthetic",
        "source": "tests/corpus.py",
    }
}
MPEG2 = "1.2.840.10008.1.2.4.100"
NIFTI_DATATYPE, NIFTI_PIXDIM, NIFTI_MAGIC = 70, 76, 344  # NIfTI-1 header byte offsets


def ct_array(shape=(24, 24, 16), seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Noise around -50 HU with a bright ellipsoid (an organ), seeded."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    organ = (grid**2).sum(0) < 0.4
    return (rng.normal(-50, 20, shape) + 200 * organ).astype(dtype)


def label_array(shape=(24, 24, 16), dtype=np.uint8) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    labels = ((grid**2).sum(0) < 0.4).astype(dtype)
    labels[(grid**2).sum(0) < 0.05] = 2
    return labels


def nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE, edit: Callable | None = None) -> Path:
    """``array`` saved as it is (nibabel keeps its dtype), after ``edit(image)``."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, None, dtype=array.dtype if array.dtype == np.int64 else None)
    gram = affine[:3, :3].T @ affine[:3, :3]
    if np.allclose(gram, np.diag(np.diag(gram))) and np.all(np.diag(gram) > 0):
        img.set_qform(affine, code=1)
    else:  # a qform holds a rotation and positive spacings only: a singular or zero-spacing affine is an sform
        img.set_qform(None, code=0)
    img.set_sform(affine, code=1)
    if edit is not None:
        edit(img)
    nib.save(img, path)
    return path


def scan(path: Path, shape=(24, 24, 16), seed: int = 0, **kwargs) -> Path:
    return nifti(path, ct_array(shape, seed), **kwargs)


def raw_nifti(path: Path, edit: Callable, voxels: int = 8 * 8 * 8, shape=(8, 8, 8), dtype=np.float32) -> Path:
    """An uncompressed NIfTI written byte by byte after ``edit(header)`` (nibabel would repair the header)."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.diag([1.0, 1.0, 2.0, 1.0]), code=1)
    header["vox_offset"] = 352
    edit(header)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.binaryblock + b"\x00" * 4 + np.ones(voxels, dtype).tobytes())
    return path


def patch_bytes(path: Path, offset: int, data: bytes) -> Path:
    content = bytearray(path.read_bytes())
    content[offset : offset + len(data)] = data
    path.write_bytes(bytes(content))
    return path


def truncate(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def decathlon(root: Path, n: int = 2, shape=(24, 24, 16)) -> tuple[Path, list[Path], list[Path]]:
    """A Decathlon-layout folder of ``n`` labelled synthetic CT cases; ``(root, images, labels)``."""
    images, labels = [], []
    for i in range(n):
        images.append(scan(root / "imagesTr" / f"case_{i}.nii.gz", shape, seed=i))
        labels.append(nifti(root / "labelsTr" / f"case_{i}.nii.gz", label_array(shape)))
    entries = [{"image": f"./imagesTr/case_{i}.nii.gz", "label": f"./labelsTr/case_{i}.nii.gz"} for i in range(n)]
    (root / "dataset.json").write_text(json.dumps({"name": "corpus", "training": entries}))
    return root, images, labels


def ct5n() -> Path:
    import pydicom.data

    return Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892001" / "CT5N"


def series(folder: Path, edit: Callable[[list[Path]], None] | None = None) -> Path:
    """A copy of pydicom's genuine 5-slice CT series (16x16, 2.5 mm), slices sorted by position, then ``edit``."""
    import pydicom

    shutil.copytree(ct5n(), folder)
    if edit is not None:
        edit(sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2])))
    return folder


def edit_slice(path: Path, change: Callable) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def dataset_with_series(root: Path, folder_edit: Callable) -> Path:
    """A folder of volumes for pretraining holding one edited DICOM series ``patient1``."""
    root.mkdir(parents=True)
    return series(root / "patient1", folder_edit)


def torch_save(obj: Any, path: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def truncated_copy(source: Path, path: Path, fraction: float = 0.6) -> Path:
    data = source.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


class _Smuggled:
    """Pickled with ``__reduce__`` so that loading it would delete ``canary`` (weights_only must refuse it)."""

    def __init__(self, canary: Path) -> None:
        self.canary = str(canary)

    def __reduce__(self):
        return (os.remove, (self.canary,))


def code_carrying_checkpoint(tmp: Path, name: str, state: dict | None = None) -> tuple[Path, Path]:
    """``(checkpoint, canary)``: a checkpoint whose unpickling would delete ``canary``."""
    canary = tmp / "canary.txt"
    canary.write_text("must survive")
    body = {"model": state or {}, "model_name": "swin_unetr_tiny", "hook": _Smuggled(canary)}
    return torch_save(body, tmp / name), canary


def permission_denied(path: Path) -> Callable[[Any], None]:
    """A monkeypatch hook: opening ``path`` raises PermissionError (root ignores file modes here)."""

    def patch(monkeypatch: Any) -> None:
        import builtins
        import errno

        from medswin.data import sniff as sniff_module

        real_open = builtins.open

        def fake_open(p, *args, **kwargs):
            if isinstance(p, (str, os.PathLike)) and Path(p) == path:
                raise PermissionError(errno.EACCES, "Permission denied", str(p))
            return real_open(p, *args, **kwargs)

        monkeypatch.setattr(sniff_module, "open", fake_open, raising=False)

    return patch


# ---------------------------------------------------------------------------------------------
# command lines
# ---------------------------------------------------------------------------------------------


def predict(t: Path, inp: Path, *extra: str, model: tuple[str, ...] = tuple(TINY)) -> list[str]:
    return ["predict", "-i", str(inp), "-o", str(t / "out" / "seg.nii.gz"), *model, *extra]


def adapt(t: Path, inp: Path, *extra: str) -> list[str]:
    # the model-side path (the corpus CT has no bias field for the default n4); a later --method wins
    return ["adapt", "-i", str(inp), "-o", str(t / "out"), *TINY, "--method", "tent", "--adapt-steps", "1", *extra]


def train(t: Path, r: Resources, data: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--dataset",
        "corpus-ct",
        "--datasets",
        str(r.spec_file),
        "--data",
        str(data),
        "--out",
        str(t / "run"),
        "--epochs",
        "1",
        "--iterations-per-epoch",
        "1",
        "--num-samples",
        "1",
        "--amp",
        "fp32",
        "--device",
        "cpu",
        *extra,
    ]


def pretrain(t: Path, data: Path, *extra: str) -> list[str]:
    return [
        "pretrain",
        "--model",
        "swin_unetr_tiny",
        "--data",
        str(data),
        "--out",
        str(t / "ssl"),
        "--roi",
        "64",
        "64",
        "32",
        "--epochs",
        "1",
        "--iterations-per-epoch",
        "1",
        "--num-samples",
        "1",
        "--amp",
        "fp32",
        "--device",
        "cpu",
        *extra,
    ]


def evaluate(t: Path, r: Resources, pred: Path, gt: Path, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--pred",
        str(pred),
        "--gt",
        str(gt),
        "--dataset",
        "corpus-ct",
        "--datasets",
        str(r.spec_file),
        "--out",
        str(t / "report"),
        *extra,
    ]


def check(r: Resources, data: Path, *extra: str) -> list[str]:
    return ["data", "check", str(data), "--dataset", "corpus-ct", "--datasets", str(r.spec_file), *extra]


def x2s(t: Path, r: Resources, data: Path, *extra: str, dataset: str = "corpus-ct") -> list[str]:
    return [
        "data",
        "prepare-x2s",
        str(data),
        "--dataset",
        dataset,
        "--datasets",
        str(r.spec_file),
        "-o",
        str(t / "x2s"),
        "--size",
        "32",
        "32",
        *extra,
    ]


BUNDLE = "swin_unetr_mni_tissue"
BUNDLE_TINY = ["model_name=swin_unetr_tiny", "roi_size=[64,64,32]"]


def bundle_run(t: Path, data: Path, ckpt: Path, *extra: str) -> list[str]:
    overrides = [f"dataset_dir={data}", f"ckpt_path={ckpt}", f"bundle_root={t / 'bundle'}", "num_workers=0"]
    return ["bundle", "run", BUNDLE, "--config", "inference", "--override", *overrides, *BUNDLE_TINY, *extra]


def bundle_export(t: Path, ckpt: Path, *extra: str, out: Path | None = None) -> list[str]:
    return ["bundle", "export", BUNDLE, "--ckpt", str(ckpt), "-o", str(out or t / "model.ts"), *extra] + [
        "--override",
        *BUNDLE_TINY,
    ]


# ---------------------------------------------------------------------------------------------
# builders, by kind
# ---------------------------------------------------------------------------------------------


def _predict_file(
    make: Callable[[Path], Path], *fragments: str, extra: tuple[str, ...] = (), names: str | None = None
) -> Callable:
    """``medswin predict`` on the file ``make(tmp)`` builds: refused naming it (or ``names``: an option)."""

    def build(t: Path, r: Resources) -> Run:
        path = make(t)
        return Run(predict(t, path, *extra), [path], t / "out", fragments, names=names)

    return build


def _nii_gz_bytes(t: Path) -> bytes:
    path = scan(t / "ref" / "ref.nii.gz")
    data = path.read_bytes()
    shutil.rmtree(t / "ref")
    return data


def _nii_bytes(t: Path) -> bytes:
    path = scan(t / "ref" / "ref.nii")
    data = path.read_bytes()
    shutil.rmtree(t / "ref")
    return data


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _link_loop(t: Path) -> Path:
    folder = t / "links"
    folder.mkdir()
    (folder / "a.nii.gz").symlink_to(folder / "b.nii.gz")
    (folder / "b.nii.gz").symlink_to(folder / "a.nii.gz")
    return folder / "a.nii.gz"


def _predict_link(make: Callable[[Path], Path], *fragments: str) -> Callable:
    """``predict`` on a symbolic link; the folder holding the links is what is hashed."""

    def build(t: Path, r: Resources) -> Run:
        link = make(t)
        return Run(predict(t, link), [link.parent], t / "out", fragments, names=str(link))

    return build


def _broken_link(t: Path) -> Path:
    folder = t / "links"
    folder.mkdir()
    (folder / "scan.nii.gz").symlink_to(folder / "moved.nii.gz")
    return folder / "scan.nii.gz"


def _predict_denied(t: Path, r: Resources) -> Run:
    path = scan(t / "scan.nii.gz")
    return Run(predict(t, path), [path], t / "out", ("permission denied",), patch=permission_denied(path))


def _adapt_denied(t: Path, r: Resources) -> Run:
    path = scan(t / "scan.nii.gz")
    return Run(adapt(t, path), [path], t / "out", ("permission denied",), patch=permission_denied(path))


def _mha_without_data(t: Path) -> Path:
    path = t / "scan.mha"
    path.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementSpacing = 1 1 2\nElementType = MET_FLOAT\n"
        "ElementDataFile = scan.raw\n"
    )
    return path


def _nrrd_garbage(t: Path) -> Path:
    path = t / "scan.nrrd"
    header = b"NRRD0004\ntype: float\ndimension: 3\nsizes: 8 8 8\nendian: little\nencoding: gzip\n\n"
    path.write_bytes(header + bytes(np.random.default_rng(3).integers(0, 256, 300, dtype=np.uint8)))
    return path


def _png_named_nifti(t: Path) -> Path:
    return _write(t / "scan.nii.gz", b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200))


def _wrong_magic(t: Path) -> Path:
    return patch_bytes(_write(t / "scan.nii", _nii_bytes(t)), NIFTI_MAGIC, b"ni2\x00")


def _folder_named_like_a_file(t: Path) -> Path:
    folder = t / "scan.nii.gz"
    folder.mkdir()
    return folder


def _adapt_empty(t: Path, r: Resources) -> Run:
    path = _write(t / "scan.nii.gz", b"")
    return Run(adapt(t, path), [path], t / "out", ("empty file (0 bytes)",))


def _on_decathlon(command: Callable, out: str) -> Callable:
    """A case factory: ``command(t, r, root, *extra)`` on a 2-case Decathlon dataset after ``edit(root, images,
    labels)`` -> the broken file (named in the error unless ``names``); its outputs under ``t / out``."""

    def factory(
        edit: Callable[[Path, list[Path], list[Path]], Path], *fragments: str, extra=(), names: str | None = None
    ) -> Callable:
        def build(t: Path, r: Resources) -> Run:
            root, images, labels = decathlon(t / "ds")
            broken = edit(root, images, labels)
            return Run(command(t, r, root, *extra), [root], t / out, fragments, names=names or str(broken))

        return build

    return factory


_train_with = _on_decathlon(train, "run")  # medswin train
_x2s_with = _on_decathlon(x2s, "x2s")  # medswin data prepare-x2s


def _pretrain_with(make: Callable[[Path], Path], *fragments: str, extra=(), names: str | None = None) -> Callable:
    """``medswin pretrain`` on a folder of volumes: one good scan and the file ``make(folder)`` builds."""

    def build(t: Path, r: Resources) -> Run:
        folder = t / "scans"
        scan(folder / "good.nii.gz")
        broken = make(folder)
        return Run(pretrain(t, folder, *extra), [folder], t / "ssl", fragments, names=names or str(broken))

    return build


def _evaluate_with(
    edit: Callable[[Path, Path], Path],
    *fragments: str,
    expect_ok: Callable | None = None,
    extra=(),
    names: str | None = None,
) -> Callable:
    """``medswin evaluate`` on pred/ and gt/ each holding case_0 (equal labels), after ``edit(pred, gt)``."""

    def build(t: Path, r: Resources) -> Run:
        pred, gt = t / "pred", t / "gt"
        nifti(pred / "case_0.nii.gz", label_array())
        nifti(gt / "case_0.nii.gz", label_array())
        broken = edit(pred, gt)
        return Run(
            evaluate(t, r, pred, gt, *extra),
            [pred, gt],
            t / "report",
            fragments,
            names=names or str(broken),
            check=expect_ok,
        )

    return build


def _check_with(edit: Callable[[Path, list[Path], list[Path]], Path], *fragments: str, check_ok=None) -> Callable:
    """``medswin data check`` on a 2-case Decathlon dataset after ``edit`` -> the file the report must name."""

    def build(t: Path, r: Resources) -> Run:
        root, images, labels = decathlon(t / "ds")
        broken = edit(root, images, labels)
        return Run(check(r, root), [root], None, fragments, names=str(broken), check=check_ok)

    return build


def _bundle_with(make: Callable[[Path], Path], *fragments: str, names: str | None = None) -> Callable:
    """``medswin bundle run swin_unetr_mni_tissue --config inference`` on a folder holding ``make(folder)``."""

    def build(t: Path, r: Resources) -> Run:
        folder = t / "images"
        folder.mkdir()
        broken = make(folder)
        return Run(bundle_run(t, folder, r.bundle_state), [folder], t / "bundle", fragments, names=names or str(broken))

    return build


def _canary(t: Path) -> list[Path]:
    """The canary file a code-carrying checkpoint would delete, when the case made one (hashed like an input)."""
    return [t / "canary.txt"] if (t / "canary.txt").exists() else []


def _bundle_ckpt(make: Callable[[Path, Resources], Path], *fragments: str) -> Callable:
    """``bundle run`` on a good scan with the checkpoint ``make(tmp, resources)`` builds."""

    def build(t: Path, r: Resources) -> Run:
        folder = t / "images"
        scan(folder / "brain.nii.gz")
        ckpt = make(t, r)
        inputs = [folder, ckpt, *_canary(t)]
        return Run(bundle_run(t, folder, ckpt), inputs, t / "bundle", fragments, names=str(ckpt))

    return build


def _export_ckpt(make: Callable[[Path, Resources], Path], *fragments: str) -> Callable:
    """``bundle export --ckpt`` the checkpoint ``make(tmp, resources)`` builds."""

    def build(t: Path, r: Resources) -> Run:
        ckpt = make(t, r)
        return Run(bundle_export(t, ckpt), [ckpt, *_canary(t)], t / "model.ts", fragments)

    return build


# --- headers ---------------------------------------------------------------------------------


def _set_pixdim(index: int, value: float) -> Callable:
    def edit(header) -> None:
        header.set_qform(None, code=0)
        header.set_sform(None, code=0)
        header["pixdim"][index] = value

    return edit


def _qform_sform_apart(img) -> None:
    shifted = AFFINE.copy()
    shifted[:3, 3] = [12.0, 0.0, 0.0]  # 12 mm: 8 voxels
    img.set_sform(shifted, code=1)


def _time_series(t: Path) -> Path:
    def edit(img) -> None:
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = 2.5

    return nifti(t / "fmri.nii.gz", np.stack([ct_array(seed=i) for i in range(3)], -1), edit=edit)


def _rgb(t: Path) -> Path:
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return nifti(t / "photo.nii.gz", rgb)


def _dims_beyond_data(header) -> None:
    header.set_data_shape((8, 8, 16))  # the file holds 8x8x8 voxels


# --- content ---------------------------------------------------------------------------------


def _with_values(name: str, values: dict[tuple[int, int, int], float], dtype=np.float32, shape=(24, 24, 16)):
    def make(folder: Path) -> Path:
        array = ct_array(shape).astype(dtype)
        for index, value in values.items():
            array[index] = value
        return nifti(folder / name, array)

    return make


def _mha_with_nan(t: Path) -> Path:
    import SimpleITK as sitk

    array = ct_array((16, 24, 24))
    array[3, 4, 5] = np.nan
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.5, 2.0))
    path = t / "scan.mha"
    sitk.WriteImage(image, str(path))
    return path


# --- DICOM -----------------------------------------------------------------------------------


def _dicom_predict(edit: Callable[[list[Path]], None], *fragments: str) -> Callable:
    def build(t: Path, r: Resources) -> Run:
        folder = series(t / "series", edit)
        return Run(predict(t, folder), [folder], t / "out", fragments)

    return build


def _two_series(slices: list[Path]) -> None:
    import pydicom

    edit_slice(
        slices[-1],
        lambda ds: setattr(ds, "SeriesInstanceUID", pydicom.uid.generate_uid(prefix=None, entropy_srcs=["corpus"])),
    )


def _missing_slice(slices: list[Path]) -> None:
    slices[2].unlink()


def _duplicate_position(slices: list[Path]) -> None:
    import pydicom

    position = pydicom.dcmread(slices[1]).ImagePositionPatient
    edit_slice(slices[2], lambda ds: setattr(ds, "ImagePositionPatient", position))


def _mixed_spacing(slices: list[Path]) -> None:
    edit_slice(slices[3], lambda ds: setattr(ds, "PixelSpacing", [0.7, 0.7]))


def _mixed_orientation(slices: list[Path]) -> None:
    edit_slice(slices[1], lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0.8, 0.6]))


def _mixed_size(slices: list[Path]) -> None:
    def change(ds) -> None:
        ds.Rows = 8
        ds.PixelData = ds.PixelData[: 8 * 16 * 2]

    edit_slice(slices[2], change)


def _no_pixel_data(slices: list[Path]) -> None:
    edit_slice(slices[2], lambda ds: delattr(ds, "PixelData"))


def _truncated_slice(slices: list[Path]) -> None:
    truncate(slices[1], 3700)  # inside the 512 bytes of pixel data


def _no_decoder(t: Path, r: Resources) -> Run:
    import pydicom
    import pydicom.data

    folder = t / "mpeg2"
    folder.mkdir()
    ds = pydicom.dcmread(Path(pydicom.data.__file__).parent / "test_files" / "MR_small_RLE.dcm")
    ds.file_meta.TransferSyntaxUID = MPEG2  # genuine encapsulated pixel data, relabelled as MPEG2
    ds.save_as(folder / "slice.dcm")
    return Run(predict(t, folder), [folder], t / "out", ("MPEG2",))


def _stray_file_checked(run: Run, out: str, err: str) -> None:
    import nibabel as nib

    assert nib.load(run.argv[4]).shape == (16, 16, 5)
    assert "notes.txt" in err and "skipped 1 non-DICOM file" in err, err


def _stray_file(t: Path, r: Resources) -> Run:
    folder = series(t / "series")
    (folder / "notes.txt").write_text("scanned on the second floor\n")
    return Run(predict(t, folder), [folder], None, (), check=_stray_file_checked)


def _pretrain_series(edit: Callable[[list[Path]], None], *fragments: str) -> Callable:
    def build(t: Path, r: Resources) -> Run:
        folder = dataset_with_series(t / "scans", edit)
        return Run(pretrain(t, folder.parent), [folder.parent], t / "ssl", fragments, names=str(folder))

    return build


def _adapt_two_series(t: Path, r: Resources) -> Run:
    folder = series(t / "series", _two_series)
    return Run(adapt(t, folder), [folder], t / "out", ("2 DICOM series",))


def _adapt_mixed_orientation(t: Path, r: Resources) -> Run:
    folder = series(t / "series", _mixed_orientation)
    return Run(adapt(t, folder), [folder], t / "out", ("inconsistent slice orientation",))


def _bundle_series(edit: Callable[[list[Path]], None], *fragments: str) -> Callable:
    def build(t: Path, r: Resources) -> Run:
        folder = series(t / "series", edit)
        return Run(bundle_run(t, folder, r.bundle_state), [folder], t / "bundle", fragments, names=str(folder))

    return build


def _train_series_image(t: Path, r: Resources) -> Run:
    root = t / "ds"
    folder = series(root / "imagesTr" / "case_0", _no_pixel_data)
    nifti(root / "labelsTr" / "case_0.nii.gz", np.zeros((16, 16, 5), np.uint8))
    entries = [{"image": "./imagesTr/case_0", "label": "./labelsTr/case_0.nii.gz"}]
    (root / "dataset.json").write_text(json.dumps({"training": entries}))
    return Run(train(t, r, root), [root], t / "run", ("DICOM file has no pixel data",), names=str(folder))


# --- labels ----------------------------------------------------------------------------------


def _replace_label(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.unlink()
    return nifti(path, array, affine)


def _float_label(path: Path) -> Path:
    return _replace_label(path, label_array(dtype=np.float32) * 0.5)


def _label_value(path: Path, value: int, dtype=np.int16) -> Path:
    labels = label_array(dtype=dtype)
    labels[0, 0, 0] = value
    return _replace_label(path, labels)


def _label_shape(path: Path) -> Path:
    return _replace_label(path, label_array((24, 24, 15)))


def _label_affine(path: Path) -> Path:
    shifted = AFFINE.copy()
    shifted[:3, 3] = [5.0, 0.0, 0.0]
    return _replace_label(path, label_array(), shifted)


def _int64_evaluated(run: Run, out: str, err: str) -> None:
    report = Path(run.argv[run.argv.index("--out") + 1])
    assert report.is_dir() and any(report.iterdir())
    assert "organ" in out and "1.0000" in out, out  # equal label maps: Dice 1


def _int64_checked(run: Run, out: str, err: str) -> None:
    assert "2 case(s) checked" in out and "no problems found" in out, out


# --- configs ---------------------------------------------------------------------------------


def _train_config(text: str | bytes, *fragments: str, names: str | None = None) -> Callable:
    def build(t: Path, r: Resources) -> Run:
        root, _, _ = decathlon(t / "ds")
        config = t / "run.yaml"
        config.write_bytes(text if isinstance(text, bytes) else text.encode())
        argv = train(t, r, root, "--config", str(config))
        return Run(argv, [root, config], t / "run", fragments, names=names or str(config))

    return build


def _pretrain_config(text: str, *fragments: str, names: str | None = None) -> Callable:
    def build(t: Path, r: Resources) -> Run:
        folder = t / "scans"
        scan(folder / "a.nii.gz")
        config = t / "ssl.yaml"
        config.write_text(text)
        return Run(
            pretrain(t, folder, "--config", str(config)),
            [folder, config],
            t / "ssl",
            fragments,
            names=names or str(config),
        )

    return build


def _datasets_file(text: str, command: str, *fragments: str) -> Callable:
    """A broken ``--datasets`` file given to ``command``."""

    def build(t: Path, r: Resources) -> Run:
        spec = t / "datasets.yaml"
        spec.write_text(text)
        if command == "predict":
            path = scan(t / "scan.nii.gz")
            argv = ["predict", "-i", str(path), "-o", str(t / "out" / "seg.nii.gz"), "--model", "swin_unetr_tiny"]
            argv += ["--dataset", "mine", "--datasets", str(spec), "--amp", "fp32"]
            return Run(argv, [path, spec], t / "out", fragments, names=str(spec))
        if command == "evaluate":
            pred, gt = t / "pred", t / "gt"
            nifti(pred / "case_0.nii.gz", label_array())
            nifti(gt / "case_0.nii.gz", label_array())
            argv = ["evaluate", "--pred", str(pred), "--gt", str(gt), "--dataset", "mine", "--datasets", str(spec)]
            return Run([*argv, "--out", str(t / "report")], [pred, gt, spec], t / "report", fragments, names=str(spec))
        root, _, _ = decathlon(t / "ds")
        if command == "data check":
            argv = ["data", "check", str(root), "--dataset", "mine", "--datasets", str(spec)]
            return Run(argv, [root, spec], None, fragments, names=str(spec))
        argv = ["data", "prepare-x2s", str(root), "--dataset", "mine", "--datasets", str(spec), "-o", str(t / "x2s")]
        return Run(argv, [root, spec], t / "x2s", fragments, names=str(spec))

    return build


ENTRY = dict(SPEC["corpus-ct"])


def _entry(**changes: Any) -> str:
    return json.dumps({"mine": {**ENTRY, **changes}})


def _predict_datalist(text: str, *fragments: str) -> Callable:
    def build(t: Path, r: Resources) -> Run:
        scan(t / "a.nii.gz")
        datalist = t / "cases.json"
        datalist.write_text(text)
        return Run(predict(t, datalist).copy(), [datalist], t / "out", fragments)

    return build


def _predict_datalist_to_folder(text: str, *fragments: str) -> Callable:
    def build(t: Path, r: Resources) -> Run:
        scan(t / "a.nii.gz")
        datalist = t / "cases.json"
        datalist.write_text(text)
        argv = ["predict", "-i", str(datalist), "-o", str(t / "out"), *TINY]
        return Run(argv, [datalist], t / "out", fragments)

    return build


def _pretrain_datalist(text: str, *fragments: str) -> Callable:
    def build(t: Path, r: Resources) -> Run:
        scan(t / "a.nii.gz")
        datalist = t / "volumes.json"
        datalist.write_text(text)
        return Run(pretrain(t, datalist), [datalist], t / "ssl", fragments)

    return build


def _dataset_json(text: str) -> Callable[[Path, list[Path], list[Path]], Path]:
    def edit(root: Path, images: list[Path], labels: list[Path]) -> Path:
        (root / "dataset.json").write_text(text)
        return root / "dataset.json"

    return edit


def _bundle_override(*overrides: str, fragments: tuple[str, ...], names: str) -> Callable:
    def build(t: Path, r: Resources) -> Run:
        folder = t / "images"
        scan(folder / "brain.nii.gz")
        argv = bundle_run(t, folder, r.bundle_state, *overrides)
        return Run(argv, [folder], t / "bundle", fragments, names=names)

    return build


# --- checkpoints -----------------------------------------------------------------------------


def _truncated_ckpt(t: Path, r: Resources) -> Path:
    return truncated_copy(r.ckpt, t / "run" / "checkpoint_best.pt")


def _state_dict_ckpt(t: Path, r: Resources) -> Path:
    import torch

    return torch_save(torch.load(r.ckpt, weights_only=True)["model"], t / "weights.pt")


def _other_model_ckpt(t: Path, r: Resources) -> Path:
    """A medswin checkpoint naming swin_unetr_tiny whose weights are ds_transunet_tiny's."""
    import torch

    ckpt = torch.load(r.ckpt, weights_only=True)
    ckpt["model"] = torch.load(r.other_state, weights_only=True)
    return torch_save(ckpt, t / "other.pt")


def _pickle_ckpt(t: Path, r: Resources) -> Path:
    return code_carrying_checkpoint(t, "smuggled.pt")[0]


def _predict_ckpt(make: Callable[[Path, Resources], Path], *fragments: str) -> Callable:
    def build(t: Path, r: Resources) -> Run:
        path = scan(t / "scan.nii.gz")
        ckpt = make(t, r)
        argv = ["predict", "-i", str(path), "-o", str(t / "out" / "seg.nii.gz"), "--model", str(ckpt)]
        return Run([*argv, "--amp", "fp32"], [path, ckpt, *_canary(t)], t / "out", fragments, names=str(ckpt))

    return build


def _adapt_ckpt(make: Callable[[Path, Resources], Path], *fragments: str) -> Callable:
    def build(t: Path, r: Resources) -> Run:
        path = scan(t / "scan.nii.gz")
        ckpt = make(t, r)
        argv = ["adapt", "-i", str(path), "-o", str(t / "out"), "--model", str(ckpt), "--amp", "fp32"]
        return Run(argv, [path, ckpt, *_canary(t)], t / "out", fragments, names=str(ckpt))

    return build


def _weights(make: Callable[[Path, Resources], Path], *fragments: str) -> Callable:
    def build(t: Path, r: Resources) -> Run:
        path = scan(t / "scan.nii.gz")
        weights = make(t, r)
        return Run(predict(t, path, "--weights", str(weights)), [path, weights], t / "out", fragments, str(weights))

    return build


def _encoder_weights(make: Callable[[Path, Resources], Path], *fragments: str) -> Callable:
    def build(t: Path, r: Resources) -> Run:
        root, _, _ = decathlon(t / "ds")
        weights = make(t, r)
        argv = train(t, r, root, "--encoder-weights", str(weights))
        return Run(argv, [root, weights], t / "run", fragments, names=str(weights))

    return build


def _resume_from(make: Callable[[Path, Resources], Path], command: str, *fragments: str) -> Callable:
    """``train``/``pretrain --resume`` with OUT/checkpoint_last.pt built by ``make``; the run folder is an input."""

    def build(t: Path, r: Resources) -> Run:
        ckpt = make(t, r)
        run = t / ("run" if command == "train" else "ssl")
        run.mkdir(exist_ok=True)
        last = run / "checkpoint_last.pt"
        ckpt.rename(last)
        if command == "train":
            root, _, _ = decathlon(t / "ds")
            argv = train(t, r, root, "--resume")
        else:
            folder = t / "scans"
            scan(folder / "a.nii.gz")
            root, argv = folder, pretrain(t, folder, "--resume")
        return Run(argv, [root, run, *_canary(t)], None, fragments, names=str(last))

    return build


def _other_model_state(t: Path, r: Resources) -> Path:
    return Path(shutil.copy(r.other_state, t / "ds_transunet.pt"))


def _three_class_state(t: Path, r: Resources) -> Path:
    """A swin_unetr_tiny state dict with 3 output classes (the bundle's network has 4)."""
    return _state_dict_ckpt(t, r)


def _empty_ckpt(t: Path, r: Resources) -> Path:
    return _write(t / "model.pt", b"")


def _folder_ckpt(t: Path, r: Resources) -> Path:
    (t / "model.pt").mkdir()
    return t / "model.pt"


def _text_ckpt(t: Path, r: Resources) -> Path:
    return _write(t / "weights.pt", b"epoch,loss\n1,0.9\n2,0.7\n" * 20)


def _truncated_state(t: Path, r: Resources) -> Path:
    return truncated_copy(r.bundle_state, t / "model.pt", 0.3)


def _pickle_state(t: Path, r: Resources) -> Path:
    return code_carrying_checkpoint(t, "model.pt")[0]


def _plain_pickle(t: Path, r: Resources) -> Path:
    """Not a torch archive at all: a bare pickle stream whose loading would delete the canary."""
    import pickle

    canary = t / "canary.txt"
    canary.write_text("must survive")
    return _write(t / "model.pt", pickle.dumps({"state": _Smuggled(canary)}, protocol=2))


def _export_self(t: Path, r: Resources) -> Run:
    ckpt = shutil.copy(r.bundle_state, t / "model.pt")
    return Run(bundle_export(t, Path(ckpt), out=Path(ckpt)), [Path(ckpt)], None, ("is the input",))


def _export_roi(t: Path, r: Resources) -> Run:
    ckpt = Path(shutil.copy(r.bundle_state, t / "model.pt"))
    argv = bundle_export(t, ckpt) + ["roi_size=[60,60,30]"]
    return Run(argv, [ckpt], t / "model.ts", ("multiple of 32",), names="roi_size")


def _export_missing(t: Path, r: Resources) -> Run:
    return Run(bundle_export(t, t / "models" / "model.pt"), [], t / "model.ts", ("no checkpoint at",), "model.pt")


# --- ONNX: medswin export, and predict --model FILE.onnx ---------------------------------------------


def onnx_export(t: Path, ckpt: Path, *extra: str, out: Path | None = None) -> list[str]:
    return ["export", str(ckpt), "-o", str(out or t / "model.onnx"), *extra]


def _onnx_export_ckpt(make: Callable[[Path, Resources], Path], *fragments: str) -> Callable:
    """``medswin export`` of the checkpoint ``make(tmp, resources)`` builds: refused naming it."""

    def build(t: Path, r: Resources) -> Run:
        ckpt = make(t, r)
        return Run(onnx_export(t, ckpt), [ckpt, *_canary(t)], t / "model.onnx", fragments, names=str(ckpt))

    return build


def _onnx_export_args(*extra: str, fragments: tuple[str, ...], names: str, out: str | None = None) -> Callable:
    """``medswin export`` of a good checkpoint with the arguments ``extra`` (``out``: the -o file name)."""

    def build(t: Path, r: Resources) -> Run:
        ckpt = Path(shutil.copy(r.ckpt, t / "checkpoint_best.pt"))
        target = t / (out or "model.onnx")
        return Run(onnx_export(t, ckpt, *extra, out=target), [ckpt], t / "model.onnx", fragments, names=names)

    return build


def _predict_onnx(make: Callable[[Path, Resources], Path], *fragments: str) -> Callable:
    """``medswin predict --model`` the ONNX file ``make(tmp, resources)`` builds: refused naming it."""

    def build(t: Path, r: Resources) -> Run:
        path = scan(t / "scan.nii.gz")
        model = make(t, r)
        argv = ["predict", "-i", str(path), "-o", str(t / "out" / "seg.nii.gz"), "--model", str(model)]
        inputs = [path, model] if model.is_file() else [path]
        return Run(argv, inputs, t / "out", fragments, names=str(model))

    return build


def _foreign_onnx(t: Path, r: Resources) -> Path:
    """A valid ONNX graph (Identity) that carries none of medswin's metadata (exported by another tool)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 64, 64, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 64, 64, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    path = t / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    return path


# --- processable -----------------------------------------------------------------------------


def _processed(shape: tuple[int, ...], values: set[int] | None = None) -> Callable[[Run, str, str], None]:
    """The output exists on the input's grid with label values in ``values`` (default: btcv's 0..13)."""

    def check_(run: Run, out: str, err: str) -> None:
        import nibabel as nib

        output = Path(run.argv[run.argv.index("-o") + 1])
        img = nib.load(output)
        assert img.shape == shape, img.shape
        data = np.asarray(img.dataobj)
        np.testing.assert_allclose(img.affine, nib.load(run.inputs[0]).affine, atol=1e-4)
        allowed = values if values is not None else set(range(14))
        assert set(np.unique(data).tolist()) <= allowed, np.unique(data)
        assert str(output) in out

    return check_


def _ok_predict(make: Callable[[Path], Path], shape, values=None, model: tuple[str, ...] = tuple(TINY)) -> Callable:
    def build(t: Path, r: Resources) -> Run:
        path = make(t)
        return Run(predict(t, path, model=model), [path], None, (), check=_processed(shape, values))

    return build


def _adapted(run: Run, out: str, err: str) -> None:
    import nibabel as nib

    folder = Path(run.argv[run.argv.index("-o") + 1])
    report = json.loads((folder / "adaptation.json").read_text())
    assert [c["case"] for c in report["cases"]] == ["small"]
    assert nib.load(folder / "small.nii.gz").shape == (20, 18, 12)


def _ok_adapt_small(t: Path, r: Resources) -> Run:
    path = scan(t / "small.nii.gz", (20, 18, 12))
    return Run(adapt(t, path), [path], None, (), check=_adapted)


MNI = ("--model", "swin_unetr_tiny", "--dataset", "mni-tissue", "--roi", "64", "64", "32", "--amp", "fp32")


# ---------------------------------------------------------------------------------------------
# THE CORPUS
# ---------------------------------------------------------------------------------------------


def _i(root: Path, images: list[Path], labels: list[Path]) -> Path:
    return images[1]


def _l(root: Path, images: list[Path], labels: list[Path]) -> Path:
    return labels[1]


def _on_image(change: Callable[[Path], Path]) -> Callable:
    return lambda root, images, labels: change(images[1])


def _on_label(change: Callable[[Path], Path]) -> Callable:
    return lambda root, images, labels: change(labels[1])


def _replace_image(array: np.ndarray, affine: np.ndarray = AFFINE, edit=None) -> Callable[[Path], Path]:
    def change(path: Path) -> Path:
        path.unlink()
        return nifti(path, array, affine, edit)

    return change


def _truncate_file(fraction: float) -> Callable[[Path], Path]:
    def change(path: Path) -> Path:
        return truncate(path, int(path.stat().st_size * fraction))

    return change


def _empty_file(path: Path) -> Path:
    return _write(path, b"")


def _label_folder(path: Path) -> Path:
    path.unlink()
    path.mkdir()
    return path


def _label_link_loop(path: Path) -> Path:
    path.unlink()
    path.symlink_to(path.with_name("loop.nii.gz"))
    path.with_name("loop.nii.gz").symlink_to(path)
    return path


def _nan_image(path: Path) -> Path:
    array = ct_array()
    array[5, 5, 5] = np.nan
    return _replace_image(array)(path)


def _zero_image(path: Path) -> Path:
    return _replace_image(np.zeros((24, 24, 16), np.float32))(path)


def _nan_spacing_label(root: Path, images: list[Path], labels: list[Path]) -> Path:
    """case_1's label replaced by an uncompressed NIfTI with a NaN pixdim (dataset.json pointed at it)."""
    labels[1].unlink()
    label = raw_nifti(labels[1].with_name("case_1.nii"), _set_pixdim(1, np.nan))
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"][1]["label"] = "./labelsTr/case_1.nii"
    (root / "dataset.json").write_text(json.dumps(meta))
    return label


def _int64_pair(pred: Path, gt: Path) -> Path:
    for folder in (pred, gt):
        _replace_label(folder / "case_0.nii.gz", label_array(dtype=np.int64))
    return pred / "case_0.nii.gz"


def _int64_dataset(root: Path, images: list[Path], labels: list[Path]) -> Path:
    for label in labels:
        _replace_label(label, label_array(dtype=np.int64))
    return labels[0]


def _gt_file(pred: Path, gt: Path) -> Path:
    shutil.rmtree(gt)
    gt.write_bytes(b"case_0\n")
    return gt


def _pretrain_biplanar_model(t: Path, r: Resources) -> Run:
    folder = scan(t / "scans" / "a.nii.gz").parent
    argv = pretrain(t, folder)
    argv[argv.index("swin_unetr_tiny")] = "swin_x2s_tiny"
    return Run(argv, [folder], t / "ssl", ("swin_x2s_tiny",), names="swin_x2s_tiny")


CASES: list[Case] = [
    # ---------------------------------------------------------------- files
    Case(
        "predict-empty",
        "files",
        "predict",
        "empty file",
        _predict_file(lambda t: _write(t / "scan.nii.gz", b""), "empty file (0 bytes)"),
    ),
    Case(
        "predict-gz-cut-in-gzip-header",
        "files",
        "predict",
        "gzip cut at byte 6",
        _predict_file(lambda t: _write(t / "scan.nii.gz", _nii_gz_bytes(t)[:6]), "gzip"),
    ),
    Case(
        "predict-gz-cut-in-nifti-header",
        "files",
        "predict",
        "gzip cut inside the NIfTI header",
        _predict_file(lambda t: _write(t / "scan.nii.gz", _nii_gz_bytes(t)[:120]), "truncated"),
    ),
    Case(
        "predict-gz-cut-in-voxels",
        "files",
        "predict",
        "gzip cut inside the voxels",
        _predict_file(lambda t: _write(t / "scan.nii.gz", _nii_gz_bytes(t)[:-2000]), "truncated"),
    ),
    Case(
        "predict-gz-last-bytes-missing",
        "files",
        "predict",
        "gzip missing only its 8-byte trailer (every voxel present: read, like nibabel, without the CRC check)",
        _ok_predict(lambda t: _write(t / "scan.nii.gz", _nii_gz_bytes(t)[:-8]), (24, 24, 16)),
        expect="ok",
    ),
    Case(
        "predict-nii-cut-in-header",
        "files",
        "predict",
        "NIfTI cut at byte 100",
        _predict_file(lambda t: _write(t / "scan.nii", _nii_bytes(t)[:100]), "truncated NIfTI header"),
    ),
    Case(
        "predict-nii-cut-in-voxels",
        "files",
        "predict",
        "NIfTI cut inside the voxels",
        _predict_file(lambda t: _write(t / "scan.nii", _nii_bytes(t)[:5000]), "holds only"),
    ),
    Case(
        "predict-bzip2-named-gz",
        "files",
        "predict",
        "bzip2 data named .nii.gz",
        _predict_file(lambda t: _write(t / "scan.nii.gz", bz2.compress(_nii_bytes(t))), "not gzip-compressed", "bzip2"),
    ),
    Case(
        "predict-gzip-named-nii",
        "files",
        "predict",
        "gzip data named .nii",
        _predict_file(lambda t: _write(t / "scan.nii", _nii_gz_bytes(t)), "gzip-compressed: rename it to .nii.gz"),
    ),
    Case(
        "predict-gzip-twice",
        "files",
        "predict",
        "gzip of a .nii.gz",
        _predict_file(lambda t: _write(t / "scan.nii.gz", gzip.compress(_nii_gz_bytes(t))), "gzip-compressed twice"),
    ),
    Case(
        "predict-uncompressed-named-gz",
        "files",
        "predict",
        "uncompressed NIfTI named .nii.gz",
        _predict_file(lambda t: _write(t / "scan.nii.gz", _nii_bytes(t)), "rename it to .nii"),
    ),
    Case(
        "predict-wrong-magic",
        "files",
        "predict",
        "NIfTI-1 header with the NIfTI-2 magic",
        _predict_file(_wrong_magic, "magic"),
    ),
    Case(
        "predict-unknown-extension",
        "files",
        "predict",
        "unknown extension .xyz",
        _predict_file(lambda t: _write(t / "scan.xyz", _nii_bytes(t)), "unsupported file type '.xyz'"),
    ),
    Case(
        "predict-png-named-nifti",
        "files",
        "predict",
        "PNG named .nii.gz",
        _predict_file(_png_named_nifti, "not gzip-compressed"),
    ),
    Case("predict-permission-denied", "files", "predict", "permission denied", _predict_denied),
    Case(
        "predict-folder-named-nii-gz",
        "files",
        "predict",
        "an empty folder named like a file",
        _predict_file(_folder_named_like_a_file, "no volumes here"),
    ),
    Case(
        "predict-symlink-loop",
        "files",
        "predict",
        "symbolic link loop",
        _predict_link(_link_loop, "symbolic link loop"),
    ),
    Case(
        "predict-broken-symlink",
        "files",
        "predict",
        "broken symbolic link",
        _predict_link(_broken_link, "not found"),
    ),
    Case(
        "predict-nrrd-garbage-voxels",
        "files",
        "predict",
        "NRRD with corrupt gzip voxels",
        _predict_file(_nrrd_garbage, "cannot read"),
    ),
    Case(
        "predict-mha-data-file-missing",
        "files",
        "predict",
        "MetaImage whose .raw is missing",
        _predict_file(_mha_without_data, "scan.raw", "missing"),
    ),
    Case("adapt-empty", "files", "adapt", "empty file", _adapt_empty),
    Case("adapt-permission-denied", "files", "adapt", "permission denied", _adapt_denied),
    Case(
        "train-truncated-image",
        "files",
        "train",
        "truncated training image",
        _train_with(_on_image(_truncate_file(0.5)), "truncated"),
    ),
    Case(
        "train-label-is-a-folder",
        "files",
        "train",
        "label path is a folder",
        _train_with(_on_label(_label_folder), "is a folder"),
    ),
    Case(
        "pretrain-empty-volume",
        "files",
        "pretrain",
        "empty volume among the scans",
        _pretrain_with(lambda f: _write(f / "b.nii.gz", b""), "empty file (0 bytes)"),
    ),
    Case(
        "pretrain-truncated-volume",
        "files",
        "pretrain",
        "truncated volume among the scans",
        _pretrain_with(lambda f: _write(f / "b.nii.gz", _nii_gz_bytes(f.parent)[:300]), "truncated"),
    ),
    Case(
        "evaluate-empty-prediction",
        "files",
        "evaluate",
        "empty prediction file",
        _evaluate_with(lambda p, g: _empty_file(p / "case_0.nii.gz"), "empty file (0 bytes)"),
    ),
    Case(
        "evaluate-truncated-truth",
        "files",
        "evaluate",
        "truncated ground truth",
        _evaluate_with(lambda p, g: _truncate_file(0.5)(g / "case_0.nii.gz"), "truncated"),
    ),
    Case(
        "check-empty-label",
        "files",
        "data check",
        "empty label file",
        _check_with(_on_label(_empty_file), "empty file (0 bytes)"),
        expect="report",
    ),
    Case(
        "check-image-link-loop",
        "files",
        "data check",
        "image is a symbolic link loop",
        _check_with(_on_image(_label_link_loop), "symbolic link loop"),
        expect="report",
    ),
    Case(
        "x2s-truncated-ct",
        "files",
        "data prepare-x2s",
        "truncated CT",
        _x2s_with(_on_image(_truncate_file(0.4)), "truncated"),
    ),
    Case(
        "bundle-truncated-image",
        "files",
        "bundle run",
        "truncated image",
        _bundle_with(lambda f: truncate(scan(f / "brain.nii.gz"), 900), "truncated"),
    ),
    Case(
        "bundle-empty-image",
        "files",
        "bundle run",
        "empty image",
        _bundle_with(lambda f: _write(f / "brain.nii.gz", b""), "empty file (0 bytes)"),
    ),
    # ---------------------------------------------------------------- headers
    Case(
        "predict-zero-spacing",
        "headers",
        "predict",
        "zero spacing",
        _predict_file(lambda t: nifti(t / "zero.nii.gz", ct_array(), np.diag([1.5, 0.0, 2.0, 1.0])), "has a zero"),
    ),
    Case(
        "predict-negative-pixdim",
        "headers",
        "predict",
        "negative pixdim",
        _predict_file(lambda t: raw_nifti(t / "neg.nii", _set_pixdim(2, -1.0)), "negative"),
    ),
    Case(
        "predict-nan-pixdim",
        "headers",
        "predict",
        "NaN pixdim",
        _predict_file(lambda t: raw_nifti(t / "nan.nii", _set_pixdim(3, np.nan)), "NaN"),
    ),
    Case(
        "predict-singular-affine",
        "headers",
        "predict",
        "singular affine",
        _predict_file(
            lambda t: nifti(
                t / "flat.nii.gz",
                ct_array(),
                np.array([[1.5, 1.5, 0, 0], [1.5, 1.5, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1.0]]),
                edit=lambda i: i.set_qform(None, code=0),
            ),
            "singular affine",
        ),
    ),
    Case(
        "predict-qform-sform-apart",
        "headers",
        "predict",
        "qform and sform 8 voxels apart",
        _predict_file(
            lambda t: nifti(t / "apart.nii.gz", ct_array(), edit=_qform_sform_apart), "qform and sform disagree"
        ),
    ),
    Case(
        "predict-dims-beyond-data",
        "headers",
        "predict",
        "header dims beyond the data",
        _predict_file(lambda t: raw_nifti(t / "short.nii", _dims_beyond_data), "holds only"),
    ),
    Case(
        "predict-huge-dims",
        "headers",
        "predict",
        "dims of 30000^3",
        _predict_file(
            lambda t: raw_nifti(t / "huge.nii", lambda h: h.set_data_shape((30000, 30000, 30000))),
            "more than the limit",
        ),
    ),
    Case("predict-time-series", "headers", "predict", "4D time series", _predict_file(_time_series, "time axis")),
    Case(
        "predict-two-channels-for-one",
        "headers",
        "predict",
        "2 channels for a 1-channel model",
        _predict_file(
            lambda t: nifti(t / "two.nii.gz", np.stack([ct_array(), ct_array(seed=1)], -1)), "2 channel(s), expected 1"
        ),
    ),
    Case(
        "predict-5d",
        "headers",
        "predict",
        "5D image",
        _predict_file(lambda t: nifti(t / "five.nii.gz", np.ones((6, 6, 6, 2, 3), np.float32)), "5D image"),
    ),
    Case(
        "predict-complex",
        "headers",
        "predict",
        "complex voxels",
        _predict_file(lambda t: nifti(t / "cplx.nii.gz", ct_array().astype(np.complex64)), "complex-valued"),
    ),
    Case("predict-rgb", "headers", "predict", "RGB voxels", _predict_file(_rgb, "RGB")),
    Case(
        "predict-unknown-datatype",
        "headers",
        "predict",
        "unknown datatype code",
        _predict_file(
            lambda t: patch_bytes(raw_nifti(t / "code.nii", lambda h: None), NIFTI_DATATYPE, struct.pack("<h", 1234)),
            "data type",
        ),
    ),
    Case(
        "predict-dim0-corrupt",
        "headers",
        "predict",
        "dim[0] = 9",
        _predict_file(
            lambda t: patch_bytes(raw_nifti(t / "dim.nii", lambda h: None), 40, struct.pack("<h", 9)), "dim[0]"
        ),
    ),
    Case(
        "adapt-singular-affine",
        "headers",
        "adapt",
        "singular affine",
        lambda t, r: Run(
            adapt(
                t,
                nifti(
                    t / "flat.nii.gz",
                    ct_array(),
                    np.array([[1.5, 0, 3.0, 0], [0, 1.5, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1.0]]),
                    edit=lambda i: i.set_qform(None, code=0),
                ),
            ),
            [t / "flat.nii.gz"],
            t / "out",
            ("singular affine",),
        ),
    ),
    Case(
        "train-zero-spacing-image",
        "headers",
        "train",
        "zero spacing training image",
        _train_with(_on_image(_replace_image(ct_array(), np.diag([1.5, 1.5, 0.0, 1.0]))), "has a zero"),
    ),
    Case(
        "pretrain-5d-volume",
        "headers",
        "pretrain",
        "5D volume",
        _pretrain_with(lambda f: nifti(f / "b.nii.gz", np.ones((6, 6, 6, 2, 3), np.float32)), "5D image"),
    ),
    Case(
        "pretrain-complex-volume",
        "headers",
        "pretrain",
        "complex volume",
        _pretrain_with(lambda f: nifti(f / "b.nii.gz", ct_array().astype(np.complex64)), "complex-valued"),
    ),
    Case(
        "check-nan-spacing-label",
        "headers",
        "data check",
        "label with NaN pixdim",
        _check_with(_nan_spacing_label, "NaN"),
        expect="report",
    ),
    Case(
        "evaluate-complex-prediction",
        "headers",
        "evaluate",
        "complex prediction",
        _evaluate_with(
            lambda p, g: _replace_label(p / "case_0.nii.gz", label_array().astype(np.complex64)), "complex-valued"
        ),
    ),
    Case(
        "evaluate-rgb-truth",
        "headers",
        "evaluate",
        "RGB ground truth",
        _evaluate_with(lambda p, g: g.joinpath("case_0.nii.gz").unlink() or _rgb(g).rename(g / "case_0.nii.gz"), "RGB"),
    ),
    Case(
        "x2s-time-series-ct",
        "headers",
        "data prepare-x2s",
        "4D time-series CT",
        _x2s_with(_on_image(lambda p: p.unlink() or _time_series(p.parent).rename(p)), "time axis"),
    ),
    Case(
        "bundle-qform-sform-apart",
        "headers",
        "bundle run",
        "qform and sform 8 voxels apart",
        _bundle_with(
            lambda f: nifti(f / "brain.nii.gz", ct_array(), edit=_qform_sform_apart), "qform and sform disagree"
        ),
    ),
    Case(
        "bundle-negative-pixdim",
        "headers",
        "bundle run",
        "negative pixdim",
        _bundle_with(lambda f: raw_nifti(f / "brain.nii", _set_pixdim(1, -2.0)), "negative"),
    ),
    # ---------------------------------------------------------------- content
    Case(
        "predict-nan-voxels",
        "content",
        "predict",
        "NaN voxels",
        _predict_file(lambda t: _with_values("nan.nii.gz", {(3, 4, 5): np.nan})(t), "NaN/inf"),
    ),
    Case(
        "predict-inf-voxels",
        "content",
        "predict",
        "+inf and -inf voxels",
        _predict_file(lambda t: _with_values("inf.nii.gz", {(3, 4, 5): np.inf, (1, 1, 1): -np.inf})(t), "2 NaN/inf"),
    ),
    Case("predict-mha-nan", "content", "predict", "NaN voxel in a MetaImage", _predict_file(_mha_with_nan, "NaN/inf")),
    Case(
        "adapt-nan-voxels",
        "content",
        "adapt",
        "NaN voxels",
        lambda t, r: Run(
            adapt(t, _with_values("nan.nii.gz", {(0, 0, 0): np.nan})(t)), [t / "nan.nii.gz"], t / "out", ("NaN/inf",)
        ),
    ),
    Case(
        "train-nan-image",
        "content",
        "train",
        "NaN voxels in a training image",
        _train_with(_on_image(_nan_image), "NaN/inf"),
    ),
    Case(
        "train-all-zero-image",
        "content",
        "train",
        "all-zero training image",
        _train_with(_on_image(_zero_image), "every voxel is 0"),
    ),
    Case(
        "pretrain-inf-volume",
        "content",
        "pretrain",
        "inf voxels",
        _pretrain_with(_with_values("b.nii.gz", {(2, 2, 2): np.inf}), "NaN/inf"),
    ),
    Case(
        "check-nan-image",
        "content",
        "data check",
        "NaN voxels",
        _check_with(_on_image(_nan_image), "NaN/inf"),
        expect="report",
    ),
    Case(
        "check-all-zero-image",
        "content",
        "data check",
        "all-zero image",
        _check_with(_on_image(_zero_image), "every voxel is 0"),
        expect="report",
    ),
    Case(
        "x2s-nan-ct",
        "content",
        "data prepare-x2s",
        "NaN voxels in the CT",
        _x2s_with(_on_image(_nan_image), "NaN"),
    ),
    Case(
        "bundle-nan-image",
        "content",
        "bundle run",
        "NaN voxels",
        _bundle_with(_with_values("brain.nii.gz", {(4, 4, 4): np.nan}), "NaN/inf"),
    ),
    Case(
        "predict-all-zero",
        "content",
        "predict",
        "all-zero scan",
        _ok_predict(lambda t: nifti(t / "zero.nii.gz", np.zeros((24, 24, 16), np.float32)), (24, 24, 16), {0}, MNI),
        expect="ok",
    ),
    Case(
        "predict-smaller-than-window",
        "content",
        "predict",
        "volume smaller than one window",
        _ok_predict(lambda t: scan(t / "small.nii.gz", (20, 18, 12)), (20, 18, 12)),
        expect="ok",
    ),
    Case(
        "predict-one-slice",
        "content",
        "predict",
        "1-slice volume",
        _ok_predict(lambda t: scan(t / "slice.nii.gz", (40, 40, 1)), (40, 40, 1)),
        expect="ok",
    ),
    Case(
        "predict-anisotropic",
        "content",
        "predict",
        "0.2 x 0.2 x 40 mm voxels",
        _ok_predict(
            lambda t: nifti(t / "aniso.nii.gz", ct_array((100, 100, 3)), np.diag([0.2, 0.2, 40.0, 1.0])), (100, 100, 3)
        ),
        expect="ok",
    ),
    Case(
        "predict-constant",
        "content",
        "predict",
        "constant image",
        _ok_predict(lambda t: nifti(t / "const.nii.gz", np.full((24, 24, 16), 100.0, np.float32)), (24, 24, 16)),
        expect="ok",
    ),
    Case(
        "adapt-smaller-than-window", "content", "adapt", "volume smaller than one window", _ok_adapt_small, expect="ok"
    ),
    # ---------------------------------------------------------------- DICOM
    Case(
        "predict-dicom-two-series",
        "dicom",
        "predict",
        "two series in one folder",
        _dicom_predict(_two_series, "2 DICOM series"),
    ),
    Case(
        "predict-dicom-missing-slice",
        "dicom",
        "predict",
        "a missing slice",
        _dicom_predict(_missing_slice, "missing slice(s)"),
    ),
    Case(
        "predict-dicom-duplicate-position",
        "dicom",
        "predict",
        "duplicate slice positions",
        _dicom_predict(_duplicate_position, "duplicate slices"),
    ),
    Case(
        "predict-dicom-mixed-spacing",
        "dicom",
        "predict",
        "mixed pixel spacing",
        _dicom_predict(_mixed_spacing, "inconsistent pixel spacing"),
    ),
    Case(
        "predict-dicom-mixed-orientation",
        "dicom",
        "predict",
        "mixed orientation",
        _dicom_predict(_mixed_orientation, "inconsistent slice orientation"),
    ),
    Case(
        "predict-dicom-mixed-size",
        "dicom",
        "predict",
        "mixed rows/columns",
        _dicom_predict(_mixed_size, "slices of different size"),
    ),
    Case(
        "predict-dicom-no-pixel-data",
        "dicom",
        "predict",
        "a slice without pixel data",
        _dicom_predict(_no_pixel_data, "no pixel data"),
    ),
    Case(
        "predict-dicom-truncated-pixels",
        "dicom",
        "predict",
        "a slice with truncated pixel data",
        _dicom_predict(_truncated_slice, "truncated"),
    ),
    Case("predict-dicom-no-decoder", "dicom", "predict", "compressed transfer syntax without a decoder", _no_decoder),
    Case("adapt-dicom-two-series", "dicom", "adapt", "two series in one folder", _adapt_two_series),
    Case("adapt-dicom-mixed-orientation", "dicom", "adapt", "mixed orientation", _adapt_mixed_orientation),
    Case(
        "train-dicom-no-pixel-data",
        "dicom",
        "train",
        "training series with a slice without pixel data",
        _train_series_image,
    ),
    Case(
        "pretrain-dicom-mixed-spacing",
        "dicom",
        "pretrain",
        "mixed pixel spacing",
        _pretrain_series(_mixed_spacing, "inconsistent pixel spacing"),
    ),
    Case(
        "pretrain-dicom-duplicate-position",
        "dicom",
        "pretrain",
        "duplicate slice positions",
        _pretrain_series(_duplicate_position, "duplicate slices"),
    ),
    Case(
        "bundle-dicom-missing-slice",
        "dicom",
        "bundle run",
        "a missing slice",
        _bundle_series(_missing_slice, "missing slice(s)"),
    ),
    Case(
        "predict-dicom-stray-file",
        "dicom",
        "predict",
        "a non-DICOM file in the series folder",
        _stray_file,
        expect="ok",
    ),
    # ---------------------------------------------------------------- label maps
    Case(
        "evaluate-float-labels",
        "labels",
        "evaluate",
        "float label values (0.5)",
        _evaluate_with(lambda p, g: _float_label(p / "case_0.nii.gz"), "non-integer"),
    ),
    Case(
        "evaluate-unknown-label",
        "labels",
        "evaluate",
        "label value outside the spec",
        _evaluate_with(lambda p, g: _label_value(g / "case_0.nii.gz", 7), "label values [7]"),
    ),
    Case(
        "evaluate-negative-label",
        "labels",
        "evaluate",
        "negative label value",
        _evaluate_with(lambda p, g: _label_value(p / "case_0.nii.gz", -1), "label values [-1]"),
    ),
    Case(
        "evaluate-shape-mismatch",
        "labels",
        "evaluate",
        "prediction of another shape",
        _evaluate_with(lambda p, g: _label_shape(p / "case_0.nii.gz"), "not on the grid", "shape"),
    ),
    Case(
        "evaluate-affine-mismatch",
        "labels",
        "evaluate",
        "prediction with another affine",
        _evaluate_with(lambda p, g: _label_affine(p / "case_0.nii.gz"), "not on the grid", "affine"),
    ),
    Case(
        "evaluate-two-channel-label",
        "labels",
        "evaluate",
        "2-channel label map",
        _evaluate_with(
            lambda p, g: _replace_label(p / "case_0.nii.gz", np.stack([label_array(), label_array()], -1)), "2 channels"
        ),
    ),
    Case(
        "check-float-labels",
        "labels",
        "data check",
        "float label values (0.5)",
        _check_with(_on_label(_float_label), "non-integer"),
        expect="report",
    ),
    Case(
        "check-unknown-label",
        "labels",
        "data check",
        "label value outside the spec",
        _check_with(_on_label(lambda p: _label_value(p, 9)), "label values [9]"),
        expect="report",
    ),
    Case(
        "check-negative-label",
        "labels",
        "data check",
        "negative label value",
        _check_with(_on_label(lambda p: _label_value(p, -3)), "label values [-3]"),
        expect="report",
    ),
    Case(
        "check-shape-mismatch",
        "labels",
        "data check",
        "label of another shape",
        _check_with(_on_label(_label_shape), "does not match image shape"),
        expect="report",
    ),
    Case(
        "check-affine-mismatch",
        "labels",
        "data check",
        "label with another affine",
        _check_with(_on_label(_label_affine), "affine differs"),
        expect="report",
    ),
    Case(
        "train-unknown-label",
        "labels",
        "train",
        "label value outside the spec",
        _train_with(_on_label(lambda p: _label_value(p, 5)), "label values [5]"),
    ),
    Case(
        "train-shape-mismatch",
        "labels",
        "train",
        "label of another shape",
        _train_with(_on_label(_label_shape), "does not match image shape"),
    ),
    Case(
        "x2s-unknown-label",
        "labels",
        "data prepare-x2s",
        "label value outside the spec (2nd case)",
        _x2s_with(_on_label(lambda p: _label_value(p, 4)), "label values [4]"),
    ),
    Case(
        "x2s-float-labels",
        "labels",
        "data prepare-x2s",
        "float label values (2nd case)",
        _x2s_with(_on_label(_float_label), "non-integer"),
    ),
    Case(
        "evaluate-int64-labels",
        "labels",
        "evaluate",
        "int64 label maps",
        _evaluate_with(
            _int64_pair,
            expect_ok=_int64_evaluated,
        ),
        expect="ok",
    ),
    Case(
        "check-int64-labels",
        "labels",
        "data check",
        "int64 label maps",
        _check_with(
            _int64_dataset,
            check_ok=_int64_checked,
        ),
        expect="ok",
    ),
    # ---------------------------------------------------------------- configs
    Case(
        "train-config-malformed-yaml",
        "configs",
        "train",
        "malformed YAML",
        _train_config("epochs: [1, 2\nlr: 0.1\n", "cannot read the config"),
    ),
    Case(
        "train-config-unknown-key",
        "configs",
        "train",
        "unknown key",
        _train_config("epoch: 3\n", "unknown config key(s) ['epoch']"),
    ),
    Case(
        "train-config-wrong-type",
        "configs",
        "train",
        "wrong type",
        _train_config("val_every: ten\n", "'val_every' must be int"),
    ),
    Case(
        "train-config-negative-lr",
        "configs",
        "train",
        "negative learning rate",
        _train_config("lr: -0.001\n", "'lr' must be positive"),
    ),
    Case(
        "train-config-zero-batch",
        "configs",
        "train",
        "zero batch size",
        _train_config("batch_size: 0\n", "'batch_size' must be a positive integer"),
    ),
    Case(
        "train-config-roi-model-cannot-take",
        "configs",
        "train",
        "roi the model cannot take",
        _train_config("roi_size: [60, 60, 30]\n", "multiple of 32", names="roi_size (60, 60, 30)"),
    ),
    Case(
        "train-config-binary",
        "configs",
        "train",
        "binary config file",
        _train_config(b"\xff\xfe\x00epochs: 3", "cannot read the config"),
    ),
    Case(
        "train-dataset-json-malformed",
        "configs",
        "train",
        "malformed dataset.json",
        _train_with(_dataset_json('{"training": [{"image": '), "cannot read the JSON"),
    ),
    Case(
        "train-dataset-json-training-not-a-list",
        "configs",
        "train",
        "dataset.json whose 'training' is a mapping",
        _train_with(_dataset_json('{"training": {"image": "./imagesTr/case_0.nii.gz"}}'), "'training'"),
    ),
    Case(
        "check-dataset-json-training-not-a-list",
        "configs",
        "data check",
        "dataset.json whose 'training' is a mapping",
        _check_with(_dataset_json('{"training": {"image": "./imagesTr/case_0.nii.gz"}}'), "'training'"),
        expect="report",
    ),
    Case(
        "pretrain-config-malformed-yaml",
        "configs",
        "pretrain",
        "malformed YAML",
        _pretrain_config("tasks: {inpaint\n", "cannot read the config"),
    ),
    Case(
        "pretrain-config-unknown-key",
        "configs",
        "pretrain",
        "unknown key",
        _pretrain_config("mask_ration: 0.5\n", "unknown config key(s) ['mask_ration']"),
    ),
    Case(
        "pretrain-config-tasks-not-a-list",
        "configs",
        "pretrain",
        "tasks given as a string",
        _pretrain_config("tasks: inpaint\n", "'tasks'"),
    ),
    Case(
        "pretrain-config-mask-cell",
        "configs",
        "pretrain",
        "SimMIM mask cell not dividing the roi",
        _pretrain_config("tasks: [simmim]\nmask_cell: 24\n", "must divide the roi", names="mask cell 24"),
    ),
    Case(
        "pretrain-datalist-malformed",
        "configs",
        "pretrain",
        "malformed datalist JSON",
        _pretrain_datalist('{"training": [', "cannot read the datalist"),
    ),
    Case(
        "predict-datalist-malformed",
        "configs",
        "predict",
        "malformed datalist JSON",
        _predict_datalist_to_folder('[{"image": "a.nii.gz"', "cannot read the datalist"),
    ),
    Case(
        "predict-datasets-malformed-yaml",
        "configs",
        "predict",
        "malformed datasets.yaml",
        _datasets_file("mine: {channel_names: [CT\n", "predict", "not valid YAML"),
    ),
    Case(
        "predict-datasets-unknown-key",
        "configs",
        "predict",
        "unknown dataset key",
        _datasets_file(_entry(roi=[64, 64, 32]), "predict", "roi"),
    ),
    Case(
        "predict-roi-model-cannot-take",
        "configs",
        "predict",
        "roi the model cannot take",
        _predict_file(
            lambda t: scan(t / "scan.nii.gz"),
            "multiple of 32",
            extra=("--roi", "60", "60", "30"),
            names="roi_size (60, 60, 30)",
        ),
    ),
    Case(
        "evaluate-datasets-wrong-type",
        "configs",
        "evaluate",
        "labels given as a list",
        _datasets_file(_entry(labels=["background", "organ"]), "evaluate", "key 'labels'"),
    ),
    Case(
        "check-datasets-negative-roi",
        "configs",
        "data check",
        "negative roi in datasets.yaml",
        _datasets_file(_entry(roi_size=[64, -64, 32]), "data check", "roi_size"),
    ),
    Case(
        "check-dataset-json-malformed",
        "configs",
        "data check",
        "malformed dataset.json",
        _check_with(_dataset_json("{training: ["), "cannot read the JSON"),
        expect="report",
    ),
    Case(
        "x2s-datasets-zero-spacing",
        "configs",
        "data prepare-x2s",
        "zero target spacing",
        _datasets_file(_entry(target_spacing=[1.5, 0, 2]), "data prepare-x2s", "target_spacing"),
    ),
    Case(
        "x2s-dataset-json-malformed",
        "configs",
        "data prepare-x2s",
        "malformed dataset.json",
        _x2s_with(_dataset_json('{"training": {"image": 3}}'), "dataset.json"),
    ),
    Case(
        "bundle-override-roi",
        "configs",
        "bundle run",
        "roi the model cannot take",
        _bundle_override("roi_size=[60,60,30]", fragments=("multiple of 32",), names="roi_size"),
    ),
    Case(
        "bundle-override-malformed",
        "configs",
        "bundle run",
        "override without '='",
        _bundle_override("dataset_dir", fragments=("--override expects ID=VALUE",), names="'dataset_dir'"),
    ),
    Case(
        "export-override-roi",
        "configs",
        "bundle export",
        "roi the model cannot take",
        _export_roi,
    ),
    # ---------------------------------------------------------------- checkpoints
    Case(
        "onnx-export-ckpt-truncated",
        "checkpoints",
        "export",
        "truncated checkpoint",
        _onnx_export_ckpt(_truncated_ckpt, "truncated or corrupt checkpoint"),
    ),
    Case(
        "onnx-export-ckpt-state-dict",
        "checkpoints",
        "export",
        "a bare state dict",
        _onnx_export_ckpt(_state_dict_ckpt, "not a medswin training checkpoint"),
    ),
    Case(
        "onnx-export-ckpt-pickle-object",
        "checkpoints",
        "export",
        "a pickle carrying a Python object",
        _onnx_export_ckpt(_pickle_ckpt, "refused", "could run code"),
    ),
    Case(
        "onnx-export-ckpt-other-model",
        "checkpoints",
        "export",
        "another model's weights",
        _onnx_export_ckpt(_other_model_ckpt, "do not fit swin_unetr_tiny"),
    ),
    Case(
        "predict-onnx-random-bytes",
        "checkpoints",
        "predict",
        "--model .onnx of random bytes",
        _predict_onnx(
            lambda t, r: _write(t / "model.onnx", bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8))),
            "not a readable ONNX model",
        ),  # fmt: skip
    ),
    Case(
        "predict-onnx-empty",
        "checkpoints",
        "predict",
        "--model .onnx of 0 bytes",
        _predict_onnx(lambda t, r: _write(t / "model.onnx", b""), "empty ONNX file"),
    ),
    Case(
        "predict-onnx-is-a-checkpoint",
        "checkpoints",
        "predict",
        "--model .onnx that is a PyTorch checkpoint",
        _predict_onnx(lambda t, r: Path(shutil.copy(r.ckpt, t / "model.onnx")), "not a readable ONNX model"),
    ),
    Case(
        "predict-onnx-foreign",
        "checkpoints",
        "predict",
        "--model .onnx without medswin's metadata",
        _predict_onnx(_foreign_onnx, "without medswin's metadata", "medswin export"),
    ),
    Case(
        "predict-onnx-missing",
        "checkpoints",
        "predict",
        "--model .onnx that does not exist",
        _predict_onnx(lambda t, r: t / "none.onnx", "ONNX model not found"),
    ),
    Case(
        "predict-ckpt-truncated",
        "checkpoints",
        "predict",
        "truncated checkpoint",
        _predict_ckpt(_truncated_ckpt, "truncated or corrupt checkpoint"),
    ),
    Case(
        "predict-ckpt-state-dict",
        "checkpoints",
        "predict",
        "a bare state dict",
        _predict_ckpt(_state_dict_ckpt, "not a medswin training checkpoint"),
    ),
    Case(
        "predict-ckpt-other-model",
        "checkpoints",
        "predict",
        "another model's weights",
        _predict_ckpt(_other_model_ckpt, "do not fit swin_unetr_tiny"),
    ),
    Case(
        "predict-ckpt-pickle-object",
        "checkpoints",
        "predict",
        "a pickle carrying a Python object",
        _predict_ckpt(_pickle_ckpt, "refused", "could run code"),
    ),
    Case(
        "predict-ckpt-plain-pickle",
        "checkpoints",
        "predict",
        "a bare pickle stream carrying code",
        _predict_ckpt(_plain_pickle, "model.pt"),
    ),
    Case(
        "adapt-ckpt-truncated",
        "checkpoints",
        "adapt",
        "truncated checkpoint",
        _adapt_ckpt(_truncated_ckpt, "truncated or corrupt checkpoint"),
    ),
    Case(
        "adapt-ckpt-empty",
        "checkpoints",
        "adapt",
        "empty checkpoint",
        _adapt_ckpt(_empty_ckpt, "empty checkpoint file"),
    ),
    Case(
        "predict-weights-other-model",
        "checkpoints",
        "predict",
        "--weights of another model",
        _weights(_other_model_state, "weights"),
    ),
    Case(
        "predict-weights-text",
        "checkpoints",
        "predict",
        "--weights that are text",
        _weights(_text_ckpt, "cannot read the weights"),
    ),
    Case(
        "train-encoder-weights-truncated",
        "checkpoints",
        "train",
        "truncated --encoder-weights",
        _encoder_weights(lambda t, r: truncated_copy(r.ckpt, t / "encoder.pt", 0.5), "encoder.pt"),
    ),
    Case(
        "train-encoder-weights-other-model",
        "checkpoints",
        "train",
        "--encoder-weights of another model",
        _encoder_weights(_other_model_state, "ds_transunet.pt"),
    ),
    Case(
        "train-resume-truncated",
        "checkpoints",
        "train",
        "truncated checkpoint_last.pt",
        _resume_from(
            lambda t, r: truncated_copy(r.ckpt, t / "last.pt", 0.5), "train", "truncated or corrupt checkpoint"
        ),
    ),
    Case(
        "pretrain-resume-pickle-object",
        "checkpoints",
        "pretrain",
        "checkpoint_last.pt carrying a Python object",
        _resume_from(lambda t, r: code_carrying_checkpoint(t, "last.pt")[0], "pretrain", "refused"),
    ),
    Case(
        "bundle-ckpt-truncated",
        "checkpoints",
        "bundle run",
        "truncated checkpoint",
        _bundle_ckpt(_truncated_state, "truncated"),
    ),
    Case(
        "bundle-ckpt-other-model",
        "checkpoints",
        "bundle run",
        "another model's weights (3 classes for 4)",
        _bundle_ckpt(_three_class_state, "do not fit"),
    ),
    Case(
        "bundle-ckpt-pickle-object",
        "checkpoints",
        "bundle run",
        "a pickle carrying a Python object",
        _bundle_ckpt(_pickle_state, "refused"),
    ),
    Case(
        "bundle-ckpt-text",
        "checkpoints",
        "bundle run",
        "a text file",
        _bundle_ckpt(_text_ckpt, "not a PyTorch"),
    ),
    Case(
        "export-ckpt-truncated",
        "checkpoints",
        "bundle export",
        "truncated checkpoint",
        _export_ckpt(_truncated_state, "truncated"),
    ),
    Case(
        "export-ckpt-pickle-object",
        "checkpoints",
        "bundle export",
        "a pickle carrying a Python object",
        _export_ckpt(_pickle_state, "refused"),
    ),
    Case(
        "export-ckpt-other-model",
        "checkpoints",
        "bundle export",
        "another model's weights",
        _export_ckpt(_other_model_state, "do not fit"),
    ),
    Case(
        "export-ckpt-empty",
        "checkpoints",
        "bundle export",
        "empty checkpoint",
        _export_ckpt(_empty_ckpt, "empty"),
    ),
    Case(
        "export-ckpt-folder",
        "checkpoints",
        "bundle export",
        "a folder",
        _export_ckpt(_folder_ckpt, "is a folder"),
    ),
    # ---------------------------------------------------------------- arguments
    Case(
        "predict-overlap-1.5",
        "arguments",
        "predict",
        "--overlap 1.5",
        _predict_file(lambda t: scan(t / "scan.nii.gz"), "overlap", "1.5", extra=("--overlap", "1.5"), names="overlap"),
    ),
    Case(
        "predict-sw-batch-size-0",
        "arguments",
        "predict",
        "--sw-batch-size 0",
        _predict_file(
            lambda t: scan(t / "scan.nii.gz"),
            "positive number",
            extra=("--sw-batch-size", "0"),
            names="--sw-batch-size",
        ),
    ),
    Case(
        "predict-sw-batch-size-text",
        "arguments",
        "predict",
        "--sw-batch-size many",
        _predict_file(
            lambda t: scan(t / "scan.nii.gz"),
            "sw-batch-size",
            "many",
            extra=("--sw-batch-size", "many"),
            names="sw-batch-size",
        ),
    ),
    Case(
        "predict-device-gpu",
        "arguments",
        "predict",
        "--device gpu",
        _predict_file(
            lambda t: scan(t / "scan.nii.gz"), "unknown device 'gpu'", extra=("--device", "gpu"), names="'gpu'"
        ),
    ),
    Case(
        "predict-roi-zero",
        "arguments",
        "predict",
        "--roi 0 64 32",
        _predict_file(
            lambda t: scan(t / "scan.nii.gz"), "roi", extra=("--roi", "0", "64", "32"), names="roi_size (0, 64, 32)"
        ),
    ),
    Case(
        "predict-dicom-seg-from-nifti",
        "arguments",
        "predict",
        "--format dicom-seg with a NIfTI input",
        lambda t, r: Run(
            [
                "predict",
                "-i",
                str(scan(t / "scan.nii.gz")),
                "-o",
                str(t / "out" / "seg.dcm"),
                *TINY,
                "--format",
                "dicom-seg",
            ],
            [t / "scan.nii.gz"],
            t / "out",
            ("dicom-seg",),
        ),
    ),
    Case(
        "predict-memory-budget-negative",
        "arguments",
        "predict",
        "--memory-budget-gb -1",
        _predict_file(
            lambda t: scan(t / "scan.nii.gz"), "memory", extra=("--memory-budget-gb", "-1"), names="memory_budget_gb"
        ),
    ),
    Case(
        "predict-unknown-dataset",
        "arguments",
        "predict",
        "--dataset that does not exist",
        lambda t, r: Run(
            predict(t, scan(t / "scan.nii.gz"), model=("--model", "swin_unetr_tiny", "--dataset", "btvc")),
            [t / "scan.nii.gz"],
            t / "out",
            ("btvc",),
            names="btvc",
        ),
    ),
    Case(
        "predict-unknown-model",
        "arguments",
        "predict",
        "--model that does not exist",
        lambda t, r: Run(
            predict(t, scan(t / "scan.nii.gz"), model=("--model", "swin_unetr_huge", "--dataset", "btcv")),
            [t / "scan.nii.gz"],
            t / "out",
            ("swin_unetr_huge",),
            names="swin_unetr_huge",
        ),
    ),
    Case(
        "predict-series-uid-unknown",
        "arguments",
        "predict",
        "--series-uid not in the folder",
        lambda t, r: Run(
            predict(t, series(t / "series"), "--series-uid", "1.2.3.4"), [t / "series"], t / "out", ("1.2.3.4",)
        ),
    ),
    Case(
        "adapt-output-is-a-file",
        "arguments",
        "adapt",
        "-o a .nii.gz file",
        lambda t, r: Run(
            ["adapt", "-i", str(scan(t / "scan.nii.gz")), "-o", str(t / "out.nii.gz"), *TINY],
            [t / "scan.nii.gz"],
            t / "out.nii.gz",
            ("give a folder",),
            names="out.nii.gz",
        ),
    ),
    Case(
        "adapt-steps-0",
        "arguments",
        "adapt",
        "--adapt-steps 0",
        lambda t, r: Run(
            adapt(t, scan(t / "scan.nii.gz")) + ["--adapt-steps", "0"],
            [t / "scan.nii.gz"],
            t / "out",
            ("steps must be >= 1",),
            names="steps",
        ),
    ),
    Case(
        "adapt-entropy-filter-2",
        "arguments",
        "adapt",
        "--method etta --entropy-filter 2",
        lambda t, r: Run(
            adapt(t, scan(t / "scan.nii.gz"), "--method", "etta", "--entropy-filter", "2"),
            [t / "scan.nii.gz"],
            t / "out",
            ("entropy_filter",),
            names="entropy_filter",
        ),
    ),
    Case(
        "adapt-lr-negative",
        "arguments",
        "adapt",
        "--adapt-lr -0.1",
        lambda t, r: Run(
            adapt(t, scan(t / "scan.nii.gz"), "--adapt-lr", "-0.1"),
            [t / "scan.nii.gz"],
            t / "out",
            ("lr must be > 0",),
            names="lr",
        ),
    ),
    Case(
        "train-epochs-0",
        "arguments",
        "train",
        "--epochs 0",
        _train_with(
            lambda root, _image, _label: root,
            "'epochs' must be a positive integer",
            extra=("--epochs", "0"),
            names="'epochs'",
        ),
    ),
    Case(
        "train-fold-beyond-folds",
        "arguments",
        "train",
        "--fold 7 --folds 5",
        _train_with(lambda root, _image, _label: root, "'fold'", extra=("--fold", "7", "--folds", "5"), names="'fold'"),
    ),
    Case(
        "train-layout-mismatch",
        "arguments",
        "train",
        "--layout nnunet on a Decathlon folder",
        _train_with(lambda root, _image, _label: root, "not an nnU-Net image name", extra=("--layout", "nnunet")),
    ),
    Case(
        "train-unknown-model",
        "arguments",
        "train",
        "--model that does not exist",
        _train_with(
            lambda root, _image, _label: root,
            "swin_unetr_huge",
            extra=("--model", "swin_unetr_huge"),
            names="swin_unetr_huge",
        ),
    ),
    Case(
        "train-device-tpu",
        "arguments",
        "train",
        "--device tpu",
        _train_with(lambda root, _image, _label: root, "tpu", extra=("--device", "tpu"), names="'tpu'"),
    ),
    Case(
        "pretrain-unknown-task",
        "arguments",
        "pretrain",
        "--tasks jigsaw",
        _pretrain_with(lambda f: f, "jigsaw", extra=("--tasks", "inpaint,jigsaw"), names="'tasks'"),
    ),
    Case(
        "pretrain-mask-ratio-1.5",
        "arguments",
        "pretrain",
        "--mask-ratio 1.5",
        _pretrain_with(
            lambda f: f, "mask_ratio", extra=("--tasks", "simmim", "--mask-ratio", "1.5"), names="'mask_ratio'"
        ),
    ),
    Case(
        "pretrain-zero-spacing",
        "arguments",
        "pretrain",
        "--spacing 0 1 1",
        _pretrain_with(lambda f: f, "spacing", extra=("--spacing", "0", "1", "1"), names="'spacing'"),
    ),
    Case(
        "pretrain-biplanar-model", "arguments", "pretrain", "--model swin_x2s_tiny (biplanar)", _pretrain_biplanar_model
    ),
    Case(
        "evaluate-negative-nsd-tolerance",
        "arguments",
        "evaluate",
        "--nsd-tolerance -1",
        _evaluate_with(lambda p, g: p, "nsd", extra=("--nsd-tolerance", "-1"), names="nsd_tolerance"),
    ),
    Case(
        "evaluate-missing-pred-folder",
        "arguments",
        "evaluate",
        "--pred folder that does not exist",
        _evaluate_with(lambda p, g: shutil.rmtree(p) or p, "not found"),
    ),
    Case("evaluate-gt-is-a-file", "arguments", "evaluate", "--gt is a file", _evaluate_with(_gt_file, "not a folder")),
    Case(
        "check-unknown-dataset",
        "arguments",
        "data check",
        "--dataset that does not exist",
        lambda t, r: Run(
            ["data", "check", str(decathlon(t / "ds")[0]), "--dataset", "btvc"],
            [t / "ds"],
            None,
            ("btvc",),
            names="btvc",
        ),
    ),
    Case(
        "check-missing-folder",
        "arguments",
        "data check",
        "a folder that does not exist",
        lambda t, r: Run(check(r, t / "nowhere"), [], None, ("not found",), names=str(t / "nowhere")),
        expect="report",
    ),
    Case(
        "x2s-size-zero",
        "arguments",
        "data prepare-x2s",
        "--size 0 32",
        _x2s_with(lambda root, _image, _label: root, "size", extra=("--size", "0", "32"), names="size"),
    ),
    Case(
        "x2s-output-inside-input",
        "arguments",
        "data prepare-x2s",
        "-o inside the input folder",
        lambda t, r: Run(
            [
                "data",
                "prepare-x2s",
                str(decathlon(t / "ds")[0]),
                "--dataset",
                "corpus-ct",
                "--datasets",
                str(r.spec_file),
                "-o",
                str(t / "ds" / "x2s"),
            ],
            [t / "ds"],
            None,
            ("inside the input",),
            names=str(t / "ds" / "x2s"),
        ),
    ),
    Case(
        "x2s-multichannel-dataset",
        "arguments",
        "data prepare-x2s",
        "--dataset with 4 channels",
        _x2s_with(lambda root, _image, _label: root, "4 channels", extra=("--dataset", "brats2021")),
    ),
    Case(
        "bundle-unknown-name",
        "arguments",
        "bundle run",
        "an unknown bundle",
        lambda t, r: Run(
            ["bundle", "run", "swin_unetr_mni_tisue"], [], None, ("unknown bundle",), names="swin_unetr_mni_tisue"
        ),
    ),
    Case(
        "bundle-missing-dataset-dir",
        "arguments",
        "bundle run",
        "dataset_dir that does not exist",
        lambda t, r: Run(
            bundle_run(t, t / "nowhere", r.bundle_state),
            [],
            t / "bundle",
            ("does not exist",),
            names=str(t / "nowhere"),
        ),
    ),
    Case("export-output-is-the-checkpoint", "arguments", "bundle export", "-o the checkpoint itself", _export_self),
    Case(
        "onnx-export-output-is-the-checkpoint",
        "arguments",
        "export",
        "-o the checkpoint itself",
        _onnx_export_args(fragments=("must end in .onnx",), names="checkpoint_best.pt", out="checkpoint_best.pt"),
    ),
    Case(
        "onnx-export-roi",
        "arguments",
        "export",
        "--roi the model cannot take",
        _onnx_export_args("--roi", "50", "64", "32", fragments=("is not a multiple of 32",), names="roi_size (50"),
    ),
    Case(
        "onnx-export-opset",
        "arguments",
        "export",
        "--opset the exporter cannot write",
        _onnx_export_args("--opset", "9", fragments=("opsets 18 to 23",), names="--opset 9"),
    ),
    Case("export-missing-checkpoint", "arguments", "bundle export", "--ckpt that does not exist", _export_missing),
]


# ---------------------------------------------------------------------------------------------
# the README table
# ---------------------------------------------------------------------------------------------


def bad_cases() -> list[Case]:
    """The cases that are bad inputs (refused or reported), not the processable ones."""
    return [c for c in CASES if c.expect != "ok"]


def reliability_rows() -> list[tuple[str, str, str, str]]:
    """``(kind, cases, commands, what happens)`` per kind, counted from :data:`CASES`."""
    rows = []
    for kind in KINDS:
        cases = [c for c in CASES if c.kind == kind]
        bad = [c for c in cases if c.expect != "ok"]
        ok = [c for c in cases if c.expect == "ok"]
        commands = ", ".join(f"`{cmd}`" for cmd in COMMANDS if any(c.command == cmd for c in cases))
        what = f"{len(bad)} bad: {KIND_OUTCOMES[kind]}"
        if ok:
            what += f"; {len(ok)} processed: " + ", ".join(dict.fromkeys(c.title for c in ok))
        rows.append((kind, str(len(cases)), commands, what))
    return rows


def markdown_table() -> str:
    """The README's reliability table (between ``<!-- reliability:corpus -->`` markers)."""
    counts = Counter(c.command for c in bad_cases())
    lines = ["| kind | cases | commands | what happens |", "| --- | ---: | --- | --- |"]
    lines += [f"| {kind} | {n} | {commands} | {what} |" for kind, n, commands, what in reliability_rows()]
    per_command = ", ".join(f"`{cmd}` {counts[cmd]}" for cmd in COMMANDS)
    lines.append("")
    lines.append(
        f"{len(bad_cases())} bad inputs and {len(CASES) - len(bad_cases())} odd but processable ones "
        f"(`tests/corpus.py`, run by `tests/test_corpus.py`); bad inputs per command: {per_command}."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
