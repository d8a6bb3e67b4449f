"""Self-supervised pretraining tasks on any registered 3D model's ``.encoder``.

    from medswin.ssl import build_ssl_model
    ssl = build_ssl_model("swin_unetr_tiny", in_channels=1, tasks=["inpaint", "rotate", "contrast"])
    losses = ssl(crops)        # crops (B, 1, X, Y, Z) -> {"inpaint": ..., "rotate": ..., "contrast": ..., "loss": ...}

Tasks (any subset; :data:`TASKS`):

* ``inpaint``, ``rotate``, ``contrast`` -- the Swin UNETR recipe (Tang et al. 2022).  Two views
  ``x1 = rot(x)``, ``x2 = rot(x)`` (independent rot90 draws, labels ``k``), each cut out
  (:func:`~medswin.ssl.augment.cutout_batch`), go through the encoder together; on the bottleneck:
  rotation ``Linear(C, 4)`` + cross-entropy, contrastive ``Linear(C, 512)`` + NT-Xent (MONAI's
  ``ContrastiveLoss``, T = 0.5) between the two views, reconstruction
  (:class:`~medswin.ssl.heads.ReconstructionHead`) + L1 against the un-cut rotated views.
* ``simmim`` -- SimMIM in 3D (Xie et al. 2022): cells of ``mask_cell`` voxels masked at
  ``mask_ratio`` (0.6); masked tokens replaced by learned mask tokens after the patch
  embedding(s) (:class:`~medswin.ssl.masking.TokenMasker`); ``Conv1x1 + pixel shuffle`` head; L1
  on masked voxels only.
* ``barlow`` -- Barlow Twins (Zbontar et al. 2021): two augmented views, projector on the pooled
  bottleneck, cross-correlation loss with ``lambda = 0.0051`` (summed over ranks under DDP).

The total is the sum of the task losses (each weight 1, as upstream), or with ``awl=True`` the
automatic weighted loss with one learnable ``s_i`` per task (the CSwin UNet recipe).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from monai.losses import ContrastiveLoss
from torch import nn

from .augment import barlow_views, cutout_batch, rotate90
from .heads import BarlowProjector, ReconstructionHead, SimMIMHead, pool_bottleneck
from .losses import AutomaticWeightedLoss, barlow_twins_loss, simmim_loss
from .masking import TokenMasker, expand_mask, random_cell_mask

TASKS = ("inpaint", "rotate", "contrast", "simmim", "barlow")
SWIN_UNETR_TASKS = ("inpaint", "rotate", "contrast")


def parse_tasks(tasks: str | Iterable[str]) -> list[str]:
    """``"inpaint,rotate,contrast"`` or a list -> validated task names in :data:`TASKS` order (duplicates dropped)."""
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t and t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown pretraining task(s) {unknown}; choose from {', '.join(TASKS)}")
    if not names:
        raise ValueError(f"no pretraining task given; choose from {', '.join(TASKS)}")
    return [t for t in TASKS if t in names]


class SSLModel(nn.Module):
    """An encoder with the heads of the chosen pretext tasks; ``forward`` returns the losses.

    Args:
        encoder: a medswin 3D encoder (``out_channels``, ``reductions``, list of features out).
        in_channels: image channels (reconstruction targets).
        tasks: subset of :data:`TASKS`.
        awl: automatic weighted loss instead of a plain sum.
        contrast_dim / temperature: contrastive head size (512) and NT-Xent temperature (0.5).
        mask_ratio / mask_cell: SimMIM mask ratio (0.6) and cell size in voxels (16).
        barlow_dims / barlow_lambda: projector sizes and the off-diagonal weight (0.0051).

    ``forward(x)`` with crops ``(B, in_channels, X, Y, Z)`` returns ``{task: loss, ..., "loss": total}``
    (float32 scalars).  State-dict keys of the encoder keep the ``encoder.`` prefix of the model
    it came from, so ``{k: v for k, v in ssl.state_dict().items() if k.startswith("encoder.")}``
    loads into that model.
    """

    def __init__(
        self,
        encoder: nn.Module,
        in_channels: int,
        tasks: Sequence[str] = SWIN_UNETR_TASKS,
        awl: bool = False,
        contrast_dim: int = 512,
        temperature: float = 0.5,
        mask_ratio: float = 0.6,
        mask_cell: int = 16,
        barlow_dims: Sequence[int] = (2048, 2048, 2048),
        barlow_lambda: float = 0.0051,
    ) -> None:
        super().__init__()
        self.tasks = parse_tasks(list(tasks))
        self.encoder = encoder
        self.in_channels = in_channels
        dim, reduction = int(encoder.out_channels[-1]), encoder.reductions[-1]
        if "rotate" in self.tasks:
            self.rotation_head = nn.Linear(dim, 4)
        if "contrast" in self.tasks:
            self.contrast_head = nn.Linear(dim, contrast_dim)
            self.contrast_loss = ContrastiveLoss(temperature=temperature)
        if "inpaint" in self.tasks:
            self.reconstruction_head = ReconstructionHead(dim, in_channels, reduction)
        if "simmim" in self.tasks:
            self.masker = TokenMasker(encoder)
            self.simmim_head = SimMIMHead(dim, in_channels, reduction)
            self.mask_ratio, self.mask_cell = mask_ratio, mask_cell
            random_cell_mask(1, (mask_cell,) * 3, mask_cell, mask_ratio)  # validate the ratio up front
        if "barlow" in self.tasks:
            self.projector = BarlowProjector(dim, barlow_dims)
            self.barlow_lambda = barlow_lambda
        self.awl = AutomaticWeightedLoss(len(self.tasks)) if awl else None

    def no_weight_decay(self) -> list[nn.Parameter]:
        """Parameters that AdamW should not decay: the AWL ``s_i`` and SimMIM's mask tokens."""
        params = list(self.awl.parameters()) if self.awl is not None else []
        if "simmim" in self.tasks:
            params += list(self.masker.parameters())
        return params

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights under the model's key names (``encoder.`` prefix)."""
        return {f"encoder.{k}": v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()}

    def _bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)[-1]

    def swin_unetr_losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rotation / contrastive / inpainting losses on two rotated, cut-out views of ``x``."""
        b = x.shape[0]
        x1, k1 = rotate90(x)
        x2, k2 = rotate90(x)
        views = torch.cat([cutout_batch(x1), cutout_batch(x2)])
        feat = self._bottleneck(views)
        out: dict[str, torch.Tensor] = {}
        if "rotate" in self.tasks or "contrast" in self.tasks:
            pooled = pool_bottleneck(feat)
            if "rotate" in self.tasks:
                out["rotate"] = F.cross_entropy(self.rotation_head(pooled).float(), torch.cat([k1, k2]))
            if "contrast" in self.tasks:
                c = self.contrast_head(pooled).float()
                out["contrast"] = self.contrast_loss(c[:b], c[b:])
        if "inpaint" in self.tasks:
            rec = self.reconstruction_head(feat).float()
            out["inpaint"] = F.l1_loss(rec, torch.cat([x1, x2]).float())
        return out

    def simmim_losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """SimMIM: masked tokens in, reconstruction of the masked voxels out."""
        cells = random_cell_mask(x.shape[0], x.shape[2:], self.mask_cell, self.mask_ratio, x.device)
        with self.masker.masked(cells):
            feat = self._bottleneck(x)
        rec = self.simmim_head(feat).float()
        voxels = expand_mask(cells, x.shape[2:]).unsqueeze(1)
        return {"simmim": simmim_loss(rec, x.float(), voxels)}

    def barlow_losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Barlow Twins on two augmented views of ``x``."""
        v1, v2 = barlow_views(x)
        z = self.projector(pool_bottleneck(self._bottleneck(torch.cat([v1, v2]))))
        b = x.shape[0]
        return {"barlow": barlow_twins_loss(z[:b], z[b:], self.barlow_lambda)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Crops ``(B, in_channels, X, Y, Z)`` -> ``{task: loss, "loss": total}``."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected crops (B, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}")
        losses: dict[str, torch.Tensor] = {}
        if any(t in self.tasks for t in SWIN_UNETR_TASKS):
            losses.update(self.swin_unetr_losses(x))
        if "simmim" in self.tasks:
            losses.update(self.simmim_losses(x))
        if "barlow" in self.tasks:
            losses.update(self.barlow_losses(x))
        ordered = [losses[t] for t in self.tasks]
        losses["loss"] = self.awl(ordered) if self.awl is not None else torch.stack(ordered).sum()
        return losses


