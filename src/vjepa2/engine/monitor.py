"""Feedback of a training run: a progress bar, a CSV log, TensorBoard scalars, a loss-curve PNG,
and the collapse monitor (effective rank of the target features).

Rows are keyed by ``step`` = the number of completed optimiser steps (1 for the first step).
Only the main process (rank 0) writes; the others get a silent monitor. On resume at ``start_step``
the CSV keeps the rows up to that step and drops those a killed run had logged after its last
checkpoint, so the file always describes one consistent run.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vjepa2 import progress
from vjepa2.files import atomic_write_text
from vjepa2.engine import distributed as dist_utils


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision: the resume test compares logged losses exactly
    return str(value)


class RunMonitor:
    """Progress bar + ``log.csv`` + TensorBoard (optional) + ``loss.png`` in ``out_dir``.

    Args:
        out_dir: directory of the run.
        columns: CSV columns; every :meth:`log` row uses these keys (missing ones stay empty).
        total_steps / start_step: for the progress bar and ETA.
        enabled: False on non-main ranks (nothing is printed or written).
        tensorboard: write TensorBoard event files to ``out_dir/tensorboard`` if the package is installed.
    """

    def __init__(self, out_dir: str | os.PathLike, columns: list[str], total_steps: int, start_step: int = 0,
                 enabled: bool = True, tensorboard: bool = True, progress_bar: bool = True,
                 desc: str = "train") -> None:
        self.out_dir = Path(out_dir)
        self.columns = list(columns)
        self.enabled = enabled
        self.csv_path = self.out_dir / "log.csv"
        self._tb = None
        self._csv = None
        self.bar = progress.progress_bar(total=total_steps, initial=start_step, desc=desc, unit="step",
                                         disable=not (enabled and progress_bar))
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._start_csv(start_step)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.write("TensorBoard is not installed (pip install tensorboard); logging to CSV only")
            else:
                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=start_step + 1)

    def _start_csv(self, start_step: int) -> None:
        kept: list[dict] = []
        if self.csv_path.is_file():
            with open(self.csv_path, newline="") as f:
                kept = [row for row in csv.DictReader(f) if row.get("step", "").isdigit()
                        and int(row["step"]) <= start_step]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(self.csv_path, buffer.getvalue())
        self._csv = open(self.csv_path, "a", newline="")
        self._writer = csv.DictWriter(self._csv, fieldnames=self.columns, extrasaction="ignore")

    def write(self, message: str) -> None:
        """Print a line above the progress bar (main process only)."""
        if self.enabled:
            progress.progress_write(message)

    def advance(self, steps: int = 1, **postfix) -> None:
        """Move the bar; ``postfix`` values (loss, lr, clips/s...) are shown next to it."""
        if postfix:
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                                 refresh=False)
        self.bar.update(steps)

    def log(self, row: dict) -> None:
        """One CSV row (flushed at once) and its numeric values as TensorBoard scalars."""
        if not self.enabled:
            return
        unknown = set(row) - set(self.columns)
        if unknown:
            raise KeyError(f"log row has keys {sorted(unknown)} that are not CSV columns {self.columns}")
        self._writer.writerow({k: _format(v) for k, v in row.items()})
        self._csv.flush()
        if self._tb is not None:
            step = int(row["step"])
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def close(self, plot: str | None = "loss") -> Path | None:
        """Close files; plot column ``plot`` against ``step`` into ``loss.png`` (returns its path).

        Rows whose ``plot`` value is empty or not finite (e.g. a skipped step) are left out."""
        self.bar.close()
        if not self.enabled:
            return None
        if self._tb is not None:
            self._tb.close()
        if self._csv is not None:
            self._csv.close()
        return plot_curve(self.csv_path, self.out_dir / "loss.png", column=plot) if plot else None


def plot_curve(csv_path: str | os.PathLike, png_path: str | os.PathLike, column: str = "loss") -> Path | None:
    """Line plot of ``column`` against ``step`` from a log CSV, phase changes marked (None if no rows)."""
    from vjepa2.plotting import pyplot, save_png

    with open(csv_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(column) not in (None, "")]
    points = [(int(r["step"]), float(r[column]), r.get("phase", "")) for r in rows]
    points = [p for p in points if math.isfinite(p[1])]
    if not points:
        return None
    steps, values, phases = zip(*points)
    fig, ax = pyplot().subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, values, lw=1.2)
    for i in range(len(phases)):
        if phases[i] and (i == 0 or phases[i] != phases[i - 1]):
            # A phase begins right after the previous row's step (the loop logs every phase's last step).
            start = steps[i - 1] if i else 0
            if i:
                ax.axvline(start, color="grey", ls="--", lw=0.8)
            ax.text(start, max(values), f" {phases[i]}", va="top", fontsize=8, color="grey")
    ax.set_xlabel("step")
    ax.set_ylabel(column)
    ax.set_title(f"{column} ({Path(csv_path).parent.name})")
    ax.grid(alpha=0.3)
    return save_png(fig, png_path, tight=True)


def effective_rank(features: torch.Tensor) -> dict:
    """Spread of a set of feature vectors ``(M, D)`` over their dimensions.

    Returns ``effective_rank`` = exp(entropy of the normalised PCA variances) (1 = all variance on
    one direction, D = spread evenly) and ``top3_variance`` = share of the 3 largest, in percent.
    A low value next to a random encoder's is partial dimensional collapse. NaN for features that
    are not all finite (a diverging run).
    """
    x = features.double()
    if not torch.isfinite(x).all():
        return {"effective_rank": math.nan, "top3_variance": math.nan}
    singular = torch.linalg.svdvals(x - x.mean(dim=0))
    share = singular**2 / (singular**2).sum()
    share = share[share > 0]
    return {"effective_rank": float(torch.exp(-(share * share.log()).sum())),
            "top3_variance": float(100.0 * share[:3].sum())}


@torch.no_grad()
def target_feature_rank(model: nn.Module, clips: torch.Tensor) -> float:
    """Collapse monitor: effective rank of the target encoder's layer-normed features of ``clips``
    ``(B, 3, T, H, W)`` over all ``B * N`` tokens (see :func:`effective_rank`).

    1 means every token sits on one direction; the width ``D`` means the variance is spread evenly.
    ``std`` (the other monitor) misses *partial* collapse, where a few directions (e.g. the clip's
    colour) carry nearly all the variance and the probe can barely read the rest.
    """
    jepa = dist_utils.unwrap(model)
    # FSDP2 gathers the root's own parameters (patch embedding, norms) only in the root's forward.
    sharded_root = hasattr(model, "unshard")
    if sharded_root:
        model.unshard()
    try:
        h = jepa.target_encoder(clips)
    finally:
        if sharded_root:
            model.reshard()
    h = F.layer_norm(h.float(), (h.size(-1),))
    return effective_rank(h.flatten(0, 1))["effective_rank"]
