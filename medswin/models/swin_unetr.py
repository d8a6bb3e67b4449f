"""Swin UNETR (Hatamizadeh et al., "Swin UNETR: Swin Transformers for Semantic Segmentation of
Brain Tumors in MRI Images", BrainLes 2021, arXiv:2201.01266), weight-compatible with MONAI's
``monai.networks.nets.SwinUNETR``.

Upstream code: MONAI (Apache-2.0) ``monai/networks/nets/swin_unetr.py`` and
Project-MONAI/research-contributions.  This is a reimplementation on medswin's shared Swin core:

* the same modules and parameter shapes as MONAI (v1 and ``use_v2`` = SwinUNETR-V2's residual conv
  block before each stage), so MONAI state dicts and the released self-supervised checkpoint
  (``model_swinvit.pt``) load through :meth:`SwinUNETR.load_monai_state_dict` and give MONAI's
  outputs to 1e-5 in float32; :meth:`SwinUNETR.to_monai_state_dict` goes back;
* faster and leaner: window attention through SDPA with one broadcast mask per window type,
  pad/roll/partition fused into one gather, channels-last convolutions end to end, fused instance
  norm + residual + LeakyReLU with a memory-lean backward;
* ``attn="v2"`` swaps in Swin V2 attention (cosine attention, continuous position bias, post-norm,
  merge-then-norm).  Not to be confused with ``use_v2`` (MONAI's SwinUNETR-V2).

Already 3D in the paper: nothing about the architecture was changed for 3D.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..layers.decoder import UNETRDecoder
from ..layers.helpers import to_3tuple
from ..layers.swin import SwinEncoder3D
from ._registry import register_model
from ._sizes import SizeRule
from ._weights import LoadReport, WeightLoadError, load_checkpoint_file, load_matching

log = logging.getLogger(__name__)

PAPER = "Hatamizadeh et al. 2022, Swin UNETR (arXiv:2201.01266)"


class SwinUNETR(nn.Module):
    """Swin UNETR: Swin encoder + UNETR convolutional decoder, ``(B, in, D, H, W)`` -> ``(B, out, D, H, W)``.

    Args:
        in_channels / out_channels: input channels and output classes.
        feature_size: ``F``, channels of the patch embedding (48 in the paper, must divide by 12
            for the default heads).
        depths / num_heads: Swin blocks and heads per stage.
        window_size: attention window (7).
        patch_size: patch embedding size (2); the size divisor is ``patch_size * 16``.
        drop_rate / attn_drop_rate / drop_path_rate: dropouts and stochastic depth.
        normalize: parameter-free LayerNorm on every encoder feature (MONAI default True).
        use_v2: MONAI's SwinUNETR-V2 (residual conv block before each Swin stage).
        attn: ``"v1"`` (Swin) or ``"v2"`` (Swin V2 attention); ``"v2"`` is not MONAI-compatible.
        use_checkpoint: gradient checkpointing of the Swin blocks (bool, or one flag per stage).

    Sizes: every spatial axis must be a multiple of :attr:`size_divisor` (32) and the bottleneck
    (input / 32) must hold more than one voxel, i.e. use at least 64 on one axis.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | Sequence[int] = 7,
        patch_size: int = 2,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        normalize: bool = True,
        use_v2: bool = False,
        attn: str = "v1",
        use_checkpoint: bool | Sequence[bool] = False,
    ) -> None:
        super().__init__()
        for name, rate in (
            ("drop_rate", drop_rate),
            ("attn_drop_rate", attn_drop_rate),
            ("drop_path_rate", drop_path_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {rate}")
        if len(depths) != 4:
            raise ValueError(f"Swin UNETR has 4 stages; depths={tuple(depths)}")
        for i, heads in enumerate(num_heads):
            if (feature_size * 2**i) % heads:
                raise ValueError(f"feature_size {feature_size} x 2^{i} is not divisible by num_heads[{i}]={heads}")
        self.config: dict[str, Any] = dict(
            in_channels=in_channels,
            out_channels=out_channels,
            feature_size=feature_size,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=to_3tuple(window_size),
            patch_size=patch_size,
            normalize=normalize,
            use_v2=use_v2,
            attn=attn,
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.size_rule = SizeRule("Swin UNETR", (patch_size * 2 ** len(depths),) * 3, min_bottleneck_voxels=2)
        self.encoder = SwinEncoder3D(
            in_channels=in_channels,
            embed_dim=feature_size,
            depths=depths,
            num_heads=num_heads,
            window_size=to_3tuple(window_size),
            patch_size=(patch_size,) * 3,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            attn_version=attn,
            stage_conv=use_v2,
            normalize=normalize,
            use_checkpoint=use_checkpoint,
        )
        self.decoder = UNETRDecoder(in_channels, self.encoder.out_channels, out_channels)

    @property
    def size_divisor(self) -> int | tuple[int, ...]:
        """Every spatial size of the input must be a multiple of this (32 for the default patch 2 and 4 stages)."""
        return self.size_rule.size_divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, D, H, W)`` -> logits ``(B, out_channels, D, H, W)``."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        if not torch.jit.is_tracing():
            self.size_rule.check(x.shape[2:])
        return self.decoder(x, self.encoder(x))

    # ------------------------------------------------------------------ MONAI compatibility
    def load_monai_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], source: str = "MONAI state dict"
    ) -> LoadReport:
        """Load a MONAI ``SwinUNETR`` state dict, or MONAI's self-supervised encoder checkpoint.

        Accepts ``module.``-prefixed keys, ``swinViT.``/``swin_vit.`` encoder prefixes and the SSL
        naming (``module.layers1.0.blocks.0.mlp.fc1.weight``).  Returns a :class:`LoadReport`;
        raises :class:`WeightLoadError` if nothing matches or shapes disagree.
        """
        converted, derived = monai_to_medswin(state_dict)
        encoder_only = not any(k.startswith("decoder.") for k in converted)
        return load_matching(self, converted, source, derived=derived, require="encoder." if encoder_only else "")

    def to_monai_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's weights under MONAI ``SwinUNETR`` key names (load with ``strict=True``)."""
        if self.config["attn"] != "v1":
            raise ValueError("Swin V2 attention (attn='v2') has no MONAI equivalent")
        return medswin_to_monai(self.state_dict(), self)

    @classmethod
    def from_monai(cls, state_dict: Mapping[str, torch.Tensor], **overrides: Any) -> SwinUNETR:
        """Build a model with the configuration read off a MONAI ``SwinUNETR`` state dict and load it.

        Configuration (channels, feature size, depths, heads, window, ``use_v2``) is inferred from
        tensor shapes; ``overrides`` set what cannot be inferred (e.g. ``out_channels`` for an
        encoder-only checkpoint, ``normalize``).
        """
        config = infer_monai_config(state_dict)
        config.update(overrides)
        if "out_channels" not in config:
            raise WeightLoadError("encoder-only checkpoint: pass out_channels=... to from_monai()")
        model = cls(**config)
        model.load_monai_state_dict(state_dict)
        return model


