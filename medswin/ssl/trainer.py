"""Self-supervised pretraining on the supervised trainer's loop (AMP, schedule, budget, resume, DDP, logs).

    from medswin.ssl import PretrainConfig, PretrainTrainer
    PretrainTrainer(PretrainConfig(model="swin_unetr_tiny", data="scans/", tasks=["simmim"])).fit()

:class:`PretrainTrainer` is a :class:`~medswin.training.Trainer` that changes only what differs:
the data (unlabeled volumes from any folder or datalist, random crops: :mod:`medswin.ssl.data`),
the network (an :class:`~medswin.ssl.tasks.SSLModel`: the encoder of the registered model plus the
task heads), the loss of a batch (the pretext losses; each task's mean goes to ``metrics.csv``),
validation (the pretext loss on fixed crops of the validation cases, when there are any) and what
is written at the end: ``encoder.pt`` (``{"encoder": {"encoder.<key>": tensor}, "model_name",
"tasks", ...}``, loadable with ``create_model(..., encoder_weights=...)``) and ``pretrain.json``
(the run's configuration, steps, time and final losses).  ``checkpoint_last.pt`` holds the whole
SSL model for ``--resume``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from .. import __version__
from ..data.spec import DatasetSpec
from ..distributed import mean_across_ranks
from ..checkpoint import save_checkpoint
from ..data.atomic import write_text_atomic
from ..training.config import ConfigError, TrainConfig
from ..training.trainer import Trainer, _Split
from .data import find_volumes, pretrain_transforms
from .tasks import SWIN_UNETR_TASKS, SSLModel, build_ssl_model, parse_tasks

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig(TrainConfig):
    """A :class:`~medswin.training.TrainConfig` for pretraining, with the task options.

    ``data`` is a folder (searched recursively) or a datalist JSON of unlabeled volumes;
    ``dataset`` (optional) names a spec whose normalisation and spacing are used; without one,
    ``ct`` selects the CT window [-1000, 1000] -> [0, 1], else z-score over nonzero voxels, and
    ``spacing`` (optional) resamples.  ``in_channels`` applies when no dataset is named.
    ``val_cases`` names cases held out for the pretext validation loss.  Defaults follow the Swin
    UNETR recipe (AdamW lr 4e-4, weight decay 0.1, 96^3 crops, two per volume).
    """

    dataset: str = ""
    roi_size: list[int] | None = field(default_factory=lambda: [96, 96, 96])
    lr: float = 4e-4
    weight_decay: float = 0.1
    n_folds: int = 1
    tasks: list[str] = field(default_factory=lambda: list(SWIN_UNETR_TASKS))
    awl: bool = False
    in_channels: int = 1
    ct: bool = False
    spacing: list[float] | None = None
    contrast_dim: int = 512
    temperature: float = 0.5
    mask_ratio: float = 0.6
    mask_cell: int = 16
    barlow_dims: list[int] = field(default_factory=lambda: [2048, 2048, 2048])
    barlow_lambda: float = 0.0051

    def validate(self) -> PretrainConfig:
        """:meth:`TrainConfig.validate` plus the task options; raises :class:`ConfigError`."""
        super().validate()
        try:
            self.tasks = parse_tasks(self.tasks)
        except ValueError as exc:
            raise ConfigError(f"config key 'tasks': {exc}") from None
        if self.in_channels < 1:
            raise ConfigError(f"config key 'in_channels' must be >= 1, got {self.in_channels}")
        if not 0 < self.mask_ratio < 1:
            raise ConfigError(f"config key 'mask_ratio' must be in (0, 1), got {self.mask_ratio}")
        if self.mask_cell < 1 or self.temperature <= 0:
            raise ConfigError("config keys 'mask_cell' and 'temperature' must be positive")
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise ConfigError(f"config key 'spacing' needs 3 positive values, got {self.spacing}")
        return self

    def ssl_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~medswin.ssl.tasks.SSLModel`."""
        return dict(
            awl=self.awl,
            contrast_dim=self.contrast_dim,
            temperature=self.temperature,
            mask_ratio=self.mask_ratio,
            mask_cell=self.mask_cell,
            barlow_dims=tuple(self.barlow_dims),
            barlow_lambda=self.barlow_lambda,
        )


def encoder_checkpoint(model: SSLModel, model_name: str, **info: Any) -> dict[str, Any]:
    """``encoder.pt`` contents: ``{"encoder": {"encoder.<key>": tensor}, "model_name", "in_channels", "tasks",
    "medswin_version", **info}`` (plain types and tensors: loads with ``torch.load(weights_only=True)``)."""
    return {
        "encoder": model.encoder_state_dict(),
        "model_name": model_name,
        "in_channels": model.in_channels,
        "tasks": list(model.tasks),
        "medswin_version": __version__,
        **info,
    }


