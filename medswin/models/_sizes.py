"""Input-size rules: one checker every model uses, with errors that say which sizes work.

Each model holds a :class:`SizeRule` (``model.size_rule``) and calls ``self.size_rule.check(shape)``
in ``forward``; :func:`check_input_size` and :func:`check_roi` apply the same rule from outside
(sliding-window rois, training patches) before any tensor is built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class SizeRule:
    """Which spatial sizes a model takes.

    Args:
        model: the name used in messages (``"Swin UNETR"``).
        divisor: per-axis size divisor, e.g. ``(32, 32, 32)`` (``(4, 32, 32)`` for anisotropic strides).
        min_bottleneck_voxels: the bottleneck (size / divisor per axis) must hold at least this many
            voxels (2 for decoders with instance normalisation, which fails on one voxel; 1 = any).
        fixed: the one size the model takes (Swin-X2S's views, fixed by its position embedding), or ``None``.
        inputs: what the inputs are called in messages (``"inputs"``, ``"views"``).
        note: a sentence appended to the size error (why the rule is what it is, or how to comply).
    """

    model: str
    divisor: tuple[int, ...]
    min_bottleneck_voxels: int = 1
    fixed: tuple[int, ...] | None = None
    inputs: str = "inputs"
    note: str = ""

    @property
    def size_divisor(self) -> int | tuple[int, ...]:
        """The divisor as models report it: one int when every axis shares it, else the per-axis tuple."""
        return self.divisor[0] if len(set(self.divisor)) == 1 else self.divisor

    def check(self, spatial_shape: Sequence[int]) -> None:
        """Raise ``ValueError`` explaining which sizes work when ``spatial_shape`` does not fit the rule."""
        shape = tuple(int(s) for s in spatial_shape)
        if len(shape) != len(self.divisor):
            raise ValueError(f"{self.model} takes {len(self.divisor)} spatial axes, got spatial shape {shape}")
        if self.fixed is not None:
            if shape != self.fixed:
                note = self.note or "resize them or build the model for that size"
                raise ValueError(f"{self.model} was built for {self.inputs} of {self.fixed}, got {shape}; {note}")
            return
        per_axis = len(set(self.divisor)) > 1
        bad = [
            f"axis {i} = {s}" + (f" (multiple of {d} needed)" if per_axis else "")
            for i, (s, d) in enumerate(zip(shape, self.divisor))
            if s % d or s < 1
        ]
        if bad:
            fix = tuple(max(d, -(-s // d) * d) for s, d in zip(shape, self.divisor))
            note = f"; {self.note}" if self.note else ""
            raise ValueError(
                f"{self.model} input size {shape} is not a multiple of {self.size_divisor} ({', '.join(bad)}){note}; "
                f"pad or crop, e.g. to {fix}"
            )
        bottleneck = [s // d for s, d in zip(shape, self.divisor)]
        if math.prod(bottleneck) < self.min_bottleneck_voxels:
            fix = tuple(2 * d if i == 0 else d for i, d in enumerate(self.divisor))
            raise ValueError(
                f"{self.model} input size {shape} leaves a {'x'.join(map(str, bottleneck))} bottleneck, too small for "
                f"instance normalisation; use at least {2 * self.divisor[0]} on axis 0 (twice the divisor), e.g. {fix}"
            )


def check_input_size(model: nn.Module, spatial_shape: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``model`` takes inputs of ``spatial_shape`` (its ``size_rule``, else its
    ``size_divisor`` on every axis; models with neither take any size)."""
    rule = getattr(model, "size_rule", None)
    if rule is None:
        k = getattr(model, "size_divisor", 1)
        divisors = tuple(k) if isinstance(k, Sequence) else (int(k),) * len(spatial_shape)
        rule = SizeRule(type(model).__name__, divisors)
    rule.check(spatial_shape)


def check_roi(model: nn.Module, roi_size: Sequence[int]) -> None:
    """Raise ``ValueError`` when the sliding-window / patch size ``roi_size`` does not suit ``model``."""
    try:
        check_input_size(model, roi_size)
    except ValueError as exc:
        raise ValueError(
            f"roi_size {tuple(int(r) for r in roi_size)} does not fit {type(model).__name__}: {exc}"
        ) from None
