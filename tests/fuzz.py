"""Mutation fuzzing of medswin's readers: seeded byte-level mutations of valid files of every input format.

Every mutated input must either load to the same kind of result as the valid file or raise
:class:`medswin.data.errors.DataError`, within :data:`TIMEOUT_S` seconds: never a hang, a crash (segfault,
abort), a ``MemoryError`` or any other exception type.  The kinds of result:

* volumes (NIfTI ``.nii.gz`` / ``.nii``, NRRD, MetaImage, one DICOM slice, a DICOM series folder with one
  mutated slice): :func:`medswin.data.io.load_volume` returns a ``Volume`` with a numeric 4D array
  ``(C, X, Y, Z)``, a finite affine and positive spacing, and ``check_image(volume, allow_all_zero=True)``
  passes or raises ``DataError``;
* X-ray views (PNG, :func:`medswin.data.drr.load_view`): a 2D float32 array in [0, 1];
* ``datasets.yaml`` (:func:`medswin.data.spec.load_dataset_specs`): a dict of ``DatasetSpec``;
* checkpoints (:func:`medswin.checkpoint.load_checkpoint` + ``model_from_checkpoint``): a model and a spec.

Mutations (:func:`mutate`) are bit flips, byte overwrites, truncations, insertions, deletions (offsets biased
towards each format's header) and rewrites of the format's known header fields with awkward values.  Mutation
``index`` of ``fmt`` under ``seed`` is always the same input (the valid files are generated from the seed too): a
reproducer is ``(fmt, seed, index)``.  Changing a mutator or a value pool renumbers the inputs: re-find the
reproducers of tests/test_fuzz.py after such a change.

The mutations run in a worker subprocess (``python tests/fuzz.py --worker ...``) that prints one line per
mutation; :func:`run_fuzz` (the parent) kills it when one mutation takes longer than :data:`TIMEOUT_S`
("hang") or when it dies ("crash: SIGSEGV"), and restarts it after that mutation.  The worker's address space
is limited (:data:`WORKER_MEMORY_GB`), so a reader that tries to allocate what a corrupt header declares
fails there instead of taking the machine's memory.

    python tests/fuzz.py --table                      # the default run (300 mutations): a Markdown table
    MEDSWIN_FUZZ_N=2000 MEDSWIN_FUZZ_SEED=7 python tests/fuzz.py --table --json results.jsonl
    python tests/fuzz.py --repro yaml 17              # rebuild mutation 17 of datasets.yaml and load it here
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FORMATS = ("nii.gz", "nii", "nrrd", "mha", "dcm", "dcm-series", "png", "yaml", "ckpt")
"""Every fuzzed input kind, in table order."""

FORMAT_LABELS = {
    "nii.gz": "NIfTI (`.nii.gz`)",
    "nii": "NIfTI (`.nii`)",
    "nrrd": "NRRD (`.nrrd`, raw and gzip)",
    "mha": "MetaImage (`.mha`, raw and compressed)",
    "dcm": "DICOM slice (`.dcm`)",
    "dcm-series": "DICOM series folder (one slice mutated)",
    "png": "X-ray view (`.png`)",
    "yaml": "`datasets.yaml`",
    "ckpt": "checkpoint (`.pt`)",
}
SHARES = {"nii.gz": 6, "nii": 6, "nrrd": 6, "mha": 6, "dcm": 5, "dcm-series": 4, "png": 5, "yaml": 6, "ckpt": 4}
"""Each format's share of the mutations (checkpoints are the slowest to load: fewer of them)."""
VOLUME_FORMATS = ("nii.gz", "nii", "nrrd", "mha", "dcm", "dcm-series")
SELFTEST_FORMATS = ("selftest-ok", "selftest-hang", "selftest-crash", "selftest-raise")
"""Worker-only formats that test the supervisor itself (no file, no heavy import)."""

DEFAULT_N = 300
DEFAULT_SEED = 20250617
TIMEOUT_S = 10.0
"""Longest a single mutation may take (writing the input and loading it) before it counts as a hang."""
STARTUP_TIMEOUT_S = 120.0
"""Longest the worker may take to import its libraries, and between two mutations."""
WORKER_MEMORY_GB = 6.0
"""The worker's address-space limit (``MEDSWIN_FUZZ_MEMORY_GB`` overrides it)."""

PROTOCOL = "@@fuzz "
CT5N = ("test_files", "dicomdirtests", "98892001", "CT5N")


def settings() -> tuple[int, int]:
    """``(total mutations, seed)``: ``MEDSWIN_FUZZ_N`` and ``MEDSWIN_FUZZ_SEED`` when set, else the defaults."""
    n = int(os.environ.get("MEDSWIN_FUZZ_N") or DEFAULT_N)
    seed = int(os.environ.get("MEDSWIN_FUZZ_SEED") or DEFAULT_SEED)
    return n, seed


def plan(n: int) -> list[tuple[str, int]]:
    """``n`` mutations ``(format, index)`` shared between the formats by :data:`SHARES` (largest remainder)."""
    total = sum(SHARES.values())
    counts = {f: n * SHARES[f] // total for f in FORMATS}
    by_remainder = sorted(FORMATS, key=lambda f: (-(n * SHARES[f] % total), FORMATS.index(f)))
    for f in by_remainder[: n - sum(counts.values())]:
        counts[f] += 1
    return [(f, i) for f in FORMATS for i in range(counts[f])]


# ---------------------------------------------------------------------------------------------------------------
# valid inputs (seeded; nothing binary is committed)
# ---------------------------------------------------------------------------------------------------------------

BASE_FILES = {
    "nii.gz": ("base.nii.gz",),
    "nii": ("base.nii",),
    "nrrd": ("base.nrrd", "base-gzip.nrrd"),
    "mha": ("base.mha", "base-compressed.mha"),
    "dcm": ("base.dcm",),
    "dcm-series": ("series",),
    "png": ("base.png", "base-rgb.png"),
    "yaml": ("datasets.yaml",),
    "ckpt": ("checkpoint.pt",),
}
"""The valid file(s) each format's mutations start from (one is picked per mutation)."""

SPEC_ENTRIES: dict[str, dict[str, Any]] = {
    "fuzz-ct": {
        "description": "fuzzing: CT",
        "channel_names": ["CT"],
        "labels": {"background": 0, "organ": 1},
        "file_ending": ".nii.gz",
        "layout": "decathlon",
        "target_spacing": [1.5, 1.5, 2.0],
        "normalization": {"type": "ct", "a_min": -175, "a_max": 250},
        "roi_size": [64, 64, 32],
        "licence": "CC-BY-4.0",
        "source": "tests/fuzz.py",
    },
    "fuzz-brats": {
        "channel_names": ["FLAIR", "T1w"],
        "labels": {"background": 0, "edema": 1, "tumour": 2},
        "regions": {"whole": [1, 2], "core": [2]},
        "file_ending": ".nii.gz",
        "layout": "brats",
        "case_pattern": "Case_*",
        "channel_suffixes": {"FLAIR": "_flair", "T1w": "_t1", "label": "_seg"},
        "normalization": {"type": "zscore", "nonzero": True},
    },
    "fuzz-xray": {
        "task": "biplanar",
        "channel_names": ["xray"],
        "labels": {"background": 0, "bone": 1},
        "file_ending": ".nii.gz",
        "license": "CC0-1.0",
        "citation": "none",
    },
}


def _rotation(angle_deg: float) -> Any:
    import numpy as np

    a = math.radians(angle_deg)
    return np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


def make_valid_files(folder: str | os.PathLike, seed: int) -> Path:
    """Write the valid inputs of every format into ``folder`` (deterministic for ``seed``); returns ``folder``.

    Idempotent: a ``.complete`` marker naming the seed and the files skips the work.
    """
    import numpy as np

    folder = Path(folder)
    marker, stamp = folder / ".complete", json.dumps({"seed": seed, "files": BASE_FILES})
    if marker.is_file() and marker.read_text() == stamp:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rotation = _rotation(float(rng.uniform(10, 40)))
    spacing = np.array([1.5, 1.2, 2.0])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = [10.0, -5.0, 3.0]
    shape = (12, 10, 8)
    ct = rng.integers(-1000, 1000, size=shape).astype(np.int16)
    mri = rng.normal(100.0, 20.0, size=shape + (2,)).astype(np.float32)
    _write_nifti_files(folder, ct, mri, affine)
    _write_sitk_files(folder, ct, mri[..., 0], rotation, spacing)
    _write_dicom_files(folder)
    _write_png(folder, rng)
    import yaml

    (folder / "datasets.yaml").write_text(yaml.safe_dump(SPEC_ENTRIES, sort_keys=False, default_flow_style=None))
    _write_checkpoint(folder / "checkpoint.pt", seed)
    marker.write_text(stamp)
    return folder


def _write_nifti_files(folder: Path, ct: Any, mri: Any, affine: Any) -> None:
    from medswin.data.io import write_nifti

    write_nifti(ct, affine, folder / "base.nii")
    write_nifti(mri, affine, folder / "base.nii.gz")
    # the same bytes on every run: a zero gzip timestamp
    data = gzip.decompress((folder / "base.nii.gz").read_bytes())
    (folder / "base.nii.gz").write_bytes(gzip.compress(data, compresslevel=6, mtime=0))


def _write_sitk_files(folder: Path, ct: Any, mri: Any, rotation: Any, spacing: Any) -> None:
    import numpy as np
    import SimpleITK as sitk

    lps = np.diag([-1.0, -1.0, 1.0]) @ rotation  # ITK direction (LPS) of the same RAS rotation
    for array, name, compress in ((ct, "base", False), (mri.astype(np.float32), "base-gzip", True)):
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.T))  # (X, Y, Z) -> SimpleITK's (Z, Y, X)
        image.SetSpacing(tuple(float(s) for s in spacing))
        image.SetDirection(tuple(float(v) for v in lps.ravel()))
        image.SetOrigin((-10.0, 5.0, 3.0))
        sitk.WriteImage(image, str(folder / f"{name}.nrrd"), compress)
        mha = "base-compressed" if compress else "base"
        sitk.WriteImage(image, str(folder / f"{mha}.mha"), compress)