def load_monai_checkpoint(model: SwinUNETR, path: str) -> LoadReport:
    """Load a MONAI SwinUNETR checkpoint file (bundle ``model.pt`` or SSL ``model_swinvit.pt``) into ``model``."""
    return model.load_monai_state_dict(load_checkpoint_file(path), source=str(path))


# ---------------------------------------------------------------------------------------------
# key mapping
# ---------------------------------------------------------------------------------------------

_CONV = r"conv(\d)\.conv\.weight"
# MONAI key (after prefix clean-up) -> medswin key
_MONAI_TO_OURS: list[tuple[str, str]] = [
    (r"^swinViT\.patch_embed\.proj\.(weight|bias)$", r"encoder.patch_embed.proj.\1"),
    (r"^swinViT\.layers(\d)\.0\.blocks\.(\d+)\.(.+)$", r"encoder.stages.<\1>.blocks.\2.\3"),
    (r"^swinViT\.layers(\d)\.0\.downsample\.(.+)$", r"encoder.stages.<\1>.downsample.\2"),
    (rf"^swinViT\.layers(\d)c\.0\.layer\.{_CONV}$", r"encoder.stages.<\1>.conv_block.conv\2.weight"),
    (rf"^encoder1\.layer\.{_CONV}$", r"decoder.input_block.conv\1.weight"),
    (rf"^encoder([234])\.layer\.{_CONV}$", r"decoder.skip_blocks.<\1>.conv\2.weight"),
    (rf"^encoder10\.layer\.{_CONV}$", r"decoder.bottleneck_block.conv\1.weight"),
    (r"^decoder([1-5])\.transp_conv\.conv\.weight$", r"decoder.up_blocks.[\1].transp_conv.weight"),
    (rf"^decoder([1-5])\.conv_block\.{_CONV}$", r"decoder.up_blocks.[\1].conv_block.conv\2.weight"),
    (r"^out\.conv\.conv\.(weight|bias)$", r"decoder.head.conv.\1"),
]
_OURS_TO_MONAI: list[tuple[str, str]] = [
    (r"^encoder\.patch_embed\.proj\.(weight|bias)$", r"swinViT.patch_embed.proj.\1"),
    (r"^encoder\.stages\.(\d)\.blocks\.(\d+)\.(.+)$", r"swinViT.layers<\1>.0.blocks.\2.\3"),
    (r"^encoder\.stages\.(\d)\.downsample\.(.+)$", r"swinViT.layers<\1>.0.downsample.\2"),
    (r"^encoder\.stages\.(\d)\.conv_block\.conv(\d)\.weight$", r"swinViT.layers<\1>c.0.layer.conv\2.conv.weight"),
    (r"^decoder\.input_block\.conv(\d)\.weight$", r"encoder1.layer.conv\1.conv.weight"),
    (r"^decoder\.skip_blocks\.(\d)\.conv(\d)\.weight$", r"encoder<\1>.layer.conv\2.conv.weight"),
    (r"^decoder\.bottleneck_block\.conv(\d)\.weight$", r"encoder10.layer.conv\1.conv.weight"),
    (r"^decoder\.up_blocks\.(\d)\.transp_conv\.weight$", r"decoder[\1].transp_conv.conv.weight"),
    (r"^decoder\.up_blocks\.(\d)\.conv_block\.conv(\d)\.weight$", r"decoder[\1].conv_block.conv\2.conv.weight"),
    (r"^decoder\.head\.conv\.(weight|bias)$", r"out.conv.conv.\1"),
]


