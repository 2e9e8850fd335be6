"""Decoding and clip sampling on videos the tests write with PyAV (see video_fixtures.py)."""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from video_fixtures import clip_indices, corner_image, index_frame, index_video

from vjepa2.data.clips.video import (VideoError, VideoReadError, list_videos, read_clip, read_segments, segment_starts,
                                     write_video)

CONTAINERS = [  # (file name, codec)
    ("h264.mp4", "libx264"),
    ("vp9.webm", "libvpx-vp9"),
    ("vp8.webm", "libvpx"),
    ("h264.mkv", "libx264"),
    ("mpeg4.avi", "mpeg4"),
    ("anim.gif", "gif"),
]


@pytest.mark.parametrize("name,codec", CONTAINERS)
def test_every_container_samples_the_right_frames(tmp_path, name, codec):
    path = index_video(tmp_path / name, 60, fps=30, codec=codec)
    clip, info = read_clip(path, frames=8, fps=10, start=0.0)
    assert clip.dtype == torch.uint8 and clip.shape == (8, 64, 64, 3)
    # frame step = video fps / target fps = 3
    assert clip_indices(clip) == [0, 3, 6, 9, 12, 15, 18, 21]
    assert info.padded == 0 and not info.is_image and info.rotation == 0
    assert info.video_fps == pytest.approx(30, rel=0.02)
    assert info.duration == pytest.approx(2.0, abs=0.05)

    clip, info = read_clip(path, frames=8, fps=None, start=1.0)  # every frame from 1 s on
    assert clip_indices(clip) == list(range(30, 38))
    assert info.frame_times[0] == pytest.approx(1.0, abs=0.01)


def test_fractional_frame_step_takes_the_frame_on_screen(tmp_path):
    path = index_video(tmp_path / "v.mp4", 60, fps=30)
    clip, _ = read_clip(path, frames=8, fps=20, start=0.0)  # step 1.5 frames
    assert clip_indices(clip) == [math.floor(k * 1.5) for k in range(8)]
    clip, _ = read_clip(path, frames=4, fps=60, start=0.0)  # faster than the video: frames repeat
    assert clip_indices(clip) == [0, 0, 1, 1]


def test_centred_window_without_generator(tmp_path):
    # mp4 stores these timestamps exactly (webm rounds them to milliseconds, which would make
    # the expected frame ambiguous for sample times within 1 ms of a frame change)
    path = index_video(tmp_path / "v.mp4", 100, fps=30)
    clip, info = read_clip(path, frames=16, fps=10)
    span = 16 / 10
    assert info.start == pytest.approx((info.duration - span) / 2)
    expected = [math.floor((info.start + k / 10) * 30 + 1e-6) for k in range(16)]
    assert clip_indices(clip) == expected
    assert clip_indices(read_clip(path, frames=16, fps=10)[0]) == expected  # deterministic


def test_random_window_is_uniform_and_reproducible_by_seed(tmp_path):
    path = index_video(tmp_path / "v.mp4", 90, fps=30)
    span = 8 / 10
    starts = []
    for seed in range(12):
        clip, info = read_clip(path, frames=8, fps=10, generator=np.random.default_rng(seed))
        again, info_again = read_clip(path, frames=8, fps=10, generator=np.random.default_rng(seed))
        assert torch.equal(clip, again) and info.start == info_again.start
        assert 0 <= info.start <= info.duration - span
        indices = clip_indices(clip)
        assert np.diff(indices).tolist() == [3] * 7
        assert indices[0] == math.floor(info.start * 30 + 1e-6)
        starts.append(info.start)
    assert len(set(starts)) == len(starts)  # the generator really moves the window
    assert max(starts) - min(starts) > 0.5 * (3.0 - span)


def test_window_restricts_where_a_random_clip_starts(tmp_path):
    path = index_video(tmp_path / "v.mp4", 120, fps=30)
    for seed in range(5):
        clip, info = read_clip(path, frames=4, fps=10, window=(1.0, 2.0), generator=np.random.default_rng(seed))
        assert 1.0 <= info.start <= 2.0 - 0.4
        assert 30 <= clip_indices(clip)[0] <= 48
    with pytest.raises(ValueError, match="window"):
        read_clip(path, frames=4, window=(2.0, 1.0))


