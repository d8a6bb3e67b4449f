"""medswin checkpoints: written atomically, read safely, turned back into a model.  Training,
pretraining, prediction, adaptation, the bundles and the CLI all go through here (a neutral module:
it imports the data layer and the models, and neither training nor inference).

A training checkpoint is a dict of tensors and plain Python types (readable with
``torch.load(weights_only=True)``): ``model`` (state dict), ``model_name``, ``model_kwargs``,
``in_channels``, ``out_channels``, ``roi_size``, ``spec`` (:meth:`DatasetSpec.to_dict`),
``medswin_version``, and the training state (optimizer, scheduler, epoch, RNG states, config).

    ckpt = load_checkpoint("runs/btcv/checkpoint_best.pt")      # once
    model, spec = model_from_checkpoint(ckpt)                    # weights loaded, on the CPU
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data.atomic import atomic_write
from .data.errors import DataError
from .data.spec import DatasetSpec

CHECKPOINT_KEYS = ("model", "model_name")


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (temp file + rename): never a half-written checkpoint."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: torch names the archive inside "archive", not after the temp file
            torch.save(obj, f)

    return atomic_write(path, write)


def read_weights_only(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line :class:`DataError` s for a missing,
    truncated, foreign or code-carrying file (a pickle that would run code on load is refused, never run)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, f"{what} not found")
    if path.is_dir():
        raise DataError(path, f"is a folder, not a {what} file")
    if path.stat().st_size == 0:
        raise DataError(path, f"empty {what} file (0 bytes)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))  # torch's first line names no object
        detail = f"it needs {found.group(1)}" if found else f"torch weights_only: {first[:160]}"
        raise DataError(
            path,
            f"refused: the {what} holds Python objects beyond tensors and plain types ({detail}), which could run "
            "code when loaded; re-save it with tensors and plain types only",
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        text = " ".join(str(exc).split())
        if "zip archive" in text or "central directory" in text or isinstance(exc, (EOFError, zipfile.BadZipFile)):
            raise DataError(path, f"truncated or corrupt {what} file ({text[:120]})") from None
        raise DataError(path, f"cannot read the {what} ({type(exc).__name__}: {text[:160]})") from None
    except MemoryError:
        raise DataError(path, f"not enough memory to read the {what}") from None
    except Exception as exc:  # torch's unpickler on arbitrary bytes raises anything (KeyError(101) for text)
        raise DataError(path, f"not a PyTorch {what} file ({type(exc).__name__}: {str(exc)[:80]})") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A medswin training checkpoint from ``path`` (safely, onto the CPU); anything else is a :class:`DataError`."""
    ckpt = read_weights_only(path)
    if not isinstance(ckpt, dict) or not all(k in ckpt for k in CHECKPOINT_KEYS):
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        raise DataError(
            path,
            f"not a medswin training checkpoint (no {', '.join(repr(k) for k in missing)}); "
            "MONAI or plain state dicts load with --weights next to a model name",
        )
    return ckpt


def model_from_checkpoint(
    ckpt: dict[str, Any], source: str | os.PathLike = "<checkpoint>"
) -> tuple[nn.Module, DatasetSpec]:
    """The model (weights loaded, eval mode, CPU) and dataset spec of a loaded checkpoint.

    Args:
        ckpt: what :func:`load_checkpoint` returned.
        source: the file, for error messages.

    A checkpoint whose weights do not fit the model it names (edited, or from another medswin
    version) is a :class:`DataError` naming the first mismatching keys.
    """
    from .models import create_model

    if ckpt.get("spec") is None or "out_channels" not in ckpt:
        raise DataError(
            source,
            "a pretraining checkpoint (an encoder, no segmentation head): fine-tune it first with "
            "medswin train --encoder-weights ENCODER.pt",
        )
    _check_fields(ckpt, source)
    try:
        spec = DatasetSpec.from_dict(ckpt["spec"], origin=str(source))
    except DataError:
        raise  # names the checkpoint and the entry's key already
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(source, f"the checkpoint's dataset entry cannot be read ({exc})") from None
    try:
        model = create_model(
            ckpt["model_name"],
            in_channels=ckpt["in_channels"],
            out_channels=ckpt["out_channels"],
            **ckpt["model_kwargs"],
        )
    except Exception as exc:  # unknown name, bad options, sizes the model cannot be built with
        text = " ".join(str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).split())
        raise DataError(source, f"the checkpoint's model cannot be rebuilt ({text[:200]})") from None
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, AttributeError, ValueError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise DataError(source, f"its weights do not fit {ckpt['model_name']}: {' '.join(lines[1:3])[:200]}") from None
    return model.eval(), spec


MAX_CHANNELS = 4096  # input or output channels a checkpoint may declare (a corrupt count would allocate terabytes)


def _check_fields(ckpt: dict[str, Any], source: str | os.PathLike) -> None:
    """The types and ranges of the fields a model is rebuilt from, before anything is allocated."""
    weights = ckpt.get("model")
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise DataError(source, "its 'model' is not a state dict (names -> tensors)")
    if not isinstance(ckpt.get("model_name"), str):
        raise DataError(source, f"its 'model_name' is not a model name: {str(ckpt.get('model_name'))[:60]!r}")
    for key in ("in_channels", "out_channels"):
        value = ckpt.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_CHANNELS:
            raise DataError(source, f"its {key!r} is not a channel count (1-{MAX_CHANNELS}): {str(value)[:40]}")
    if not isinstance(ckpt.setdefault("model_kwargs", {}), dict):
        raise DataError(source, "its 'model_kwargs' is not a mapping of options")
    roi = ckpt.get("roi_size")
    if roi is not None and (
        not isinstance(roi, (list, tuple)) or len(roi) != 3 or not all(isinstance(r, int) and r > 0 for r in roi)
    ):
        raise DataError(source, f"its 'roi_size' is not 3 positive sizes: {str(roi)[:60]}")