def _rename(key: str, to_ours: bool) -> str | None:
    """Map one key between MONAI's and medswin's naming, or ``None`` when no rule applies.

    ``<n>`` marks stage/skip numbers (MONAI ``layers1..4`` = stages 0..3, ``encoder2..4`` = skip
    blocks 0..2); ``[n]`` marks decoder numbers (MONAI ``decoder5..1`` = ``up_blocks`` 0..4).
    """
    for pattern, repl in _MONAI_TO_OURS if to_ours else _OURS_TO_MONAI:
        if re.match(pattern, key):
            new = re.sub(pattern, repl, key)
            skip = "skip_blocks" in new if to_ours else new.startswith("encoder<")
            step = (2 if skip else 1) * (-1 if to_ours else 1)
            new = re.sub(r"<(\d+)>", lambda m: str(int(m.group(1)) + step), new)
            return re.sub(r"\[(\d+)\]", lambda m: str(5 - int(m.group(1))), new)
    return None


def _clean_monai_key(key: str) -> str:
    """Normalise prefixes of MONAI / research-contributions checkpoints to ``SwinUNETR`` naming."""
    if key.startswith("module."):
        key = key[len("module.") :]
    if key.startswith("swin_vit."):
        key = "swinViT." + key[len("swin_vit.") :]
    if key.startswith(("patch_embed.", "layers1", "layers2", "layers3", "layers4")):
        key = "swinViT." + key  # SSL checkpoint: encoder at the top level
    return key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")


