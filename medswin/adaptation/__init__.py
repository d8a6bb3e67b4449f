"""Test-time adaptation of any registered 3D model: TENT and ETTA (entropy minimisation), MEMO (marginal
entropy over flipped views) and pseudo-label self-training.

    from medswin.adaptation import Tent, Etta
    adapter = Tent(model, steps=1, episodic=True, params="encoder-norms")
    adapter.adapt(volume)                       # (1, C, D, H, W): updates the model's norm affines
    logits = adapter.blended_logits(volume)     # predicted with the ADAPTED parameters
    adapter.reset()                             # original parameters and optimizer state, exactly

Through the predictor: ``Predictor(model, spec, adapter=adapter)`` adapts to each volume before
predicting it (``medswin predict --adapt tent|etta``, ``medswin adapt``).  Flip averaging (the
predictor's ``mirror``) is the baseline adaptation is compared with.  ``METHODS`` maps each
name of ``METHOD_NAMES`` to its class; names load on first use (the CLI parser reads
``METHOD_NAMES`` without importing torch).
"""

from __future__ import annotations

import importlib
from typing import Any

METHOD_NAMES = ("tent", "etta", "memo", "pseudo-label")

_EXPORTS = {
    "AdaptationReport": "base",
    "EntropyAdapter": "base",
    "Etta": "etta",
    "Memo": "memo",
    "PseudoLabel": "selftrain",
    "marginal_entropy": "memo",
    "Tent": "tent",
    "norm_affine_parameters": "base",
    "normalized_entropy": "base",
    "select_parameters": "base",
}

__all__ = ["METHODS", "METHOD_NAMES", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name == "METHODS":
        from .etta import Etta
        from .memo import Memo
        from .selftrain import PseudoLabel
        from .tent import Tent

        return {"tent": Tent, "etta": Etta, "memo": Memo, "pseudo-label": PseudoLabel}
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
