"""Model registry: every architecture registers named presets; users build models by name.

    >>> from medswin import create_model, list_models
    >>> list_models("swin_unetr_*")
    ['swin_unetr_base', 'swin_unetr_small', 'swin_unetr_tiny']
    >>> net = create_model("swin_unetr_tiny", in_channels=1, out_channels=14)

Presets are three-line functions decorated with :func:`register_model` that return the preset's
constructor arguments; keyword arguments given to :func:`create_model` override them.  Each entry
records what the model takes (:data:`MODEL_KINDS`): ``"volume"`` models map ``(B, C, D, H, W)`` to
logits of the same size, ``"biplanar"`` models (Swin-X2S) map two X-ray views ``(B, C, H, W)`` to a
volume.  The registry imports no model: ``medswin.models`` imports the model files, which register.
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

MODEL_KINDS = ("volume", "biplanar")


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one preset: builder, class, default roi (for biplanar models the
    output volume ``(H, H, W)`` of views ``(H, W)``), paper, preset arguments and kind."""

    name: str
    builder: Callable[..., nn.Module]
    model_cls: type
    default_roi: tuple[int, ...]
    paper: str
    preset: dict[str, Any]
    kind: str = "volume"


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    model_cls: type, *, default_roi: Sequence[int], paper: str, kind: str = "volume"
) -> Callable[[Callable[[], dict[str, Any]]], Callable[..., nn.Module]]:
    """Decorator turning a preset function (returning constructor kwargs) into a registered builder.

    Args:
        model_cls: the architecture.
        default_roi: the sliding-window / patch size the preset is meant for.
        paper: the reference shown by ``medswin models list``.
        kind: ``"volume"`` or ``"biplanar"`` (two X-ray views in, a volume out).

    The decorated name becomes a function ``name(**kwargs) -> model`` whose ``kwargs`` override
    the preset, and ``create_model(name, ...)`` calls it.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {MODEL_KINDS}, got {kind!r}")

    def decorate(preset_fn: Callable[[], dict[str, Any]]) -> Callable[..., nn.Module]:
        name = preset_fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        preset = dict(preset_fn())

        def build(**kwargs: Any) -> nn.Module:
            return model_cls(**{**preset, **kwargs})

        build.__name__, build.__qualname__, build.__doc__ = name, name, preset_fn.__doc__
        _REGISTRY[name] = ModelEntry(name, build, model_cls, tuple(default_roi), paper, preset, kind)
        return build

    return decorate


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name raises ``KeyError`` with the closest names."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}.{hint} Available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def model_kind(model: str | nn.Module) -> str:
    """``"volume"`` or ``"biplanar"``: what a registered model (by name, or a model object built by the
    registry) takes.  Objects of unregistered classes are volume models."""
    if isinstance(model, str):
        return get_entry(model).kind
    kinds = {entry.kind for entry in _REGISTRY.values() if isinstance(model, entry.model_cls)}
    return kinds.pop() if len(kinds) == 1 else "volume"


def valid_kwargs(name: str) -> list[str]:
    """Constructor arguments a preset accepts (besides ``in_channels`` / ``out_channels``)."""
    params = inspect.signature(get_entry(name).model_cls.__init__).parameters
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
    entry = get_entry(name)
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
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_info(name: str, in_channels: int = 1, out_channels: int = 2) -> dict[str, Any]:
    """Parameters (for the given channels), size divisor, default roi, paper and preset of ``name``.

    The model is built on the ``meta`` device, so this allocates no weights.
    """
    entry = get_entry(name)
    with torch.device("meta"):
        model = create_model(name, in_channels=in_channels, out_channels=out_channels)
    return {
        "name": name,
        "params": sum(p.numel() for p in model.parameters()),
        "size_divisor": getattr(model, "size_divisor", 1),
        "default_roi": entry.default_roi,
        "kind": entry.kind,
        "paper": entry.paper,
        "preset": dict(entry.preset),
    }
