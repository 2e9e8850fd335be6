"""The one place that sets up matplotlib and writes figures (every PNG of the package goes through here).

matplotlib is imported on first use, on the non-interactive Agg backend (no display needed), and a
figure is rendered in memory and written atomically: a crash never leaves a half-written picture.
"""

from __future__ import annotations

import io
import os
from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (unless the caller chose another one already)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | os.PathLike, dpi: float | None = None, tight: bool = False) -> Path:
    """Write ``fig`` to ``path`` as a PNG atomically and close it.

    Args:
        fig: a matplotlib figure.
        dpi: resolution; None = the figure's own.
        tight: crop to the drawn content (``bbox_inches="tight"``).
    """
    from vjepa2.files import atomic_write

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi if dpi is not None else "figure",
                    bbox_inches="tight" if tight else None)
    finally:
        pyplot().close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))
