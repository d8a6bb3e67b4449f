"""Input-side intensity corrections, applied to a volume before its normalisation: N4 bias-field correction
(Tustison et al. 2010, SimpleITK's ``N4BiasFieldCorrectionImageFilter``) and piecewise-linear histogram
matching to a reference's quantile landmarks (Nyul et al. 2000).  These are the classical "adaptations" a
careful user tries before any test-time training; :class:`IntensityCorrectiond` runs one inside the inference
pipeline (``Predictor(..., correction=...)``, ``medswin predict --correct n4|histmatch``).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

CORRECTIONS = ("n4", "histmatch", "n4+histmatch")
LANDMARK_QUANTILES = (0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99)


def _foreground(channel: np.ndarray) -> np.ndarray:
    """The voxels a correction looks at: nonzero ones (skull-stripped / masked MRI), else every voxel."""
    inside = channel != 0
    return inside if inside.sum() >= 0.01 * channel.size else np.ones_like(inside)


def n4_correct(
    image: np.ndarray, shrink: int = 2, iterations: Sequence[int] = (50, 50, 30), source: str = "<image>"
) -> np.ndarray:
    """N4 bias-field correction of each channel of ``image`` ``(C, D, H, W)``; zero voxels stay zero.

    The field is fitted on a copy shrunk ``shrink`` times per axis, inside the nonzero voxels (every voxel when
    fewer than 1 % are nonzero), and divided out at full resolution.

    Args:
        image: raw (not yet normalised) intensities; N4 models a multiplicative field, so they must be >= 0.
        shrink: the fitting grid's shrink factor.
        iterations: fitting iterations per resolution level.
        source: the file, for the error message.
    """
    import SimpleITK as sitk

    if float(image.min()) < 0:
        raise ValueError(
            f"{source}: N4 bias-field correction needs non-negative intensities (MRI), this image has values down "
            f"to {float(image.min()):g} (CT is calibrated in HU and has no bias field: drop --correct n4)"
        )
    out = np.array(image, dtype=np.float32, copy=True)
    for c, channel in enumerate(out):
        inside = _foreground(channel)
        if not channel[inside].any():
            continue
        full = sitk.GetImageFromArray(channel)
        mask = sitk.GetImageFromArray(inside.astype(np.uint8))
        small = sitk.Shrink(full, [shrink] * 3) if shrink > 1 else full
        small_mask = sitk.Shrink(mask, [shrink] * 3) if shrink > 1 else mask
        corrector = sitk.N4BiasFieldCorrectionImageFilter()
        corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
        corrector.Execute(small, small_mask)
        log_field = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(full))
        corrected = channel / np.exp(log_field).astype(np.float32)
        corrected[~inside] = channel[~inside]
        out[c] = corrected
    return out


def histogram_landmarks(image: np.ndarray, quantiles: Sequence[float] = LANDMARK_QUANTILES) -> np.ndarray:
    """Per-channel quantile landmarks ``(C, Q)`` of the foreground (nonzero) voxels of ``image`` ``(C, D, H, W)``.

    Args:
        image: raw intensities.
        quantiles: the landmark quantiles in (0, 1), increasing.
    """
    return np.stack([np.quantile(ch[_foreground(ch)], quantiles) for ch in np.asarray(image, dtype=np.float32)])


def match_histogram(
    image: np.ndarray, reference: np.ndarray, quantiles: Sequence[float] = LANDMARK_QUANTILES
) -> np.ndarray:
    """Map each channel of ``image`` ``(C, D, H, W)`` piecewise-linearly so that its foreground quantile
    landmarks land on ``reference`` ``(C, Q)`` (:func:`histogram_landmarks` of a training image); beyond the
    outer landmarks the end segments extend linearly.  Zero voxels stay zero.

    Args:
        image: raw intensities.
        reference: the target landmarks, one row per channel.
        quantiles: the quantiles the landmarks were taken at.
    """
    reference = np.asarray(reference, dtype=np.float64)
    if reference.shape != (image.shape[0], len(quantiles)):
        raise ValueError(
            f"histogram reference has shape {reference.shape}, expected {(image.shape[0], len(quantiles))} "
            f"(channels x landmarks)"
        )
    out = np.array(image, dtype=np.float32, copy=True)
    for c, channel in enumerate(out):
        inside = _foreground(channel)
        src = np.quantile(channel[inside], quantiles)
        src = np.maximum.accumulate(src + np.arange(len(src)) * 1e-6)  # strictly increasing for the map
        values = channel[inside].astype(np.float64)
        mapped = np.interp(values, src, reference[c])
        low, high = values < src[0], values > src[-1]
        slope_low = (reference[c, 1] - reference[c, 0]) / (src[1] - src[0])
        slope_high = (reference[c, -1] - reference[c, -2]) / (src[-1] - src[-2])
        mapped[low] = reference[c, 0] + (values[low] - src[0]) * slope_low
        mapped[high] = reference[c, -1] + (values[high] - src[-1]) * slope_high
        channel[inside] = mapped.astype(np.float32)
    return out


class InputCorrection:
    """One input-side correction, callable on a raw image ``(C, D, H, W)`` -> corrected image.

    Args:
        method: ``"n4"``, ``"histmatch"`` or ``"n4+histmatch"`` (N4, then histogram matching).
        reference: the histogram matching's target: landmarks ``(C, Q)`` (:func:`histogram_landmarks`) or the
            path of a reference image (read through the data layer's checked reader; N4-corrected first
            for ``n4+histmatch``, so that both sides are free of their bias fields).
    """

    def __init__(self, method: str, reference: np.ndarray | str | os.PathLike | None = None) -> None:
        if method not in CORRECTIONS:
            raise ValueError(f"unknown input correction {method!r}; choose from {CORRECTIONS}")
        matches = method.endswith("histmatch")
        if matches and reference is None:
            raise ValueError(f"{method} needs a reference: a training image of the same modality (--reference)")
        if not matches and reference is not None:
            raise ValueError(f"{method} takes no reference image")
        self.method = method
        if isinstance(reference, (str, os.PathLike)):
            from .io import load_volume

            array = load_volume(reference).array
            reference = histogram_landmarks(
                n4_correct(array, source=str(reference)) if method == "n4+histmatch" else array
            )
        self.reference = None if reference is None else np.asarray(reference, dtype=np.float64)

    def __call__(self, image: np.ndarray, source: str = "<image>") -> np.ndarray:
        """The corrected copy of ``image`` ``(C, D, H, W)``."""
        if self.method.startswith("n4"):
            image = n4_correct(image, source=source)
        if self.reference is None:
            return image
        if self.reference.shape[0] != image.shape[0]:
            raise ValueError(
                f"{source}: {image.shape[0]} channel(s), but the histogram reference has {self.reference.shape[0]}"
            )
        return match_histogram(image, self.reference)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable settings."""
        return {
            "method": self.method,
            "reference_landmarks": None if self.reference is None else self.reference.tolist(),
        }


class IntensityCorrectiond(MapTransform):
    """Apply an :class:`InputCorrection` to channel-first image(s) in a pipeline (before the normalisation).

    Args:
        keys: the image keys (``(C, D, H, W)`` tensors; their metadata and applied operations are kept).
        correction: the correction.
    """

    def __init__(self, keys: KeysCollection, correction: InputCorrection) -> None:
        super().__init__(keys)
        self.correction = correction

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            source = str(getattr(image, "meta", {}).get("filename_or_obj", "<image>"))
            corrected = self.correction(np.asarray(image.detach().cpu().numpy(), dtype=np.float32), source)
            out = image.clone()
            out[...] = torch.as_tensor(corrected, dtype=out.dtype)
            d[key] = out
        return d