def _ct5n() -> Path:
    import pydicom.data

    return Path(pydicom.data.__file__).parent.joinpath(*CT5N)


def _write_dicom_files(folder: Path) -> None:
    slices = sorted(_ct5n().iterdir())
    shutil.copyfile(slices[0], folder / "base.dcm")
    series = folder / "series"
    series.mkdir(exist_ok=True)
    for path in slices:
        shutil.copyfile(path, series / path.name)


def _write_png(folder: Path, rng: Any) -> None:
    import numpy as np
    import SimpleITK as sitk

    ramp = np.linspace(0, 200, 40)[None, :] + np.linspace(0, 40, 32)[:, None]
    pic = np.clip(ramp + rng.integers(0, 15, size=(32, 40)), 0, 255).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(pic), str(folder / "base.png"))
    rgb = np.stack([pic, pic[::-1], 255 - pic], axis=-1)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(folder / "base-rgb.png"))


def checkpoint_dict(seed: int) -> dict[str, Any]:
    """A valid medswin training checkpoint: an untrained ``swin_unetr_tiny`` for 1 -> 2 classes and the
    fields ``model_from_checkpoint`` needs (the trainer's ``_run_info``)."""
    import torch

    from medswin import __version__
    from medswin.data.spec import parse_spec
    from medswin.models import create_model

    spec = parse_spec("fuzz-ct", SPEC_ENTRIES["fuzz-ct"], origin="tests/fuzz.py")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = create_model("swin_unetr_tiny", in_channels=spec.num_channels, out_channels=spec.out_channels)
    return {
        "model": model.state_dict(),
        "epoch": 0,
        "spec": spec.to_dict(),
        "model_name": "swin_unetr_tiny",
        "model_kwargs": {},
        "in_channels": spec.num_channels,
        "out_channels": spec.out_channels,
        "roi_size": list(spec.roi_size),
        "medswin_version": __version__,
    }


def _write_checkpoint(path: Path, seed: int) -> None:
    """The checkpoint as :func:`medswin.checkpoint.save_checkpoint` writes it, with reproducible bytes.

    ``save_checkpoint`` writes through a temp file whose random name ``torch.save`` also uses as the zip
    archive's folder (``.tmp-<pid>-<random>-checkpoint/data.pkl``): the same dict is saved again under torch's
    fixed name ``archive/`` and with a fixed serialization id, so that every mutation is the same on every run.
    """
    import io

    import torch

    from medswin.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(checkpoint_dict(seed), path)
    buffer = io.BytesIO()
    torch.save(load_checkpoint(path), buffer)
    path.write_bytes(_fixed_serialization_id(buffer.getvalue()))


def _fixed_serialization_id(data: bytes) -> bytes:
    """``torch.save`` stores a random ``.data/serialization_id``: zeros instead (and its CRC fixed), so the
    checkpoint's bytes, and so every mutation of it, are the same on every run."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = next((i for i in archive.infolist() if i.filename.endswith(".data/serialization_id")), None)
        if info is None:
            return data
        old = archive.read(info)
    new = b"0" * len(old)
    start = info.header_offset
    tail = data[start:].replace(old, new, 1)
    tail = tail.replace(struct.pack("<I", info.CRC), struct.pack("<I", zlib.crc32(new)))
    return data[:start] + tail


# ---------------------------------------------------------------------------------------------------------------
# generic byte mutations
# ---------------------------------------------------------------------------------------------------------------

Regions = Sequence[tuple[int, int]]
INT_VALUES = (0, 1, -1, 2, 3, 4, 7, 8, 16, 255, 256, 32767, -32768, 65535, 2**31 - 1, -(2**31), 2**32 - 1)
FLOAT_VALUES = (0.0, -0.0, 1.0, -1.0, 0.5, 1e-45, 1e-38, 1e38, 3.4e38, math.nan, math.inf, -math.inf, 1e6)


def _short_hex(data: bytes, limit: int = 24) -> str:
    return data[:limit].hex() + ("..." if len(data) > limit else "")


def _pick_offset(rng: random.Random, size: int, regions: Regions, p_region: float = 0.6) -> int:
    """An offset in ``[0, size)``; with probability ``p_region`` inside one of ``regions`` (the headers)."""
    usable = [(lo, min(hi, size)) for lo, hi in regions if lo < min(hi, size)]
    if usable and rng.random() < p_region:
        lo, hi = rng.choice(usable)
        return rng.randrange(lo, hi)
    return rng.randrange(size) if size else 0


def _pack(code: str, value: Any, order: str = "<") -> bytes:
    """``value`` packed as struct ``code``; integers wrap to the field's width."""
    if code in "bBhHiIqQ":
        bits = struct.calcsize(code) * 8
        return struct.pack(order + code.upper(), int(value) & ((1 << bits) - 1))
    if code in "fd":
        return struct.pack(order + code, float(value))
    return bytes(value)


def _random_value_bytes(rng: random.Random, n: int) -> tuple[bytes, str]:
    kind = rng.choice(("random", "zero", "ff", "int", "float", "ascii"))
    if kind == "random":
        value = rng.randbytes(n)
    elif kind == "zero":
        value = b"\x00" * n
    elif kind == "ff":
        value = b"\xff" * n
    elif kind == "int":
        value = _pack("i" if n >= 4 else "h" if n >= 2 else "b", rng.choice(INT_VALUES)) * n
    elif kind == "float":
        value = _pack("f", rng.choice(FLOAT_VALUES)) * n
    else:
        value = bytes(rng.choice(b"0123456789 -.e\n:=(),nainf") for _ in range(n))
    return value[:n], kind


def bit_flip(rng: random.Random, data: bytes, regions: Regions) -> tuple[bytes, dict]:
    buf = bytearray(data)
    flips = []
    for _ in range(rng.choice((1, 1, 1, 2, 3, 8))):
        offset, bit = _pick_offset(rng, len(buf), regions), rng.randrange(8)
        buf[offset] ^= 1 << bit
        flips.append([offset, bit])
    return bytes(buf), {"op": "bitflip", "flips": flips}


def overwrite(rng: random.Random, data: bytes, regions: Regions) -> tuple[bytes, dict]:
    offset = _pick_offset(rng, len(data), regions)
    value, kind = _random_value_bytes(rng, rng.choice((1, 1, 2, 4, 4, 8, 16)))
    value = value[: len(data) - offset]
    out = data[:offset] + value + data[offset + len(value) :]
    return out, {"op": "overwrite", "offset": offset, "kind": kind, "bytes": _short_hex(value)}


def truncate(rng: random.Random, data: bytes, regions: Regions) -> tuple[bytes, dict]:
    offset = _pick_offset(rng, len(data), regions, p_region=0.4)
    return data[:offset], {"op": "truncate", "offset": offset, "of": len(data)}


def insert(rng: random.Random, data: bytes, regions: Regions) -> tuple[bytes, dict]:
    offset = _pick_offset(rng, len(data) + 1, regions)
    n = rng.choice((1, 2, 4, 16, 64, 512))
    if rng.random() < 0.5:
        value, kind = rng.randbytes(n), "random"
    else:
        source = rng.randrange(len(data)) if data else 0
        value, kind = data[source : source + n], f"copy of {source}"
    return data[:offset] + value + data[offset:], {"op": "insert", "offset": offset, "kind": kind, "n": len(value)}


def delete(rng: random.Random, data: bytes, regions: Regions) -> tuple[bytes, dict]:
    offset = _pick_offset(rng, len(data), regions)
    n = rng.choice((1, 2, 4, 16, 64, 512))
    return data[:offset] + data[offset + n :], {"op": "delete", "offset": offset, "n": n}


BYTE_OPS: dict[str, Callable[[random.Random, bytes, Regions], tuple[bytes, dict]]] = {
    "bitflip": bit_flip,
    "overwrite": overwrite,
    "truncate": truncate,
    "insert": insert,
    "delete": delete,
}
OP_WEIGHTS = {"bitflip": 5, "overwrite": 5, "truncate": 3, "insert": 2, "delete": 2, "field": 8}


