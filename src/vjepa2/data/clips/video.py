"""Video decoding with PyAV: sample a clip of ``frames`` frames at a target fps from a window.

Sampling rule (timestamps, not indices, so variable frame rate is handled):
    the clip covers ``frames`` sample times ``start + k / fps`` (``k = 0 .. frames-1``) and frame
    ``k`` is the video frame *on screen* at that time, i.e. the last frame whose presentation time
    is ``<= start + k / fps``. For a constant-rate video this is the usual "frame step =
    video fps / target fps" (``floor(k * step)`` from the start frame). A quarter of a frame interval
    of slack absorbs the rounding of stored timestamps (a 30 fps webm stores frame 2 at 67 ms, not
    66.67 ms). With ``fps=None`` the clip is ``frames`` consecutive decoded frames.

Window placement: ``start`` given -> used as is; otherwise a ``numpy.random.Generator`` draws a
uniform start (training) and without one the clip is centred (evaluation). ``window=(begin, end)``
restricts the placement to part of the video; :func:`segment_starts` / :func:`read_segments` give
evenly spaced clips for multi-segment evaluation.

Short videos are padded by **repeating the last frame** (never looped: looping would jump back in
time); :attr:`ClipInfo.padded` says how many trailing frames are repeats. Long videos are not decoded
in full: the reader seeks to the key frame before the clip and stops after its last frame
(:attr:`ClipInfo.decoded_frames` counts the work). Rotation metadata (display matrix) is applied so
frames come out upright. Image files (jpg, png, ...) become a clip of one repeated frame.

Every failure to read a file raises :class:`VideoReadError` naming the file and the reason.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import av
import numpy as np
import torch

from vjepa2.files import atomic_path

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".gif", ".mpg", ".mpeg",
                              ".ts", ".flv", ".wmv", ".3gp", ".ogv"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
# Demuxers that read a single still picture ("png_pipe", "jpeg_pipe", ... and the generic image2).
_IMAGE_FORMAT_SUFFIX = "_pipe"


class VideoError(Exception):
    """Base class of the errors raised by :mod:`vjepa2.data.clips.video`."""


class VideoReadError(VideoError):
    """A file cannot be read as a video or image; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class ClipInfo:
    """What :func:`read_clip` did.

    Attributes:
        path: the file read.
        start: clip start in seconds from the first frame of the video.
        frame_times: presentation time (s, from the first frame) of each returned frame, ``(T,)``.
        video_fps: the container's average frame rate (None if it gives none).
        target_fps: the requested sampling rate (None = every frame).
        duration: video duration in seconds as the container reports it (0 for an image).
        padded: how many trailing frames repeat the last frame because the video ended.
        rotation: degrees (counter-clockwise) the frames were rotated to come out upright.
        is_image: the file is a still image, repeated ``frames`` times.
        decoded_frames: how many frames were decoded to produce the clip.
    """

    path: str
    start: float
    frame_times: tuple[float, ...]
    video_fps: float | None
    target_fps: float | None
    duration: float
    padded: int
    rotation: int
    is_image: bool
    decoded_frames: int


