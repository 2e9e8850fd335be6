"""Small videos for the decoding tests, written with PyAV: each frame shows its own index.

The index is written in base 8 as four vertical grey stripes (16 px wide, aligned with codec
macroblocks) whose levels survive lossy codecs and the GIF palette; :func:`frame_index` reads it back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vjepa2.data.clips.video import write_video

DIGITS = 4
BASE = 8
STRIPE = 16
FRAME_SIZE = (64, DIGITS * STRIPE)  # (H, W)


def index_frame(index: int, height: int = FRAME_SIZE[0], width: int = FRAME_SIZE[1]) -> np.ndarray:
    """uint8 ``(H, W, 3)`` frame whose first ``DIGITS`` stripes spell ``index`` in base ``BASE``."""
    if not 0 <= index < BASE ** DIGITS:
        raise ValueError(f"index {index} does not fit in {DIGITS} base-{BASE} digits")
    image = np.zeros((height, width, 3), np.uint8)
    for d in range(DIGITS):
        digit = (index // BASE ** d) % BASE
        image[:, d * STRIPE:(d + 1) * STRIPE] = round(digit * 255 / (BASE - 1))
    return image


def frame_index(image) -> int:
    """The index :func:`index_frame` wrote into ``image`` (``(H, W, 3)`` array or tensor)."""
    image = np.asarray(image)
    index = 0
    for d in range(DIGITS):
        # Centre of the stripe, red channel: away from edges where codecs blur neighbouring stripes.
        patch = image[4:-4, d * STRIPE + 4:(d + 1) * STRIPE - 4, 0].astype(np.float64)
        index += int(round(patch.mean() * (BASE - 1) / 255)) * BASE ** d
    return index


def clip_indices(clip) -> list[int]:
    """Frame index shown by each frame of a ``(T, H, W, 3)`` clip."""
    return [frame_index(frame) for frame in np.asarray(clip)]


def index_video(path: Path, num_frames: int, fps: float = 30, **kwargs) -> Path:
    """A video of ``num_frames`` index frames (kwargs go to :func:`write_video`)."""
    frames = np.stack([index_frame(i) for i in range(num_frames)])
    return write_video(path, frames, fps, **kwargs)


def corner_image(height: int = 32, width: int = 48) -> np.ndarray:
    """A frame that is black except for a red top-left ``16 x 16`` corner (shows rotations)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:16, :16] = (255, 0, 0)
    return image
