"""Seeded synthetic phantoms for tests and smoke runs, and writers that lay them out like real datasets.

A phantom is a 3D volume with nested and disjoint ellipsoids ("organs"), smooth texture, an
optional multiplicative bias field and Gaussian noise, with its exact label map.  Intensities are
MRI-like (arbitrary units) or CT-like (Hounsfield units); :func:`make_brats_phantom` gives a
4-channel BraTS-like case with labels 1/2/4 (2021) or 1/2/3 (2023).  Everything derives from the
seed: the same arguments give the same arrays.

:func:`write_synthetic_dataset` writes cases in the Decathlon, nnU-Net, BraTS, BTCV or flat folder
layouts so the data layer is tested on the real layouts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import write_nifti


@dataclass(frozen=True)
class Phantom:
    """``image`` ``(C, X, Y, Z)`` float32, ``label`` ``(X, Y, Z)`` int64, ``spacing`` in mm per axis
    and the matching RAS ``affine`` (diagonal spacing, origin at ``origin``)."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-world matrix."""
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = self.origin
        return affine


def _grid(shape: Sequence[int]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"), -1)


def _bias_field(grid: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative field ``exp(strength * (low-order polynomial))``, like MRI coil shading."""
    coeffs = rng.normal(0, 1, size=(3, 2))
    poly = sum(coeffs[a, 0] * grid[..., a] + coeffs[a, 1] * grid[..., a] ** 2 for a in range(3))
    return np.exp(strength * poly / 3.0)


def make_phantom(
    shape: Sequence[int] = (96, 96, 96),
    num_classes: int = 3,
    channels: int = 1,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    noise: float = 0.1,
    bias_field: float = 0.0,
    modality: str = "mri",
    seed: int = 0,
) -> Phantom:
    """Build a phantom of ``shape`` with ``num_classes`` labels (0 = background).

    ``modality="mri"``: class ``k`` has intensity ``k / (num_classes - 1)`` (other channels permute
    the contrasts); ``"ct"``: air -1000 HU outside an elliptic body of soft tissue (40 HU), organ
    ``k`` at ``40 + 60 k`` HU, noise scaled to HU.  ``bias_field`` > 0 multiplies MRI intensities by
    a smooth field.  ``spacing`` may be anisotropic.
    """
    if len(shape) != 3:
        raise ValueError(f"shape must have 3 axes, got {tuple(shape)}")
    if num_classes < 2:
        raise ValueError("num_classes must be >= 2 (background plus at least one object)")
    if modality not in ("mri", "ct"):
        raise ValueError(f"modality must be 'mri' or 'ct', got {modality!r}")
    rng = np.random.default_rng(seed)
    grid = _grid(shape)
    label = np.zeros(tuple(shape), dtype=np.int64)
    # the first object is large, later ones smaller and may sit inside earlier ones (nested organs)
    for k in range(1, num_classes):
        radius = rng.uniform(0.25, 0.45, size=3) / (1 + 0.3 * (k - 1))
        centre = rng.uniform(-0.5 + radius.max() * 0.5, 0.5 - radius.max() * 0.5, size=3)
        inside = (((grid - centre) / radius) ** 2).sum(-1) <= 1.0
        label[inside] = k
    texture = np.sin(3 * grid[..., 0] + rng.uniform(0, 6)) * np.cos(2 * grid[..., 1] + rng.uniform(0, 6)) * 0.05
    images = []
    for c in range(channels):
        contrast = rng.permutation(num_classes) if c else np.arange(num_classes)
        if modality == "ct":
            body = ((grid / np.array([0.9, 0.8, 0.95])) ** 2).sum(-1) <= 1.0
            hu = np.where(body | (label > 0), 40.0, -1000.0) + np.where(label > 0, 60.0 * contrast[label], 0.0)
            img = hu + 400 * texture + rng.normal(0, 200 * noise, size=shape)
        else:
            img = contrast[label] / (num_classes - 1) + texture + rng.normal(0, noise, size=shape)
            if bias_field:
                img = img * _bias_field(grid, rng, bias_field)
        images.append(img.astype(np.float32))
    return Phantom(np.stack(images), label, tuple(float(s) for s in spacing))  # type: ignore[arg-type]


def make_brats_phantom(
    shape: Sequence[int] = (96, 96, 80),
    enhancing_label: int = 4,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
) -> Phantom:
    """BraTS-like case: FLAIR/T1/T1ce/T2 channels of a brain with a tumour.

    Labels: 2 edema (outer shell), 1 necrotic core (centre), ``enhancing_label`` (4 in BraTS 2021,
    3 in BraTS 2023) a ring between them; the brain is nonzero, the background exactly 0 (so
    nonzero z-score normalisation has something to ignore).
    """
    rng = np.random.default_rng(seed)
    grid = _grid(shape)
    brain = ((grid / np.array([0.85, 0.9, 0.8])) ** 2).sum(-1) <= 1.0
    centre = rng.uniform(-0.3, 0.3, size=3)
    r = ((grid - centre) ** 2).sum(-1) ** 0.5
    wt, tc, core = rng.uniform(0.3, 0.4), rng.uniform(0.17, 0.22), rng.uniform(0.07, 0.1)
    label = np.zeros(tuple(shape), dtype=np.int64)
    label[(r <= wt) & brain] = 2
    label[(r <= tc) & brain] = enhancing_label
    label[(r <= core) & brain] = 1
    # per-channel intensity of (brain, edema, necrosis, enhancing): FLAIR, T1, T1ce, T2
    table = np.array([[0.5, 0.9, 0.6, 0.8], [0.6, 0.4, 0.2, 0.5], [0.6, 0.45, 0.2, 1.0], [0.4, 0.9, 1.0, 0.7]])
    index = np.select([label == 2, label == 1, label == enhancing_label], [1, 2, 3], 0)
    images = []
    for c in range(4):
        img = table[index, c] * brain + rng.normal(0, 0.05, size=shape) * brain
        images.append((img * 1000).astype(np.float32))
    return Phantom(np.stack(images), label, tuple(float(s) for s in spacing))  # type: ignore[arg-type]


def make_spine_phantom(
    shape: Sequence[int] = (64, 64, 80),
    vertebrae: int = 4,
    spacing: Sequence[float] = (2.0, 2.0, 2.0),
    seed: int = 0,
) -> Phantom:
    """CT-like torso (HU) with a column of ``vertebrae`` bone-like bodies labelled 1..K from the bottom.

    Air (-1000 HU) around an elliptic body of soft tissue (40 HU) along ``z``; each vertebra is an
    ellipsoid of cortical-like bone (600-900 HU) placed posteriorly, with a random size, a small
    lateral wobble and a gap (disc, 80 HU) to its neighbours -- enough to make DRRs whose bones
    must be told apart by position, like a real spine.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    grid = _grid(shape)
    body = ((grid[..., 0] / 0.85) ** 2 + (grid[..., 1] / 0.7) ** 2) <= 1.0
    hu = np.where(body, 40.0, -1000.0)
    label = np.zeros(shape, dtype=np.int64)
    z_edges = np.linspace(-0.85, 0.85, vertebrae + 1)
    for k in range(vertebrae):
        zc = (z_edges[k] + z_edges[k + 1]) / 2
        half = (z_edges[k + 1] - z_edges[k]) / 2 * rng.uniform(0.65, 0.8)
        centre = np.array([rng.uniform(-0.06, 0.06), -0.35 + rng.uniform(-0.04, 0.04), zc])
        radius = np.array([rng.uniform(0.16, 0.22), rng.uniform(0.12, 0.17), half])
        inside = (((grid - centre) / radius) ** 2).sum(-1) <= 1.0
        label[inside] = k + 1
        hu[inside] = rng.uniform(600, 900)
        disc = (np.abs(grid[..., 2] - z_edges[k + 1]) < 0.02) & (
            (((grid[..., :2] - centre[:2]) / radius[:2]) ** 2).sum(-1) <= 1
        )
        hu[disc & (label == 0)] = 80.0
    hu = hu + rng.normal(0, 15, size=shape)
    return Phantom(hu[None].astype(np.float32), label, tuple(float(s) for s in spacing))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# dataset writers
# ---------------------------------------------------------------------------------------------

BRATS_SUFFIXES = {
    2021: {"channels": ["_flair", "_t1", "_t1ce", "_t2"], "label": "_seg", "case": "BraTS2021_{:05d}"},
    2023: {"channels": ["-t2f", "-t1n", "-t1c", "-t2w"], "label": "-seg", "case": "BraTS-GLI-{:05d}-000"},
}


def write_synthetic_dataset(
    root: str | Path,
    layout: str,
    cases: Sequence[Phantom],
    channel_names: Sequence[str] = ("MRI",),
    labels: dict[str, int] | None = None,
    brats_year: int = 2021,
    btcv_dataset_json: bool = True,
) -> Path:
    """Write ``cases`` under ``root`` in ``layout`` (decathlon | nnunet | brats | btcv | flat); returns ``root``.

    Decathlon: ``imagesTr/case_NNN.nii.gz`` (4D when multi-channel) + ``labelsTr`` + ``dataset.json``.
    nnU-Net: ``imagesTr/case_NNN_XXXX.nii.gz`` one file per channel + ``labelsTr`` + v2 ``dataset.json``.
    BraTS: one folder per case with one file per channel and ``_seg`` (2021 or 2023 naming).
    BTCV: ``RawData/Training/img/img00NN.nii.gz`` + ``label/label00NN.nii.gz`` (+ MONAI's ``dataset_0.json``).
    Flat: ``images/case_NNN.nii.gz`` + ``labels/case_NNN.nii.gz``.
    """
    root = Path(root)
    labels = labels or {
        "background": 0,
        **{f"class{k}": k for k in range(1, int(max(c.label.max() for c in cases)) + 1)},
    }
    if layout == "decathlon":
        training = []
        for i, case in enumerate(cases):
            name = f"case_{i:03d}.nii.gz"
            image = case.image[0] if case.image.shape[0] == 1 else np.moveaxis(case.image, 0, -1)
            write_nifti(image, case.affine, root / "imagesTr" / name)
            write_nifti(case.label, case.affine, root / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        meta = {
            "name": root.name,
            "tensorImageSize": "4D" if len(channel_names) > 1 else "3D",
            "modality": {str(i): n for i, n in enumerate(channel_names)},
            "labels": {str(v): k for k, v in labels.items()},
            "numTraining": len(cases),
            "numTest": 0,
            "training": training,
            "test": [],
        }
        (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    elif layout == "nnunet":
        for i, case in enumerate(cases):
            for c in range(case.image.shape[0]):
                write_nifti(case.image[c], case.affine, root / "imagesTr" / f"case_{i:03d}_{c:04d}.nii.gz")
            write_nifti(case.label, case.affine, root / "labelsTr" / f"case_{i:03d}.nii.gz")
        meta = {
            "channel_names": {str(i): n for i, n in enumerate(channel_names)},
            "labels": dict(labels),
            "numTraining": len(cases),
            "file_ending": ".nii.gz",
        }
        (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    elif layout == "brats":
        naming = BRATS_SUFFIXES[brats_year]
        for i, case in enumerate(cases):
            cid = naming["case"].format(i)
            for c, suffix in enumerate(naming["channels"]):
                write_nifti(case.image[c], case.affine, root / cid / f"{cid}{suffix}.nii.gz")
            write_nifti(case.label, case.affine, root / cid / f"{cid}{naming['label']}.nii.gz")
    elif layout == "btcv":
        base = root / "RawData" / "Training"
        entries = []
        for i, case in enumerate(cases):
            num = f"{i + 1:04d}"
            write_nifti(case.image[0], case.affine, base / "img" / f"img{num}.nii.gz")
            write_nifti(case.label, case.affine, base / "label" / f"label{num}.nii.gz")
            entries.append(
                {"image": f"RawData/Training/img/img{num}.nii.gz", "label": f"RawData/Training/label/label{num}.nii.gz"}
            )
        if btcv_dataset_json:
            split = max(1, len(entries) - 1)
            (root / "dataset_0.json").write_text(
                json.dumps({"training": entries[:split], "validation": entries[split:]}, indent=2)
            )
    elif layout == "flat":
        for i, case in enumerate(cases):
            image = case.image[0] if case.image.shape[0] == 1 else np.moveaxis(case.image, 0, -1)
            write_nifti(image, case.affine, root / "images" / f"case_{i:03d}.nii.gz")
            write_nifti(case.label, case.affine, root / "labels" / f"case_{i:03d}.nii.gz")
    else:
        raise ValueError(f"unknown layout {layout!r}; use decathlon, nnunet, brats, btcv or flat")
    return root
