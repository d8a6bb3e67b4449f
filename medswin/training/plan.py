"""``medswin data plan``: a training configuration from a dataset fingerprint, for any registered 3D model.

The rules (README "Plan your dataset" sets them beside nnU-Net's):

* target spacing: the median spacing per axis; when the data are anisotropic (largest / smallest median
  spacing > 3) the coarse axis takes the 10th percentile of its spacings instead (nnU-Net's rule), so that
  the few finely sampled cases are not thrown away;
* roi: its aspect follows the median image shape in voxels at the target spacing, each side a multiple of
  the model's size divisor and at most the median shape (rounded up to the divisor), as large as fits
  ``memory_gb`` at 2 patches per step under the precision ``auto`` chooses -- MEASURED by a trial forward +
  backward + optimiser step of the model on the chosen device (peak RSS of a fresh process on a CPU, the peak
  allocation on CUDA), in a binary search over the candidate rois;
* normalisation: CT: clip to the foreground 0.5 / 99.5 percentiles, then z-score with the foreground mean /
  std (one linear map, the ``ct`` window with ``b_min`` / ``b_max``); MRI: per-channel z-score over the
  nonzero voxels;
* per-axis strides, for models that take them (CSwin UNet's ``stem_stride`` / ``merge_strides``): at each of
  the model's downsamplings an axis more than twice as coarse as the finest one keeps stride 1 until the
  others catch up (nnU-Net's rule for its pooling), so a 0.7 x 0.7 x 3.25 mm grid is pooled (2, 2, 1) twice
  and then isotropically;
* sliding windows: overlap 0.5; the number of epochs of 250 steps that fit ``budget_hours`` at the measured
  step time.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ANISOTROPY = 3.0
ITERATIONS_PER_EPOCH = 250
PATCHES_PER_STEP = 2
MAX_ROI_EDGE = 256


class PlanError(ValueError):
    """A dataset or budget no plan can satisfy (one line, naming the number that decided it)."""


def plan_spacing(spacings: Sequence[Sequence[float]]) -> tuple[list[float], str]:
    """``(target spacing, why)`` from the cases' spacings ``(N, 3)`` in mm.

    Args:
        spacings: one ``(x, y, z)`` spacing per case.
    """
    s = np.asarray(spacings, dtype=np.float64)
    median = np.median(s, axis=0)
    ratio = float(median.max() / median.min())
    if ratio <= ANISOTROPY:
        return [round(float(v), 4) for v in median], (
            f"median spacing per axis {fmt(median)} mm (largest / smallest {ratio:.2f} <= {ANISOTROPY}: isotropic rule)"
        )
    axis = int(np.argmax(median))
    target = median.copy()
    target[axis] = np.percentile(s[:, axis], 10)
    return [round(float(v), 4) for v in target], (
        f"median spacing {fmt(median)} mm is anisotropic (largest / smallest {ratio:.2f} > {ANISOTROPY}): axis {axis} "
        f"takes the 10th percentile of its spacings, {target[axis]:.4g} mm (nnU-Net's rule)"
    )


def plan_strides(spacing: Sequence[float], downsamplings: int = 5) -> list[list[int]]:
    """Per-axis strides of each downsampling: 2, except on an axis more than twice as coarse as the finest one.

    Args:
        spacing: the target spacing (mm per voxel).
        downsamplings: how many times the model halves its grid (stem + merges).
    """
    current = [float(s) for s in spacing]
    strides = []
    for _ in range(downsamplings):
        finest = min(current)
        step = [2 if s < 2 * finest else 1 for s in current]
        strides.append(step)
        current = [s * k for s, k in zip(current, step)]
    return strides


def fmt(values: Sequence[float]) -> str:
    """``"0.7 x 0.7 x 5"``."""
    return " x ".join(f"{float(v):.4g}" for v in values)


def median_shape(
    shapes: Sequence[Sequence[int]], spacings: Sequence[Sequence[float]], target: Sequence[float]
) -> list[int]:
    """The median image shape in voxels once resampled to ``target`` spacing.

    Args:
        shapes: ``(N, 3)`` shapes in voxels.
        spacings: ``(N, 3)`` spacings in mm.
        target: the target spacing.
    """
    extent = np.asarray(shapes, dtype=np.float64) * np.asarray(spacings, dtype=np.float64)
    return [int(round(v)) for v in np.median(extent / np.asarray(target, dtype=np.float64), axis=0)]


def roi_candidates(shape: Sequence[int], divisor: Sequence[int], min_sizes: Sequence[int]) -> list[list[int]]:
    """Candidate rois, largest first: the median ``shape``'s aspect scaled down, each side a multiple of its
    ``divisor``, between ``min_sizes`` and the shape rounded up to the divisor (and ``MAX_ROI_EDGE``).

    Args:
        shape: median shape in voxels at the target spacing.
        divisor: the model's size divisor per axis.
        min_sizes: the smallest side the model takes per axis.
    """
    cap = [min(MAX_ROI_EDGE, math.ceil(s / d) * d) for s, d in zip(shape, divisor)]
    cap = [max(c, m) for c, m in zip(cap, min_sizes)]
    longest = max(shape)
    seen: list[list[int]] = []
    for edge in range(max(cap), 0, -min(divisor)):
        roi = []
        for s, d, c, m in zip(shape, divisor, cap, min_sizes):
            side = int(round(edge * s / longest / d)) * d
            roi.append(min(c, max(m, side)))
        if roi not in seen:
            seen.append(roi)
    return sorted(seen, key=lambda r: -int(np.prod(r)))


def _current_rss() -> int:
    """Bytes resident now (``/proc/self/statm``; the peak so far where there is no ``/proc``)."""
    import os
    import resource

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _trial(args: tuple) -> dict[str, float]:
    """One training step in THIS (fresh) process: peak memory and seconds (see :func:`measure_step`)."""
    import resource
    import time

    import torch

    from ..data.spec import parse_spec
    from ..models import create_model
    from .losses import make_loss
    from .probe import training_step

    spec_entry, model_name, roi, batch, amp, device, model_kwargs = args
    torch.manual_seed(0)
    spec = parse_spec("plan", spec_entry)
    device = torch.device(device)
    base = _current_rss()  # the peak below is the high-water mark, measured from what the process holds now
    model = create_model(model_name, in_channels=spec.num_channels, out_channels=spec.out_channels, **model_kwargs)
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = make_loss(spec, model)
    image = torch.randn(batch, spec.num_channels, *roi, device=device)
    label = torch.randint(0, max(spec.labels.values()) + 1, (batch, 1, *roi), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(2):  # the first step allocates the optimiser state; the second is the steady one
        start = time.perf_counter()
        training_step(model, loss_fn, optimizer, image, label, amp)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"peak_gb": peak / 2**30, "seconds_per_step": times[-1]}


def measure_step(
    spec_entry: dict[str, Any],
    model: str,
    roi: Sequence[int],
    batch: int = PATCHES_PER_STEP,
    amp: str = "auto",
    device: str = "cpu",
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Peak memory (GiB) and seconds of one training step of ``model`` at ``roi`` x ``batch``, measured in a
    fresh process (so that the peak RSS is this step's alone; on CUDA the peak allocation).

    Args:
        spec_entry: the planned datasets.yaml entry (channels, labels: the loss and the head).
        model: a registered 3D model.
        roi: the patch size.
        batch: patches per step.
        amp: the precision policy.
        device: ``"cpu"`` or ``"cuda"``.
        model_kwargs: options for :func:`medswin.models.create_model` (e.g. planned strides).
    """
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        result = pool.apply(_trial, ((spec_entry, model, list(roi), batch, amp, device, model_kwargs or {}),))
    return {k: round(v, 3) for k, v in result.items()}