def _choose_op(rng: random.Random, weights: dict[str, int] = OP_WEIGHTS) -> str:
    names = list(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


# ---------------------------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------------------------

NIFTI1_FIELDS: dict[str, tuple[int, str]] = {
    "sizeof_hdr": (0, "i"),
    "dim_info": (39, "B"),
    **{f"dim[{k}]": (40 + 2 * k, "h") for k in range(8)},
    "intent_code": (68, "h"),
    "datatype": (70, "h"),
    "bitpix": (72, "h"),
    "slice_start": (74, "h"),
    **{f"pixdim[{k}]": (76 + 4 * k, "f") for k in range(8)},
    "vox_offset": (108, "f"),
    "scl_slope": (112, "f"),
    "scl_inter": (116, "f"),
    "slice_end": (120, "h"),
    "slice_code": (122, "B"),
    "xyzt_units": (123, "B"),
    "cal_max": (124, "f"),
    "cal_min": (128, "f"),
    "slice_duration": (132, "f"),
    "qform_code": (252, "h"),
    "sform_code": (254, "h"),
    "quatern_b": (256, "f"),
    "quatern_c": (260, "f"),
    "quatern_d": (264, "f"),
    "qoffset_x": (268, "f"),
    "qoffset_y": (272, "f"),
    "qoffset_z": (276, "f"),
    **{f"srow_{axis}[{k}]": (280 + 16 * i + 4 * k, "f") for i, axis in enumerate("xyz") for k in range(4)},
    "magic": (344, "4s"),
}
NIFTI_SPECIAL: dict[str, tuple] = {
    "sizeof_hdr": (348, 540, 0, -1, 2**24, 1543569408),
    "dim[0]": (0, 1, 2, 3, 4, 5, 7, 8, -1, 32767),
    "datatype": (0, 1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 511),
    "bitpix": (0, 1, 7, 8, 16, 32, 64, 128),
    "vox_offset": (0.0, 348.0, 352.0, 351.0, 353.0, 1e9, -352.0, math.nan, 3.0e9),
    "qform_code": (0, 1, 2, 3, 4, 5, -1, 255),
    "sform_code": (0, 1, 2, 3, 4, 5, -1, 255),
    "xyzt_units": (0, 2, 8, 10, 16, 24, 255),
    "magic": (b"n+1\0", b"ni1\0", b"n+2\0", b"\0\0\0\0", b"xxxx"),
}
NIFTI_REGIONS = ((0, 352),)


def nifti_field_rewrite(rng: random.Random, data: bytes) -> tuple[bytes, dict]:
    """Rewrite 1-3 NIfTI-1 header fields (dimensions, data type, pixdim, scaling, qform/sform, magic, ...)."""
    buf = bytearray(data)
    changes = []
    for _ in range(rng.choices((1, 2, 3), weights=(7, 2, 1))[0]):
        name = rng.choice(list(NIFTI1_FIELDS))
        offset, code = NIFTI1_FIELDS[name]
        if name in NIFTI_SPECIAL and rng.random() < 0.7:
            value = rng.choice(NIFTI_SPECIAL[name])
        elif code == "f":
            value = rng.choice(FLOAT_VALUES + (rng.uniform(-1e3, 1e3),))
        elif code == "4s":
            value = rng.randbytes(4)
        else:
            value = rng.choice(INT_VALUES + (rng.randrange(-100, 100),))
        packed = _pack(code, value)
        buf[offset : offset + len(packed)] = packed
        changes.append([name, value.hex() if isinstance(value, bytes) else repr(value)])
    return bytes(buf), {"op": "field", "fields": changes}


def mutate_nii(rng: random.Random, data: bytes) -> tuple[bytes, dict]:
    op = _choose_op(rng)
    if op == "field":
        return nifti_field_rewrite(rng, data)
    return BYTE_OPS[op](rng, data, NIFTI_REGIONS)


GZIP_FIELDS = {"flags": (3, "B"), "mtime": (4, "I"), "xfl": (8, "B"), "os": (9, "B"), "method": (2, "B")}


def mutate_nii_gz(rng: random.Random, data: bytes) -> tuple[bytes, dict]:
    """Mostly the inner NIfTI stream, re-compressed (header fields reach the reader); else the gzip bytes."""
    if rng.random() < 0.6:
        inner, desc = mutate_nii(rng, gzip.decompress(data))
        return gzip.compress(inner, compresslevel=6, mtime=0), {**desc, "layer": "inflated NIfTI, re-compressed"}
    op = _choose_op(rng)
    regions = ((0, 10), (max(len(data) - 8, 0), len(data)))
    if op != "field":
        out, desc = BYTE_OPS[op](rng, data, regions)
        return out, {**desc, "layer": "gzip bytes"}
    buf = bytearray(data)
    where = rng.choice(["crc", "isize", *GZIP_FIELDS])
    if where in ("crc", "isize"):
        offset = len(buf) - (8 if where == "crc" else 4)
        value = rng.choice((0, 1, 2**32 - 1, 352, 2**31, rng.randrange(2**32)))
        buf[offset : offset + 4] = _pack("I", value)
    else:
        offset, code = GZIP_FIELDS[where]
        value = rng.choice((0, 1, 2, 4, 8, 16, 31, 255, rng.randrange(256)))
        buf[offset : offset + struct.calcsize(code)] = _pack(code, value)
    return bytes(buf), {"op": "field", "fields": [[f"gzip {where}", repr(value)]], "layer": "gzip bytes"}


# ---------------------------------------------------------------------------------------------------------------
# text headers: NRRD and MetaImage
# ---------------------------------------------------------------------------------------------------------------

NRRD_VALUES: dict[str, list[str]] = {
    "type": ["short", "uchar", "int8", "uint64", "float", "double", "block", "int128", "", "signed char"],
    "dimension": ["0", "1", "2", "4", "5", "17", "-1", "99999999999", "3.5"],
    "space": ["left-posterior-superior", "right-anterior-superior", "scanner-xyz", "3D-right-handed", "RAS", "bogus"],
    "sizes": [
        "0 0 0",
        "1 1 1",
        "12 10",
        "12 10 8 2",
        "12 10 8 1",
        "-1 10 8",
        "99999 99999 99999",
        "4294967296 1 1",
        "12 10 80",
        "nan nan nan",
        "",
    ],
    "space directions": [
        "(nan,0,0) (0,1.2,0) (0,0,2)",
        "(0,0,0) (0,1.2,0) (0,0,2)",
        "(1.5,0,0) (1.5,0,0) (0,0,2)",
        "none (1.5,0,0) (0,1.2,0)",
        "(inf,0,0) (0,1.2,0) (0,0,2)",
        "(1e308,0,0) (0,1e308,0) (0,0,1e308)",
        "(1e-300,0,0) (0,1e-300,0) (0,0,1e-300)",
        "(1.5,0) (0,1.2)",
        "(1.5,0,0) (0,1.2,0)",
        "(-1.5,0,0) (0,-1.2,0) (0,0,-2)",
        "garbage",
        "",
    ],
    "kinds": ["domain domain domain", "RGB-color domain domain domain", "vector domain domain", "list domain domain"],
    "endian": ["big", "little", "middle", ""],
    "encoding": ["raw", "gzip", "gz", "bzip2", "ascii", "text", "hex", "zrl", "none", ""],
    "space origin": ["(nan,nan,nan)", "(inf,0,0)", "(1,2)", "()", "(1e308,1e308,1e308)", "x"],
}
NRRD_EXTRA = [
    "byte skip: -1",
    "byte skip: 100000",
    "byte skip: 4",
    "line skip: 5",
    "data file: missing.raw",
    "data file: LIST",
    "data file: m%03d.raw 0 2 1",
    "spacings: nan nan nan",
    "spacings: 0 0 0",
    "thicknesses: 1 1 1",
    "measurement frame: (nan,0,0) (0,1,0) (0,0,1)",
    "measurement frame: (1,0,0)",
    "min: nan",
    "old max: inf",
    'space units: "mm" "mm"',
    "axis mins: nan 0 0",
    "centerings: cell cell cell",
    "block size: 0",
    "block size: -1",
    "space dimension: 2",
    "space dimension: 5",
    "dimension: 4",
]
NRRD_MAGICS = ["NRRD0001", "NRRD0005", "NRRD9999", "NRRD", "NRRD0004 extra"]

MHA_VALUES: dict[str, list[str]] = {
    "objecttype": ["Image", "Mesh", "", "Scene"],
    "ndims": ["0", "1", "2", "4", "5", "10", "11", "100", "-1", "1000000", "3.5", "x"],
    "binarydata": ["True", "False", ""],
    "binarydatabyteordermsb": ["True", "False"],
    "compresseddata": ["True", "False"],
    "compresseddatasize": ["0", "1", "-1", "100", "99999999999", "18446744073709551615"],
    "transformmatrix": [
        "nan 0 0 0 1 0 0 0 1",
        "0 0 0 0 0 0 0 0 0",
        "1 0 0 1 0 0 0 0 1",
        "inf 0 0 0 1 0 0 0 1",
        "1 0 0",
        "1e308 0 0 0 1e308 0 0 0 1e308",
        "",
    ],
    "offset": ["nan nan nan", "inf 0 0", "1", "", "1e308 1e308 1e308"],
    "centerofrotation": ["nan nan nan", "0 0"],
    "anatomicalorientation": ["RAI", "LPS", "???", "XYZ", ""],
    "elementspacing": ["0 0 0", "-1 1 1", "nan 1 1", "inf 1 1", "1e-300 1e-300 1e-300", "1", "", "1e308 1e308 1e308"],
    "dimsize": [
        "0 0 0",
        "1 1 1",
        "12 10",
        "12 10 8 2",
        "-1 10 8",
        "2147483647 2147483647 2147483647",
        "4294967297 1 1",
        "100000 100000 100000",
        "12 10 80",
        "x y z",
        "65536 65536 1",
    ],
    "elementtype": [
        "MET_UCHAR",
        "MET_CHAR",
        "MET_SHORT",
        "MET_INT",
        "MET_UINT",
        "MET_LONG_LONG",
        "MET_FLOAT",
        "MET_DOUBLE",
        "MET_STRING",
        "MET_OTHER",
        "MET_NONE",
        "MET_USHORT_ARRAY",
        "MET_FLOAT_MATRIX",
        "MET_BOGUS",
        "",
    ],
    "elementdatafile": ["LOCAL", "missing.raw", "LIST", "LIST 2D", "m%03d.raw 1 3 1", "", "m.mha"],
}
MHA_EXTRA = [
    "ElementNumberOfChannels = 2",
    "ElementNumberOfChannels = 0",
    "ElementNumberOfChannels = 1000000",
    "ElementNumberOfChannels = -1",
    "HeaderSize = -1",
    "HeaderSize = 100000",
    "HeaderSize = 8",
    "ElementByteOrderMSB = True",
    "ElementSize = 0 0 0",
    "ElementSize = nan 1 1",
    "ElementMin = nan",
    "Modality = MET_MOD_CT",
    "NDims = 11",
    "ElementDataFile = LOCAL",
]
GENERIC_TEXT_VALUES = ["", "0", "-1", "nan", "inf", "1e308", "99999999999", "x", "1 2", "(", "\x00", "é"]


def _text_header(data: bytes, fmt: str) -> tuple[list[bytes], bytes, bytes]:
    """``(header lines, the separator that ends the header, the rest)`` of a NRRD or MetaImage file."""
    if fmt == "nrrd":
        end = data.find(b"\n\n")
        end = len(data) if end < 0 else end
        return data[:end].split(b"\n"), b"\n\n", data[end + 2 :]
    start = data.find(b"ElementDataFile")
    end = data.find(b"\n", start) if start >= 0 else -1
    end = len(data) if end < 0 else end
    return data[:end].split(b"\n"), b"\n", data[end + 1 :]


def text_field_rewrite(rng: random.Random, data: bytes, fmt: str) -> tuple[bytes, dict]:
    """Rewrite the header of a NRRD (``key: value``) or MetaImage (``Key = Value``) file: a field's value, a
    dropped, duplicated, inserted or renamed line, or (NRRD) the magic line."""
    lines, separator, rest = _text_header(data, fmt)
    sep = b":" if fmt == "nrrd" else b"="
    values, extra = (NRRD_VALUES, NRRD_EXTRA) if fmt == "nrrd" else (MHA_VALUES, MHA_EXTRA)
    fields = [i for i, line in enumerate(lines) if sep in line and not line.startswith(b"#")]
    action = rng.choices(
        ("value", "drop", "duplicate", "insert", "magic"), weights=(10, 2, 1, 3, 1 if fmt == "nrrd" else 0)
    )[0]
    desc: dict[str, Any] = {"op": "field", "action": action}
    if action == "magic":
        lines[0] = rng.choice(NRRD_MAGICS).encode()
        desc["line"] = lines[0].decode()
    elif action == "insert":
        line = rng.choice(extra)
        at = rng.randrange(1, len(lines) + 1)
        lines.insert(at, line.encode())
        desc.update(line=line, at=at)
    elif not fields:
        return overwrite(rng, data, ((0, len(data)),))
    else:
        i = rng.choice(fields)
        key = lines[i].split(sep, 1)[0].decode("latin-1").strip()
        desc["key"] = key
        if action == "drop":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i + 1, lines[i])
        else:
            pool = values.get(key.lower(), []) if rng.random() < 0.8 else []
            value = rng.choice(pool or GENERIC_TEXT_VALUES)
            joiner = ": " if fmt == "nrrd" else " = "
            lines[i] = f"{key}{joiner}{value}".encode()
            desc["value"] = value
    return b"\n".join(lines) + separator + rest, desc


