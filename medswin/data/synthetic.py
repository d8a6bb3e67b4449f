"""Seeded synthetic phantoms for tests, smoke runs and the placeholder-free demo.

A phantom is a 3D volume with a few nested and disjoint ellipsoids ("organs") of distinct mean
intensity, smooth background texture and Gaussian noise, together with its exact label map.
Everything is derived from the seed, so two calls with the same arguments return identical data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Phantom:
    """``image`` ``(C, D, H, W)`` float32, ``label`` ``(D, H, W)`` int64 in ``[0, num_classes)``,
    ``spacing`` in mm per axis and the matching ``affine`` (RAS, origin 0)."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-world matrix (diagonal spacing)."""
        return np.diag([*self.spacing, 1.0])


def make_phantom(
    shape: Sequence[int] = (96, 96, 96),
    num_classes: int = 3,
    channels: int = 1,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    noise: float = 0.1,
    seed: int = 0,
) -> Phantom:
    """Build a phantom of ``shape`` with ``num_classes`` labels (0 = background).

    Class ``k`` is an ellipsoid of intensity ``k / (num_classes - 1)``; each extra channel is the
    same anatomy with a different contrast.  Objects are placed randomly but kept inside the volume.
    """
    if len(shape) != 3:
        raise ValueError(f"shape must have 3 axes, got {tuple(shape)}")
    if num_classes < 2:
        raise ValueError("num_classes must be >= 2 (background plus at least one object)")
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"), -1)
    label = np.zeros(shape, dtype=np.int64)
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
        img = contrast[label] / (num_classes - 1) + texture + rng.normal(0, noise, size=shape)
        images.append(img.astype(np.float32))
    return Phantom(np.stack(images), label, tuple(float(s) for s in spacing))  # type: ignore[arg-type]