def fit_roi(candidates: list[list[int]], fits: Any, log_trial: Any = None) -> tuple[list[int], list[dict[str, Any]]]:
    """The largest candidate for which ``fits(roi)`` returns a trial dict with ``"fits": True`` (binary search:
    memory grows with the roi's voxels); ``(roi, trials)``.

    Raises :class:`PlanError` when even the smallest candidate does not fit.

    Args:
        candidates: rois, largest first.
        fits: ``roi -> {"fits": bool, ...}``.
        log_trial: called with each trial.
    """
    trials: list[dict[str, Any]] = []

    def trial(i: int) -> bool:
        result = {"roi": candidates[i], **fits(candidates[i])}
        trials.append(result)
        if log_trial is not None:
            log_trial(result)
        return bool(result["fits"])

    low, high = 0, len(candidates) - 1  # candidates[high] is the smallest
    if not trial(high):
        raise PlanError(
            f"the smallest roi {candidates[high]} needs {trials[-1]['peak_gb']:.2f} GB for a training step of "
            f"{PATCHES_PER_STEP} patches, more than the budget: raise --memory-gb or choose a smaller model"
        )
    best = high
    while low < best:  # invariant: candidates[best] fits; everything before low is known not to fit
        mid = (low + best) // 2
        if trial(mid):
            best = mid
        else:
            low = mid + 1
    return candidates[best], trials


