"""The supervised training loop shared by every 3D model in the registry.

    from medswin.training import Trainer, TrainConfig
    Trainer(TrainConfig(model="swin_unetr_tiny", dataset="mni-tissue", data="data/mni-tissue-2mm")).fit()

What one run does: MONAI transforms from the dataset spec (foreground-biased random patches),
DiceCE (softmax labels or sigmoid regions, deep supervision for dict outputs), AdamW, linear warm-up
then cosine decay, AMP (bf16 where the hardware has it, fp16 + GradScaler on CUDA), gradient
clipping, sliding-window validation Dice every ``val_every`` epochs, ``checkpoint_last.pt`` every
epoch and ``checkpoint_best.pt`` on improvement (atomic), exact resume, tqdm progress, and
``metrics.csv`` / TensorBoard events / ``curves.png`` in the run folder.  Under ``torchrun`` the
model is wrapped in DDP, each rank sees its share of the cases, and rank 0 alone writes.

The loop is shared: a subclass changes what it trains through the hooks (``_load_spec``,
``_split_cases``, ``_build_model``, ``_param_groups``, ``_build_pipelines``, ``_wrap_ddp``,
``batch_loss``, ``validate``, ``_epoch_metrics``, ``_run_info`` and ``monitor``), as
:class:`medswin.ssl.PretrainTrainer` does for self-supervised pretraining.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from monai.data import CacheDataset, DataLoader, Dataset
from monai.metrics import DiceMetric
from monai.utils import set_determinism
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from .. import __version__
from ..amp import resolve_amp
from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.atomic import write_text_atomic
from ..data.datalist import build_datalist, kfold_split, to_monai
from ..data.spec import DatasetSpec, get_dataset_spec
from ..data.transforms import (
    VIEW_KEYS,
    biplanar_train_transforms,
    biplanar_val_transforms,
    train_transforms,
    val_transforms,
)
from ..distributed import DistInfo, barrier, broadcast_int, init_distributed, mean_across_ranks
from ..inference.runner import ModelRunner
from ..inference.sliding_window import SlidingWindow
from ..models import check_roi, create_model, get_entry, model_kind
from .config import TrainConfig
from .losses import make_loss
from .metrics_log import MetricsLog
from .rng import capture_rng, restore_rng

log = logging.getLogger(__name__)


@dataclass
class _Split:
    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    why_no_validation: str = ""


# consecutive optimiser steps with non-finite gradients that are skipped before a run is declared diverged
MAX_SKIPPED_STEPS = 10


class TrainingDivergedError(ValueError):
    """The gradients stayed non-finite (NaN / inf) for ``MAX_SKIPPED_STEPS`` steps in a row."""


_DEFAULT_DESCRIPTIONS = {
    "target_spacing": "each volume's own spacing (no resampling)",
    "normalization": "a per-channel z-score over all voxels",
    "roi_size": "the model's default patch size",
}


def split_cases(config: TrainConfig, spec: DatasetSpec) -> _Split:
    """Training and validation cases: the layout's validation section, ``val_cases``, or fold ``fold``."""
    sections = build_datalist(config.data, spec, config.layout)
    train = to_monai(sections.get("training", []))
    if not train:
        raise ValueError(f"{config.data}: no training cases")
    unlabelled = [c["case"] for c in train if "label" not in c]
    if unlabelled:
        raise ValueError(f"{config.data}: training case(s) without a label file: {', '.join(unlabelled[:5])}")
    if config.val_cases is not None:
        names = set(config.val_cases)
        val = [c for c in train if c["case"] in names]
        unknown = names - {c["case"] for c in val}
        if unknown:
            raise ValueError(f"val_cases {sorted(unknown)} are not training cases of {config.data}")
        return _Split([c for c in train if c["case"] not in names], val)
    if sections.get("validation"):
        return _Split(train, to_monai(sections["validation"]))
    if len(train) >= config.n_folds > 1:
        tr, va = kfold_split(train, config.n_folds, config.fold, config.seed)
        return _Split(tr, va)
    why = (
        f"{len(train)} training case(s) and no validation section: a {config.n_folds}-fold split needs at least "
        f"{config.n_folds} cases (add cases, a validation section in the datalist, or val_cases)"
        if config.n_folds > 1
        else "n_folds is 1 and neither a validation section nor val_cases is given"
    )
    return _Split(train, [], why)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine from 1 to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainer:
    """Train ``config.model`` on ``config.dataset`` found in ``config.data`` (see the module docstring).

    ``cases`` overrides the datalist (``{"train": [...], "val": [...]}`` of MONAI dicts), used by
    tests and by callers that build their own lists.
    """

    #: the validation metric that selects ``checkpoint_best.pt``, and whether higher ("max") or lower ("min") is better
    monitor: tuple[str, str] = ("dice_mean", "max")

    def __init__(
        self,
        config: TrainConfig,
        spec: DatasetSpec | None = None,
        cases: dict[str, list] | None = None,
        resume: bool | str | Path = False,
    ) -> None:
        self.config = config.validate()
        self.out = Path(config.out)
        self.resume_from = self._resume_path(resume)
        self.spec = spec or self._load_spec()
        self.dist: DistInfo = init_distributed(config.device)
        self.device = self.dist.device
        self.roi = tuple(config.roi_size or self._default_roi())
        split = _Split(cases["train"], cases.get("val", [])) if cases is not None else self._split_cases()
        self.train_cases, self.val_cases = split.train, split.val
        self.why_no_validation = split.why_no_validation or "no validation cases were given"
        set_determinism(config.seed + self.dist.rank)
        self.model = self._build_model().to(self.device)
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=config.lr, weight_decay=config.weight_decay)
        self.amp_dtype = resolve_amp(config.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.train_pipeline, self.val_pipeline = self._build_pipelines()
        self.train_pipeline.set_random_state(seed=config.seed + self.dist.rank)
        dataset_cls = CacheDataset if config.cache else Dataset
        kwargs = {"cache_rate": 1.0, "num_workers": config.num_workers, "progress": False} if config.cache else {}
        self.train_ds = dataset_cls(self.train_cases, self.train_pipeline, **kwargs)
        self.sampler = DistributedSampler(self.train_ds, shuffle=True, seed=config.seed) if self.dist.enabled else None
        self.loader = DataLoader(
            self.train_ds,
            batch_size=config.batch_size,
            shuffle=self.sampler is None,
            sampler=self.sampler,
            num_workers=config.num_workers,
        )
        self.iterations_per_epoch = config.iterations_per_epoch or len(self.loader)
        self.epochs = config.epochs
        self.total_steps = self.epochs * self.iterations_per_epoch
        warmup = config.warmup_epochs * self.iterations_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, min(warmup, max(1, self.total_steps // 2)), self.total_steps)
        )
        self.net: torch.nn.Module = self._wrap_ddp(self.model) if self.dist.enabled else self.model
        self.start_epoch, self.step, self.best_epoch = 0, 0, -1
        self.skipped_steps, self._skipped_in_a_row = 0, 0
        self.best_metric = -1.0 if self.monitor[1] == "max" else math.inf
        self.history: list[dict[str, Any]] = []
        self.log = MetricsLog(self.out, enabled=self.dist.is_main)

    # ------------------------------------------------------------------ what a subclass may change
    def _resume_path(self, resume: bool | str | Path) -> Path | None:
        """The checkpoint to resume from, checked before any data is read (``None``: a fresh run)."""
        if not resume:
            return None
        path = self.out / "checkpoint_last.pt" if resume is True else Path(resume)
        if not path.is_file():
            raise ValueError(
                f"--resume: no checkpoint at {path} (nothing to resume: drop --resume to start a new run in {self.out})"
            )
        return path

    def _load_spec(self) -> DatasetSpec:
        """The dataset spec named by the config (when the caller gives none); warns about the training keys
        the entry leaves to defaults."""
        if not self.config.dataset:
            raise ValueError("no dataset: pass --dataset NAME (see medswin data datasets; add yours with --datasets)")
        spec = get_dataset_spec(self.config.dataset, self.config.datasets_files)
        guessed = [k for k in spec.defaulted if not (k == "roi_size" and self.config.roi_size)]
        if guessed:
            log.warning(
                "dataset %r sets no %s: training uses %s",
                spec.name,
                ", ".join(guessed),
                "; ".join(_DEFAULT_DESCRIPTIONS[k] for k in guessed),
            )
        return spec

    def _default_roi(self) -> Sequence[int]:
        """Patch size when the config sets none: the dataset's, else the model's registry default."""
        return self.spec.roi_size or get_entry(self.config.model).default_roi

    def _split_cases(self) -> _Split:
        """Training and validation cases of the config's data."""
        return split_cases(self.config, self.spec)

    def _build_model(self) -> torch.nn.Module:
        """The network to optimise (here the registry model, checked against the dataset and roi) and ``loss_fn``."""
        config = self.config
        model = create_model(
            config.model,
            in_channels=self.spec.num_channels,
            out_channels=self.spec.out_channels,
            encoder_weights=config.encoder_weights,
            **config.model_kwargs,
        )
        self.biplanar = self.spec.task == "biplanar"
        if self.biplanar != (model_kind(config.model) == "biplanar"):
            kind = "two X-ray views (a biplanar dataset)" if self.biplanar else "3D volumes"
            raise ValueError(f"dataset {self.spec.name!r} provides {kind}, which model {config.model!r} does not take")
        if not self.biplanar:
            check_roi(model, self.roi)
        self.loss_fn = make_loss(self.spec, model, config.deep_supervision_weights)
        return model

    def _param_groups(self) -> Any:
        """Parameters (or AdamW parameter groups) to optimise."""
        return self.model.parameters()

    def _build_pipelines(self) -> tuple[Any, Any]:
        """``(train, val)`` MONAI pipelines."""
        if self.biplanar:
            return biplanar_train_transforms(self.spec), biplanar_val_transforms(self.spec)
        config = self.config
        return train_transforms(self.spec, self.roi, config.num_samples, *config.pos_neg), val_transforms(self.spec)

    def _wrap_ddp(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` wrapped for data-parallel training under torchrun."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def _epoch_metrics(self) -> dict[str, float]:
        """Extra per-epoch columns for ``metrics.csv`` (averaged over ranks by the subclass)."""
        return {}

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint(self) -> dict[str, Any]:
        return {**self._train_state(), **self._run_info()}

    def _train_state(self) -> dict[str, Any]:
        """Everything an exact resume needs: weights, optimiser, schedule, progress, random states, config."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.start_epoch,
            "step": self.step,
            "epochs": self.epochs,
            "total_steps": self.total_steps,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "rng": capture_rng([self.train_pipeline]),
            "config": self.config.to_dict(),
        }

    def _run_info(self) -> dict[str, Any]:
        """What prediction needs to rebuild the model: spec, model name and options, channels, roi, version."""
        return {
            "spec": self.spec.to_dict(),
            "model_name": self.config.model,
            "model_kwargs": dict(self.config.model_kwargs),
            "in_channels": self.spec.num_channels,
            "out_channels": self.spec.out_channels,
            "roi_size": list(self.roi),
            "medswin_version": __version__,
        }

    def resume(self, path: str | Path | None = None) -> None:
        """Continue from ``path`` (default: the run's ``checkpoint_last.pt``) exactly where it stopped."""
        ckpt = load_checkpoint(path or self.resume_from or self.out / "checkpoint_last.pt")
        if ckpt["model_name"] != self.config.model:
            raise ValueError(f"checkpoint is a {ckpt['model_name']} run, this run trains {self.config.model}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.epochs, self.total_steps = ckpt["epochs"], ckpt["total_steps"]
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt["scaler"] is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.best_metric, self.best_epoch = ckpt["best_metric"], ckpt["best_epoch"]
        self.history = list(ckpt["history"])
        restore_rng(ckpt["rng"], [self.train_pipeline])
        log.info("resumed from epoch %d (step %d)", self.start_epoch, self.step)

    # ------------------------------------------------------------------ steps
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def batch_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of one batch (called in training mode under autocast)."""
        inputs = [batch[k].to(self.device) for k in (VIEW_KEYS if self.biplanar else ("image",))]
        label = batch["label"].to(self.device)
        out = self.net(*inputs)
        out = {k: v.float() for k, v in out.items()} if isinstance(out, dict) else out.float()
        return self.loss_fn(out, label)

    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimiser step on a batch; returns the (local) loss."""
        self.net.train()
        with self._autocast():
            loss = self.batch_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        # the norm is needed anyway to clip; without clipping, an infinite bound leaves the gradients as they are
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip or math.inf)
        if self.scaler is not None:  # fp16: the scaler skips non-finite steps and lowers its scale itself
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif torch.isfinite(norm):
            self.optimizer.step()
            self._skipped_in_a_row = 0
        else:
            self._skip_step(float(loss.detach()))
        self.scheduler.step()
        self.step += 1
        return float(loss.detach())

    def _skip_step(self, loss: float) -> None:
        """Leave the weights as they are after a step whose gradients are not finite (one NaN would make every
        weight NaN); raise :class:`TrainingDivergedError` after ``MAX_SKIPPED_STEPS`` of them in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self._skipped_in_a_row += 1
        log.warning("step %d: non-finite gradients (loss %.4g): step skipped, weights unchanged", self.step + 1, loss)
        if self._skipped_in_a_row >= MAX_SKIPPED_STEPS:
            raise TrainingDivergedError(
                f"training diverged: {MAX_SKIPPED_STEPS} steps in a row with non-finite gradients (up to step "
                f"{self.step + 1}, loss {loss:.4g}); lower the learning rate (lr {self.config.lr:g}) or use --amp fp32"
            )

    @property
    def val_engine(self) -> SlidingWindow:
        """Validation's sliding windows: the predictor's engine (Gaussian blending, ``val_overlap``)."""
        return SlidingWindow(self.roi, self.config.val_overlap, self.config.sw_batch_size)

    @property
    def val_runner(self) -> ModelRunner:
        """The model as validation runs it: eval mode, the run's precision policy."""
        return ModelRunner(self.model, amp=self.config.amp)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Sliding-window Dice per output class on the validation cases (rank 0 computes, all receive nothing)."""
        self.model.eval()
        regions = bool(self.spec.regions)
        metric = DiceMetric(include_background=regions, reduction="mean_batch", ignore_empty=False)
        for case in self.val_cases:
            data = self.val_pipeline(case)
            if self.biplanar:  # whole views in, whole volume out
                with self._autocast():
                    logits = self.model(*(data[k].unsqueeze(0).to(self.device) for k in VIEW_KEYS)).float()
                image = None
            else:
                image = data["image"].unsqueeze(0).to(self.device)
                logits = self.val_engine.logits(self.val_runner, image)
            if image is not None and self.spec.uses_nonzero_mask:  # as the predictor: background outside the scan
                outside = (image == 0).all(1, keepdim=True)
                logits = logits.masked_fill(outside, -1e4)
                if not regions:
                    logits[:, :1] = logits[:, :1].masked_fill(outside, 1e4)
            label = data["label"].unsqueeze(0).to(self.device)
            if regions:
                pred = (torch.sigmoid(logits) > 0.5).float()
                target = label.float()
            else:
                n = self.spec.out_channels
                pred = torch.nn.functional.one_hot(logits.argmax(1), n).movedim(-1, 1).float()
                target = torch.nn.functional.one_hot(label[:, 0].long(), n).movedim(-1, 1).float()
            metric(pred, target)
        values = metric.aggregate().cpu().tolist()
        names = self.spec.output_names if regions else self.spec.output_names[1:]
        result = {f"dice_{n}": float(v) for n, v in zip(names, values)}
        result["dice_mean"] = float(sum(values) / len(values))
        return result

    # ------------------------------------------------------------------ the loop
    def _epoch_batches(self, epoch: int):
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        it = iter(self.loader)
        for _ in range(self.iterations_per_epoch):
            try:
                yield next(it)
            except StopIteration:
                it = iter(self.loader)
                yield next(it)

    def _calibrate(self, seconds_per_step: float, elapsed: float) -> None:
        """Fit the number of epochs to the time budget, at the end of the first epoch(s) that hold
        ``calibration_steps`` timed steps (epoch overheads included in the step time)."""
        budget = self.config.budget_minutes * 60.0
        remaining_steps = max(0, int((budget - elapsed) / max(seconds_per_step, 1e-6)))
        epochs = max(1, min(self.config.epochs, (self.step + remaining_steps) // self.iterations_per_epoch))
        epochs = broadcast_int(epochs, self.dist)
        if epochs != self.epochs:
            log.info(
                "time budget %.1f min at %.2f s/step: %d epochs of %d steps",
                self.config.budget_minutes,
                seconds_per_step,
                epochs,
                self.iterations_per_epoch,
            )
        self.epochs, self.total_steps = epochs, epochs * self.iterations_per_epoch

    def fit(self, resume: bool | str | Path = False) -> dict[str, Any]:
        """Train; returns the summary (epochs, steps, best metric, last validation, run folder).

        ``resume`` (or the constructor's): continue from the run's ``checkpoint_last.pt`` (``True``) or a
        given checkpoint."""
        if resume or self.resume_from:
            self.resume(self._resume_path(resume) if resume else self.resume_from)
        if self.dist.is_main:
            write_text_atomic(self.out / "config.yaml", yaml.safe_dump(self.config.to_dict(), sort_keys=False))
            if self.config.val_every and not self.val_cases:
                log.warning("validation skipped: %s", self.why_no_validation)
        self.log.open(purge_step=self.start_epoch)
        t_start = time.perf_counter()
        first_step_done: tuple[float, int] | None = None
        calibrate = self.config.budget_minutes is not None and self.start_epoch == 0
        last_val: dict[str, float] = {}
        epoch = self.start_epoch
        while epoch < self.epochs:
            losses = []
            bar = tqdm(
                self._epoch_batches(epoch),
                total=self.iterations_per_epoch,
                disable=not self.dist.is_main,
                desc=f"epoch {epoch + 1}/{self.epochs}",
                leave=False,
            )
            for batch in bar:
                losses.append(self.train_step(batch))
                if first_step_done is None:
                    first_step_done = (time.perf_counter(), self.step)  # the first step pays warm-up costs
                bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
            epoch += 1
            self.start_epoch = epoch
            row: dict[str, Any] = {
                "epoch": epoch,
                "step": self.step,
                "train_loss": mean_across_ranks(sum(losses) / len(losses), self.dist),
                "lr": self.scheduler.get_last_lr()[0],
                "seconds": round(time.perf_counter() - t_start, 2),
            }
            row.update(self._epoch_metrics())
            due = self.config.val_every and epoch % self.config.val_every == 0
            if self.val_cases and (due or epoch == self.epochs):
                if self.dist.is_main:
                    last_val = self.validate()
                    row.update(last_val)
                barrier(self.dist)
            self.history.append(row)
            key, mode = self.monitor
            improved = key in row and (row[key] > self.best_metric if mode == "max" else row[key] < self.best_metric)
            if improved:
                self.best_metric, self.best_epoch = row[key], epoch
            if self.dist.is_main:
                ckpt = self._checkpoint()
                save_checkpoint(ckpt, self.out / "checkpoint_last.pt")
                if improved or not self.val_cases:
                    save_checkpoint(ckpt, self.out / "checkpoint_best.pt")
                self.log.write(self.history, row)
                log.info(
                    "epoch %d: loss %.4f%s",
                    epoch,
                    row["train_loss"],
                    f", validation {key} {row[key]:.4f}" if key in row else "",
                )
            barrier(self.dist)
            over = (
                self.config.budget_minutes is not None
                and time.perf_counter() - t_start > 1.1 * 60 * self.config.budget_minutes
            )
            if over and epoch < self.epochs:  # the machine slowed down after calibration: the budget is a bound
                log.warning(
                    "time budget of %.1f min spent after %d of %d epochs: stopping",
                    self.config.budget_minutes,
                    epoch,
                    self.epochs,
                )
                self.epochs = epoch
            if (
                calibrate
                and first_step_done is not None
                and self.step - first_step_done[1] >= self.config.calibration_steps
            ):
                # wall time per step including data loading, checkpoints and logging of whole epochs
                per_step = (time.perf_counter() - first_step_done[0]) / (self.step - first_step_done[1])
                self._calibrate(per_step, time.perf_counter() - t_start)
                calibrate = False
        self.log.close(self.history)
        return {
            "epochs": self.epochs,
            "steps": self.step,
            "skipped_steps": self.skipped_steps,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "last_validation": last_val,
            "out": str(self.out),
            "seconds": round(time.perf_counter() - t_start, 1),
        }
