"""MONAI transform pipelines built from a :class:`DatasetSpec` (train / validation / inference).

Everything is a MONAI transform.  Files are read by :class:`~medswin.data.loading.LoadVolumed` /
:class:`~medswin.data.loading.LoadViewd` (the data layer's checked reader, no fallback) instead of
``LoadImaged``.  The additions are :class:`LabelToRegions` (and its dictionary form), which turns a
label map into overlapping region channels from the spec's ``regions`` (BraTS 2021: ET = 4, BraTS
2023: ET = 3; MONAI's own converter only knows the 2021 values), and the joint biplanar augmentation.

:data:`NORMALIZATIONS` maps each ``normalization`` type of a dataset entry to the MONAI transform
(name and arguments) that implements it: the pipelines here and the bundle configs written by
``bundles/generate.py`` both build from it.

The inference pipeline is invertible: :func:`invert_transforms` returns the ``Invertd`` that brings
predictions back onto the input's grid (orientation, spacing, shape, affine).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    Invertd,
    MapTransform,
    NormalizeIntensityd,
    Randomizable,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
    Transform,
)

from .correction import InputCorrection, IntensityCorrectiond
from .loading import LoadViewd, LoadVolumed
from .spec import DatasetSpec


class LabelToRegions(Transform):
    """Label map ``(1, X, Y, Z)`` (or ``(X, Y, Z)``) -> region masks ``(R, X, Y, Z)``, one per region.

    ``regions`` maps a name to the label values it contains, e.g. BraTS 2021
    ``{"TC": [1, 4], "WT": [1, 2, 4], "ET": [4]}``.  Output dtype is float32 (0/1).
    """

    def __init__(self, regions: Mapping[str, Sequence[int]]) -> None:
        if not regions:
            raise ValueError("LabelToRegions needs at least one region")
        self.regions = {k: tuple(int(v) for v in vals) for k, vals in regions.items()}

    def __call__(self, label: Any) -> Any:
        """Convert one label array or tensor (keeps MetaTensor meta data)."""
        lab = label[0] if label.ndim == 4 else label
        if isinstance(lab, torch.Tensor):
            masks = [torch.isin(lab, torch.tensor(v, device=lab.device)) for v in self.regions.values()]
            out = torch.stack(masks).float()
            if hasattr(label, "copy_meta_from"):
                out = label.new_empty(out.shape, dtype=torch.float32).copy_(out)  # keep MetaTensor meta
            return out
        return np.stack([np.isin(lab, v) for v in self.regions.values()]).astype(np.float32)


class LabelToRegionsd(MapTransform):
    """Dictionary version of :class:`LabelToRegions`."""

    def __init__(
        self, keys: KeysCollection, regions: Mapping[str, Sequence[int]], allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = LabelToRegions(regions)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Convert every key present."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


VIEW_KEYS = ("image_coronal", "image_sagittal")


class RandBiplanarAugmentd(Randomizable, MapTransform):
    """Joint augmentation of a biplanar sample (views ``(C, H, W)``, label ``(1, X, Y, Z)``).

    With the layout of :mod:`medswin.data.drr` (coronal ``(x, z)``, sagittal ``(y, z)``, label
    ``(x, y, z)``): a flip along ``z`` flips both views and the label; along ``x`` the coronal view
    and the label (the sagittal projection is unchanged); along ``y`` the sagittal view and the
    label; a shift along ``z`` moves all three by the same number of voxels (zero fill).  Each is
    drawn with probability ``prob``; the shift is up to ``max_shift`` of the ``z`` extent.

    ``flip_axes`` (default ``("x",)``, left-right only): a head-foot (``z``) or front-back (``y``)
    flip turns anatomy whose labels are ordered along that axis into a contradiction -- vertebra
    L1 would sit where L4 belongs -- so those flips are opt-in.  Drop ``"x"`` too when the labels
    are lateralised (left/right femur).
    """

    AXES = ("x", "y", "z")

    def __init__(self, prob: float = 0.5, max_shift: float = 0.1, flip_axes: Sequence[str] = ("x",)) -> None:
        MapTransform.__init__(self, [*VIEW_KEYS, "label"])
        unknown = sorted(set(flip_axes) - set(self.AXES))
        if unknown:
            raise ValueError(f"flip_axes must be among {self.AXES}, got {unknown}")
        self.prob, self.max_shift, self.flip_axes = prob, max_shift, tuple(flip_axes)

    def randomize(self, depth: int) -> None:  # type: ignore[override]
        """Draw the flips (only along ``flip_axes``) and the shift."""
        self.flips = [self.R.rand() < self.prob and axis in self.flip_axes for axis in self.AXES]  # x, y, z
        limit = int(self.max_shift * depth)
        self.shift = int(self.R.randint(-limit, limit + 1)) if limit and self.R.rand() < self.prob else 0

    @staticmethod
    def _shift(t: torch.Tensor, dim: int, n: int) -> torch.Tensor:
        out = torch.roll(t, n, dims=dim)
        index = [slice(None)] * t.dim()
        index[dim] = slice(0, n) if n > 0 else slice(n, None)
        out[tuple(index)] = 0
        return out

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply the same random flips and shift to the two views and the label."""
        d = dict(data)
        cor, sag, lab = (torch.as_tensor(d[k]) for k in (*VIEW_KEYS, "label"))
        self.randomize(lab.shape[-1])
        fx, fy, fz = self.flips
        if fz:
            cor, sag, lab = cor.flip(2), sag.flip(2), lab.flip(3)
        if fx:
            cor, lab = cor.flip(1), lab.flip(1)
        if fy:
            sag, lab = sag.flip(1), lab.flip(2)
        if self.shift:
            cor, sag, lab = (
                self._shift(cor, 2, self.shift),
                self._shift(sag, 2, self.shift),
                self._shift(lab, 3, self.shift),
            )
        d[VIEW_KEYS[0]], d[VIEW_KEYS[1]], d["label"] = cor, sag, lab
        return d