def list_videos(paths: Iterable[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """Expand files and directories into a list of video/image files.

    Directories contribute their files with a known video or image extension (sorted by path,
    hidden files skipped, sub-directories too when ``recursive``); a file named explicitly is kept
    whatever its extension. Duplicates are dropped, the first occurrence keeps its place.

    Raises:
        FileNotFoundError: a path does not exist (named in the message).
    """
    known = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(sorted(p for p in path.glob(pattern)
                                if p.is_file() and p.suffix.lower() in known
                                and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory (give video files or directories)")
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(path.resolve(), None)
    return list(unique)


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise VideoReadError(path, "no such file")
    if path.is_dir():
        raise VideoReadError(path, "is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoReadError(path, "file is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise VideoReadError(path, f"not a readable video or image ({_ffmpeg_reason(err)})") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(path, "has no video stream")
    return container


def _ffmpeg_reason(err: Exception) -> str:
    # PyAV messages repeat the file name after the reason; the caller already names the file.
    return (getattr(err, "strerror", None) or str(err)).strip()


class _Video:
    """An opened video stream with its timing metadata (times in seconds from the first frame)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.container = _open(path)
        self.stream = self.container.streams.video[0]
        self.time_base = self.stream.time_base or Fraction(1, av.time_base)
        self.first_pts = self.stream.start_time or 0
        fmt = self.container.format.name
        self.is_image = path.suffix.lower() in IMAGE_EXTENSIONS or fmt == "image2" or fmt.endswith(
            _IMAGE_FORMAT_SUFFIX)
        self._at_start = True
        self.duration = 0.0 if self.is_image else self._duration()
        # Frames per second of duration is the true average when the container counts its frames
        # (a GIF's "average rate" is its first frame delay); otherwise trust the stream's rate.
        rate = self.stream.average_rate or self.stream.guessed_rate
        if self.stream.frames and self.duration > 0:
            rate = self.stream.frames / self.duration
        self.fps = float(rate) if rate else None

    def _duration(self) -> float:
        if self.stream.duration:
            return float(self.stream.duration * self.time_base)
        if self.container.duration:
            start = self.container.start_time or 0
            return max(0.0, (self.container.duration - max(start, 0)) / av.time_base)
        # No duration in the header (some streamed files): read packet timestamps, no decoding.
        last = 0.0
        for packet in self.container.demux(self.stream):
            if packet.pts is not None:
                last = max(last, float((packet.pts - self.first_pts + (packet.duration or 0)) * self.time_base))
        self._at_start = False
        self._rewind()
        return last

    def _rewind(self) -> None:
        """Go back to the first frame (reopening the file if the format cannot seek)."""
        if self._at_start:
            return
        try:
            self.container.seek(self.first_pts, stream=self.stream, backward=True)
        except av.FFmpegError:
            self.container.close()
            self.container = _open(self.path)
            self.stream = self.container.streams.video[0]
        self._at_start = True

    def close(self) -> None:
        self.container.close()

    def _decode(self):
        self._at_start = False
        previous = None
        interval = 1.0 / self.fps if self.fps else 0.0
        try:
            for frame in self.container.decode(self.stream):
                if frame.pts is not None:
                    t = float((frame.pts - self.first_pts) * self.time_base)
                else:  # no timestamp (rare, some AVI): continue from the previous one
                    t = 0.0 if previous is None else previous + interval
                previous = t
                yield t, frame
        except av.FFmpegError as err:
            raise VideoReadError(self.path, f"decoding failed near {previous or 0.0:.2f}s "
                                            f"({_ffmpeg_reason(err)})") from None

    def frames_from(self, time: float):
        """Decoded frames ``(time_s, frame)`` in presentation order, the first one at or before ``time``.

        Seeks to the key frame before ``time`` so a long video is not decoded from the start; when
        the format seeks imprecisely (lands after ``time``) it decodes from the beginning instead.
        """
        if time > 0:
            try:
                self.container.seek(self.first_pts + int(math.floor(time / self.time_base)),
                                    stream=self.stream, backward=True)
                self._at_start = False
                frames = self._decode()
                first = next(frames, None)
                if first is not None and first[0] <= time:
                    yield first
                    yield from frames
                    return
            except av.FFmpegError:
                self._at_start = False
        self._rewind()
        yield from self._decode()


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None) -> tuple[np.ndarray, int]:
    """``(H, W, 3)`` uint8 upright RGB and the applied rotation in degrees (counter-clockwise)."""
    if size is None:
        image = frame.to_ndarray(format="rgb24")
    else:  # keep every frame the size of the first even if the stream changes resolution
        image = frame.to_ndarray(format="rgb24", width=size[1], height=size[0])
    try:
        rotation = int(round((frame.rotation or 0) / 90.0)) * 90 % 360
    except (AttributeError, ValueError):
        rotation = 0
    if rotation:
        # The display matrix asks for a counter-clockwise rotation; np.rot90 turns that way.
        image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
    return image, rotation


def clip_span(frames: int, fps: float | None, video_fps: float | None) -> float:
    """Seconds a clip of ``frames`` samples covers (``frames / fps``; ``fps=None`` = video rate)."""
    rate = fps or video_fps
    return frames / rate if rate else 0.0


def segment_starts(duration: float, span: float, num_segments: int) -> list[float]:
    """Start times of ``num_segments`` evenly spaced clips of ``span`` seconds.

    The video is cut into equal segments and a clip is centred in each, clamped to
    ``[0, duration - span]`` (so short videos give overlapping clips rather than padding).
    """
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    latest = max(0.0, duration - span)
    centres = [(i + 0.5) * duration / num_segments for i in range(num_segments)]
    return [min(max(c - span / 2, 0.0), latest) for c in centres]


def _check_args(frames: int, fps: float | None) -> None:
    if not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive or None (every frame), got {fps!r}")


def _place(video: _Video, span: float, start: float | None, window: tuple[float, float] | None,
           generator: np.random.Generator | None) -> float:
    """Clip start (s) inside ``window`` (default: the whole video)."""
    begin, end = (0.0, video.duration) if window is None else (float(window[0]), float(window[1]))
    if window is not None and not 0 <= begin <= end:
        raise ValueError(f"{video.path}: window must satisfy 0 <= begin <= end, got {window}")
    if start is not None:
        if start < 0 or (start > video.duration and not video.is_image):
            raise ValueError(f"{video.path}: start={start}s is outside the video (duration "
                             f"{video.duration:.3f}s)")
        return float(start)
    latest = max(begin, end - span)
    if generator is not None:
        return float(generator.uniform(begin, latest)) if latest > begin else begin
    return (begin + latest) / 2


class _FrameCursor:
    """Walks decoded frames forward; ``at(t)`` is the frame on screen at time ``t``."""

    def __init__(self, frames, default_interval: float) -> None:
        self._frames = frames
        self._default_interval = default_interval
        self.current = None  # (time, frame)
        self._upcoming = None
        self.ended = False
        self.end_time = math.inf  # when the last frame stops being shown, known once ended
        self.decoded = 0

    def _peek(self):
        if self._upcoming is None and not self.ended:
            self._upcoming = next(self._frames, None)
            if self._upcoming is None:
                self.ended = True
                if self.current is not None:
                    frame = self.current[1]
                    length = (float(frame.duration * frame.time_base) if frame.duration and frame.time_base
                              else self._default_interval)
                    self.end_time = self.current[0] + length
            else:
                self.decoded += 1
        return self._upcoming

    def step(self):
        """Move to the next frame; False at the end of the video."""
        upcoming = self._peek()
        if upcoming is None:
            return False
        self.current, self._upcoming = upcoming, None
        return True

    def at(self, time: float):
        """The last frame with presentation time ``<= time`` (the first frame if none is)."""
        if self.current is None:
            self.step()
        while (upcoming := self._peek()) is not None and upcoming[0] <= time:
            self.step()
        return self.current


def _read_from(video: _Video, frames: int, fps: float | None, start: float | None,
               window: tuple[float, float] | None, generator: np.random.Generator | None
               ) -> tuple[torch.Tensor, ClipInfo]:
    if video.is_image:
        return _read_image(video, frames)
    clip_start = _place(video, clip_span(frames, fps, video.fps), start, window, generator)
    interval = 1.0 / (video.fps or 30.0)
    # Absorbs stored timestamps rounded up to the time base (at most half a unit); capped at a
    # quarter frame so that a variable-rate frame shortly after a sample time is never taken early.
    slack = min(0.5 * float(video.time_base), 0.25 * interval) + 1e-9
    cursor = _FrameCursor(video.frames_from(clip_start + slack), interval)
    picks = []  # (time, frame) per output frame
    padded = 0
    for k in range(frames):
        if fps is None:
            if k == 0:
                cursor.at(clip_start + slack)
            elif not cursor.step():
                padded += 1
        else:
            sample_time = clip_start + k / fps
            cursor.at(sample_time + slack)
            padded += cursor.ended and sample_time >= cursor.end_time - slack
        if cursor.current is None:
            raise VideoReadError(video.path, "no decodable video frames"
                                 + (f" after {clip_start:.2f}s" if clip_start > 0 else ""))
        picks.append(cursor.current)
    images: list[np.ndarray] = []
    size = None
    rotation = 0
    for i, (_, frame) in enumerate(picks):
        if i and frame is picks[i - 1][1]:  # a frame on screen for several samples: convert once
            images.append(images[-1])
            continue
        image, rotation = _to_rgb(frame, size)
        size = size or (frame.height, frame.width)
        images.append(image)
    info = ClipInfo(path=str(video.path), start=clip_start, frame_times=tuple(t for t, _ in picks),
                    video_fps=video.fps, target_fps=fps, duration=video.duration, padded=int(padded),
                    rotation=rotation, is_image=False, decoded_frames=cursor.decoded)
    return torch.from_numpy(np.stack(images)), info


def _read_image(video: _Video, frames: int) -> tuple[torch.Tensor, ClipInfo]:
    entry = next(video.frames_from(0.0), None)
    if entry is None:
        raise VideoReadError(video.path, "image holds no decodable picture")
    image, rotation = _to_rgb(entry[1], None)
    clip = torch.from_numpy(image).unsqueeze(0).expand(frames, -1, -1, -1).contiguous()
    info = ClipInfo(path=str(video.path), start=0.0, frame_times=(0.0,) * frames, video_fps=None,
                    target_fps=None, duration=0.0, padded=frames - 1, rotation=rotation, is_image=True,
                    decoded_frames=1)
    return clip, info


def read_clip(path: str | os.PathLike, frames: int = 16, fps: float | None = None, *,
              start: float | None = None, window: tuple[float, float] | None = None,
              generator: np.random.Generator | None = None) -> tuple[torch.Tensor, ClipInfo]:
    """Read a clip of ``frames`` frames from a video or image file.

    Args:
        path: video (mp4, webm, mkv, avi, gif, ...) or image (jpg, png, ...) file.
        frames: number of frames ``T`` to return.
        fps: sampling rate in frames per second (frame step = video fps / fps); None = every frame.
        start: clip start in seconds from the first frame (evaluation at a given time).
        window: ``(begin, end)`` seconds the clip is placed in when ``start`` is None.
        generator: draws a uniform random start (training); without it the clip is centred.

    Returns:
        ``clip`` uint8 ``(T, H, W, 3)`` RGB, upright, and a :class:`ClipInfo`.

    Raises:
        VideoReadError: missing, empty, corrupt or undecodable file (message names file and reason).
        ValueError: bad arguments (``frames < 1``, ``fps <= 0``, ``start`` outside the video).
    """
    _check_args(frames, fps)
    video = _Video(Path(path))
    try:
        return _read_from(video, frames, fps, start, window, generator)
    finally:
        video.close()


def read_segments(path: str | os.PathLike, frames: int = 16, fps: float | None = None,
                  num_segments: int = 1) -> list[tuple[torch.Tensor, ClipInfo]]:
    """``num_segments`` evenly spaced clips (see :func:`segment_starts`), each ``(T, H, W, 3)`` uint8.

    The file is opened once; each clip is read by seeking to its start.
    """
    _check_args(frames, fps)
    video = _Video(Path(path))
    try:
        if video.is_image:
            return [_read_image(video, frames)] * num_segments
        starts = segment_starts(video.duration, clip_span(frames, fps, video.fps), num_segments)
        return [_read_from(video, frames, fps, s, None, None) for s in starts]
    finally:
        video.close()


# Containers and default codecs for write_video, by file extension.
_WRITE_FORMATS = {
    ".mp4": ("mp4", "libx264", "yuv420p"),
    ".mov": ("mov", "libx264", "yuv420p"),
    ".mkv": ("matroska", "libx264", "yuv420p"),
    ".webm": ("webm", "libvpx-vp9", "yuv420p"),
    ".avi": ("avi", "mpeg4", "yuv420p"),
    ".gif": ("gif", "gif", "rgb8"),
    ".png": ("image2", "png", "rgb24"),
    ".jpg": ("image2", "mjpeg", "yuvj420p"),
    ".jpeg": ("image2", "mjpeg", "yuvj420p"),
}


def write_video(path: str | os.PathLike, frames: np.ndarray | torch.Tensor, fps: float = 30, *,
                codec: str | None = None, pixel_format: str | None = None,
                timestamps: Sequence[float] | None = None, rotation: int | None = None,
                gop_size: int | None = None, options: dict[str, str] | None = None) -> Path:
    """Encode uint8 RGB frames ``(T, H, W, 3)`` with PyAV (atomically: temp file + rename).

    The container and default codec follow the extension (mp4/mov/mkv: h264, webm: vp9, avi: mpeg4,
    gif, png/jpg: one still picture). ``timestamps`` (seconds, increasing) make a variable frame rate
    file; ``rotation`` stores a display matrix asking players to rotate counter-clockwise by that
    many degrees; ``gop_size`` is the key-frame interval.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _WRITE_FORMATS:
        raise ValueError(f"{path}: cannot write extension {ext!r}; use one of {', '.join(sorted(_WRITE_FORMATS))}")
    container_format, default_codec, default_pix = _WRITE_FORMATS[ext]
    array = frames.numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or len(array) == 0:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) with T >= 1, got {array.dtype} {array.shape}")
    if container_format == "image2" and len(array) != 1:
        raise ValueError(f"{path}: an image file holds one frame, got {len(array)}")
    if timestamps is not None and len(timestamps) != len(array):
        raise ValueError(f"got {len(timestamps)} timestamps for {len(array)} frames")
    height, width = array.shape[1:3]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format=container_format) as container:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream(codec or default_codec, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = pixel_format or default_pix
        if options:
            stream.options = dict(options)
        if gop_size is not None:
            stream.codec_context.gop_size = gop_size
        if timestamps is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(array):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if timestamps is not None:
                frame.pts = int(round(timestamps[i] * 1000))
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
