"""Pictures of planning: an episode strip / GIF beside its goal, and an energy landscape.

All files are written atomically (a crash never leaves a half-written picture).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from vjepa2.plotting import pyplot, save_png
from vjepa2.files import atomic_write


def pick_frames(count: int, limit: int) -> list[int]:
    """At most ``limit`` indices spread evenly over ``range(count)``, first and last included."""
    if count <= limit:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, limit)})


def episode_strip(frames: list[np.ndarray], goal: np.ndarray, path: str | os.PathLike, title: str = "",
                  max_frames: int = 8, goal_of_frame: list[int] | None = None) -> Path:
    """PNG of observed frames (evenly picked, at most ``max_frames``) and the goal image at the right.

    Args:
        frames: observed ``(H, W, 3)`` uint8 frames, the first before any action.
        goal: ``(H, W, 3)`` uint8 goal image (the last goal when there are several).
        goal_of_frame: sub-goal index of each frame, shown in the captions when given.
    """
    plt = pyplot()
    shown = pick_frames(len(frames), max_frames)
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(1.6 * (len(shown) + 1), 2.0))
    for ax, index in zip(axes, shown):
        ax.imshow(frames[index])
        caption = f"step {index}"
        if goal_of_frame is not None and index < len(goal_of_frame):
            caption += f" (g{goal_of_frame[index]})"
        ax.set_title(caption, fontsize=8)
    axes[-1].imshow(goal)
    axes[-1].set_title("goal", fontsize=8, color="darkgreen")
    for spine in axes[-1].spines.values():
        spine.set_edgecolor("darkgreen")
        spine.set_linewidth(2)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, path, dpi=110, tight=True)


def episode_gif(frames: list[np.ndarray], goal: np.ndarray, path: str | os.PathLike, fps: float = 4.0) -> Path:
    """Animated GIF: each observed frame beside the goal image (separated by a white bar)."""
    from PIL import Image

    height = max(f.shape[0] for f in frames + [goal])
    bar = np.full((height, 4, 3), 255, np.uint8)
    pictures = [Image.fromarray(np.concatenate([frame, bar, goal], axis=1)) for frame in frames]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], loop=0,
                     duration=int(1000 / fps))
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def energy_landscape(energies: np.ndarray, xs: np.ndarray, ys: np.ndarray, chosen: np.ndarray,
                     path: str | os.PathLike, title: str = "", reference: np.ndarray | None = None,
                     reference_label: str = "towards the goal", labels: tuple[str, str] = ("dx", "dy")) -> Path:
    """PNG heat map of the planner's energy over a grid of first actions, with the chosen action marked.

    Args:
        energies: ``(len(ys), len(xs))`` energy at each grid point (row = y).
        xs / ys: the grid coordinates of the two action entries.
        chosen: ``(2,)`` the planned first action (a star).
        reference: ``(2,)`` optionally, the action that truly heads for the goal (a cross).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    # Energies differ in their 3rd-5th digit across one step; showing them above their minimum
    # keeps the colour-bar ticks readable.
    lowest = float(np.nanmin(energies))
    relative = energies - lowest
    mesh = ax.pcolormesh(xs, ys, relative, shading="auto", cmap="viridis")
    if np.nanmax(relative) > 0:
        ax.contour(xs, ys, relative, levels=8, colors="white", linewidths=0.5, alpha=0.6)
    bar = fig.colorbar(mesh, ax=ax, label=f"energy - {lowest:.4f} (mean L1 to goal latent)", format="%.2g")
    bar.ax.tick_params(labelsize=7)
    ax.plot(*chosen, marker="*", color="red", markersize=14, markeredgecolor="white", label="chosen action")
    if reference is not None:
        ax.plot(*reference, marker="X", color="orange", markersize=10, markeredgecolor="black",
                label=reference_label, linestyle="none")
    # A margin so that a chosen action on the constraint's edge stays visible.
    pad_x, pad_y = 0.06 * (xs[-1] - xs[0]), 0.06 * (ys[-1] - ys[0])
    ax.set_xlim(xs[0] - pad_x, xs[-1] + pad_x)
    ax.set_ylim(ys[0] - pad_y, ys[-1] + pad_y)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    return save_png(fig, path, dpi=110, tight=True)