def _biplanar_loading(spec: DatasetSpec) -> list:
    """The two views (checked, min-max scaled, ``(1, H, W)``) and the 3D label (checked) of a biplanar case."""
    return [
        LoadViewd(list(VIEW_KEYS)),
        LoadVolumed("label", label_key="label", label_values=spec.label_values, dataset=spec.name),
    ]


def biplanar_train_transforms(spec: DatasetSpec) -> Compose:
    """Swin-X2S training: load the two views and the 3D label, joint flips and shift, intensity jitter."""
    keys = [*VIEW_KEYS, "label"]
    return Compose(
        [
            *_biplanar_loading(spec),
            EnsureTyped(keys, track_meta=False),
            RandBiplanarAugmentd(),
            RandScaleIntensityd(list(VIEW_KEYS), factors=0.1, prob=0.5),
            RandShiftIntensityd(list(VIEW_KEYS), offsets=0.1, prob=0.5),
            EnsureTyped(keys, track_meta=False),  # the intensity transforms re-wrap as MetaTensor
        ]
    )


def biplanar_val_transforms(spec: DatasetSpec) -> Compose:
    """Swin-X2S validation: the two views and the 3D label, as stored."""
    keys = [*VIEW_KEYS, "label"]
    return Compose([*_biplanar_loading(spec), EnsureTyped(keys)])


NORMALIZATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ct": ("ScaleIntensityRanged", ("a_min", "a_max", "b_min", "b_max", "clip")),
    "zscore": ("NormalizeIntensityd", ("nonzero", "channel_wise")),
    "none": ("EnsureTyped", ()),
}
"""``normalization`` type -> (MONAI dictionary transform, the entry's keys passed as its arguments)."""

_TRANSFORMS = {
    "ScaleIntensityRanged": ScaleIntensityRanged,
    "NormalizeIntensityd": NormalizeIntensityd,
    "EnsureTyped": EnsureTyped,
}


def intensity_arguments(spec: DatasetSpec) -> tuple[str, dict[str, Any]]:
    """``(MONAI transform name, its arguments besides keys)`` for the spec's normalisation (:data:`NORMALIZATIONS`)."""
    n = spec.normalization
    name, args = NORMALIZATIONS[n["type"]]
    return name, {a: n[a] for a in args}


def intensity_transform(spec: DatasetSpec, keys: KeysCollection = "image") -> MapTransform:
    """CT window to ``[b_min, b_max]`` (clipped), per-channel z-score (over nonzero voxels), or nothing."""
    name, args = intensity_arguments(spec)
    return _TRANSFORMS[name](keys, **args)


def load_transform(
    spec: DatasetSpec, keys: Sequence[str], series_uid: str | None = None, inference: bool = False
) -> LoadVolumed:
    """The checked loading step of a volume pipeline for ``spec`` (channels, label values, DICOM series)."""
    return LoadVolumed(
        list(keys),
        label_key="label",
        channels=spec.num_channels,
        channel_names=spec.channel_names,
        label_values=spec.label_values,
        dataset=spec.name,
        series_uid=series_uid,
        allow_all_zero=inference,
    )


