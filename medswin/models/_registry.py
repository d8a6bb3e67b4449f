"""Model registry: every architecture registers named presets; users build models by name.

    >>> from medswin import create_model, list_models
    >>> list_models("swin_unetr_*")
    ['swin_unetr_base', 'swin_unetr_small', 'swin_unetr_tiny']
    >>> net = create_model("swin_unetr_tiny", in_channels=1, out_channels=14)

Presets are three-line functions decorated with :func:`register_model` that return the preset's
constructor arguments; keyword arguments given to :func:`create_model` override them.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._weights import load_encoder_weights


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one preset."""

    name: str
    builder: Callable[..., nn.Module]
    model_cls: type
    default_roi: tuple[int, ...]
    paper: str
    preset: dict[str, Any]


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    model_cls: type, *, default_roi: Sequence[int], paper: str
) -> Callable[[Callable[[], dict[str, Any]]], Callable[..., nn.Module]]:
    """Decorator turning a preset function (returning constructor kwargs) into a registered builder.

    The decorated name becomes a function ``name(**kwargs) -> model`` whose ``kwargs`` override
    the preset, and ``create_model(name, ...)`` calls it.
    """

    def decorate(preset_fn: Callable[[], dict[str, Any]]) -> Callable[..., nn.Module]:
        name = preset_fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        preset = dict(preset_fn())

        def build(**kwargs: Any) -> nn.Module:
            return model_cls(**{**preset, **kwargs})

        build.__name__, build.__qualname__, build.__doc__ = name, name, preset_fn.__doc__
        _REGISTRY[name] = ModelEntry(name, build, model_cls, tuple(default_roi), paper, preset)
        return build

    return decorate


def _entry(name: str) -> ModelEntry:
    _ensure_registered()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}.{hint} Available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def valid_kwargs(name: str) -> list[str]:
    """Constructor arguments a preset accepts (besides ``in_channels`` / ``out_channels``)."""
    params = inspect.signature(_entry(name).model_cls.__init__).parameters
    return sorted(p for p in params if p not in ("self", "in_channels", "out_channels"))


def create_model(
    name: str, *, in_channels: int, out_channels: int, encoder_weights: str | os.PathLike | None = None, **kwargs: Any
) -> nn.Module:
    """Build the registered model ``name`` mapping ``(B, in_channels, *S)`` to ``(B, out_channels, *S)``.

    Keyword arguments override the preset.  Unknown keyword arguments raise ``TypeError`` naming
    the valid ones.  ``encoder_weights`` loads pretrained encoder weights (``medswin pretrain``'s
    ``encoder.pt`` or MONAI's self-supervised Swin UNETR checkpoint) and logs the loaded keys;
    weights that do not fit the encoder raise :class:`~medswin.models.WeightLoadError`.
    """
    entry = _entry(name)
    allowed = valid_kwargs(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"{name}: unexpected keyword argument(s) {unknown}; valid ones are: {', '.join(allowed)}")
    model = entry.builder(in_channels=in_channels, out_channels=out_channels, **kwargs)
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights)
    return model


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style ``pattern``, sorted."""
    _ensure_registered()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_info(name: str, in_channels: int = 1, out_channels: int = 2) -> dict[str, Any]:
    """Parameters (for the given channels), size divisor, default roi, paper and preset of ``name``.

    The model is built on the ``meta`` device, so this allocates no weights.
    """
    entry = _entry(name)
    with torch.device("meta"):
        model = create_model(name, in_channels=in_channels, out_channels=out_channels)
    return {
        "name": name,
        "params": sum(p.numel() for p in model.parameters()),
        "size_divisor": getattr(model, "size_divisor", 1),
        "default_roi": entry.default_roi,
        "paper": entry.paper,
        "preset": dict(entry.preset),
    }


def _ensure_registered() -> None:
    # importing the package registers every architecture's presets
    from . import cswin_unet, ds_transunet, swin_unetr, swin_x2s  # noqa: F401
