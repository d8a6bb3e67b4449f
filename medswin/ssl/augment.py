"""Pretext-task augmentations on batches of crops ``(B, C, X, Y, Z)``: rotation, cutout, Barlow Twins views.

All randomness comes from torch generators (the default one unless ``generator`` is given), so the
trainer's RNG capture makes a resumed pretraining run draw the same augmentations.

* :func:`rotate90` -- the Swin UNETR rotation task (Tang et al. 2022): each crop is turned by
  ``k * 90`` degrees, ``k`` uniform in ``{0, 1, 2, 3}`` (the label), in the ``(X, Y)`` plane, i.e.
  about the ``Z`` axis of MONAI's RAS ``(C, X, Y, Z)`` arrays (upstream rotates dims (2, 3) of the
  same layout).  ``X`` and ``Y`` must be equal so every rotation keeps the crop's shape.
* :func:`cutout` / :func:`cutout_batch` -- Swin UNETR's masked-volume inpainting input: boxes with
  sides drawn in 5-25% of each axis are filled with noise until a fraction drawn from U(0, 0.3) of
  the voxels is covered; then a second round pastes boxes (a new fraction) from another crop of
  the batch.  Upstream counts box volumes (overlaps twice) and fills with standard normal noise
  min-max scaled to [0, 1]; here the *union* of the boxes is counted, so the covered fraction is
  the drawn one up to the last box, and the noise is min-max scaled to the crop's own intensity
  range (the same as upstream for [0, 1] CT; z-scored MRI would otherwise get out-of-range noise).
* :func:`barlow_views` -- two independently augmented views for Barlow Twins: a flip on each axis
  (p = 0.5), intensity scale and shift (+-10%) and Gaussian noise (sigma 0.1 of the crop's std).
"""

from __future__ import annotations

import torch

ROTATION_DIMS = (2, 3)  # the (X, Y) plane of (B, C, X, Y, Z)
MAX_COVERAGE = 0.3
BOX_FRACTION = (0.05, 0.25)


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[low, high]`` (inclusive)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def rotate90(x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each crop of ``x`` ``(B, C, X, Y, Z)`` by ``k_b * 90`` degrees in the ``(X, Y)`` plane.

    Returns ``(rotated (B, C, X, Y, Z), k (B,) int64 on x.device)``; ``k`` is the rotation label.
    """
    if x.dim() != 5:
        raise ValueError(f"rotate90 expects (B, C, X, Y, Z) crops, got shape {tuple(x.shape)}")
    if x.shape[2] != x.shape[3]:
        raise ValueError(
            f"the rotation task turns crops in the (X, Y) plane, which needs X == Y; got a {tuple(x.shape[2:])} crop "
            "(choose a roi like 96 96 64)"
        )
    k = torch.randint(0, 4, (x.shape[0],), generator=generator)
    out = torch.stack(
        [torch.rot90(x[i], int(k[i]), (ROTATION_DIMS[0] - 1, ROTATION_DIMS[1] - 1)) for i in range(len(k))]
    )
    return out, k.to(x.device)


def _box(shape: tuple[int, ...], generator: torch.Generator | None) -> tuple[slice, ...]:
    """A random box inside ``shape`` with each side in ``BOX_FRACTION`` of its axis (at least 1 voxel)."""
    box = []
    for s in shape:
        lo = max(1, int(BOX_FRACTION[0] * s))
        hi = max(lo, int(BOX_FRACTION[1] * s))
        side = _randint(lo, hi, generator)
        start = _randint(0, s - side, generator)
        box.append(slice(start, start + side))
    return tuple(box)


def cutout(
    x: torch.Tensor,
    source: torch.Tensor | None = None,
    fraction: float | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Cut boxes out of one crop ``x`` ``(C, X, Y, Z)`` until ``fraction`` of its voxels are covered.

    Boxes are filled with noise (``source=None``) or with the same box of ``source`` (``(C, X, Y, Z)``,
    the second round).  ``fraction`` defaults to a draw from U(0, 0.3).  Returns
    ``(cut copy of x, covered mask (X, Y, Z) bool, fraction)``; ``x`` is not modified.
    """
    if x.dim() != 4:
        raise ValueError(f"cutout expects one crop (C, X, Y, Z), got shape {tuple(x.shape)}")
    if source is not None and source.shape != x.shape:
        raise ValueError(f"cutout source {tuple(source.shape)} differs from the crop {tuple(x.shape)}")
    target = MAX_COVERAGE * _uniform(generator) if fraction is None else float(fraction)
    out = x.clone()
    covered = torch.zeros(x.shape[1:], dtype=torch.bool, device=x.device)
    needed = target * covered.numel()
    lo, hi = (float(x.min()), float(x.max())) if source is None else (0.0, 0.0)
    count = 0
    while count < needed:
        box = _box(tuple(x.shape[1:]), generator)
        region = (slice(None), *box)
        if source is None:
            noise = torch.randn(out[region].shape, generator=generator).to(device=x.device, dtype=x.dtype)
            span = noise.max() - noise.min()
            noise = (noise - noise.min()) / span if span > 0 else torch.zeros_like(noise)
            out[region] = (lo + (hi - lo) * noise).clamp(lo, hi)
        else:
            out[region] = source[region]
        newly = ~covered[box]
        count += int(newly.sum())
        covered[box] = True
    return out, covered, target


def cutout_batch(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Swin UNETR's ``aug_rand`` on a batch ``(B, C, X, Y, Z)``: noise boxes, then boxes pasted from another crop.

    For each crop ``i``: a noise cutout with a U(0, 0.3) coverage; then a crop index ``j`` is drawn
    uniformly and, when ``j != i``, a second cutout (new coverage) copies boxes from crop ``j`` (as
    already cut).  Returns a new tensor; ``x`` is not modified.
    """
    out = x.detach().clone()
    n = out.shape[0]
    for i in range(n):
        out[i] = cutout(out[i], generator=generator)[0]
        j = _randint(0, n - 1, generator)
        if j != i:
            out[i] = cutout(out[i], source=out[j], generator=generator)[0]
    return out


def barlow_views(x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two augmented views of ``x`` ``(B, C, X, Y, Z)`` (flips, intensity scale/shift, Gaussian noise), same shape."""

    def view() -> torch.Tensor:
        crops = []
        for i in range(x.shape[0]):
            v = x[i]
            dims = [d + 1 for d in range(3) if _uniform(generator) < 0.5]
            if dims:
                v = v.flip(dims)
            scale = 1.0 + 0.2 * (_uniform(generator) - 0.5)
            std = float(v.float().std()) or 1.0
            shift = 0.2 * (_uniform(generator) - 0.5) * std
            noise = torch.randn(v.shape, generator=generator).to(device=x.device, dtype=x.dtype)
            crops.append(v * scale + shift + 0.1 * std * noise)
        return torch.stack(crops)

    return view(), view()
