"""Shared machinery of test-time adaptation: which parameters adapt, entropy, windows, snapshot and reset.

An adapter wraps a registered 3D model *in place*: :meth:`EntropyAdapter.adapt` updates the chosen
parameters of that very model object, so any later forward (the predictor's sliding windows, with
or without mirroring) uses the ADAPTED weights, and :meth:`EntropyAdapter.reset` puts the original
values and a fresh optimizer state back exactly.

* Parameters: by default the affine weight and bias of every LayerNorm / GroupNorm / affine
  InstanceNorm module under ``model.encoder`` (the model contract's encoder); ``"norms"`` takes
  those of the whole model; a list of parameter names overrides the choice.  Nothing else ever
  receives a gradient: the other parameters are frozen for the duration of :meth:`adapt` and their
  ``requires_grad`` flags restored afterwards (the model runs in eval mode throughout, so dropout is
  off and no norm statistics are updated).
* Entropy: of the softmax over classes normalised by ``ln C`` (in [0, 1]); for region (sigmoid)
  datasets the binary entropy of each region channel normalised by ``ln 2``, averaged over regions.
* Windows: the sliding-window engine's own plan (:class:`~medswin.inference.sliding_window.WindowPlan`:
  MONAI's padding, scan interval, ``dense_patch_slices`` and Gaussian weights), so an adapter sees
  exactly the windows the predictor will predict, and the engine's blend for whole-volume logits.
  Every forward goes through the predictor's :class:`~medswin.inference.runner.ModelRunner`
  (precision policy, device) with gradients enabled.  Memory is bounded by running
  ``sw_batch_size`` windows at a time and accumulating their gradients; ``max_patches`` bounds the
  windows used per step (a seeded random subset); fp16 uses a gradient scaler.
"""

from __future__ import annotations

import abc
import copy
import difflib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..amp import resolve_amp
from ..inference.runner import ModelRunner
from ..inference.sliding_window import SlidingWindow, WindowPlan, window_plan
from ..models import check_roi, model_kind

log = logging.getLogger(__name__)

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)
PARAM_CHOICES = ("encoder-norms", "norms", "norms-biases", "decoder", "all")
OPTIMIZERS = ("adam", "sgd")


# ---------------------------------------------------------------------------------------------
# which parameters adapt
# ---------------------------------------------------------------------------------------------