def plan_normalization(fingerprint: dict[str, Any], modality: str) -> tuple[dict[str, Any], str]:
    """``(datasets.yaml normalization entry, why)``.

    Args:
        fingerprint: the dataset fingerprint.
        modality: ``"CT"`` or ``"MRI"``.
    """
    if modality == "CT":
        stats = [c["channels"][0] for c in fingerprint["cases"]]
        low = float(np.median([s["p0.5"] for s in stats]))
        high = float(np.median([s["p99.5"] for s in stats]))
        mean = float(np.mean([s["mean"] for s in stats]))
        std = float(np.sqrt(np.mean([s["std"] ** 2 for s in stats])))
        norm = {
            "type": "ct",
            "a_min": round(low, 2),
            "a_max": round(high, 2),
            "b_min": round((low - mean) / std, 4),
            "b_max": round((high - mean) / std, 4),
            "clip": True,
        }
        return norm, (
            f"CT: clip to the foreground 0.5 / 99.5 percentiles [{low:.1f}, {high:.1f}] HU, then z-score with the "
            f"foreground mean {mean:.1f} / std {std:.1f}"
        )
    return {"type": "zscore", "nonzero": True, "channel_wise": True}, "MRI: per-channel z-score over the nonzero voxels"


def make_plan(
    fingerprint: dict[str, Any],
    name: str,
    model: str = "swin_unetr_tiny",
    memory_gb: float = 8.0,
    device: str = "cpu",
    budget_hours: float = 12.0,
    modality: str | None = None,
    measure: Any = None,
) -> dict[str, Any]:
    """The plan: the datasets.yaml entry, the train config and every decision with the number it came from.

    Args:
        fingerprint: :func:`medswin.data.fingerprint.fingerprint_dataset`'s result.
        name: the dataset entry's name.
        model: a registered 3D model.
        memory_gb: memory a training step may take.
        device: where the trial steps run (``"cpu"`` / ``"cuda"``).
        budget_hours: training time the epochs are fitted to.
        modality: ``"CT"`` / ``"MRI"`` (default: the fingerprint's guess).
        measure: ``(entry, model, roi, model_kwargs) -> {"peak_gb", "seconds_per_step"}`` (default
            :func:`measure_step`).
    """
    from ..models import get_entry, valid_kwargs

    cases = fingerprint["cases"]
    if not cases:
        raise PlanError(f"{fingerprint['root']}: no readable case to plan from ({len(fingerprint['failed'])} failed)")
    if get_entry(model).kind != "volume":
        raise PlanError(f"{model} is not a 3D volume model: data plan configures volume models")
    decisions: list[dict[str, Any]] = []

    def decide(key: str, value: Any, why: str) -> Any:
        decisions.append({"key": key, "value": value, "why": why})
        return value

    modality = decide(
        "modality",
        (modality or fingerprint["modality"]).upper(),
        "given" if modality else "guessed from the intensities (CT when most cases reach below -500, air in HU)",
    )
    spacings = [c["spacing"] for c in cases]
    shapes = [c["shape"] for c in cases]
    target, why = plan_spacing(spacings)
    decide("target_spacing", target, why)
    shape = median_shape(shapes, spacings, target)
    decide("median_shape", shape, "median image shape in voxels at the target spacing")
    normalization, why = plan_normalization(fingerprint, modality)
    decide("normalization", normalization, why)
    labels = fingerprint["labels"]
    root = Path(fingerprint["root"])
    channel_names = _channel_names(root, fingerprint["channels"], modality)
    entry: dict[str, Any] = {
        "description": f"planned by medswin data plan from {len(cases)} cases of {root}",
        "task": "segmentation",
        "channel_names": channel_names,
        "labels": labels,
        "file_ending": fingerprint.get("file_ending") or ".nii.gz",
        "layout": fingerprint["layout"],
        "target_spacing": target,
        "normalization": normalization,
    }
    model_kwargs: dict[str, Any] = {}
    if "merge_strides" in valid_kwargs(model) and "stem_stride" in valid_kwargs(model):
        strides = plan_strides(target)
        if any(s != [2, 2, 2] for s in strides):
            model_kwargs = {"stem_stride": strides[0], "merge_strides": strides[1:]}
            decide("model_kwargs", model_kwargs, f"per-axis strides for the target spacing {fmt(target)} mm")
    net = _meta_model(model, len(channel_names), model_kwargs)
    rule = getattr(net, "size_rule", None)
    divisor = getattr(rule, "divisor", None) or getattr(net, "size_divisor", 1)
    divisor = [int(d) for d in divisor] if isinstance(divisor, Sequence) else [int(divisor)] * 3
    candidates = [r for r in roi_candidates(shape, divisor, divisor) if _takes(net, r)]
    if not candidates:
        raise PlanError(f"no roi of the median shape {shape}'s aspect suits {model} (size divisor {divisor})")
    measure = measure or (lambda e, m, r, k: measure_step(e, m, r, device=device, model_kwargs=k))

    def fits(roi: list[int]) -> dict[str, Any]:
        result = measure(entry, model, roi, model_kwargs)
        return {**result, "fits": result["peak_gb"] <= memory_gb}

    roi, trials = fit_roi(
        candidates,
        fits,
        lambda t: log.info("trial roi %s: %.2f GB, %.2f s/step", t["roi"], t["peak_gb"], t["seconds_per_step"]),
    )
    chosen = next(t for t in trials if t["roi"] == roi)
    decide(
        "roi_size",
        roi,
        f"aspect of the median shape {shape}, multiples of {divisor}; the largest of {len(candidates)} candidates "
        f"whose measured training step ({PATCHES_PER_STEP} patches, amp auto, {device}) fits {memory_gb:g} GB: "
        f"{chosen['peak_gb']:.2f} GB, {chosen['seconds_per_step']:.2f} s/step ({len(trials)} trials)",
    )
    entry["roi_size"] = roi
    epochs = max(1, int(budget_hours * 3600 / (chosen["seconds_per_step"] * ITERATIONS_PER_EPOCH)))
    decide(
        "epochs",
        epochs,
        f"{budget_hours:g} h / ({chosen['seconds_per_step']:.2f} s/step x {ITERATIONS_PER_EPOCH} steps per epoch)",
    )
    decide("sliding_window", {"overlap": 0.5, "sw_batch_size": 4 if device == "cuda" else 1}, "overlap 0.5 (nnU-Net's)")
    train = {
        "model": model,
        "dataset": name,
        "data": str(root),
        "layout": fingerprint["layout"],
        "roi_size": roi,
        "batch_size": 1,
        "num_samples": PATCHES_PER_STEP,
        "epochs": epochs,
        "iterations_per_epoch": ITERATIONS_PER_EPOCH,
        "amp": "auto",
        "val_overlap": 0.5,
        "device": device,
        "out": f"runs/{name}",
    }
    if model_kwargs:
        train["model_kwargs"] = model_kwargs
    return {
        "name": name,
        "entry": entry,
        "train": train,
        "decisions": decisions,
        "trials": trials,
    }


