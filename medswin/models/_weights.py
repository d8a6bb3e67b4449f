"""Loading external weights with an explicit report: what matched, what is missing, what was ignored.

Silent partial loads are the most common complaint about pretrained medical models (keys with a
``module.`` prefix, ``fc`` vs ``linear``): every load here counts matched keys, logs the counts,
raises when nothing matched and raises when a key matches by name but not by shape.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

log = logging.getLogger(__name__)


class WeightLoadError(ValueError):
    """Raised when a weights file cannot be read or does not fit a model (nothing matches, or shapes disagree);
    the message starts with the file."""


@dataclass
class LoadReport:
    """Outcome of loading a state dict into a model (keys in the model's naming)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    derived: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``loaded 150/150 keys from X (0 missing, 3 ignored)``."""
        total = len(self.loaded) + len(self.missing)
        return (
            f"loaded {len(self.loaded)}/{total} keys from {self.source} "
            f"({len(self.missing)} missing, {len(self.unexpected)} ignored, {len(self.derived)} derived buffers skipped)"
        )

    def __str__(self) -> str:
        return self.summary()


def unwrap_checkpoint(obj: object, source: str) -> dict[str, torch.Tensor]:
    """Return the tensor dict of a checkpoint: plain state dict or one nested under a usual key."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict", "network", "net"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise WeightLoadError(
        f"{source}: no state dict found (expected a dict of tensors, or one under 'state_dict'/'model')"
    )


def load_checkpoint_file(path: str) -> dict[str, torch.Tensor]:
    """Read a ``.pt``/``.pth`` checkpoint safely (``weights_only=True``) and unwrap its state dict."""
    if not os.path.isfile(path):
        raise WeightLoadError(f"{path}: weights file not found" if not os.path.exists(path) else f"{path}: not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with arbitrary objects, ...
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise WeightLoadError(f"{path}: cannot read the weights ({type(exc).__name__}: {first})") from None
    return unwrap_checkpoint(obj, str(path))


def load_matching(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    *,
    derived: Mapping[str, torch.Tensor] | None = None,
    require: str = "",
) -> LoadReport:
    """Copy every tensor of ``state_dict`` whose key and shape match ``model``'s; report the rest.

    ``derived`` holds keys the source carries but the model recomputes (e.g. position indices);
    they are checked for equality elsewhere and only counted here.  ``require`` restricts
    ``missing`` to model keys starting with that prefix (e.g. ``"encoder."`` for encoder weights).
    Raises :class:`WeightLoadError` when no key matches or when a matching key has the wrong shape.
    """
    own = model.state_dict()
    report = LoadReport(source, derived=sorted(derived or {}))
    mismatched = []
    to_load = {}
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            to_load[key] = value
    if mismatched:
        raise WeightLoadError(
            f"{source}: {len(mismatched)} tensors have the wrong shape for this model (different configuration?): "
            + "; ".join(mismatched[:5])
            + (" ..." if len(mismatched) > 5 else "")
        )
    if not to_load:
        sample = ", ".join(list(state_dict)[:3])
        raise WeightLoadError(
            f"{source}: none of its {len(state_dict)} keys match this model (is it another architecture?). "
            f"First keys: {sample}"
        )
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    report.missing = sorted(k for k in own if k not in to_load and k.startswith(require))
    log.info(report.summary())
    return report


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a DDP ``module.`` prefix from every key that has it."""
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


def load_encoder_weights(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load pretrained encoder weights from ``path`` into ``model.encoder``; returns the :class:`LoadReport`.

    Accepted files:

    * ``medswin pretrain``'s ``encoder.pt`` (``{"encoder": {"encoder.<key>": tensor}, "model_name": ...}``);
    * any state dict or medswin training checkpoint whose ``encoder.`` keys are used (the rest ignored);
    * MONAI's SwinUNETR weights or self-supervised ``model_swinvit.pt``, for models that have
      ``load_monai_state_dict`` (Swin UNETR), when the file has no ``encoder.`` keys.

    medswin encoder weights must fit the model's encoder exactly (every key, every shape): weights
    of another encoder (architecture, size or input channels) raise :class:`WeightLoadError` saying
    what is missing or unexpected, so nothing is ever partly loaded.
    """
    source = str(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: encoder weights not found")
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightLoadError(f"{source}: cannot read checkpoint ({type(exc).__name__}: {exc})") from exc
    origin = ""
    if isinstance(obj, Mapping) and isinstance(obj.get("encoder"), Mapping):
        state = dict(obj["encoder"])
        origin = f" (pretrained on {obj.get('model_name', '?')}, tasks {', '.join(obj.get('tasks', [])) or '?'})"
    else:
        state = unwrap_checkpoint(obj, source)
    encoder = {k: v for k, v in _strip_module(state).items() if k.startswith("encoder.")}
    if not encoder:
        if hasattr(model, "load_monai_state_dict"):
            return model.load_monai_state_dict(state, source=source)
        raise WeightLoadError(
            f"{source}: no 'encoder.' weights in this file, and {type(model).__name__} reads no MONAI format"
        )
    own = {k for k in model.state_dict() if k.startswith("encoder.")}
    missing, unexpected = sorted(own - set(encoder)), sorted(set(encoder) - own)
    if missing or unexpected:
        raise WeightLoadError(
            f"{source}: these encoder weights{origin} do not fit {type(model).__name__}'s encoder "
            f"(another architecture or configuration): {len(missing)} of its {len(own)} encoder keys are missing"
            + (f" (e.g. {missing[0]})" if missing else "")
            + f", {len(unexpected)} keys of the file are unknown to it"
            + (f" (e.g. {unexpected[0]})" if unexpected else "")
        )
    return load_matching(model, encoder, source + origin, require="encoder.")


MONAI_KEY_PREFIXES = ("swinViT.", "swin_vit.", "module.", "encoder1.")  # MONAI SwinUNETR / its SSL checkpoint


def load_weights(model: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Load weights for ``model`` from ``path``, whatever their format, and report what matched.

    Accepted: a medswin training checkpoint (its ``model``), MONAI ``SwinUNETR`` weights or the released
    self-supervised ``model_swinvit.pt`` (for models with ``load_monai_state_dict``), or any state dict
    whose keys and shapes match.  Raises :class:`WeightLoadError` when nothing fits.
    """
    state = load_checkpoint_file(str(path))
    if hasattr(model, "load_monai_state_dict") and any(k.startswith(MONAI_KEY_PREFIXES) for k in state):
        report = model.load_monai_state_dict(state, source=str(path))
    else:
        report = load_matching(model, state, str(path))
    log.info("%s", report)
    return report