def monai_to_medswin(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Rename MONAI SwinUNETR keys to medswin's.  Returns ``(converted, derived)``.

    ``derived`` holds MONAI's ``relative_position_index`` buffers, which medswin recomputes.
    Keys with no counterpart are kept unchanged (and reported as unexpected when loading).
    """
    converted: dict[str, torch.Tensor] = {}
    derived: dict[str, torch.Tensor] = {}
    for raw, value in state_dict.items():
        key = _clean_monai_key(raw)
        if key.endswith("attn.relative_position_index"):
            derived[raw] = value
            continue
        converted[_rename(key, to_ours=True) or raw] = value
    return converted, derived


def medswin_to_monai(state_dict: Mapping[str, torch.Tensor], model: SwinUNETR) -> dict[str, torch.Tensor]:
    """Rename medswin SwinUNETR keys to MONAI's and add MONAI's ``relative_position_index`` buffers."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = _rename(key, to_ours=False)
        if new is None:
            raise KeyError(f"no MONAI name for parameter {key!r}")
        out[new] = value
        if key.endswith("attn.relative_position_bias_table"):
            block = model.get_submodule(key.rsplit(".", 1)[0])
            out[new.replace("relative_position_bias_table", "relative_position_index")] = (
                block.relative_position_index.clone()
            )
    return out


def infer_monai_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Read SwinUNETR constructor arguments off a MONAI state dict's tensor shapes."""
    keys = {_clean_monai_key(k): v for k, v in state_dict.items()}
    embed = keys.get("swinViT.patch_embed.proj.weight")
    if embed is None:
        raise WeightLoadError("not a MONAI SwinUNETR checkpoint: no swinViT.patch_embed.proj.weight")
    config: dict[str, Any] = {
        "feature_size": embed.shape[0],
        "in_channels": embed.shape[1],
        "patch_size": embed.shape[2],
        "use_v2": any(".layers1c." in k for k in keys),
    }
    depths, heads = [], []
    for stage in range(1, 5):
        blocks = {int(m.group(1)) for k in keys if (m := re.match(rf"swinViT\.layers{stage}\.0\.blocks\.(\d+)\.", k))}
        depths.append(len(blocks))
        heads.append(keys[f"swinViT.layers{stage}.0.blocks.0.attn.relative_position_bias_table"].shape[1])
    config["depths"], config["num_heads"] = tuple(depths), tuple(heads)
    table = keys["swinViT.layers1.0.blocks.0.attn.relative_position_bias_table"].shape[0]
    side = round(table ** (1 / 3))
    config["window_size"] = (side + 1) // 2
    if "out.conv.conv.weight" in keys:
        config["out_channels"] = keys["out.conv.conv.weight"].shape[0]
    return config


# ---------------------------------------------------------------------------------------------
# presets
# ---------------------------------------------------------------------------------------------


@register_model(SwinUNETR, default_roi=(96, 96, 96), paper=PAPER)
def swin_unetr_tiny() -> dict[str, Any]:
    """Swin UNETR, F=12 (research-contributions "tiny"; used by the tests)."""
    return dict(feature_size=12)


@register_model(SwinUNETR, default_roi=(96, 96, 96), paper=PAPER)
def swin_unetr_small() -> dict[str, Any]:
    """Swin UNETR, F=24 (research-contributions "small")."""
    return dict(feature_size=24)


@register_model(SwinUNETR, default_roi=(96, 96, 96), paper=PAPER)
def swin_unetr_base() -> dict[str, Any]:
    """Swin UNETR, F=48, the paper's model (62.2M parameters for 1 -> 14 channels)."""
    return dict(feature_size=48)