def _meta_model(model: str, channels: int, model_kwargs: dict[str, Any]) -> Any:
    """``model`` built on the meta device (no weights): its size rule."""
    import torch

    from ..models import create_model

    with torch.device("meta"):
        return create_model(model, in_channels=channels, out_channels=2, **model_kwargs)


def _takes(net: Any, roi: Sequence[int]) -> bool:
    """Whether the model takes ``roi`` (its size rule: divisor, and a bottleneck InstanceNorm can normalise)."""
    from ..models import check_roi

    try:
        check_roi(net, roi)
    except ValueError:
        return False
    return True


def _channel_names(root: Path, channels: int, modality: str) -> list[str]:
    """``dataset.json``'s channel names (``channel_names`` or ``modality``), else ``CT`` / ``MRI_<i>``."""
    from ..data.datalist import read_json

    meta_file = root / "dataset.json"
    if meta_file.is_file():
        meta = read_json(meta_file, "dataset.json")
        names = meta.get("channel_names") or meta.get("modality")
        if isinstance(names, dict) and len(names) == channels:
            return [str(names[k]) for k in sorted(names, key=lambda k: int(k) if str(k).isdigit() else 0)]
    if channels == 1:
        return [modality]
    return [f"{modality}_{i}" for i in range(channels)]


def write_plan(plan: dict[str, Any], fingerprint: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``fingerprint.json``, ``datasets.yaml`` (entry ``plan["name"]``), ``train.yaml`` and ``plan.json``
    into ``out`` (atomically); returns the paths.

    Args:
        plan: :func:`make_plan`'s result.
        fingerprint: the fingerprint it came from.
        out: the plan folder.
    """
    import yaml

    from ..data.atomic import write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    datasets = out / "datasets.yaml"
    train = {**plan["train"], "datasets_files": [str(datasets.resolve())]}
    written = [
        write_text_atomic(out / "fingerprint.json", json.dumps(fingerprint, indent=2)),
        write_text_atomic(datasets, yaml.safe_dump({plan["name"]: plan["entry"]}, sort_keys=False)),
        write_text_atomic(out / "train.yaml", yaml.safe_dump(train, sort_keys=False)),
        write_text_atomic(
            out / "plan.json", json.dumps({k: plan[k] for k in ("name", "decisions", "trials")}, indent=2)
        ),
    ]
    return [Path(p) for p in written]


def explain(plan: dict[str, Any]) -> str:
    """Each decision on one line with the number it came from."""
    return "\n".join(f"{d['key']}: {json.dumps(d['value'])}\n    {d['why']}" for d in plan["decisions"])