def _text_regions(data: bytes, fmt: str) -> Regions:
    lines, _, _ = _text_header(data, fmt)
    return ((0, sum(len(line) + 1 for line in lines)),)


def mutate_text_volume(rng: random.Random, data: bytes, fmt: str) -> tuple[bytes, dict]:
    op = _choose_op(rng)
    if op == "field":
        return text_field_rewrite(rng, data, fmt)
    return BYTE_OPS[op](rng, data, _text_regions(data, fmt))


# ---------------------------------------------------------------------------------------------------------------
# DICOM (explicit VR little endian, as the CT5N slices are)
# ---------------------------------------------------------------------------------------------------------------

DICOM_FIELDS: dict[str, tuple[int, int]] = {
    "FileMetaInformationGroupLength": (0x0002, 0x0000),
    "TransferSyntaxUID": (0x0002, 0x0010),
    "SeriesInstanceUID": (0x0020, 0x000E),
    "ImagePositionPatient": (0x0020, 0x0032),
    "ImageOrientationPatient": (0x0020, 0x0037),
    "SliceThickness": (0x0018, 0x0050),
    "SamplesPerPixel": (0x0028, 0x0002),
    "PhotometricInterpretation": (0x0028, 0x0004),
    "Rows": (0x0028, 0x0010),
    "Columns": (0x0028, 0x0011),
    "PixelSpacing": (0x0028, 0x0030),
    "BitsAllocated": (0x0028, 0x0100),
    "BitsStored": (0x0028, 0x0101),
    "HighBit": (0x0028, 0x0102),
    "PixelRepresentation": (0x0028, 0x0103),
    "RescaleIntercept": (0x0028, 0x1052),
    "RescaleSlope": (0x0028, 0x1053),
    "PixelData": (0x7FE0, 0x0010),
}
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
DICOM_VALUES: dict[bytes, list[bytes]] = {
    b"US": [_pack("H", v) for v in (0, 1, 3, 8, 12, 15, 16, 17, 32, 64, 0x7FFF, 0x8000, 0xFFFF)],
    b"UL": [_pack("I", v) for v in (0, 1, 100, 191, 193, 2**31, 2**32 - 1)],
    b"DS": [
        b"nan\\nan",
        b"inf ",
        b"-0.5\\0.5",
        b"0\\0 ",
        b"1e308\\1e308",
        b"",
        b"\\ ",
        b"1\\2\\3 ",
        b"abc ",
        b"-1",
        b"1e-300\\1e-300",
        b"0 ",
        b"nan\\0\\0\\0\\1\\0",
        b"1\\0\\0\\1\\0\\0",
        b"0\\0\\0\\0\\0\\0",
        b"1\\0\\0\\0\\1\\0\\0 ",
        b"-72.2\\-143\\nan ",
    ],
    b"IS": [b"0 ", b"-1", b"99999999", b"x ", b""],
    b"UI": [
        b"1.2.840.10008.1.2\x00",
        b"1.2.840.10008.1.2.2\x00",
        b"1.2.840.10008.1.2.4.50",
        b"1.2.840.10008.1.2.4.90",
        b"1.2.840.10008.1.2.5\x00",
        b"1.2.840.10008.1.2.1.99",
        b"",
        b"garbage\x00",
        b"1.2.3.4\x00",
    ],
    b"CS": [b"MONOCHROME1 ", b"RGB ", b"PALETTE COLOR ", b"YBR_FULL", b"", b"X "],
}


def _dicom_element(data: bytes, group: int, element: int) -> tuple[int, bytes, int, int] | None:
    """``(start, VR, length offset, length size)`` of an explicit-VR little-endian element, or ``None``."""
    tag = struct.pack("<HH", group, element)
    start = data.find(tag, 132)
    while start >= 0:
        vr = data[start + 4 : start + 6]
        if vr.isalpha() and vr.isupper():
            return (start, vr, start + 8, 4) if vr in LONG_VRS else (start, vr, start + 6, 2)
        start = data.find(tag, start + 1)
    return None