class CheckResampledSized(MapTransform):
    """Refuse, before ``Spacingd`` runs, a volume whose resampling to ``pixdim`` would exceed the voxel limit or the
    machine's memory (:func:`medswin.data.headers.check_resampled_size`): a clear error instead of an OOM kill.

    Args:
        keys: the image keys (channel-first ``MetaTensor`` s with their affine).
        pixdim: the target spacing in mm.
    """

    def __init__(self, keys: KeysCollection, pixdim: Sequence[float], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.pixdim = tuple(float(p) for p in pixdim)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Check every key present; the data pass through unchanged."""
        from .headers import check_resampled_size

        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            affine = np.asarray(getattr(image, "affine", np.eye(4)), dtype=np.float64)
            spacing = np.linalg.norm(affine[:3, :3], axis=0)
            source = getattr(image, "meta", {}).get("filename_or_obj", key)
            check_resampled_size(source, tuple(image.shape[1:]), spacing, self.pixdim, int(image.shape[0]))
        return d


def _base(
    spec: DatasetSpec,
    keys: list[str],
    series_uid: str | None = None,
    inference: bool = False,
    correction: InputCorrection | None = None,
) -> list:
    modes = ["bilinear" if k == "image" else "nearest" for k in keys]
    steps: list = [load_transform(spec, keys, series_uid, inference), EnsureChannelFirstd(keys)]
    if "label" in keys and spec.regions:
        steps.append(LabelToRegionsd("label", spec.regions))
    steps.append(Orientationd(keys, axcodes="RAS", labels=None))
    if spec.target_spacing is not None:
        steps.append(CheckResampledSized("image", spec.target_spacing))
        steps.append(Spacingd(keys, pixdim=spec.target_spacing, mode=modes))
    if correction is not None:
        steps.append(IntensityCorrectiond("image", correction))
    steps.append(intensity_transform(spec))
    return steps


def train_transforms(
    spec: DatasetSpec, roi_size: Sequence[int] | None = None, num_samples: int = 2, pos: float = 1.0, neg: float = 1.0
) -> Compose:
    """Training pipeline: load, RAS, resample, normalise, crop foreground, foreground-biased random
    patches of ``roi_size`` (``num_samples`` per volume), flips on every axis, rot90 in the first two axes
    when the patch is square there (a 64x32x32 patch turned by 90 degrees would be 32x64x32 and not batch
    with the others; the flips give the 180 degree turn), intensity jitter."""
    roi = tuple(roi_size or spec.roi_size or ())
    if len(roi) != 3:
        raise ValueError(f"dataset {spec.name!r} sets no roi_size: give the training patch size (roi_size / --roi)")
    keys = ["image", "label"]
    rotate = [RandRotate90d(keys, prob=0.2, max_k=3, spatial_axes=(0, 1))] if roi[0] == roi[1] else []
    return Compose(
        _base(spec, keys)
        + [
            CropForegroundd(keys, source_key="image", allow_smaller=True),
            SpatialPadd(keys, spatial_size=roi),
            RandCropByPosNegLabeld(
                keys,
                label_key="label",
                spatial_size=roi,
                pos=pos,
                neg=neg,
                num_samples=num_samples,
                # CT: background patches only where there is tissue (air is 0 after the window);
                # MRI: anywhere outside the labels (brain MRI is labelled wall to wall inside the mask)
                image_key="image" if spec.is_ct else None,
                image_threshold=0,
            ),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys, prob=0.5, spatial_axis=2),
            *rotate,
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.1, prob=0.5),
            EnsureTyped(keys, track_meta=False),
        ]
    )


def val_transforms(spec: DatasetSpec) -> Compose:
    """Validation pipeline: whole volumes, resampled and normalised (labels as region channels when defined)."""
    keys = ["image", "label"]
    return Compose(_base(spec, keys) + [EnsureTyped(keys)])


def infer_transforms(
    spec: DatasetSpec, series_uid: str | None = None, correction: InputCorrection | None = None
) -> Compose:
    """Inference pipeline for images alone (any format the data layer reads; ``series_uid`` picks one series of
    a DICOM folder holding several; ``correction``, N4 or histogram matching, runs on the raw intensities just
    before the normalisation); invert predictions with :func:`invert_transforms`."""
    return Compose(_base(spec, ["image"], series_uid, inference=True, correction=correction) + [EnsureTyped("image")])


def invert_transforms(infer: Compose, keys: KeysCollection = "pred", nearest: bool = False) -> Invertd:
    """``Invertd`` undoing ``infer`` on ``keys``: back to the input's orientation, spacing and shape.

    Use ``nearest=True`` for label maps, ``False`` for probabilities / logits.
    """
    return Invertd(keys, transform=infer, orig_keys="image", nearest_interp=nearest, to_tensor=True)
