"""Training configuration: one dataclass, loadable from YAML and overridable from the command line.

    config = TrainConfig.from_yaml("run.yaml", overrides={"epochs": 50})

Unknown keys are errors (typos would otherwise be silently ignored).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A training configuration key is unknown or has an invalid value."""


def _accepts(kind: Any, value: Any) -> bool:
    """Whether ``value`` fits the (resolved) annotation ``kind`` (int, float, bool, str, list[X], dict[K, V],
    unions with None); YAML gives ints where floats are meant, which fit."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in args)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_accepts(args[0], v) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_accepts(args[0], k) and _accepts(args[1], v) for k, v in value.items())
    return isinstance(value, kind) if isinstance(kind, type) else True


def _type_name(kind: Any) -> str:
    return str(kind).replace("typing.", "").replace("<class '", "").replace("'>", "").replace("NoneType", "null")


def check_types(config: Any) -> None:
    """Raise :class:`ConfigError` naming the first key of a config dataclass whose value has the wrong type."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not _accepts(hints[f.name], value):
            raise ConfigError(f"config key {f.name!r} must be {_type_name(hints[f.name])}, got {value!r}")


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data itself.

    Schedule: ``epochs`` x ``iterations_per_epoch`` optimiser steps (``None`` = one pass over the
    training cases), linear warm-up for ``warmup_epochs`` then cosine decay to 0.  With
    ``budget_minutes`` the number of epochs is fitted to the time budget after the first
    ``calibration_steps`` steps (and the schedule stretched over it), so a bounded run still
    completes its learning-rate schedule.

    ``encoder_weights``: an encoder checkpoint (``medswin pretrain``'s ``encoder.pt``, or MONAI's
    self-supervised Swin UNETR weights) loaded into the model before training.
    """

    model: str = "swin_unetr_tiny"
    dataset: str = ""
    data: str = ""
    layout: str | None = None
    out: str = "runs/train"
    datasets_files: list[str] = field(default_factory=list)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    encoder_weights: str | None = None
    epochs: int = 100
    iterations_per_epoch: int | None = None
    budget_minutes: float | None = None
    calibration_steps: int = 3
    batch_size: int = 1
    num_samples: int = 2
    roi_size: list[int] | None = None
    pos_neg: list[float] = field(default_factory=lambda: [1.0, 1.0])
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_epochs: int = 1
    grad_clip: float | None = 1.0
    amp: str = "auto"
    val_every: int = 10
    val_overlap: float = 0.5
    sw_batch_size: int = 1
    fold: int = 0
    n_folds: int = 5
    val_cases: list[str] | None = None
    seed: int = 0
    num_workers: int = 0
    cache: bool = True
    deep_supervision_weights: dict[str, float] | None = None
    device: str = "auto"

    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` for values of the wrong type or that cannot work; returns self."""
        from ..data.spec import LAYOUTS

        check_types(self)
        at_least = {"warmup_epochs": 0, "val_every": 0, "sw_batch_size": 1, "num_workers": 0, "n_folds": 1}
        at_least["calibration_steps"] = 1
        for key, low in at_least.items():
            if getattr(self, key) < low:
                raise ConfigError(f"config key {key!r} must be >= {low}, got {getattr(self, key)!r}")
        if not 0 <= self.fold < self.n_folds:
            raise ConfigError(f"config key 'fold' must be in [0, n_folds={self.n_folds}), got {self.fold}")
        if self.weight_decay < 0 or (self.grad_clip is not None and self.grad_clip <= 0):
            raise ConfigError("config keys 'weight_decay' must be >= 0 and 'grad_clip' > 0 (or null)")
        if self.roi_size is not None and any(r < 1 for r in self.roi_size):
            raise ConfigError(f"config key 'roi_size' needs positive sizes, got {self.roi_size}")
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ConfigError(f"config key 'layout' must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "num_samples": self.num_samples}
        for key, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"config key {key!r} must be a positive integer, got {value!r}")
        if self.iterations_per_epoch is not None and self.iterations_per_epoch < 1:
            raise ConfigError(f"config key 'iterations_per_epoch' must be >= 1, got {self.iterations_per_epoch}")
        if self.lr <= 0:
            raise ConfigError(f"config key 'lr' must be positive, got {self.lr}")
        if self.roi_size is not None and len(self.roi_size) != 3:
            raise ConfigError(f"config key 'roi_size' needs 3 values, got {self.roi_size}")
        if self.amp not in ("auto", "bf16", "fp16", "fp32"):
            raise ConfigError(f"config key 'amp' must be auto, bf16, fp16 or fp32, got {self.amp!r}")
        if self.budget_minutes is not None and self.budget_minutes <= 0:
            raise ConfigError(f"config key 'budget_minutes' must be positive, got {self.budget_minutes}")
        if not 0 <= self.val_overlap < 1:
            raise ConfigError(f"config key 'val_overlap' must be in [0, 1), got {self.val_overlap}")
        return self

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys raise :class:`ConfigError` listing the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; valid keys: {', '.join(sorted(names))}")
        return cls(**values).validate()

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Read ``path`` (optional) and apply ``overrides`` (keys with value ``None`` are ignored)."""
        from ..data.spec import safe_yaml

        values: dict[str, Any] = {}
        if path is not None:
            try:
                loaded = safe_yaml(Path(path).read_text(encoding="utf-8"), path, ConfigError) or {}
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                raise ConfigError(f"{path}: cannot read the config ({' '.join(str(exc).split())[:200]})") from None
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path}: the config must be a mapping of keys to values")
            values.update(loaded)
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        try:
            return cls.from_dict(values)
        except ConfigError as exc:
            if path is None:
                raise
            raise ConfigError(f"{path}: {exc} (from the file or the command line)") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dict (stored in checkpoints and ``config.yaml``)."""
        return dataclasses.asdict(self)
