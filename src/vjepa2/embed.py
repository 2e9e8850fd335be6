"""``vjepa2 embed``: videos -> encoder token features and mean-pooled vectors in one safetensors file.

Output layout (one ``.safetensors`` file, written atomically):

- ``tokens/<key>``: float32 ``(N, D)`` token features of the video's clip, ``N = T/2 * H/16 * W/16``
  in (t, h, w) raster order;
- ``pooled/<key>``: float32 ``(D,)``, the mean of the tokens;
- metadata ``videos``: JSON ``{key: {"path", "grid", "start", "padded", "rotation"}}``, ``failed``:
  JSON ``{path: reason}``, ``settings``: JSON of the command's options and the encoder config.

``<key>`` is the video's path relative to the deepest directory holding all inputs (``/``
separated), e.g. ``kitchen/take1.mp4``. :func:`read_embeddings` reads the file back. The options of
the command are parsed in :mod:`vjepa2.cli`; :func:`embed_videos` does the work.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from vjepa2.errors import InputError
from vjepa2 import memory, precision
from vjepa2.data.clips.transforms import EvalTransform
from vjepa2.data.clips.video import ClipInfo, VideoReadError, read_clip, write_video
from vjepa2.files import OutputPathError, atomic_write, check_not_an_input, check_output_file
from vjepa2.models import VisionEncoder
from vjepa2.models.vjepa2_1 import VisionEncoder21
from vjepa2.progress import progress_bar, progress_write

FORMAT = "vjepa2-embeddings/1"
# Exit codes: 0 all videos embedded, 1 some videos could not be read, 2 nothing could be done.
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2

_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                       torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8"}


class EmbedError(InputError):
    """Bad options or weights for ``vjepa2 embed``; the message says what to change."""


class SafetensorsStreamWriter:
    """Writes a safetensors file tensor by tensor, so memory holds one video's features at a time.

    Tensor bytes go to a temporary data file as they arrive; :meth:`commit` writes the header
    (which must list every tensor's offsets) followed by the data into a second temporary file and
    renames it over ``path``. Until then ``path`` is untouched, and leaving the ``with`` block
    without a commit (a crash, Ctrl-C) removes the temporary files.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._data = tempfile.NamedTemporaryFile(dir=self.path.parent, prefix=f".{self.path.name}.",
                                                 suffix=".data", delete=False)
        self._entries: dict[str, dict] = {}
        self._offset = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Append ``tensor`` (any shape; stored in its dtype) under ``name``."""
        if name in self._entries:
            raise ValueError(f"tensor name {name!r} written twice")
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.dtype not in _SAFETENSORS_DTYPES:
            raise TypeError(f"{name}: dtype {tensor.dtype} is not supported here")
        raw = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        self._data.write(raw)
        self._entries[name] = {"dtype": _SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                               "data_offsets": [self._offset, self._offset + len(raw)]}
        self._offset += len(raw)

    def commit(self, metadata: dict[str, str] | None = None) -> Path:
        """Write the file (header + data) and atomically move it to ``path``."""
        header = {"__metadata__": dict(metadata or {}), **self._entries}
        header_bytes = json.dumps(header, separators=(",", ":")).encode()
        header_bytes += b" " * (-len(header_bytes) % 8)  # data starts 8-byte aligned
        self._data.flush()

        def write(out) -> None:
            out.write(struct.pack("<Q", len(header_bytes)))
            out.write(header_bytes)
            self._data.seek(0)
            shutil.copyfileobj(self._data, out, length=1 << 22)

        return atomic_write(self.path, write)

    def close(self) -> None:
        """Remove the temporary data file (always safe; :meth:`commit` does not need it after)."""
        self._data.close()
        Path(self._data.name).unlink(missing_ok=True)

    def __enter__(self) -> "SafetensorsStreamWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class VideoEmbedding:
    """One video's features: ``tokens`` ``(N, D)``, ``pooled`` ``(D,)``, token ``grid`` ``(T', H', W')``."""

    key: str
    path: str
    tokens: torch.Tensor
    pooled: torch.Tensor
    grid: tuple[int, int, int]


def read_embeddings(path: str | os.PathLike) -> tuple[dict[str, VideoEmbedding], dict]:
    """Read a file written by ``vjepa2 embed``: ``({key: VideoEmbedding}, metadata)``.

    ``metadata`` holds the decoded ``videos``, ``failed`` and ``settings`` entries.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
        if raw.get("format") != FORMAT:
            raise ValueError(f"{path}: not a vjepa2 embeddings file (format {raw.get('format')!r})")
        meta = {name: json.loads(raw[name]) for name in ("videos", "failed", "settings")}
        videos = {key: VideoEmbedding(key=key, path=entry["path"], tokens=f.get_tensor(f"tokens/{key}"),
                                      pooled=f.get_tensor(f"pooled/{key}"), grid=tuple(entry["grid"]))
                  for key, entry in meta["videos"].items()}
    return videos, meta


