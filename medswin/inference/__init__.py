"""Inference: the sliding-window engine, the model runner, whole-volume and biplanar predictors, outputs.

``inference`` imports neither ``training`` nor ``adaptation``: trainer validation and the adapters
use the engine, and the predictor takes any adapter through its :class:`~.predictor.Adapter` hook.
Names load on first use (``from medswin.inference import Predictor``), so the CLI parser can read
:data:`~.writers.OUTPUT_FORMATS` without importing torch or MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Adapter": "predictor",
    "BiplanarPredictor": "biplanar",
    "MIRROR_AXES": "runner",
    "ModelRunner": "runner",
    "OUTPUT_FORMATS": "writers",
    "Prediction": "predictor",
    "Predictor": "predictor",
    "SlidingWindow": "sliding_window",
    "WindowPlan": "sliding_window",
    "predict_labels": "runner",
    "predict_logits": "reference",
    "window_plan": "sliding_window",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
