"""Clip transforms checked numerically against float64 arithmetic done here by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vjepa2.data.clips.transforms import (IMAGENET_MEAN, IMAGENET_STD, EvalTransform, TrainTransform, center_crop,
                                          normalize, random_resized_crop_box, resize_short_side, spatial_views)

MEAN = np.array(IMAGENET_MEAN).reshape(3, 1, 1, 1)
STD = np.array(IMAGENET_STD).reshape(3, 1, 1, 1)


def random_clip(frames=4, height=40, width=56, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8))


def reference_normalise(clip_thwc: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> float64 (3, T, H, W), ImageNet normalised."""
    return (clip_thwc.astype(np.float64).transpose(3, 0, 1, 2) / 255.0 - MEAN) / STD


def test_normalisation_values():
    pixel = torch.tensor([255, 0, 128], dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 36, 36, 3)
    out = EvalTransform(32)(pixel)  # 36 = int(32 * 256 / 224): no resize, only a crop
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    for channel in range(3):
        assert torch.allclose(out[channel], torch.full_like(out[channel], expected[channel]), atol=1e-6)
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    back = normalize(x) * torch.tensor(IMAGENET_STD, dtype=torch.float64).view(3, 1, 1) + torch.tensor(
        IMAGENET_MEAN, dtype=torch.float64).view(3, 1, 1)
    assert torch.allclose(back, x)


def test_center_crop_location():
    height, width, size = 11, 20, 6
    coords = torch.arange(height * width).view(1, 1, height, width)
    out = center_crop(coords, size)
    top, left = (height - size) // 2, (width - size) // 2
    assert out.shape == (1, 1, size, size)
    assert int(out[0, 0, 0, 0]) == top * width + left
    assert torch.equal(out[0, 0], coords[0, 0, top:top + size, left:left + size])
    with pytest.raises(ValueError, match="centre-crop"):
        center_crop(coords, 12)


def test_eval_transform_crops_the_centre_when_no_resize_is_needed():
    clip = random_clip(frames=3, height=36, width=50)  # short side already int(32 * 256 / 224) = 36
    out = EvalTransform(32)(clip)
    assert out.dtype == torch.float32 and out.shape == (3, 3, 32, 32)
    top, left = (36 - 32) // 2, (50 - 32) // 2
    expected = reference_normalise(clip.numpy()[:, top:top + 32, left:left + 32])
    assert np.allclose(out.numpy(), expected, atol=1e-5)


def test_eval_transform_resizes_the_short_side():
    transform = EvalTransform(224)
    assert transform.resize_to == 256
    assert EvalTransform(256).resize_to == int(256 * 256 / 224) == 292
    clip = random_clip(frames=2, height=72, width=100)
    out = EvalTransform(32)(clip)
    assert out.shape == (3, 2, 32, 32)
    # A constant clip stays exactly constant through the antialiased bilinear resize.
    flat = torch.full((2, 72, 100, 3), 90, dtype=torch.uint8)
    expected = (90 / 255 - MEAN[:, 0, 0, 0]) / STD[:, 0, 0, 0]
    got = EvalTransform(32)(flat).mean(dim=(1, 2, 3)).numpy()
    assert np.allclose(got, expected, atol=1e-5)
    # Downscaling by 2 with antialiasing averages 2x2 blocks of a checkerboard into grey.
    checker = ((np.indices((72, 100)).sum(0) % 2) * 255).astype(np.uint8)
    frames = torch.from_numpy(np.repeat(checker[None, :, :, None], 3, axis=3)).permute(0, 3, 1, 2).float()
    half = resize_short_side(frames, 36)
    assert half.shape[-2:] == (36, 50)
    assert torch.allclose(half[..., 1:-1, 1:-1], torch.full_like(half[..., 1:-1, 1:-1], 127.5), atol=1.0)


