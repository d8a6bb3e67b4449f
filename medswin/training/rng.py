"""Random states for exact resume: every RNG that decides what a training run does next.

A training checkpoint (:mod:`medswin.checkpoint`) stores, besides weights and optimizer state,
the Python, NumPy, torch CPU/CUDA and per-transform MONAI random states captured here, so a run
killed at any moment and resumed from its last checkpoint repeats the uninterrupted run.
Everything is stored as tensors and plain Python types; nothing needs pickle to load.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch


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
