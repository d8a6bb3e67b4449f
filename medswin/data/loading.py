"""Checked loading inside MONAI pipelines: the transforms every medswin pipeline starts with.

MONAI's ``LoadImaged`` falls back to its other registered readers when the one it was given
raises, so a check inside a reader can be silently skipped (a DICOM series with a missing slice
was once read with the wrong spacing that way).  These transforms have no fallback: every file
goes through :func:`medswin.data.io.load_volume` (or :func:`~medswin.data.drr.load_view` for
X-ray views) and its checks, and a problem is a :class:`DataError` naming the file.

* :class:`LoadVolumed`: images (one file or one file per channel, or a DICOM series folder) and
  label maps -> channel-first ``MetaTensor`` s ``(C, X, Y, Z)`` with MONAI's metadata (affine,
  original affine, spatial shape, file name), the input of ``Orientationd`` / ``Spacingd`` /
  ``Invertd`` / ``SaveImaged`` exactly as ``LoadImaged`` + ``EnsureChannelFirstd`` would give;
  channel count, NaN/inf, label values and the image/label grid are checked.
* :class:`LoadViewd`: 2D X-ray views (NIfTI or PNG) -> ``(1, H, W)`` min-max scaled to [0, 1].
* :func:`run_pipeline`: applies a pipeline to one case and turns MONAI's wrapped errors back into
  the :class:`DataError` that caused them.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import MetaKeys, SpaceKeys

from .errors import DataError, root_data_error
from .io import Volume, check_image, check_label, check_pair, load_channels


def to_meta_tensor(volume: Volume, dtype: torch.dtype = torch.float32) -> MetaTensor:
    """A loaded volume as MONAI's channel-first ``MetaTensor`` ``(C, X, Y, Z)`` with the metadata ``LoadImaged``
    records (``affine``, ``original_affine``, ``spatial_shape``, ``filename_or_obj``, RAS space)."""
    affine = np.asarray(volume.affine, dtype=np.float64)
    meta = {
        MetaKeys.ORIGINAL_AFFINE: affine.copy(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(volume.spatial_shape),
        MetaKeys.ORIGINAL_CHANNEL_DIM: 0,
        MetaKeys.SPACE: SpaceKeys.RAS,
        "filename_or_obj": volume.path,
    }
    array = torch.as_tensor(np.ascontiguousarray(volume.array)).to(dtype)
    return MetaTensor(array, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


class LoadVolumed(MapTransform):
    """Load images and label maps through the data layer's checked reader (no fallback reader).

    Args:
        keys: the keys to load; each value is a path, or a list of paths stacked as channels.
        label_key: the key holding the label map (single channel, integer values), if any.
        channels: image channels expected (``None``: any), with ``channel_names`` for the message.
        label_values: values allowed in the label map (``None``: any integers).
        dataset: the dataset's name, for the label-value message.
        series_uid: the series to read from DICOM folders holding several.
        allow_all_zero: accept images whose every voxel is 0 (inference does; training does not).
        allow_missing_keys: skip keys absent from the data.

    The label is checked against the first image key's grid (shape and affine).  Outputs are
    float32 ``MetaTensor`` s, channel first.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str | None = "label",
        channels: int | None = None,
        channel_names: Sequence[str] = (),
        label_values: Sequence[int] | None = None,
        dataset: str = "",
        series_uid: str | None = None,
        allow_all_zero: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key, self.channels, self.channel_names = label_key, channels, tuple(channel_names)
        self.label_values = tuple(int(v) for v in label_values) if label_values is not None else None
        self.dataset, self.series_uid, self.allow_all_zero = dataset, series_uid, allow_all_zero

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load every key present; raise :class:`DataError` for anything unreadable or inconsistent."""
        d = dict(data)
        image: Volume | None = None
        for key in self.key_iterator(d):
            paths = d[key] if isinstance(d[key], (list, tuple)) else [d[key]]
            if not paths or not all(isinstance(p, (str, os.PathLike)) for p in paths):
                raise DataError(f"<{key}>", f"must be a file path or a list of paths, got {d[key]!r}")
            volume = load_channels(paths, self.series_uid)
            if key == self.label_key:
                allowed = self.label_values
                if allowed is None:
                    allowed = [int(v) for v in np.unique(volume.array)] if volume.array.size else [0]
                check_label(volume, allowed, self.dataset)
                if image is not None:
                    check_pair(image, volume)
            else:
                check_image(volume, self.channels, self.channel_names, allow_all_zero=self.allow_all_zero)
                image = image or volume
            d[key] = to_meta_tensor(volume)
        return d


class LoadViewd(MapTransform):
    """Load 2D X-ray views (2D NIfTI as written by ``medswin data drr``, or PNG/JPEG radiographs) through
    :func:`medswin.data.drr.load_view`: ``(1, H, W)`` float32 in [0, 1], the file name in the metadata.

    Args:
        keys: the view keys (``image_coronal``, ``image_sagittal``).
        allow_missing_keys: skip keys absent from the data.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load every view present; raise :class:`DataError` for an unreadable or non-2D view."""
        from .drr import load_view

        d = dict(data)
        for key in self.key_iterator(d):
            view = load_view(d[key])
            meta = {"filename_or_obj": str(d[key]), MetaKeys.SPATIAL_SHAPE: np.asarray(view.shape)}
            d[key] = MetaTensor(torch.from_numpy(view)[None], meta=meta)
        return d


def run_pipeline(pipeline: Any, data: Mapping[Hashable, Any], source: str | os.PathLike) -> dict[Hashable, Any]:
    """``pipeline(data)`` for one case: a data error inside re-raised as itself, any other failure of the
    transforms as one :class:`DataError` naming ``source`` and the transform's own message."""
    try:
        return pipeline(dict(data))
    except DataError:
        raise
    except Exception as exc:
        cause = root_data_error(exc)
        if cause is not None:
            raise cause from None
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        text = " ".join(str(root).split())[:200]
        raise DataError(source, f"cannot load or transform the input ({type(root).__name__}: {text})") from None
