"""Test-time adaptation of any registered 3D model: TENT and ETTA (entropy minimisation).

    from medswin.adaptation import Tent, Etta
    adapter = Tent(model, steps=1, episodic=True, params="encoder-norms")
    adapter.adapt(volume)                       # (1, C, D, H, W): updates the model's norm affines
    logits = adapter.blended_logits(volume)     # predicted with the ADAPTED parameters
    adapter.reset()                             # original parameters and optimizer state, exactly

Through the predictor: ``Predictor(model, spec, adapter=adapter)`` adapts to each volume before
predicting it (``medswin predict --adapt tent|etta``, ``medswin adapt``).  Flip averaging (the
predictor's ``mirror``) is the baseline adaptation is compared with.
"""

from .base import (
    AdaptationReport,
    EntropyAdapter,
    WindowGrid,
    norm_affine_parameters,
    normalized_entropy,
    select_parameters,
    window_grid,
)
from .etta import Etta
from .tent import Tent

METHODS = {"tent": Tent, "etta": Etta}

__all__ = [
    "METHODS",
    "AdaptationReport",
    "EntropyAdapter",
    "Etta",
    "Tent",
    "WindowGrid",
    "norm_affine_parameters",
    "normalized_entropy",
    "select_parameters",
    "window_grid",
]