def test_train_transform_is_deterministic_by_seed():
    clip = random_clip()
    transform = TrainTransform(size=32)
    a = transform(clip, np.random.default_rng(3))
    b = transform(clip, np.random.default_rng(3))
    assert a.shape == (3, 4, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    others = [transform(clip, np.random.default_rng(seed)) for seed in range(4, 8)]
    assert not any(torch.equal(a, other) for other in others)
    with pytest.raises(TypeError, match="Generator"):
        transform(clip, 3)


def test_train_transform_uses_one_box_for_all_frames():
    base = np.random.default_rng(1).integers(0, 150, (40, 56, 3), dtype=np.uint8)
    step = 10
    clip = torch.from_numpy(np.stack([base + step * t for t in range(4)]).astype(np.uint8))
    for seed in range(5):
        out = TrainTransform(size=24)(clip, np.random.default_rng(seed)).double().numpy()
        # Crop, resize and flip are linear and preserve constants, so frame t differs from frame 0
        # by exactly the brightness step, if and only if every frame got the same geometry.
        for t in range(1, 4):
            shift = (step * t / 255.0) / STD[:, 0, 0, 0]
            assert np.allclose(out[:, t] - out[:, 0], shift[:, None, None], atol=1e-4)


def test_flip_is_drawn_after_the_box():
    clip = random_clip()
    never = TrainTransform(size=32, flip_prob=0.0)(clip, np.random.default_rng(11))
    always = TrainTransform(size=32, flip_prob=1.0)(clip, np.random.default_rng(11))
    assert torch.equal(always, never.flip(-1))
    flips = [torch.equal(TrainTransform(size=32)(clip, np.random.default_rng(s)),
                         TrainTransform(size=32, flip_prob=0.0)(clip, np.random.default_rng(s))) for s in range(40)]
    assert 8 < sum(flips) < 32  # p = 0.5


def test_random_resized_crop_box_respects_scale_and_ratio():
    rng = np.random.default_rng(0)
    height, width = 240, 320
    areas, ratios = [], []
    for _ in range(500):
        top, left, box_h, box_w = random_resized_crop_box(height, width, (0.3, 1.0), (0.75, 1.35), rng)
        assert 0 <= top and top + box_h <= height and 0 <= left and left + box_w <= width
        areas.append(box_h * box_w / (height * width))
        ratios.append(box_w / box_h)
    assert 0.3 - 0.01 <= min(areas) and max(areas) <= 1.0
    assert 0.75 - 0.01 <= min(ratios) and max(ratios) <= 1.35 + 0.01
    assert min(areas) < 0.35 and max(areas) > 0.8  # the whole range is used
    # With small boxes every draw fits, so the draws show the distributions themselves:
    # area uniform in the scale range, aspect ratio log-uniform in the ratio range.
    boxes = [random_resized_crop_box(height, width, (0.1, 0.3), (0.75, 1.35), rng) for _ in range(2000)]
    areas = np.array([b[2] * b[3] / (height * width) for b in boxes])
    log_ratios = np.log([b[3] / b[2] for b in boxes])
    assert areas.mean() == pytest.approx(0.2, abs=0.01)
    assert log_ratios.mean() == pytest.approx((math.log(0.75) + math.log(1.35)) / 2, abs=0.02)
    assert log_ratios.std() == pytest.approx((math.log(1.35) - math.log(0.75)) / math.sqrt(12), rel=0.1)


def test_random_resized_crop_box_falls_back_to_a_centred_box():
    # A 10 x 1000 strip: no box with aspect <= 1.35 and area >= 30% fits, so the centred fallback
    # keeps the full height and clamps the aspect ratio to its maximum.
    top, left, box_h, box_w = random_resized_crop_box(10, 1000, (0.3, 1.0), (0.75, 1.35), np.random.default_rng(0))
    assert (top, box_h, box_w) == (0, 10, round(10 * 1.35))
    assert left == (1000 - box_w) // 2


@pytest.mark.parametrize("height,width", [(32, 80), (80, 32)])
def test_spatial_views_along_the_long_side(height, width):
    clip = random_clip(frames=2, height=height, width=width)  # short side == crop: no resize
    views = spatial_views(clip, 32)
    assert views.shape == (3, 3, 2, 32, 32)
    reference = reference_normalise(clip.numpy())
    for view, offset in zip(views, (0, 24, 48)):
        expected = (reference[:, :, :, offset:offset + 32] if width > height
                    else reference[:, :, offset:offset + 32, :])
        assert np.allclose(view.numpy(), expected, atol=1e-5)
    single = spatial_views(clip, 32, num_views=1)
    assert torch.equal(single[0], views[1])


def test_bad_clips_are_rejected():
    with pytest.raises(ValueError, match="uint8"):
        EvalTransform(32)(torch.rand(2, 40, 40, 3))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        EvalTransform(32)(torch.zeros(2, 3, 40, 40, dtype=torch.uint8))
    with pytest.raises(ValueError, match="scale"):
        TrainTransform(32, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="flip_prob"):
        TrainTransform(32, flip_prob=2.0)
