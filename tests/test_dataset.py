"""The pretraining loader: pure function of (seed, step, rank), resume, rank split, bad files, mixtures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from vjepa2.config import ConfigError, from_dict, to_dict
from vjepa2.data.clips.dataset import (DataConfig, DataError, PretrainBatch, SourceConfig, SyntheticConfig,
                                       build_pretrain_loader)
from vjepa2.data.clips.transforms import IMAGENET_MEAN, IMAGENET_STD
from vjepa2.data.clips.video import write_video
from vjepa2.masking import MaskConfig

SMALL = dict(frames=4, size=32, patch_size=16, tubelet_size=2)


def take(data: DataConfig, steps: int, *, mask: MaskConfig = MaskConfig(), batch_size: int = 2, seed: int = 0,
         start_step: int = 0, rank: int = 0, world_size: int = 1) -> list[PretrainBatch]:
    loader = build_pretrain_loader(data, mask, batch_size=batch_size, seed=seed, start_step=start_step, rank=rank,
                                   world_size=world_size, **SMALL)
    try:
        return [next(loader) for _ in range(steps)]
    finally:
        loader.close()


def same_batch(a: PretrainBatch, b: PretrainBatch) -> bool:
    return (a.step == b.step and torch.equal(a.clips, b.clips) and len(a.masks) == len(b.masks)
            and all(torch.equal(x, y) for pa, pb in zip(a.masks, b.masks) for x, y in zip(pa, pb)))


def test_batch_layout():
    batch, = take(DataConfig(), 1, batch_size=3)
    assert batch.clips.shape == (3, 3, 4, 32, 32) and batch.clips.dtype == torch.float32
    assert len(batch.masks) == 2
    for context, target in batch.masks:
        assert context.shape[0] == 3 and target.shape[0] == 3
        assert context.dtype == torch.int64
        assert int(torch.cat((context, target), 1).max()) < 2 * 2 * 2
    assert batch.skipped == [] and batch.labels.tolist() == [-1, -1, -1]
    assert batch.slots.tolist() == [0, 1, 2]
    # ImageNet-normalised: a clip's values sit around 0 with unit-ish spread, not in [0, 255]
    assert -3 < float(batch.clips.mean()) < 3 and float(batch.clips.abs().max()) < 3


def test_determinism_by_seed_and_step_and_resume():
    data = DataConfig()
    first = take(data, 5, seed=7)
    again = take(data, 5, seed=7)
    assert all(same_batch(a, b) for a, b in zip(first, again))
    assert [b.step for b in first] == [0, 1, 2, 3, 4]
    assert not torch.equal(first[0].clips, first[1].clips)
    other = take(data, 1, seed=8)[0]
    assert not torch.equal(other.clips, first[0].clips)
    resumed = take(data, 2, seed=7, start_step=3)
    assert same_batch(resumed[0], first[3]) and same_batch(resumed[1], first[4])


def test_worker_processes_change_nothing():
    data = DataConfig()
    inline = take(data, 4, seed=1, start_step=2)
    workers = take(dataclasses.replace(data, num_workers=2), 4, seed=1, start_step=2)
    assert all(same_batch(a, b) for a, b in zip(inline, workers))


@pytest.mark.parametrize("equalize", ["rank_batch", "global_batch"])
def test_two_ranks_split_the_one_rank_global_batch(equalize):
    data, mask = DataConfig(), MaskConfig(equalize=equalize)
    whole = take(data, 2, mask=mask, batch_size=4, seed=3)
    halves = [take(data, 2, mask=mask, batch_size=2, seed=3, rank=r, world_size=2) for r in range(2)]
    for step in range(2):
        assert torch.equal(whole[step].clips, torch.cat([h[step].clips for h in halves]))
        for g, (context, target) in enumerate(whole[step].masks):
            parts = [h[step].masks[g] for h in halves]
            if equalize == "global_batch":
                assert torch.equal(context, torch.cat([p[0] for p in parts]))
                assert torch.equal(target, torch.cat([p[1] for p in parts]))
            else:  # each rank keeps at least as many tokens; the global batch's are a prefix
                for r, (c, t) in enumerate(parts):
                    assert torch.equal(c[:, :context.shape[1]], context[2 * r:2 * r + 2])
                    assert torch.equal(t[:, :target.shape[1]], target[2 * r:2 * r + 2])


def write_clip(path: Path, frames: int, fps: float = 30) -> Path:
    rng = np.random.default_rng(len(str(path)))
    return write_video(path, rng.integers(0, 255, (frames, 32, 48, 3), dtype=np.uint8), fps)


def test_list_with_broken_files_finishes_and_reports_each(tmp_path):
    good = write_clip(tmp_path / "good.mp4", 40)
    image = write_video(tmp_path / "still.png", np.full((1, 40, 40, 3), 200, np.uint8))
    short = write_clip(tmp_path / "short.mp4", 3)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.touch()
    vanished = write_clip(tmp_path / "vanished.mp4", 40)
    listing = tmp_path / "train.txt"
    listing.write_text("".join(f"{p.name} {i}\n" for i, p in enumerate(
        [good, image, short, corrupt, empty, vanished, tmp_path / "missing.mp4"])))
    data = DataConfig(sources=(SourceConfig(path=str(listing)),), fps=8.0)
    loader = build_pretrain_loader(data, MaskConfig(), batch_size=4, seed=0, start_step=0, **SMALL)
    vanished.unlink()  # listed (and the list read) while it existed, gone when the loader reads it
    batches = [next(loader) for _ in range(12)]
    loader.close()
    reasons: dict[str, set[str]] = {}
    for batch in batches:
        assert batch.clips.shape == (4, 3, 4, 32, 32) and torch.isfinite(batch.clips).all()
        assert set(batch.labels.tolist()) <= {0, 1}  # only the good video and the image are used
        for path, reason in batch.skipped:
            reasons.setdefault(Path(path).name, set()).add(reason)
    assert set(reasons) == {"short.mp4", "corrupt.mp4", "empty.mp4", "vanished.mp4", "missing.mp4"}
    assert any("too short" in r for r in reasons["short.mp4"])
    assert any("empty" in r for r in reasons["empty.mp4"])
    assert any("no such file" in r for r in reasons["missing.mp4"] | reasons["vanished.mp4"])
    assert all(r for r in reasons["corrupt.mp4"])
    # Replacements are deterministic too: the same run skips the same files at the same steps.
    again = take(data, 12, batch_size=4)
    assert [b.skipped for b in again] == [b.skipped for b in batches]
    assert all(torch.equal(a.clips, b.clips) for a, b in zip(again, batches))

    padded = take(dataclasses.replace(data, pad_short_videos=True), 12, batch_size=4)
    assert not any("short.mp4" in p for b in padded for p, _ in b.skipped)


def test_every_file_broken_raises_after_bounded_attempts(tmp_path):
    listing = tmp_path / "broken.txt"
    (tmp_path / "a.mp4").write_bytes(b"not a video")
    listing.write_text("a.mp4 0\nmissing.mp4 1\n")
    data = DataConfig(sources=(SourceConfig(path=str(listing)),), max_read_attempts=5)
    with pytest.raises(DataError, match=r"5 attempts .* all failed.*max_read_attempts=5.*broken.txt"):
        take(data, 1)


def test_images_are_clips_of_one_repeated_frame(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        write_video(tmp_path / "imgs" / f"{i}.png", rng.integers(0, 255, (1, 40, 56, 3), dtype=np.uint8))
    data = DataConfig(sources=(SourceConfig(kind="folder", path=str(tmp_path / "imgs")),))
    for batch in take(data, 2, batch_size=3):
        for clip in batch.clips:
            assert all(torch.equal(clip[:, 0], clip[:, t]) for t in range(1, 4))
            assert clip[:, 0].std() > 0.1
    # A uniform image comes out as its ImageNet-normalised colour.
    write_video(tmp_path / "white" / "w.png", np.full((1, 40, 40, 3), 255, np.uint8))
    clip = take(DataConfig(sources=(SourceConfig(path=str(tmp_path / "white")),)), 1, batch_size=1)[0].clips[0]
    expect = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(clip.mean(dim=(1, 2, 3)), expect, atol=1e-4, rtol=0)


def test_mixture_follows_weights(tmp_path):
    write_video(tmp_path / "img.png", np.full((1, 32, 32, 3), 90, np.uint8))
    listing = tmp_path / "real.txt"
    listing.write_text("img.png 5\n")
    data = DataConfig(sources=(SourceConfig(kind="synthetic", weight=3.0), SourceConfig(path=str(listing))),
                      synthetic=SyntheticConfig(num_videos=10))
    labels = torch.cat([b.labels for b in take(data, 25, batch_size=8)])
    real = int((labels == 5).sum())
    # 200 draws with p = 0.25: mean 50, sd 6.1; allow 4 sd.
    assert abs(real - 50) < 25, real
    assert set(labels.tolist()) == {-1, 5}


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"sources\[0\].*needs a path"):
        from_dict(DataConfig, {"sources": [{"kind": "list"}]})
    with pytest.raises(ConfigError, match=r"sources\[0\].*takes no path"):
        from_dict(DataConfig, {"sources": [{"kind": "synthetic", "path": "x.txt"}]})
    with pytest.raises(ConfigError, match="num_wokers"):
        from_dict(DataConfig, {"num_wokers": 2})
    with pytest.raises(ConfigError, match="crop_scale"):
        from_dict(DataConfig, {"augment": {"crop_scale": [0.5, 1.5]}})
    with pytest.raises(ConfigError, match="at most one synthetic"):
        from_dict(DataConfig, {"sources": [{"kind": "synthetic"}, {"kind": "synthetic"}]})
    with pytest.raises(ConfigError, match="motions"):
        from_dict(DataConfig, {"synthetic": {"motions": ["wobble"]}})
    cfg = from_dict(DataConfig, {"sources": [{"path": "k400.txt", "weight": 0.3}], "fps": None})
    assert cfg.sources[0].kind == "auto" and cfg.fps is None
    assert from_dict(DataConfig, to_dict(DataConfig())) == DataConfig()
    assert from_dict(DataConfig, to_dict(cfg)) == cfg


def test_build_errors_are_early_and_clear(tmp_path):
    missing = DataConfig(sources=(SourceConfig(path=str(tmp_path / "nope.txt")),))
    with pytest.raises(ConfigError, match=r"sources\[0\].*nope.txt does not exist"):
        build_pretrain_loader(missing, MaskConfig(), batch_size=1, seed=0, start_step=0, **SMALL)
    bad_line = tmp_path / "bad.txt"
    bad_line.write_text("a.mp4 1\nb.mp4\n")
    with pytest.raises(ConfigError, match=r"bad.txt:2"):
        build_pretrain_loader(DataConfig(sources=(SourceConfig(path=str(bad_line)),)), MaskConfig(), batch_size=1,
                              seed=0, start_step=0, **SMALL)
    with pytest.raises(ValueError, match="size=40 is not a positive multiple of 16"):
        build_pretrain_loader(DataConfig(), MaskConfig(), frames=4, size=40, batch_size=1, seed=0, start_step=0)
    with pytest.raises(ValueError, match="rank"):
        build_pretrain_loader(DataConfig(), MaskConfig(), batch_size=1, seed=0, start_step=0, rank=2, world_size=2,
                              **SMALL)
