"""Blocks shared by several models: window bookkeeping, window attention, Swin blocks and encoder,
channels-last conv blocks and the UNETR decoder.  Imports nothing else of medswin."""

from .attention import WindowAttention3D
from .conv import ChannelsLastConv3d, OutBlock, ResConvBlock, UpBlock
from .cswin import CSwinAttention3D, CSwinBlock3D, CSwinEncoder3D
from .decoder import UNETRDecoder
from .helpers import to_3tuple
from .norm import instance_norm_act
from .plain import plain_ops, use_plain_ops
from .swin import Mlp, PatchEmbed, PatchMerging3D, SwinBlock3D, SwinEncoder3D, SwinStage3D
from .window import WindowLayout, get_window_layout, window_partition, window_reverse

__all__ = [
    "CSwinAttention3D",
    "CSwinBlock3D",
    "CSwinEncoder3D",
    "ChannelsLastConv3d",
    "Mlp",
    "OutBlock",
    "PatchEmbed",
    "PatchMerging3D",
    "ResConvBlock",
    "SwinBlock3D",
    "SwinEncoder3D",
    "SwinStage3D",
    "UNETRDecoder",
    "UpBlock",
    "WindowAttention3D",
    "WindowLayout",
    "get_window_layout",
    "instance_norm_act",
    "plain_ops",
    "to_3tuple",
    "use_plain_ops",
    "window_partition",
    "window_reverse",
]