def norm_affine_parameters(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of the affine weight/bias of every LayerNorm, GroupNorm and affine
    InstanceNorm inside ``module`` (names prefixed with ``prefix``, as ``model.named_parameters()``
    spells them).  Norms without affine parameters contribute nothing."""
    found: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()
    for name, sub in module.named_modules(prefix=prefix):
        if not isinstance(sub, NORM_TYPES):
            continue
        for attr in ("weight", "bias"):
            p = getattr(sub, attr, None)
            if isinstance(p, nn.Parameter) and id(p) not in seen:
                seen.add(id(p))
                found.append((f"{name}.{attr}" if name else attr, p))
    return found


def select_parameters(
    model: nn.Module, params: str | Sequence[str] = "encoder-norms"
) -> list[tuple[str, nn.Parameter]]:
    """The parameters an adapter updates: ``"encoder-norms"`` (default: norm affines under
    ``model.encoder``), ``"norms"`` (norm affines anywhere in the model), ``"norms-biases"`` (those and
    every bias), ``"decoder"`` (every parameter outside ``model.encoder``), ``"all"``, or explicit names.

    Args:
        model: a registered 3D model.
        params: one of ``PARAM_CHOICES`` or a list of names as ``model.named_parameters()`` spells them.

    Raises ``ValueError`` naming the model and what was looked for when nothing qualifies, and for
    unknown names (with the closest valid names).
    """
    model_name = type(model).__name__
    if model_kind(model) == "biplanar":
        raise ValueError(
            f"{model_name} is a biplanar model (two X-ray views): test-time adaptation works on 3D volume models only"
        )
    if isinstance(params, str):
        if params not in PARAM_CHOICES:
            raise ValueError(f"params must be one of {PARAM_CHOICES} or a list of parameter names, got {params!r}")
        encoder = getattr(model, "encoder", None)
        if params in ("encoder-norms", "decoder") and not isinstance(encoder, nn.Module):
            raise ValueError(
                f"{model_name} has no .encoder module: params={params!r} needs one "
                f"(pass params='norms' or a list of parameter names)"
            )
        if params == "encoder-norms":
            chosen = norm_affine_parameters(encoder, "encoder")
            where = "under model.encoder"
        elif params == "norms":
            chosen = norm_affine_parameters(model)
            where = "in the model"
        elif params == "norms-biases":
            chosen = norm_affine_parameters(model)
            seen = {id(p) for _, p in chosen}
            chosen += [(n, p) for n, p in model.named_parameters() if n.endswith(".bias") and id(p) not in seen]
            where = "in the model"
        elif params == "decoder":
            inside = {id(p) for p in encoder.parameters()}
            chosen = [(n, p) for n, p in model.named_parameters() if id(p) not in inside]
            where = "outside model.encoder"
        else:
            chosen = list(model.named_parameters())
            where = "in the model"
        if not chosen:
            raise ValueError(
                f"{model_name} has no adaptable parameters: found no affine weight/bias of a "
                f"LayerNorm, GroupNorm or affine InstanceNorm {where}; "
                f"pass params=[names] to choose others"
            )
        return chosen
    names = list(params)
    if not names:
        raise ValueError(f"params is an empty list: name at least one parameter of {model_name}")
    available = dict(model.named_parameters())
    unknown = [n for n in names if n not in available]
    if unknown:
        hints = [
            f"{n!r} (closest: {', '.join(difflib.get_close_matches(n, available, n=3)) or 'none'})" for n in unknown
        ]
        raise ValueError(f"{model_name} has no parameter(s) {'; '.join(hints)}")
    if len(set(names)) != len(names):
        raise ValueError(f"params lists a parameter twice: {names}")
    return [(n, available[n]) for n in names]


# ---------------------------------------------------------------------------------------------
# entropy
# ---------------------------------------------------------------------------------------------


def normalized_entropy(logits: torch.Tensor, sigmoid: bool = False) -> torch.Tensor:
    """Voxel entropy in [0, 1] of logits ``(B, K, D, H, W)`` -> ``(B, D, H, W)`` (computed in float32).

    Softmax (``sigmoid=False``): ``-sum_k p_k ln p_k / ln K``.  Regions (``sigmoid=True``): the
    binary entropy of each channel, ``/ ln 2``, averaged over the K channels.
    """
    x = logits.float()
    if sigmoid:
        p = torch.sigmoid(x)
        h = -(p * F.logsigmoid(x) + (1 - p) * F.logsigmoid(-x))
        return h.mean(1) / math.log(2.0)
    k = x.shape[1]
    if k < 2:
        raise ValueError(f"softmax entropy needs at least 2 classes, got logits of shape {tuple(x.shape)}")
    logp = F.log_softmax(x, 1)
    return -(logp.exp() * logp).sum(1) / math.log(k)


# ---------------------------------------------------------------------------------------------
# the adapter
# ---------------------------------------------------------------------------------------------


@dataclass
class AdaptationReport:
    """What one :meth:`EntropyAdapter.adapt` call did: the loss (normalised entropy) before each step,
    the windows used per step, the number of adapted scalars, and the wall time."""

    method: str
    steps: int
    windows: int
    total_windows: int
    losses: list[float] = field(default_factory=list)
    num_parameters: int = 0
    seconds: float = 0.0
    reset: bool = False

    def as_dict(self) -> dict:
        """JSON-serialisable form."""
        return {
            "method": self.method,
            "steps": self.steps,
            "windows_per_step": self.windows,
            "total_windows": self.total_windows,
            "losses": [round(v, 6) for v in self.losses],
            "num_parameters": self.num_parameters,
            "seconds": round(self.seconds, 3),
            "reset_before": self.reset,
        }


class EntropyAdapter(abc.ABC):
    """Base class of entropy-minimising test-time adapters (TENT, ETTA); subclasses define :meth:`_step`.

    Args:
        model: a registered 3D model (``(B, in, D, H, W) -> (B, K, D, H, W)`` in eval mode).
        steps: optimisation steps per :meth:`adapt` call.
        lr: learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``).
        params: ``"encoder-norms"`` (default), ``"norms"`` or a list of parameter names.
        episodic: reset the model and optimizer before every :meth:`adapt` (one volume at a time);
            ``False`` keeps adapting across volumes (continual).
        roi_size, overlap, amp, sigmoid: window size, window overlap, precision policy and region
            (sigmoid) output; ``None`` means "the predictor's" when used through
            :class:`~medswin.inference.Predictor` (defaults otherwise: overlap 0.5, ``amp="auto"``,
            softmax; ``roi_size`` is then required).
        sw_batch_size: windows per forward/backward pass (the memory bound).
        max_patches: at most this many windows per step (a seeded random subset); ``None`` = all.
        seed: seed of the window subsets (each :meth:`adapt` call draws from the same seed).
        progress: show a tqdm bar over the windows of each step.
    """

    method = "entropy"

    def __init__(
        self,
        model: nn.Module,
        *,
        steps: int,
        lr: float,
        optimizer: str,
        momentum: float = 0.9,
        params: str | Sequence[str] = "encoder-norms",
        episodic: bool = True,
        roi_size: Sequence[int] | None = None,
        overlap: float | None = None,
        sw_batch_size: int = 1,
        amp: str | None = None,
        sigmoid: bool | None = None,
        max_patches: int | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not float(lr) > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if max_patches is not None and int(max_patches) < 1:
            raise ValueError(f"max_patches must be >= 1 (or None for every window), got {max_patches}")
        if int(sw_batch_size) < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
        if overlap is not None and not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        self.model = model
        self.params = select_parameters(model, params)
        self.steps, self.lr, self.episodic = int(steps), float(lr), bool(episodic)
        self.seed, self.progress = int(seed), progress
        self.roi_size = tuple(int(r) for r in roi_size) if roi_size is not None else None
        self.overlap, self.amp, self.sigmoid = overlap, amp, sigmoid
        self.sw_batch_size = int(sw_batch_size)
        self.max_patches = int(max_patches) if max_patches is not None else None
        tensors = [p for _, p in self.params]
        if optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(tensors, lr=self.lr)
        else:
            self.optimizer = torch.optim.SGD(tensors, lr=self.lr, momentum=momentum)
        self._scaler: torch.amp.GradScaler | None = None
        self._initial_values = [p.detach().clone() for p in tensors]
        self._initial_optimizer = copy.deepcopy(self.optimizer.state_dict())
        self.last_report: AdaptationReport | None = None

    # ------------------------------------------------------------------ settings
    @property
    def parameter_names(self) -> list[str]:
        """Names (as in ``model.named_parameters()``) of the adapted parameters."""
        return [n for n, _ in self.params]

    def bind(self, roi_size: Sequence[int], overlap: float, amp: str, sigmoid: bool) -> None:
        """Fill the settings left ``None`` with the predictor's (an explicit setting wins)."""
        if self.roi_size is None:
            self.roi_size = tuple(int(r) for r in roi_size)
        if self.overlap is None:
            self.overlap = overlap
        if self.amp is None:
            self.amp = amp
        if self.sigmoid is None:
            self.sigmoid = sigmoid

    def _roi(self) -> tuple[int, ...]:
        if self.roi_size is None:
            raise ValueError(
                f"{type(self).__name__}: give roi_size= (or use the adapter through a Predictor, which sets it)"
            )
        return self.roi_size

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Restore the adapted parameters and the optimizer (and gradient scaler) state exactly as at construction."""
        with torch.no_grad():
            for (_, p), value in zip(self.params, self._initial_values):
                p.copy_(value)
                p.grad = None
        self.optimizer.load_state_dict(copy.deepcopy(self._initial_optimizer))
        self._scaler = None

    @contextmanager
    def _adapting(self) -> Iterator[None]:
        """Eval mode, gradients on for the chosen parameters only; the model's flags restored afterwards."""
        chosen = {id(p) for _, p in self.params}
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        was_training = self.model.training
        self.model.eval()
        try:
            for p, _ in flags:
                p.requires_grad_(id(p) in chosen)
            with torch.inference_mode(False), torch.enable_grad():
                yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
            for _, p in self.params:
                p.grad = None
            self.model.train(was_training)

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _runner(self) -> ModelRunner:
        """The model as the predictor runs it (same precision policy); gradients flow when enabled."""
        return ModelRunner(self.model, amp=self.amp or "auto")

    def _plan(self, image: torch.Tensor) -> WindowPlan:
        return window_plan(image.shape[2:], self._roi(), 0.5 if self.overlap is None else self.overlap)

    def _grad_scaler(self) -> torch.amp.GradScaler:
        if self._scaler is None:
            device = self._device()
            fp16 = resolve_amp(self.amp or "auto", device) == torch.float16
            self._scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        return self._scaler

    # ------------------------------------------------------------------ adaptation
    def adapt(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> AdaptationReport:
        """Adapt the model to ``image`` ``(1, C, D, H, W)`` (preprocessed like the predictor's input).

        Episodic adapters first :meth:`reset`.  ``mask`` ``(1, 1, D, H, W)`` (bool) restricts the
        loss to the voxels that count (e.g. inside the scan); default every voxel.  Returns the
        :class:`AdaptationReport` (also kept as ``last_report``); afterwards the model object holds
        the adapted parameters, so any prediction uses them.
        """
        if image.dim() != 5 or image.shape[0] != 1:
            raise ValueError(
                f"{type(self).__name__}.adapt expects one volume (1, C, D, H, W), got shape {tuple(image.shape)}"
            )
        if mask is not None and tuple(mask.shape) != (1, 1, *image.shape[2:]):
            raise ValueError(f"mask must have shape {(1, 1, *image.shape[2:])}, got {tuple(mask.shape)}")
        start = time.perf_counter()
        if self.episodic:
            self.reset()
        check_roi(self.model, self._roi())
        with torch.inference_mode(False):
            image = image.clone() if image.is_inference() else image
            mask = mask.clone() if mask is not None and mask.is_inference() else mask
        plan = self._plan(image)
        counted = torch.zeros((1, 1, *plan.padded_shape), dtype=torch.bool, device=image.device)
        inside = True if mask is None else mask.to(device=image.device, dtype=torch.bool)
        counted[(slice(None), slice(None), *plan.crop)] = inside
        if not counted.any():
            raise ValueError("the adaptation mask is empty: no voxel to adapt on")
        generator = torch.Generator().manual_seed(self.seed)
        report = AdaptationReport(
            self.method,
            self.steps,
            0,
            plan.num_windows,
            reset=self.episodic,
            num_parameters=sum(p.numel() for _, p in self.params),
        )
        with self._adapting():
            for _ in range(self.steps):
                loss, used = self._step(image, plan, counted, generator)
                report.losses.append(loss)
                report.windows = used
        report.seconds = time.perf_counter() - start
        log.info(
            "%s: %d step(s) on %d/%d windows, loss %s (%.1f s)",
            self.method,
            self.steps,
            report.windows,
            report.total_windows,
            " -> ".join(f"{v:.4f}" for v in report.losses),
            report.seconds,
        )
        self.last_report = report
        return report

    @abc.abstractmethod
    def _step(
        self, image: torch.Tensor, plan: WindowPlan, counted: torch.Tensor, generator: torch.Generator
    ) -> tuple[float, int]:
        """One optimisation step on ``image`` ``(1, C, D, H, W)`` with the windows of ``plan``; ``counted``
        ``(1, 1, *padded)`` marks the voxels of the loss.  Returns (loss before the step, windows used)."""

    def _choose(self, windows: list[tuple[slice, ...]], generator: torch.Generator) -> list[tuple[slice, ...]]:
        """At most ``max_patches`` windows: a seeded random subset (in scan order), or all of them."""
        if self.max_patches is None or len(windows) <= self.max_patches:
            return list(windows)
        pick = torch.randperm(len(windows), generator=generator)[: self.max_patches].sort().values.tolist()
        return [windows[i] for i in pick]

    def _optimizer_step(self) -> None:
        scaler = self._grad_scaler()
        scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def _forward(self, runner: ModelRunner, padded: torch.Tensor, windows: Sequence[tuple[slice, ...]]) -> torch.Tensor:
        """Logits ``(len(windows), K, *roi)`` (float32) of a group of windows of the padded image."""
        return runner(torch.cat([padded[(slice(None), slice(None), *sl)] for sl in windows])).float()

    def _batches(self, windows: Sequence[tuple[slice, ...]], desc: str) -> Iterator[list[tuple[slice, ...]]]:
        from tqdm import tqdm

        groups = [list(windows[i : i + self.sw_batch_size]) for i in range(0, len(windows), self.sw_batch_size)]
        yield from tqdm(groups, desc=desc, leave=False, disable=not self.progress)

    # ------------------------------------------------------------------ prediction
    def blended_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Whole-volume logits ``(1, K, D, H, W)`` with the current parameters: the sliding-window engine's
        Gaussian blend, as the predictor computes it (no gradients; an ordinary tensor)."""
        engine = SlidingWindow(self._roi(), 0.5 if self.overlap is None else self.overlap, self.sw_batch_size)
        was_training = self.model.training
        try:
            logits = engine.logits(self._runner(), image)
        finally:
            self.model.train(was_training)
        with torch.inference_mode(False):
            return logits.clone() if logits.is_inference() else logits

    def predict(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Adapt to ``image`` ``(1, C, D, H, W)``, then return its logits ``(1, K, D, H, W)`` predicted
        with the ADAPTED parameters (sliding windows, as the predictor does)."""
        self.adapt(image, mask)
        return self.blended_logits(image)