def video_keys(paths: list[Path]) -> list[str]:
    """Keys for ``paths``: each path relative to the deepest directory holding them all."""
    if not paths:
        return []
    root = Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
    return [p.resolve().relative_to(root).as_posix() for p in paths]


def with_hierarchical_output(encoder: VisionEncoder | VisionEncoder21, weights: str) -> VisionEncoder21:
    """``--hierarchical``: the V-JEPA 2.1 ``encoder`` (of ``weights``) now returns its four normalised
    levels concatenated ``(N, 4D)``; the same weights, another output."""
    if not isinstance(encoder, VisionEncoder21):
        raise EmbedError(f"--hierarchical: {weights} holds a V-JEPA 2 encoder; hierarchical outputs are a "
                         f"V-JEPA 2.1 feature")
    encoder.config = dataclasses.replace(encoder.config, output="hierarchical")
    return encoder


@dataclass
class EmbedReport:
    """Outcome of :func:`embed_videos`: written keys and ``{path: reason}`` of the failures."""

    out: Path | None
    written: dict[str, str]  # key -> path
    failed: dict[str, str]  # path -> reason
    grid: tuple[int, int, int] | None = None
    dim: int | None = None


def check_options(frames: int, size: int, fps: float | None, out: str | os.PathLike,
                  inputs: dict[str, str | os.PathLike] | None = None) -> None:
    """Raise :class:`EmbedError` for clip settings out of range or an ``out`` that cannot be written
    (a folder, or one of the ``inputs``: ``{how it was given: path}``)."""
    if frames < 1 or size < 1 or (fps is not None and fps <= 0):
        raise EmbedError(f"--frames and --size must be >= 1 and --fps > 0, got frames={frames}, size={size}, fps={fps}")
    try:
        check_output_file(out)
        check_not_an_input(out, inputs or {})
    except OutputPathError as err:
        raise EmbedError(str(err)) from None


