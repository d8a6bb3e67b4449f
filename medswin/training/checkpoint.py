"""Checkpoints: atomic writes, ``torch.load(weights_only=True)``-safe contents, and RNG state capture.

A training checkpoint holds the model, optimizer, scheduler and grad-scaler states, the epoch and
step, the best metric, the run configuration, the dataset spec, and every random state that
decides what happens next (Python, NumPy, torch CPU/CUDA, and each random MONAI transform), so a
run killed at any moment and resumed from its last checkpoint repeats the uninterrupted run.
Everything is stored as tensors and plain Python types; nothing needs pickle to load.
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.spec import DatasetSpec, parse_spec


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temp file next to ``path``, then rename: never a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a medswin checkpoint safely (``weights_only=True``) onto the CPU."""
    from ..data.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(path, f"cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_name" not in ckpt:
        raise DataError(path, "not a medswin checkpoint (no 'model' / 'model_name'); MONAI weights load with --weights")
    return ckpt


def _np_state_to_plain(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {
        "name": name,
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _np_state_from_plain(d: dict[str, Any]) -> tuple:
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])


def random_transforms(transforms: Iterable[Any]) -> list[Any]:
    """Every object holding a NumPy ``RandomState`` ``R`` inside MONAI pipelines, in a stable order.

    Walks nested ``Compose`` lists and the attributes of each transform: dictionary transforms
    often delegate to an inner array transform with its own ``R`` (``RandScaleIntensityd.scaler``),
    whose state must be saved too or a resumed run draws different augmentations.
    """
    found: list[Any] = []
    seen: set[int] = set()

    def visit(obj: Any, depth: int = 0) -> None:
        if id(obj) in seen or depth > 8:
            return
        seen.add(id(obj))
        if isinstance(getattr(obj, "R", None), np.random.RandomState):
            found.append(obj)
        if isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item, depth + 1)
            return
        if not hasattr(obj, "__dict__") or not type(obj).__module__.startswith(("monai", "medswin")):
            return
        for value in vars(obj).values():
            if isinstance(value, (list, tuple)) or (
                hasattr(value, "__dict__") and type(value).__module__.startswith(("monai", "medswin"))
            ):
                visit(value, depth + 1)

    for t in transforms:
        visit(t)
    return found


def capture_rng(pipelines: Iterable[Any] = ()) -> dict[str, Any]:
    """Snapshot of every RNG that influences training (plain types and tensors only)."""
    state: dict[str, Any] = {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": _np_state_to_plain(np.random.get_state()),
        "torch": torch.get_rng_state(),
        "transforms": [_np_state_to_plain(t.R.get_state()) for t in random_transforms(pipelines)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], pipelines: Iterable[Any] = ()) -> None:
    """Put back what :func:`capture_rng` saved (the pipelines must be built the same way)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(_np_state_from_plain(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    transforms = random_transforms(pipelines)
    if len(transforms) != len(state["transforms"]):
        raise ValueError(
            f"checkpoint has {len(state['transforms'])} random transform states, the pipeline {len(transforms)}"
        )
    for t, s in zip(transforms, state["transforms"]):
        t.R.set_state(_np_state_from_plain(s))


def spec_to_dict(spec: DatasetSpec) -> dict[str, Any]:
    """The spec as a YAML-like entry (stored in checkpoints so prediction needs no datasets.yaml)."""
    d = dataclasses.asdict(spec)
    name = d.pop("name")
    d.pop("origin")
    d["channel_names"] = list(d["channel_names"])
    d["target_spacing"], d["roi_size"] = list(d["target_spacing"]), list(d["roi_size"])
    d["regions"] = {k: list(v) for k, v in d["regions"].items()}
    for key in ("regions", "case_pattern", "channel_suffixes", "citation"):
        if not d[key]:
            d.pop(key)
    return {"name": name, "entry": d}


def spec_from_dict(d: dict[str, Any]) -> DatasetSpec:
    """Inverse of :func:`spec_to_dict`."""
    return parse_spec(d["name"], d["entry"], origin="<checkpoint>")