@pytest.mark.parametrize("name", ["vfr.mkv", "vfr.mp4", "vfr.webm"])
def test_variable_frame_rate_uses_timestamps(tmp_path, name):
    times = [0.0, 0.01, 0.05, 0.06, 0.2, 0.21, 0.22, 0.4, 0.41, 0.5]
    path = index_video(tmp_path / name, len(times), fps=20, timestamps=times)
    clip, info = read_clip(path, frames=6, fps=10, start=0.0)
    # Samples at 0, .1, ... .5 s show the last frame at or before each time. Counting frames
    # (10 frames over 0.5 s, "step 2") would give [0, 2, 4, 6, 8, 9] instead.
    assert clip_indices(clip) == [0, 3, 4, 6, 7, 9]
    assert info.frame_times == pytest.approx((0.0, 0.06, 0.2, 0.22, 0.4, 0.5), abs=1e-3)


@pytest.mark.parametrize("rotation", [90, -90, 180])
@pytest.mark.parametrize("name", ["rot.mp4", "rot.webm"])
def test_rotation_metadata_gives_upright_frames(tmp_path, name, rotation):
    image = corner_image(32, 48)
    path = write_video(tmp_path / name, np.stack([image] * 4), 30, rotation=rotation)
    with av.open(str(path)) as container:  # the stored pixels are not rotated, only the metadata
        stored = next(container.decode(video=0))
        assert (stored.height, stored.width) == (32, 48) and stored.rotation % 360 == rotation % 360
    clip, info = read_clip(path, frames=2)
    expected = np.rot90(image, k=rotation // 90)  # counter-clockwise, as the display matrix says
    assert info.rotation == rotation % 360
    assert clip.shape == (2, *expected.shape)
    assert np.abs(clip[0].numpy().astype(int) - expected.astype(int)).max() < 40
    red = np.argwhere(clip[0].numpy()[..., 0] > 128)
    corner = {90: "bottom-left", -90: "top-right", 180: "bottom-right"}[rotation]
    rows, cols = expected.shape[:2]
    want_row = (rows - 16, rows - 1) if "bottom" in corner else (0, 15)
    want_col = (cols - 16, cols - 1) if "right" in corner else (0, 15)
    assert tuple(red.min(0)) == (want_row[0], want_col[0]) and tuple(red.max(0)) == (want_row[1], want_col[1])


@pytest.mark.parametrize("name", ["still.png", "still.jpg"])
def test_image_is_a_clip_of_one_repeated_frame(tmp_path, name):
    image = corner_image(32, 48)
    path = write_video(tmp_path / name, image[None], 1)
    clip, info = read_clip(path, frames=6, fps=4)
    assert clip.shape == (6, 32, 48, 3)
    assert all(torch.equal(clip[0], frame) for frame in clip)
    error = np.abs(clip[0].numpy().astype(int) - image.astype(int))
    if name.endswith(".png"):  # lossless
        assert error.max() == 0
    else:  # jpeg blurs colour edges a little
        assert error.mean() < 2 and error[2:14, 2:14].max() < 8 and error[18:, 18:].max() < 8
    assert info.is_image and info.padded == 5 and info.decoded_frames == 1


def test_short_video_is_padded_with_its_last_frame(tmp_path):
    path = index_video(tmp_path / "short.mp4", 5, fps=30)
    clip, info = read_clip(path, frames=8)
    assert clip_indices(clip) == [0, 1, 2, 3, 4, 4, 4, 4]
    assert info.padded == 3 and info.start == 0.0

    path = index_video(tmp_path / "ten.webm", 10, fps=30)  # 1/3 s long
    clip, info = read_clip(path, frames=8, fps=10)
    assert clip_indices(clip) == [0, 3, 6, 9, 9, 9, 9, 9]
    assert info.padded == 4  # samples at 0.4 .. 0.7 s are after the end; 0.3 s still shows frame 9


def test_long_video_decodes_only_the_window(tmp_path):
    num_frames = 900
    path = index_video(tmp_path / "long.mp4", num_frames, fps=30, gop_size=15)
    clip, info = read_clip(path, frames=8, start=25.0)
    assert clip_indices(clip) == list(range(750, 758))
    # Seeking to the key frame before 25 s: at most one group of pictures plus the clip (and
    # one frame of look-ahead) is decoded, not the 758 frames before the clip's end.
    assert info.decoded_frames <= 15 + 8 + 1
    clip, info = read_clip(path, frames=4, fps=2, start=10.0)
    assert clip_indices(clip) == [300, 315, 330, 345]
    assert info.decoded_frames <= 15 + 46


def test_segment_starts():
    assert segment_starts(10.0, 2.0, 3) == pytest.approx([10 / 6 - 1, 4.0, 50 / 6 - 1])
    assert segment_starts(10.0, 2.0, 1) == pytest.approx([4.0])
    assert segment_starts(1.0, 2.0, 3) == [0.0, 0.0, 0.0]  # video shorter than a clip
    assert segment_starts(10.0, 9.0, 2) == pytest.approx([0.0, 1.0])  # clamped into the video
    with pytest.raises(ValueError, match="num_segments"):
        segment_starts(10.0, 1.0, 0)


def test_read_segments_gives_evenly_spaced_clips(tmp_path):
    path = index_video(tmp_path / "v.mkv", 300, fps=30, gop_size=30)
    segments = read_segments(path, frames=4, fps=5, num_segments=3)
    assert len(segments) == 3
    starts = segment_starts(10.0, 4 / 5, 3)
    for (clip, info), start in zip(segments, starts):
        assert info.start == pytest.approx(start, abs=0.01)
        expected = [math.floor((info.start + k / 5) * 30 + 1e-6) for k in range(4)]
        assert clip_indices(clip) == expected


def _audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        frame.pts = 0
        frame.time_base = Fraction(1, 8000)
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_unreadable_files_raise_video_read_error_naming_file_and_reason(tmp_path):
    good = index_video(tmp_path / "good.mp4", 20)
    data = good.read_bytes()
    cases = {
        "empty.mp4": (b"", "empty"),
        "random.mp4": (np.random.default_rng(0).bytes(4096), "not a readable video"),
        "truncated.mp4": (data[: len(data) // 2], "not a readable video"),  # mp4 index is at the end
        "notes.mp4": (b"this is a text file, not a video\n" * 20, "not a readable video"),
    }
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(VideoReadError, match=reason) as err:
            read_clip(tmp_path / name, frames=4)
        assert name in str(err.value) and err.value.path.endswith(name)
        assert isinstance(err.value, VideoError)
    with pytest.raises(VideoReadError, match="no such file") as err:
        read_clip(tmp_path / "missing.mp4", frames=4)
    assert "missing.mp4" in str(err.value)
    with pytest.raises(VideoReadError, match="directory"):
        read_clip(tmp_path, frames=4)
    with pytest.raises(VideoReadError, match="no video stream"):
        read_clip(_audio_only(tmp_path / "sound.wav"), frames=4)


def test_bad_arguments_fail_early(tmp_path):
    path = index_video(tmp_path / "v.mp4", 10)
    with pytest.raises(ValueError, match="frames"):
        read_clip(path, frames=0)
    with pytest.raises(ValueError, match="fps"):
        read_clip(path, frames=4, fps=0)
    with pytest.raises(ValueError, match="start=5"):
        read_clip(path, frames=4, start=5.0)


def test_list_videos_expands_directories(tmp_path):
    root = tmp_path / "videos"
    (root / "b").mkdir(parents=True)
    (root / ".cache").mkdir()
    for name in ["z.mp4", "a.webm", "b/c.MKV", "b/still.png", "notes.txt", ".hidden.mp4", ".cache/d.mp4"]:
        (root / name).write_bytes(b"x")
    odd = tmp_path / "clip.data"
    odd.write_bytes(b"x")
    found = list_videos([root, odd, root / "z.mp4"])
    names = [p.relative_to(tmp_path.resolve()).as_posix() for p in found]
    assert names == ["videos/a.webm", "videos/b/c.MKV", "videos/b/still.png", "videos/z.mp4", "clip.data"]
    assert [p.name for p in list_videos([root], recursive=False)] == ["a.webm", "z.mp4"]
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        list_videos([root, tmp_path / "nope.mp4"])


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "v.mp4", np.zeros((2, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match="extension"):
        write_video(tmp_path / "v.xyz", np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="one frame"):
        write_video(tmp_path / "v.png", np.zeros((2, 16, 16, 3), np.uint8))
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_index_fixture_round_trips():
    for index in (0, 1, 7, 8, 63, 511, 4095):
        assert clip_indices(index_frame(index)[None]) == [index]