def embed_videos(paths: Iterable[str | os.PathLike], encoder: VisionEncoder, out: str | os.PathLike, *,
                 frames: int = 16, size: int = 256, fps: float | None = None, dtype: str = "fp32",
                 batch_size: int = 1, device: str | torch.device = "cpu", settings: dict | None = None,
                 progress: bool = True) -> EmbedReport:
    """Embed each video's centred clip and write tokens + pooled vectors to ``out`` (safetensors).

    Each clip is ``frames`` frames at ``fps`` (None = every frame), preprocessed with
    :class:`~vjepa2.data.clips.transforms.EvalTransform` (``size`` crop) into ``(3, T, size, size)`` and
    encoded in batches of ``batch_size`` to ``(N, D)`` tokens. Files that cannot be read are skipped
    and listed in the report; ``out`` is written (atomically) if at least one video succeeded.
    """
    paths = [Path(p) for p in paths]
    device = torch.device(device)
    config = encoder.config
    check_options(frames, size, fps, out, {str(p): p for p in paths})
    image_tokens = isinstance(encoder, VisionEncoder21) and frames == 1  # 2.1 has an image tokenizer
    if frames % config.tubelet_size and not image_tokens:
        raise EmbedError(f"--frames {frames} must be a multiple of the encoder's tubelet size {config.tubelet_size}")
    if size % config.patch_size:
        raise EmbedError(f"--size {size} must be a multiple of the encoder's patch size {config.patch_size}")
    if batch_size < 1:
        raise EmbedError(f"--batch-size must be >= 1, got {batch_size}")
    try:
        memory.check_fits(memory.clip_bytes(batch_size, frames, size), device, f"a batch of {batch_size} clip(s) of "
                          f"{frames} frames at {size} px", "lower --size, --frames or --batch-size")
    except memory.MemoryEstimateError as err:
        raise EmbedError(str(err)) from None
    if dtype not in ("fp32", "bf16"):
        raise EmbedError(f"--dtype must be fp32 or bf16, got {dtype!r}")
    encoder = encoder.to(device).eval()
    transform = EvalTransform(size)
    keys = video_keys(paths)
    report = EmbedReport(out=None, written={}, failed={})
    videos_meta: dict[str, dict] = {}
    pending: list[tuple[str, Path, torch.Tensor, ClipInfo]] = []

    def flush(writer: SafetensorsStreamWriter) -> None:
        batch = torch.stack([clip for _, _, clip, _ in pending]).to(device)
        with torch.inference_mode(), precision.autocast(device, dtype):
            tokens = encoder(batch)
        tokens = tokens.float().cpu()
        grid = encoder.grid(batch.shape)
        for (key, path, _, info), video_tokens in zip(pending, tokens):
            writer.add(f"tokens/{key}", video_tokens)
            writer.add(f"pooled/{key}", video_tokens.mean(dim=0))
            videos_meta[key] = {"path": str(path), "grid": list(grid), "start": info.start, "padded": info.padded,
                                "rotation": info.rotation}
            report.written[key] = str(path)
        report.grid, report.dim = grid, tokens.shape[-1]
        pending.clear()

    with SafetensorsStreamWriter(out) as writer:
        bar = progress_bar(list(zip(keys, paths)), desc="embed", unit="video", disable=not progress)
        for key, path in bar:
            bar.set_postfix_str(path.name[-40:], refresh=False)
            try:
                clip, info = read_clip(path, frames=frames, fps=fps)
            except Exception as err:  # one bad file must not cost the features of all the others
                reason = err.reason if isinstance(err, VideoReadError) else f"{type(err).__name__}: {err}"
                report.failed[str(path)] = reason
                progress_write(f"skipped {path}: {reason}")
                continue
            pending.append((key, path, transform(clip), info))
            if len(pending) == batch_size:
                flush(writer)
        if pending:
            flush(writer)
        if report.written:
            run_settings = {"frames": frames, "size": size, "fps": fps, "dtype": dtype, **(settings or {}),
                            "encoder": dataclasses.asdict(config)}
            writer.commit({"format": FORMAT, "videos": json.dumps(videos_meta), "failed": json.dumps(report.failed),
                           "settings": json.dumps(run_settings)})
            report.out = Path(out)
    return report


def demo_video(directory: str | os.PathLike, frames: int = 48, height: int = 144, width: int = 192) -> Path:
    """Write a small synthetic mp4 (a coloured square crossing a gradient) and return its path."""
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack([xs * 255 // width, ys * 255 // height, np.full_like(xs, 96)], axis=-1)
    video = np.repeat(background[None].astype(np.uint8), frames, axis=0)
    side = height // 4
    for t in range(frames):
        x = (width - side) * t // max(frames - 1, 1)
        y = (height - side) // 2 + int(side * np.sin(2 * np.pi * t / frames) / 2)
        video[t, y:y + side, x:x + side] = (240, 40, 40)
    return write_video(Path(directory) / "demo.mp4", video, fps=24)