def build_ssl_model(
    model_name: str,
    in_channels: int,
    tasks: Sequence[str] | str = SWIN_UNETR_TASKS,
    roi_size: Sequence[int] | None = None,
    model_kwargs: dict | None = None,
    **options,
) -> SSLModel:
    """:class:`SSLModel` on the encoder of the registered 3D model ``model_name`` (its decoder is dropped).

    ``roi_size`` (optional) is checked against the model's size divisor; ``options`` go to :class:`SSLModel`.
    Raises ``ValueError`` for biplanar (2D-input) models.
    """
    from ..models import check_roi, create_model, model_kind

    tasks = parse_tasks(tasks)
    if any(t in tasks for t in SWIN_UNETR_TASKS) and roi_size is not None and roi_size[0] != roi_size[1]:
        raise ValueError(
            f"the inpaint/rotate/contrast views are rot90 turns in the (X, Y) plane, which need a roi with X == Y; "
            f"got {tuple(roi_size)}"
        )
    if "simmim" in tasks and roi_size is not None:
        cell = options.get("mask_cell", 16)
        if any(int(s) % cell for s in roi_size):
            raise ValueError(f"the SimMIM mask cell {cell} must divide the roi {tuple(roi_size)}")
    model = create_model(model_name, in_channels=in_channels, out_channels=2, **(model_kwargs or {}))
    if model_kind(model) == "biplanar" or not hasattr(model, "encoder"):
        raise ValueError(f"model {model_name!r} takes two X-ray views: pretraining works on 3D encoders only")
    if roi_size is not None:
        check_roi(model, roi_size)
    return SSLModel(model.encoder, in_channels, tasks, **options)
