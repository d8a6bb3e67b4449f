"""Per-epoch metrics of a run: ``metrics.csv`` (rewritten atomically), TensorBoard events when
``tensorboard`` is installed, and ``curves.png`` (loss and validation Dice) when matplotlib is."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from ..data.atomic import write_bytes_atomic

log = logging.getLogger(__name__)


class MetricsLog:
    """Writes the run's history; every method is a no-op when ``enabled`` is False (ranks > 0)."""

    def __init__(self, out: Path, enabled: bool = True) -> None:
        self.out, self.enabled, self.writer = Path(out), enabled, None
        self._csv_keys: list[str] | None = None

    def open(self, purge_step: int = 0) -> None:
        """Start TensorBoard logging (dropping events after ``purge_step`` left by an interrupted run)."""
        if not self.enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            log.debug("tensorboard not installed: metrics go to metrics.csv and curves.png only")
            return
        self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=purge_step or None)

    def write(self, history: list[dict[str, Any]], row: dict[str, Any]) -> None:
        """Add ``row`` (the last of ``history``) to ``metrics.csv`` and TensorBoard.

        The CSV is rewritten atomically from ``history`` when its columns change (or on the first
        write of a resumed run, which drops rows an interrupted run wrote after its last
        checkpoint) and appended to otherwise.
        """
        if not self.enabled:
            return
        keys: list[str] = []
        for r in history:
            keys += [k for k in r if k not in keys]
        path = self.out / "metrics.csv"
        if keys != self._csv_keys or not path.is_file():
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)
            write_bytes_atomic(path, buf.getvalue().encode())
            self._csv_keys = keys
        else:
            with path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=keys).writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()
        if row["epoch"] % 10 == 0:
            self.plot(history)

    def plot(self, history: list[dict[str, Any]]) -> Path | None:
        """``curves.png``: training loss and validation Dice per epoch (skipped without matplotlib)."""
        if not self.enabled or not history:
            return None
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            log.info("matplotlib not installed: no curves.png (pip install 'medswin[demo]')")
            return None
        val_rows = [r for r in history if "dice_mean" in r]
        fig, axes = plt.subplots(1, 2 if val_rows else 1, figsize=(10 if val_rows else 5, 4), squeeze=False)
        ax1 = axes[0, 0]
        ax1.plot([r["epoch"] for r in history], [r["train_loss"] for r in history])
        ax1.set(xlabel="epoch", ylabel="training loss", title="loss")
        if val_rows:  # no validation cases: the loss alone
            ax2 = axes[0, 1]
            dice_keys = [k for k in val_rows[-1] if k.startswith("dice_")]
            for key in dice_keys:
                ax2.plot(
                    [r["epoch"] for r in val_rows], [r.get(key, float("nan")) for r in val_rows], "o-", label=key[5:]
                )
            ax2.set(xlabel="epoch", ylabel="Dice", title="validation Dice", ylim=(0, 1))
            ax2.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        path = self.out / "curves.png"
        write_bytes_atomic(path, buf.getvalue())
        return path

    def close(self, history: list[dict[str, Any]]) -> None:
        """Final curves and close TensorBoard."""
        if not self.enabled:
            return
        self.plot(history)
        if self.writer is not None:
            self.writer.close()