class PretrainTrainer(Trainer):
    """Pretrain ``config.model``'s encoder on the unlabeled volumes of ``config.data`` (module docstring).

    ``cases`` overrides the discovered volumes (``{"train": [...], "val": [...]}`` of ``{"image": path}`` dicts).
    """

    monitor = ("val_loss", "min")
    config: PretrainConfig
    model: SSLModel

    def __init__(
        self,
        config: PretrainConfig,
        spec: DatasetSpec | None = None,
        cases: dict[str, list] | None = None,
        resume: bool | str | Path = False,
    ) -> None:
        self._task_sums: dict[str, float] = {}
        self._task_count = 0
        super().__init__(config, spec, cases, resume)

    # ------------------------------------------------------------------ the differences
    def _load_spec(self) -> DatasetSpec | None:  # type: ignore[override]
        from ..data.spec import get_dataset_spec

        return get_dataset_spec(self.config.dataset, self.config.datasets_files) if self.config.dataset else None

    def _default_roi(self) -> Sequence[int]:
        return (96, 96, 96)

    @property
    def in_channels(self) -> int:
        """Image channels: the dataset's when one is named, else ``config.in_channels``."""
        return self.spec.num_channels if self.spec is not None else self.config.in_channels

    def _split_cases(self) -> _Split:
        if not self.config.data:
            raise ValueError("no data: pass a folder or datalist JSON of volumes (--data)")
        sections = find_volumes(self.config.data)
        train, val = sections["training"], sections.get("validation", [])
        if self.config.val_cases:
            names = set(self.config.val_cases)
            val = val + [c for c in train if c["case"] in names]
            unknown = names - {c["case"] for c in val}
            if unknown:
                raise ValueError(f"val_cases {sorted(unknown)} are not volumes of {self.config.data}")
            train = [c for c in train if c["case"] not in names]
        if not train:
            raise ValueError(f"{self.config.data}: no volumes left for training")
        log.info("pretraining on %d volume(s), %d held out for the pretext validation loss", len(train), len(val))
        return _Split(train, val)

    def _build_model(self) -> SSLModel:
        self.biplanar = False
        config = self.config
        return build_ssl_model(
            config.model, self.in_channels, config.tasks, self.roi, config.model_kwargs, **config.ssl_options()
        )

    def _param_groups(self) -> list[dict[str, Any]]:
        fixed = {id(p) for p in self.model.no_weight_decay()}
        decay = [p for p in self.model.parameters() if id(p) not in fixed]
        return [{"params": decay}, {"params": self.model.no_weight_decay(), "weight_decay": 0.0}]

    def _build_pipelines(self) -> tuple[Any, Any]:
        c = self.config
        train = pretrain_transforms(self.roi, c.num_samples, self.spec, c.ct, c.spacing)
        return train, pretrain_transforms(self.roi, c.num_samples, self.spec, c.ct, c.spacing)

    def _wrap_ddp(self, model: torch.nn.Module) -> torch.nn.Module:
        # a task may leave encoder outputs unused (DS-TransUNet's shallower fusions): let DDP skip them
        if self.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # the Barlow Twins projector
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def batch_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The pretext losses of a batch of crops; each task's value is accumulated for ``metrics.csv``."""
        x = batch["image"].to(self.device)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.config.data}: the volumes have {x.shape[1]} channel(s), the model takes "
                f"{self.in_channels} (set in_channels / --in-channels, or name the --dataset)"
            )
        losses = self.net(x)
        for task in self.model.tasks:
            self._task_sums[task] = self._task_sums.get(task, 0.0) + float(losses[task].detach())
        self._task_count += 1
        return losses["loss"]

    def _epoch_metrics(self) -> dict[str, float]:
        out = {
            f"loss_{t}": mean_across_ranks(v / max(1, self._task_count), self.dist) for t, v in self._task_sums.items()
        }
        if self.model.awl is not None:
            out.update({f"weight_{t}": w for t, w in zip(self.model.tasks, self.model.awl.weights())})
        self._task_sums, self._task_count = {}, 0
        return out

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean pretext loss over fixed crops (and fixed augmentations) of the validation volumes."""
        self.model.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        total, n = 0.0, 0
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.config.seed)
            self.val_pipeline.set_random_state(seed=self.config.seed)
            for case in self.val_cases:
                crops = self.val_pipeline(case)
                x = torch.stack([c["image"] for c in crops]).to(self.device)
                with self._autocast():
                    total += float(self.model(x)["loss"])
                n += 1
        return {"val_loss": total / max(1, n)}

    def _run_info(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict() if self.spec is not None else None,
            "model_name": self.config.model,
            "model_kwargs": dict(self.config.model_kwargs),
            "in_channels": self.in_channels,
            "tasks": list(self.model.tasks),
            "roi_size": list(self.roi),
            "medswin_version": __version__,
        }

    # ------------------------------------------------------------------ outputs
    def encoder_checkpoint(self) -> dict[str, Any]:
        """The encoder-only checkpoint of the current weights (see :func:`encoder_checkpoint`)."""
        return encoder_checkpoint(
            self.model,
            self.config.model,
            model_kwargs=self.config.model_kwargs,
            steps=self.step,
            roi_size=list(self.roi),
        )

    def fit(self, resume: bool | str | Path = False) -> dict[str, Any]:
        """Pretrain, then write ``encoder.pt`` and ``pretrain.json`` (rank 0); returns the summary."""
        summary = super().fit(resume)
        summary["encoder"] = str(self.out / "encoder.pt")
        if math.isinf(summary["best_metric"]):  # no validation volumes: no best pretext loss
            summary["best_metric"] = None
        if self.dist.is_main:
            save_checkpoint(self.encoder_checkpoint(), self.out / "encoder.pt")
            last = self.history[-1] if self.history else {}
            report = {
                "model": self.config.model,
                "tasks": list(self.model.tasks),
                "awl": self.config.awl,
                "train_volumes": [c["case"] for c in self.train_cases],
                "val_volumes": [c["case"] for c in self.val_cases],
                "steps": self.step,
                "epochs": self.epochs,
                "seconds": summary["seconds"],
                "final": {
                    k: v for k, v in last.items() if k.startswith(("train_loss", "loss_", "weight_", "val_loss"))
                },
                "best_val_loss": None if math.isinf(self.best_metric) else self.best_metric,
                "encoder": summary["encoder"],
                "config": self.config.to_dict(),
                "medswin_version": __version__,
            }
            write_text_atomic(self.out / "pretrain.json", json.dumps(report, indent=2))
            log.info("encoder weights: %s", self.out / "encoder.pt")
        return summary