def dicom_field_rewrite(rng: random.Random, data: bytes) -> tuple[bytes, dict]:
    """Rewrite one known element of a DICOM file: its value (awkward numbers, UIDs, strings) with the length
    updated, or only its length field."""
    name = rng.choice(list(DICOM_FIELDS))
    found = _dicom_element(data, *DICOM_FIELDS[name])
    if found is None:
        return overwrite(rng, data, ((0, len(data)),))
    _, vr, length_at, length_size = found
    code = "I" if length_size == 4 else "H"
    length = struct.unpack("<" + code, data[length_at : length_at + length_size])[0]
    value_at = length_at + length_size
    if name == "PixelData" or rng.random() < 0.2:
        new_length = rng.choice((0, 1, length - 2, length + 2, length * 2, 0xFFFF, 0xFFFFFFFF, length // 2))
        new_length &= (1 << (8 * length_size)) - 1
        out = data[:length_at] + _pack(code, new_length) + data[value_at:]
        return out, {"op": "field", "element": name, "vr": vr.decode(), "length": [length, new_length]}
    value = rng.choice(DICOM_VALUES.get(vr, [b"", b"\x00\x00", rng.randbytes(4)]))
    out = data[:length_at] + _pack(code, len(value)) + value + data[value_at + length :]
    return out, {"op": "field", "element": name, "vr": vr.decode(), "value": value.decode("latin-1")}


def _dicom_regions(data: bytes) -> Regions:
    pixels = _dicom_element(data, 0x7FE0, 0x0010)
    return ((128, pixels[0] + 12 if pixels else len(data)),)


def mutate_dicom(rng: random.Random, data: bytes) -> tuple[bytes, dict]:
    op = _choose_op(rng)
    if op == "field":
        return dicom_field_rewrite(rng, data)
    return BYTE_OPS[op](rng, data, _dicom_regions(data))


# ---------------------------------------------------------------------------------------------------------------
# PNG
# ---------------------------------------------------------------------------------------------------------------

PNG_IHDR = {"width": (16, ">I"), "height": (20, ">I"), "bit depth": (24, "B"), "colour type": (25, "B")}
PNG_IHDR.update({"compression": (26, "B"), "filter": (27, "B"), "interlace": (28, "B")})
PNG_VALUES = {
    "width": (0, 1, 2, 65535, 100000, 1000000, 2**31 - 1, 2**32 - 1),
    "height": (0, 1, 2, 65535, 100000, 1000000, 2**31 - 1, 2**32 - 1),
    "bit depth": (0, 1, 2, 3, 4, 8, 16, 32),
    "colour type": (0, 1, 2, 3, 4, 5, 6, 7),
    "compression": (0, 1, 255),
    "filter": (0, 1, 255),
    "interlace": (0, 1, 2),
}


def _png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """``(offset, type, length)`` of each chunk of a PNG file."""
    chunks, offset = [], 8
    while offset + 8 <= len(data):
        length = struct.unpack(">I", data[offset : offset + 4])[0]
        chunks.append((offset, data[offset + 4 : offset + 8], length))
        offset += 12 + length
    return chunks


def _fix_png_crc(buf: bytearray, offset: int, length: int) -> None:
    body = bytes(buf[offset + 4 : offset + 8 + length])
    buf[offset + 8 + length : offset + 12 + length] = struct.pack(">I", zlib.crc32(body))


def png_field_rewrite(rng: random.Random, data: bytes) -> tuple[bytes, dict]:
    """Rewrite an IHDR field, an IDAT byte or a chunk length; the CRC is mostly fixed so that libpng reads on."""
    buf = bytearray(data)
    chunks = _png_chunks(data)
    fix_crc = rng.random() < 0.8
    target = rng.choices(("ihdr", "idat", "length"), weights=(6, 3, 1))[0]
    if target == "ihdr":
        name = rng.choice(list(PNG_IHDR))
        offset, code = PNG_IHDR[name]
        value = rng.choice(PNG_VALUES[name])
        buf[offset : offset + struct.calcsize(code)] = struct.pack(code, value)
        desc = {"op": "field", "field": f"IHDR {name}", "value": value}
        chunk = chunks[0]
    elif target == "idat":
        chunk = next(c for c in chunks if c[1] == b"IDAT")
        offset = chunk[0] + 8 + rng.randrange(max(chunk[2], 1))
        buf[offset] = rng.randrange(256)
        desc = {"op": "field", "field": "IDAT byte", "offset": offset, "value": buf[offset]}
    else:
        chunk = rng.choice(chunks)
        value = rng.choice((0, 1, chunk[2] + 1, chunk[2] * 2, 2**31 - 1, 2**32 - 1))
        buf[chunk[0] : chunk[0] + 4] = struct.pack(">I", value)
        return bytes(buf), {"op": "field", "field": f"{chunk[1].decode('latin-1')} length", "value": value}
    if fix_crc:
        _fix_png_crc(buf, chunk[0], chunk[2])
    return bytes(buf), {**desc, "crc fixed": fix_crc}


def _fix_all_png_crcs(data: bytes) -> bytes:
    """Every complete chunk's CRC recomputed (so that libpng reads past a mutated byte instead of stopping at
    the CRC)."""
    buf = bytearray(data)
    for offset, _, length in _png_chunks(data):
        if offset + 12 + length <= len(buf):
            _fix_png_crc(buf, offset, length)
    return bytes(buf)


def png_idat_rewrite(rng: random.Random, data: bytes) -> tuple[bytes, dict]:
    """Mutate the inflated image data (row filter bytes, pixels, its length), re-compress it into one IDAT chunk."""
    chunks = _png_chunks(data)
    idats = [c for c in chunks if c[1] == b"IDAT"]
    raw = zlib.decompress(b"".join(data[o + 8 : o + 8 + n] for o, _, n in idats))
    height = struct.unpack(">I", data[20:24])[0]
    stride = max(len(raw) // max(height, 1), 1)
    action = rng.choice(("filter", "pixels", "shorter", "longer"))
    if action == "filter":
        row = rng.randrange(height)
        value = rng.choice((5, 6, 127, 255, rng.randrange(5)))
        raw = raw[: row * stride] + bytes([value]) + raw[row * stride + 1 :]
        desc = {"op": "field", "field": "IDAT row filter", "row": row, "value": value}
    elif action == "pixels":
        raw, more = overwrite(rng, raw, ())
        desc = {"op": "field", "field": "IDAT pixels", **{k: v for k, v in more.items() if k != "op"}}
    elif action == "shorter":
        cut = rng.randrange(len(raw))
        raw = raw[:cut]
        desc = {"op": "field", "field": "IDAT inflated length", "value": cut}
    else:
        raw += rng.randbytes(rng.choice((1, stride, 4096)))
        desc = {"op": "field", "field": "IDAT inflated length", "value": len(raw)}
    body = zlib.compress(raw)
    chunk = struct.pack(">I", len(body)) + b"IDAT" + body + struct.pack(">I", zlib.crc32(b"IDAT" + body))
    first, last = idats[0][0], idats[-1][0] + 12 + idats[-1][2]
    return data[:first] + chunk + data[last:], desc


def mutate_png(rng: random.Random, data: bytes) -> tuple[bytes, dict]:
    op = _choose_op(rng)
    if op == "field":
        return png_idat_rewrite(rng, data) if rng.random() < 0.35 else png_field_rewrite(rng, data)
    out, desc = BYTE_OPS[op](rng, data, ((0, 33),))
    if rng.random() < 0.5:
        out, desc = _fix_all_png_crcs(out), {**desc, "crc fixed": True}
    return out, desc


# ---------------------------------------------------------------------------------------------------------------
# datasets.yaml
# ---------------------------------------------------------------------------------------------------------------


def _laughs(depth: int) -> str:
    """A YAML flow list whose anchors expand to 9**depth strings (small text, huge when printed)."""
    items = ["&l0 [x, x, x, x, x, x, x, x, x]"]
    items += [f"&l{k} [{', '.join([f'*l{k - 1}'] * 9)}]" for k in range(1, depth)]
    return "[" + ", ".join(items) + "]"


YAML_VALUES = [
    "null",
    "~",
    "[]",
    "{}",
    "-1",
    "0",
    "1",
    "3",
    ".nan",
    ".inf",
    "-.inf",
    "1.0e+400",
    "true",
    "'x'",
    "''",
    "[1, 2]",
    "[0, 0, 0]",
    "[.inf, 1, 1]",
    "[.nan, 1, 1]",
    "[1.0e+400, 1, 1]",
    "[1.5, 1, 1]",
    "[-1, 64, 64]",
    "[a, b]",
    "[a, a]",
    "[x]",
    "[[1, 2, 3]]",
    "{a: 1}",
    "{a: 0}",
    "{background: 0, x: 0}",
    "{background: 1}",
    "{background: -1}",
    "{background: 0, a: 1.5}",
    "{type: ct, a_min: .nan, a_max: 1}",
    "{type: ct, a_min: 1, a_max: .nan}",
    "{type: ct, a_min: 5, a_max: 1}",
    "{type: ct}",
    "{type: zscore}",
    "{type: [ct]}",
    "{type: none}",
    "{whole: [1, 99]}",
    "{whole: 1}",
    "{FLAIR: [1]}",
    "2001-12-14",
    "0x1F",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!python/object/apply:os.getcwd []",
    "*undefined",
    "&a [*a]",
    "&a {x: *a}",
    "decathlon",
    "biplanar",
    "brats",
    "'.nii'",
    "dicom",
    "'" + "x" * 10000 + "'",
    "[" * 3000 + "]" * 3000,
    _laughs(9),
]
YAML_KEYS = [
    "channel_names",
    "labels",
    "file_ending",
    "layout",
    "task",
    "target_spacing",
    "normalization",
    "roi_size",
    "regions",
    "case_pattern",
    "channel_suffixes",
    "license",
    "licence",
    "description",
    "citation",
    "bogus_key",
]
YAML_DOCUMENTS = ["", "---", "[]", "- a", "a", "{", "!!binary AAAA", "&a [*a]", "x: &a [*a]", "x: 1", "\ufeffx: {}"]
_YAML_LINE = re.compile(r"^(\s*)([^\s#:][^:]*):(.*)$")


def yaml_field_rewrite(rng: random.Random, data: bytes) -> tuple[bytes, dict]:
    """Rewrite the YAML: a key's value, a dropped, duplicated, re-indented or renamed line, an inserted key,
    or (rarely) the whole document."""
    text = data.decode("utf-8")
    lines = text.split("\n")
    keyed = [i for i, line in enumerate(lines) if _YAML_LINE.match(line)]
    action = rng.choices(
        ("value", "drop", "duplicate", "indent", "rename", "insert", "document"), (12, 2, 1, 1, 2, 3, 1)
    )[0]
    desc: dict[str, Any] = {"op": "field", "action": action}
    if action == "document":
        doc = rng.choice(YAML_DOCUMENTS)
        return doc.encode("utf-8"), {**desc, "document": doc}
    i = rng.choice(keyed)
    indent, key, value = _YAML_LINE.match(lines[i]).groups()
    desc["line"] = lines[i].strip()[:80]
    if action == "value":
        new = rng.choice(YAML_VALUES)
        lines[i] = f"{indent}{key}: {new}"
        desc["value"] = new if len(new) < 80 else new[:60] + f"... ({len(new)} characters)"
    elif action == "drop":
        del lines[i]
    elif action == "duplicate":
        lines.insert(i + 1, lines[i])
    elif action == "indent":
        lines[i] = (indent[2:] if indent and rng.random() < 0.5 else indent + "  ") + lines[i].lstrip()
    elif action == "rename":
        new_key = rng.choice(YAML_KEYS)
        lines[i] = f"{indent}{new_key}:{value}"
        desc["key"] = new_key
    else:
        new_line = f"{indent}{rng.choice(YAML_KEYS)}: {rng.choice(YAML_VALUES[:40])}"
        lines.insert(i + rng.randrange(2), new_line)
        desc["inserted"] = new_line.strip()
    return "\n".join(lines).encode("utf-8"), desc


def mutate_yaml(rng: random.Random, data: bytes) -> tuple[bytes, dict]:
    op = _choose_op(rng, {"bitflip": 2, "overwrite": 2, "truncate": 3, "insert": 2, "delete": 2, "field": 14})
    if op == "field":
        return yaml_field_rewrite(rng, data)
    return BYTE_OPS[op](rng, data, ((0, len(data)),))


# ---------------------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------------------

CKPT_VALUES: dict[str, list[Any]] = {
    "model_name": ["", "nope", "swin_unetr_small", "swin_x2s_tiny", "cswin_unet_tiny", 5, None, ["swin_unetr_tiny"]],
    "in_channels": [0, -1, 2, 3, 100000, 2**40, "1", 1.5, None, True, [1]],
    "out_channels": [0, -1, 1, 3, 100000, 2**40, "2", 2.5, None, [2]],
    "model_kwargs": [
        None,
        [],
        "x",
        {"feature_size": 0},
        {"feature_size": -12},
        {"feature_size": 13},
        {"feature_size": 24},
        {"bogus": 1},
        {1: 2},
        {"depths": []},
        {"depths": [0, 0, 0, 0]},
        {"depths": [1, 1, 1, 1]},
        {"num_heads": [0, 0, 0, 0]},
        {"num_heads": [5, 5, 5, 5]},
        {"window_size": 0},
        {"window_size": -7},
        {"window_size": 3},
        {"patch_size": 0},
        {"patch_size": 3},
        {"mlp_ratio": -1.0},
        {"mlp_ratio": math.nan},
        {"drop_rate": 2.0},
        {"attn": "bogus"},
        {"use_v2": True},
        {"use_checkpoint": [True]},
        {"normalize": "yes"},
    ],
    "spec": [None, {}, [], "x", {"name": "x"}, {"name": "x", "entry": None}, {"name": None, "entry": {}}],
    "roi_size": [None, [], [0, 0, 0], "x"],
    "medswin_version": [None, "99.0", 1],
}
CKPT_ENTRY_VALUES: list[Any] = [
    None,
    [],
    {},
    -1,
    0,
    math.nan,
    math.inf,
    "x",
    [1, 2],
    [0, 0, 0],
    [math.inf, 1, 1],
    [math.nan, 1, 1],
    [1.5, 1, 1],
    ["a", "a"],
    ["x"],
    {"a": 1},
    {"background": 0, "x": 0},
    {"background": 1},
    {"type": "ct", "a_min": math.nan, "a_max": 1},
    {"type": "ct", "a_min": 5, "a_max": 1},
    {"type": "zscore"},
    {"whole": [1, 99]},
    {"whole": 1},
    "decathlon",
    "biplanar",
    "brats",
    ".nii",
    True,
]


def _state_dict_mutation(rng: random.Random, state: dict[str, Any]) -> tuple[Any, str]:
    import torch

    kind = rng.choice(("empty", "list", "none", "drop", "extra", "shape", "dtype", "nan", "int", "str", "int key"))
    state = dict(state)
    key = rng.choice(sorted(state))
    if kind == "empty":
        return {}, kind
    if kind == "list":
        return list(state.values()), kind
    if kind == "none":
        return None, kind
    if kind == "drop":
        del state[key]
    elif kind == "extra":
        state["fuzz.weight"] = torch.zeros(3)
    elif kind == "shape":
        state[key] = torch.zeros([n + 1 for n in state[key].shape] or [2])
    elif kind == "dtype":
        dtype = rng.choice((torch.int64, torch.bool, torch.float16, torch.complex64, torch.uint8))
        state[key] = state[key].to(dtype)
        kind = f"dtype {dtype}"
    elif kind == "nan":
        state[key] = torch.full_like(state[key], math.nan) if state[key].is_floating_point() else state[key]
    elif kind == "int":
        state[key] = 5
    elif kind == "str":
        state[key] = "x"
    else:
        state[5] = torch.zeros(3)
    return state, f"{kind} ({key})"


def ckpt_field_rewrite(rng: random.Random, ckpt: dict[str, Any], path: Path) -> dict:
    """Save ``ckpt`` to ``path`` with one field rewritten: a top-level field, a spec entry key, the state dict, or
    a required field removed."""
    import torch

    ckpt = dict(ckpt)
    target = rng.choices(("field", "entry", "model", "remove"), weights=(6, 4, 3, 1))[0]
    desc: dict[str, Any] = {"op": "field", "target": target}
    if target == "field":
        name = rng.choice(list(CKPT_VALUES))
        ckpt[name] = rng.choice(CKPT_VALUES[name])
        desc.update(field=name, value=repr(ckpt[name]))
    elif target == "entry":
        spec = {"name": ckpt["spec"]["name"], "entry": dict(ckpt["spec"]["entry"])}
        key = rng.choice(YAML_KEYS)
        spec["entry"][key] = rng.choice(CKPT_ENTRY_VALUES)
        ckpt["spec"] = spec
        desc.update(field=f"spec.entry.{key}", value=repr(spec["entry"][key]))
    elif target == "model":
        ckpt["model"], what = _state_dict_mutation(rng, ckpt["model"])
        desc["model"] = what
    else:
        name = rng.choice(("model", "model_name", "spec", "in_channels", "out_channels", "model_kwargs"))
        del ckpt[name]
        desc["field"] = name
    torch.save(ckpt, path)
    return desc


def _ckpt_regions(data: bytes) -> Regions:
    """The pickle (``data.pkl``: 6 times, the richest part), the central directory (3 times) and the local
    headers of the first and last two members of a ``torch.save`` zip file."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = archive.infolist()
    regions = []
    for info in infos:
        if info.filename.endswith("data.pkl"):
            regions += [(info.header_offset, info.header_offset + 30 + len(info.filename) + 64 + info.file_size)] * 6
    for info in infos[:2] + infos[-2:]:
        regions.append((info.header_offset, info.header_offset + 30 + len(info.filename) + 64))
    central = data.find(b"PK\x01\x02", infos[-1].header_offset if infos else 0)
    regions += [(central if central >= 0 else max(len(data) - 4096, 0), len(data))] * 3
    return regions


# ---------------------------------------------------------------------------------------------------------------
# one mutation: build the input, load it, classify the outcome
# ---------------------------------------------------------------------------------------------------------------

_CACHE: dict[tuple[str, str], Any] = {}


def _base_bytes(path: Path) -> bytes:
    key = ("bytes", str(path))
    if key not in _CACHE:
        _CACHE[key] = path.read_bytes()
    return _CACHE[key]


def _base_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    key = ("ckpt", str(path))
    if key not in _CACHE:
        _CACHE[key] = torch.load(path, map_location="cpu", weights_only=True)
    return _CACHE[key]


def mutation_rng(fmt: str, seed: int, index: int) -> random.Random:
    """The random stream of mutation ``index`` of ``fmt`` under ``seed`` (string seeds are hashed with SHA-512:
    the same on every run and platform)."""
    return random.Random(f"medswin-fuzz/{seed}/{fmt}/{index}")


def mutate(fmt: str, seed: int, index: int, base: Path, scratch: Path) -> tuple[Path, dict]:
    """Write mutation ``index`` of ``fmt`` into ``scratch`` (emptied first); returns the path to load and what
    was done."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    rng = mutation_rng(fmt, seed, index)
    source = base / rng.choice(BASE_FILES[fmt])
    desc: dict[str, Any] = {"base": source.name}
    if fmt == "dcm-series":
        target = scratch / "series"
        shutil.copytree(source, target)
        victim = rng.choice(sorted(p.name for p in target.iterdir()))
        data, more = mutate_dicom(rng, _base_bytes(source / victim))
        (target / victim).write_bytes(data)
        return target, {**desc, "slice": victim, **more}
    target = scratch / ("m." + ("pt" if fmt == "ckpt" else fmt))
    if fmt == "ckpt" and rng.random() < 0.45:
        return target, {**desc, **ckpt_field_rewrite(rng, _base_checkpoint(source), target)}
    data = _base_bytes(source)
    if fmt == "ckpt":
        op = _choose_op(rng, {k: v for k, v in OP_WEIGHTS.items() if k != "field"})
        data, more = BYTE_OPS[op](rng, data, _ckpt_regions(data))
    elif fmt == "nii":
        data, more = mutate_nii(rng, data)
    elif fmt == "nii.gz":
        data, more = mutate_nii_gz(rng, data)
    elif fmt in ("nrrd", "mha"):
        data, more = mutate_text_volume(rng, data, fmt)
    elif fmt == "dcm":
        data, more = mutate_dicom(rng, data)
    elif fmt == "png":
        data, more = mutate_png(rng, data)
    elif fmt == "yaml":
        target = scratch / "datasets.yaml"
        data, more = mutate_yaml(rng, data)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    target.write_bytes(data)
    return target, {**desc, **more}


def _volume_problem(volume: Any) -> str | None:
    """What makes a loaded volume other than a valid ``Volume`` (``None``: nothing)."""
    import numpy as np

    from medswin.data.io import Volume

    if not isinstance(volume, Volume):
        return f"load_volume returned {type(volume).__name__}"
    array, affine = volume.array, np.asarray(volume.affine)
    if not isinstance(array, np.ndarray) or array.ndim != 4:
        return f"array of shape {getattr(array, 'shape', None)}, expected (C, X, Y, Z)"
    if array.dtype.kind not in "biuf":
        return f"array of dtype {array.dtype}"
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        return f"affine {affine.tolist()} is not a finite 4x4 matrix"
    spacing = volume.spacing
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        return f"spacing {spacing} is not positive"
    return None


def load_and_check(fmt: str, path: Path) -> tuple[str, str | None]:
    """Load ``path`` as ``fmt`` and check the result's kind: ``("ok", note)`` or ``("BadResult: ...", None)``;
    exceptions propagate (the caller classifies them).  ``note`` flags a valid-looking but odd result."""
    if fmt in VOLUME_FORMATS:
        from medswin.data.io import check_image, load_volume

        volume = load_volume(path)
        problem = _volume_problem(volume)
        if problem:
            return f"BadResult: {problem}", None
        check_image(volume, allow_all_zero=True)
        return "ok", None
    if fmt == "png":
        import numpy as np

        from medswin.data.drr import load_view

        view = load_view(path)
        if not isinstance(view, np.ndarray) or view.ndim != 2 or view.dtype != np.float32 or view.size == 0:
            return (
                f"BadResult: view {type(view).__name__} {getattr(view, 'shape', '')} {getattr(view, 'dtype', '')}",
                None,
            )
        if not (np.all(np.isfinite(view)) and view.min() >= 0 and view.max() <= 1):
            return f"BadResult: view values outside [0, 1] ({view.min()}..{view.max()})", None
        return "ok", None
    if fmt == "yaml":
        from medswin.data.spec import DatasetSpec, load_dataset_specs

        specs = load_dataset_specs([path])
        if not isinstance(specs, dict) or not all(isinstance(s, DatasetSpec) for s in specs.values()):
            return f"BadResult: {type(specs).__name__} of {sorted({type(s).__name__ for s in specs.values()})}", None
        return "ok", _spec_note([s for name, s in specs.items() if s.origin == str(path)])
    if fmt == "ckpt":
        from torch import nn

        from medswin.checkpoint import load_checkpoint, model_from_checkpoint
        from medswin.data.spec import DatasetSpec

        ckpt = load_checkpoint(path)
        model, spec = model_from_checkpoint(ckpt, path)
        if not isinstance(model, nn.Module) or not isinstance(spec, DatasetSpec):
            return f"BadResult: {type(model).__name__}, {type(spec).__name__}", None
        note = _spec_note([spec])
        if (ckpt.get("in_channels"), ckpt.get("out_channels")) != (spec.num_channels, spec.out_channels):
            note = f"model {ckpt.get('in_channels')} -> {ckpt.get('out_channels')} channels, spec {spec.num_channels} -> {spec.out_channels}"
        return "ok", note
    return _selftest(fmt)


def _spec_note(specs: list[Any]) -> str | None:
    """Accepted specs whose numbers are not finite (nothing in the contract forbids them: worth a look)."""
    for spec in specs:
        numbers = list(spec.target_spacing or ()) + [v for v in spec.normalization.values() if isinstance(v, float)]
        if any(not math.isfinite(v) for v in numbers):
            return f"spec {spec.name!r} accepted with non-finite numbers: {spec.target_spacing}, {spec.normalization}"
    return None


def _selftest(fmt: str) -> tuple[str, str | None]:
    if fmt == "selftest-hang":
        time.sleep(3600)
    if fmt == "selftest-crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    if fmt == "selftest-raise":
        raise KeyError("selftest")
    return "ok", None


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame, and of the innermost medswin frame when that is another one."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    inner = frames[-1]
    text = f"{Path(inner.filename).name}:{inner.lineno} ({inner.name})"
    ours = [f for f in frames if "/medswin/" in f.filename]
    if ours and ours[-1] is not inner:
        text = f"{Path(ours[-1].filename).name}:{ours[-1].lineno} ({ours[-1].name}) -> {text}"
    return text


BIG_PEAK_MB = 2048
"""A mutation that raises the process's peak memory above this (MB) is flagged with ``peak_rss_mb``: a small
file that makes a reader allocate gigabytes is worth a look even when it ends in a DataError."""


def _peak_rss_mb() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def run_one(
    fmt: str, index: int, seed: int, base: Path, scratch: Path, announce: Callable[[dict], None] | None = None
) -> dict[str, Any]:
    """Build and load mutation ``index`` of ``fmt``: a result dict (format, index, seed, mutation, outcome,
    seconds, and where/note when there is one).  ``announce`` gets the mutation before it is loaded (the
    worker reports it, for a load that never returns)."""
    from medswin.data.errors import DataError

    result: dict[str, Any] = {"format": fmt, "index": index, "seed": seed}
    if fmt in SELFTEST_FORMATS:
        path, result["mutation"] = scratch, {}
    else:
        path, result["mutation"] = mutate(fmt, seed, index, base, scratch)
    if announce is not None:
        announce(result["mutation"])
    peak_before = _peak_rss_mb()
    start = time.perf_counter()
    try:
        outcome, note = load_and_check(fmt, path)
        if note:
            result["note"] = note
    except DataError as exc:
        outcome = "DataError: " + " ".join(exc.problem.split())
    except Exception as exc:  # noqa: BLE001  (MemoryError, RecursionError, ...: each one is a finding)
        outcome = f"{type(exc).__name__}: " + " ".join(str(exc).split())[:300]
        result["where"] = _where(exc)
    result["seconds"] = round(time.perf_counter() - start, 4)
    result["outcome"] = outcome
    peak = _peak_rss_mb()
    if peak > max(peak_before, BIG_PEAK_MB):  # this input made the process bigger than ever, and big
        result["peak_rss_mb"] = peak
    return result


def acceptable(result: dict[str, Any]) -> bool:
    """The contract: the outcome is ``ok`` or a ``DataError``."""
    return result["outcome"] == "ok" or result["outcome"].startswith("DataError: ")


# ---------------------------------------------------------------------------------------------------------------
# the worker (a subprocess) and its supervisor
# ---------------------------------------------------------------------------------------------------------------


def _limit_memory() -> None:
    import resource

    gib = float(os.environ.get("MEDSWIN_FUZZ_MEMORY_GB") or WORKER_MEMORY_GB)
    limit = int(gib * 2**30)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


PRELOAD = {
    "volume": ("nibabel", "pydicom", "SimpleITK", "medswin.data.io"),
    "png": ("SimpleITK", "medswin.data.drr"),
    "yaml": ("yaml", "medswin.data.spec"),
    "ckpt": ("torch", "medswin.checkpoint", "medswin.models"),
}
"""The modules each kind of input needs, imported before the first mutation so that no mutation's time
includes an import (and a worker that reads only ``datasets.yaml`` starts in a fraction of a second)."""


def _preload(formats: set[str]) -> None:
    import importlib
    import warnings

    warnings.simplefilter("ignore")
    for fmt in formats:
        for module in PRELOAD.get("volume" if fmt in VOLUME_FORMATS else fmt, ()):
            importlib.import_module(module)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if "SimpleITK" in sys.modules:
        sitk = sys.modules["SimpleITK"]
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        sitk.ProcessObject.SetGlobalWarningDisplay(False)


def worker_main(base: Path, seed: int, jobs_file: Path, start: int, scratch: Path) -> None:
    """Run ``jobs[start:]``, printing ``@@fuzz start K`` before and ``@@fuzz result {json}`` after each one."""
    import logging

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the libraries' prints go to stderr, never into the protocol
    sys.stdout = sys.stderr
    logging.disable(logging.CRITICAL)
    jobs = [tuple(job) for job in json.loads(jobs_file.read_text())]
    _limit_memory()
    _preload({fmt for fmt, _ in jobs[start:]})
    protocol.write(PROTOCOL + "ready\n")
    for k in range(start, len(jobs)):
        fmt, index = jobs[k]
        protocol.write(f"{PROTOCOL}start {k}\n")

        def announce(mutation: dict, k: int = k) -> None:
            protocol.write(f"{PROTOCOL}mutation {k} {json.dumps(mutation, default=repr)}\n")

        result = run_one(fmt, int(index), seed, base, scratch, announce)
        protocol.write(f"{PROTOCOL}result {k} {json.dumps(result, default=repr)}\n")
    protocol.write(PROTOCOL + "done\n")


def _signal_name(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def _tail(path: Path, limit: int = 600) -> str:
    """The end of a worker's stderr; after a crash, Python's fault handler report (the error and the innermost
    frames, one line)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    fatal = text.rfind("Fatal Python error")
    if fatal >= 0:
        lines = text[fatal:].splitlines()
        frames = [re.sub(r'^\s*File "(?:.*/)?([^"/]+)", line (\d+) in (.*)$', r"\1:\2 \3", ln) for ln in lines[1:]]
        frames = [f for f in frames if re.match(r"\S+:\d+ ", f)][:6]
        return f"{lines[0]}; " + " <- ".join(frames)
    return " ".join(text[-limit:].split())


class _Worker:
    """One worker subprocess and its line protocol."""

    def __init__(self, base: Path, seed: int, jobs_file: Path, start: int, workdir: Path) -> None:
        self.stderr_path = workdir / f"worker-{start}.stderr"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
        with open(self.stderr_path, "wb") as stderr:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--base", str(base), "--seed", str(seed)]
            cmd += ["--jobs", str(jobs_file), "--start", str(start), "--scratch", str(workdir / f"scratch-{start}")]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, env=env, start_new_session=True)
        self.buffer = b""

    def lines(self, timeout: float) -> list[str] | None:
        """The protocol lines that arrive within ``timeout`` s ([] when none; ``None`` at end of output)."""
        ready, _, _ = select.select([self.proc.stdout], [], [], max(timeout, 0.0))
        if not ready:
            return []
        chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not chunk:
            return None
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        return [line.decode("utf-8", "replace")[len(PROTOCOL) :] for line in complete if line.startswith(b"@@fuzz ")]

    def kill(self) -> int:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.stdout.close()
        return self.proc.wait()


def _supervise(
    jobs: list, base: Path, seed: int, jobs_file: Path, start: int, workdir: Path, timeout: float, results: dict
) -> int:
    """Run a worker from ``jobs[start]`` until it finishes, hangs or dies; returns where the next one starts."""
    worker = _Worker(base, seed, jobs_file, start, workdir)
    current, deadline = None, time.monotonic() + STARTUP_TIMEOUT_S
    started, mutation = 0.0, None

    def failure(outcome: str, **extra: str) -> dict:
        """The record of the mutation the worker was on when it died or hung."""
        fmt, index = jobs[current]
        seconds = round(time.monotonic() - started, 3)
        return {
            "format": fmt,
            "index": index,
            "seed": seed,
            "mutation": mutation,
            "outcome": outcome,
            "seconds": seconds,
            **extra,
        }

    try:
        while True:
            lines = worker.lines(deadline - time.monotonic())
            if lines is None:  # the worker died
                returncode = worker.proc.wait()
                if current is None:
                    raise RuntimeError(
                        f"fuzz worker exited ({_signal_name(returncode)}) outside a mutation: {_tail(worker.stderr_path)}"
                    )
                results[current] = failure(f"crash: {_signal_name(returncode)}", stderr=_tail(worker.stderr_path))
                return current + 1
            for line in lines:
                word, _, rest = line.partition(" ")
                if word == "start":
                    current, started, mutation = int(rest), time.monotonic(), None
                    deadline = started + timeout
                elif word == "mutation":
                    mutation = json.loads(rest.partition(" ")[2])
                elif word == "result":
                    k, _, payload = rest.partition(" ")
                    results[int(k)] = json.loads(payload)
                    current, deadline = None, time.monotonic() + STARTUP_TIMEOUT_S
                elif word == "done":
                    return len(jobs)
            if not lines and time.monotonic() >= deadline:
                if current is None:
                    raise RuntimeError(f"fuzz worker stalled outside a mutation: {_tail(worker.stderr_path)}")
                results[current] = failure(f"hang: no result within {timeout:g} s")
                return current + 1
    finally:
        worker.kill()


def run_fuzz(
    n: int | None = None,
    seed: int | None = None,
    jobs: Sequence[tuple[str, int]] | None = None,
    workdir: str | os.PathLike | None = None,
    timeout: float = TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Run the mutations (``jobs``, else :func:`plan` of ``n``) in worker subprocesses; one result per job.

    Args:
        n: total mutations (default: ``MEDSWIN_FUZZ_N``, else :data:`DEFAULT_N`).
        seed: the seed (default: ``MEDSWIN_FUZZ_SEED``, else :data:`DEFAULT_SEED`).
        jobs: explicit ``(format, index)`` pairs instead of the plan.
        workdir: where the valid files, the scratch space and the workers' stderr go (default: a temp folder).
        timeout: seconds one mutation may take.
    """
    default_n, default_seed = settings()
    n = default_n if n is None else n
    seed = default_seed if seed is None else seed
    jobs = [(str(f), int(i)) for f, i in (plan(n) if jobs is None else jobs)]
    with tempfile.TemporaryDirectory(prefix="medswin-fuzz-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        base = root / "base"
        if any(fmt not in SELFTEST_FORMATS for fmt, _ in jobs):
            make_valid_files(base, seed)
        jobs_file = root / "jobs.json"
        jobs_file.write_text(json.dumps(jobs))
        results: dict[int, dict] = {}
        start = 0
        while start < len(jobs):
            start = _supervise(jobs, base, seed, jobs_file, start, root, timeout, results)
    return [results[k] for k in range(len(jobs))]


# ---------------------------------------------------------------------------------------------------------------
# the summary
# ---------------------------------------------------------------------------------------------------------------


def problem_words(problem: str) -> str:
    """The first words of a ``DataError`` problem, for grouping: ``"cannot read"``, ``"header declares"``,
    ``"key labels"`` (dataset spec errors name their key); at most 4 words, up to the first number, quote or
    parenthesis."""
    spec = re.match(r"entry .*?: key '([^']*)'", problem)
    if spec:
        return f"key {spec.group(1)}"
    words: list[str] = []
    for token in problem.split():
        word = token.rstrip(":,;")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9'/.-]*", word):
            break
        words.append(word)
        if len(words) == 4 or word != token:
            break
    while len(words) > 1 and words[-1] in ("the", "a", "an", "of", "and", "or", "to", "in", "is", "its"):
        words.pop()
    return " ".join(words) or (problem.split() or ["?"])[0]


def outcome_kind(outcome: str) -> str:
    """``ok``, ``DataError``, ``hang``, ``crash`` or the exception type."""
    return outcome.split(":", 1)[0]


def fuzz_summary_rows(results: Sequence[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per format: ``format``, ``input``, ``mutations``, ``ok``, ``DataError``, ``other`` (hangs, crashes,
    other exceptions; ``other_kinds`` counts them by kind) and ``problems`` (the DataError problems' first words
    with their counts, most common first).  ``results`` default to a fresh :func:`run_fuzz`."""
    results = run_fuzz() if results is None else results
    rows = []
    for fmt in FORMATS:
        mine = [r for r in results if r["format"] == fmt]
        if not mine:
            continue
        kinds = Counter(outcome_kind(r["outcome"]) for r in mine)
        problems = Counter(
            problem_words(r["outcome"][len("DataError: ") :]) for r in mine if r["outcome"].startswith("DataError: ")
        )
        other = {k: v for k, v in kinds.items() if k not in ("ok", "DataError")}
        rows.append(
            {
                "format": fmt,
                "input": FORMAT_LABELS[fmt],
                "mutations": len(mine),
                "ok": kinds["ok"],
                "DataError": kinds["DataError"],
                "other": sum(other.values()),
                "other_kinds": other,
                "problems": dict(problems.most_common()),
            }
        )
    return rows


def markdown_table(rows: Sequence[dict[str, Any]], top: int = 4) -> str:
    """The rows of :func:`fuzz_summary_rows` as a Markdown table (and a total row)."""
    out = [
        "| input | mutations | ok | DataError | other | most frequent DataError problems |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        problems = ", ".join(f"{words} ({count})" for words, count in list(row["problems"].items())[:top])
        other = str(row["other"])
        if row["other"]:
            other += " (" + ", ".join(f"{k} {v}" for k, v in row["other_kinds"].items()) + ")"
        out.append(f"| {row['input']} | {row['mutations']} | {row['ok']} | {row['DataError']} | {other} | {problems} |")
    total = {k: sum(r[k] for r in rows) for k in ("mutations", "ok", "DataError", "other")}
    out.append(f"| **total** | {total['mutations']} | {total['ok']} | {total['DataError']} | {total['other']} | |")
    return "\n".join(out)


SLOW_S = 2.0
"""A mutation whose load takes longer than this (s) is listed by :func:`notable` (a hang is 5x that)."""


def notable(results: Sequence[dict[str, Any]]) -> list[str]:
    """Results within the contract that are worth a look: slow loads, big memory peaks, odd accepted values."""
    lines = []
    for r in results:
        flags = []
        if acceptable(r) and r.get("seconds", 0) > SLOW_S:
            flags.append(f"took {r['seconds']:.1f} s")
        if r.get("peak_rss_mb"):
            flags.append(f"peak memory {r['peak_rss_mb']} MB")
        if r.get("note"):
            flags.append(r["note"])
        if flags:
            lines.append(
                f"{r['format']} seed={r['seed']} index={r['index']}: {'; '.join(flags)} ({r['outcome'][:100]})"
            )
    return lines


def describe(result: dict[str, Any]) -> str:
    """One line per result that breaks the contract: the reproducer, the mutation, the outcome and where."""
    text = f"{result['format']} seed={result['seed']} index={result['index']}: {result['outcome'][:240]}"
    if result.get("where"):
        text += f" [at {result['where']}]"
    if result.get("mutation"):
        text += f" <- {json.dumps(result['mutation'], default=repr)[:300]}"
    if result.get("peak_rss_mb"):
        text += f" (peak memory {result['peak_rss_mb']} MB)"
    if result.get("stderr"):
        text += f" (stderr: ...{result['stderr'][-300:]})"
    return text


# ---------------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------------


def _repro(fmt: str, index: int, seed: int, keep: str | None) -> None:
    """Rebuild one mutation and load it in this process, so that its exception shows with the full traceback."""
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="medswin-fuzz-repro-"))
    base = make_valid_files(root / "base", seed)
    path, desc = mutate(fmt, seed, index, base, root / "scratch")
    print(f"{fmt} seed={seed} index={index}: {json.dumps(desc, default=repr)}\ninput: {path}", flush=True)
    print(load_and_check(fmt, path))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--table", action="store_true", help="run the fuzz, print the Markdown table")
    parser.add_argument("--json", help="with --table: also write every result to this JSON-lines file")
    parser.add_argument("--n", type=int, help="total mutations (default MEDSWIN_FUZZ_N, else 300)")
    parser.add_argument("--seed", type=int, help="seed (default MEDSWIN_FUZZ_SEED, else the fixed one)")
    parser.add_argument("--repro", nargs=2, metavar=("FORMAT", "INDEX"), help="rebuild one mutation and load it here")
    parser.add_argument("--keep", help="with --repro: the folder for the valid and the mutated files")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    default_n, default_seed = settings()
    seed = default_seed if args.seed is None else args.seed
    if args.worker:
        worker_main(Path(args.base), seed, Path(args.jobs), args.start, Path(args.scratch))
    elif args.repro:
        _repro(args.repro[0], int(args.repro[1]), seed, args.keep)
    elif args.table:
        n = default_n if args.n is None else args.n
        start = time.monotonic()
        results = run_fuzz(n, seed)
        seconds = time.monotonic() - start
        if args.json:
            Path(args.json).write_text("".join(json.dumps(r, default=repr) + "\n" for r in results))
        print(markdown_table(fuzz_summary_rows(results)))
        print(f"\n{len(results)} mutations, seed {seed}, {seconds:.1f} s")
        for r in results:
            if not acceptable(r):
                print("- " + describe(r))
        for line in notable(results):
            print("* " + line)
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
