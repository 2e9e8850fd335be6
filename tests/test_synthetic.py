"""The procedural video generator: determinism, reversal, motions that really move, serialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vjepa2.config import ConfigError
from vjepa2.data.clips.synthetic import (BACKGROUNDS, COLOURS, MOTIONS, REVERSED_MOTION, SHAPES, Background, Motion,
                                         Scene, SceneObject, SyntheticVideos, colour_rgb, make_motion, make_object,
                                         make_occluder, object_track, render, sample_scene)

PLAIN = Background(kind="plain", colours=("#000000", "#000000"))


def object_pixels(clip: np.ndarray, colour: str) -> np.ndarray:
    """``(T, H, W)`` bool: pixels of exactly this colour."""
    return np.all(clip == np.array(colour_rgb(colour), dtype=np.uint8), axis=-1)


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def orientation_cov(mask: np.ndarray) -> float:
    """Covariance of x and y over the shape: > 0 when its long axis points down-right (y is down)."""
    ys, xs = np.nonzero(mask)
    return float(np.mean((xs - xs.mean()) * (ys - ys.mean())))


def test_determinism_by_seed_and_index():
    a, b = SyntheticVideos(seed=3), SyntheticVideos(seed=3)
    assert a[5] == b[5]
    assert np.array_equal(a.clip(5, 8, 32), b.clip(5, 8, 32))
    assert a[5] != a[6]
    assert a[5] != SyntheticVideos(seed=4)[5]
    assert not np.array_equal(a.clip(5, 8, 32), a.clip(6, 8, 32))
    with pytest.raises(IndexError):
        SyntheticVideos(seed=0, num_videos=3)[3]


@pytest.mark.parametrize("size,expect", [(32, (32, 32)), ((24, 40), (24, 40)), (1, (1, 1))])
def test_render_shape_and_dtype(size, expect):
    clip = SyntheticVideos(seed=1).clip(0, 5, size)
    assert clip.shape == (5, *expect, 3) and clip.dtype == np.uint8
    with pytest.raises(ValueError, match="frames"):
        render(Scene(), 0, 16)


def test_reversed_scene_is_frame_reversed_clip_exactly():
    videos = SyntheticVideos(seed=7)
    for index in range(12):
        scene = videos[index]
        assert scene.reversed().reversed() == scene
        for frames in (1, 2, 7, 16):
            forward = render(scene, frames, 40)
            backward = render(scene.reversed(), frames, 40)
            assert np.array_equal(backward, forward[::-1]), (index, frames)
        assert not np.array_equal(render(scene, 16, 40), render(scene.reversed(), 16, 40)) or \
            all(o.motion.kind == "static" for o in scene.objects) and scene.background.drift == 0


def single(motion: Motion | str, shape="ellipse", seed=0, size=None) -> tuple[Scene, SceneObject]:
    rng = np.random.default_rng(seed)
    obj = make_object(rng, motion, shape=shape, colour="red", size=size)
    return Scene(background=PLAIN, objects=(obj,)), obj


def test_static_is_static_and_translate_moves_by_velocity():
    scene, _ = single("static")
    clip = render(scene, 8, 64)
    assert all(np.array_equal(clip[0], frame) for frame in clip)
    for direction in (0.0, math.pi / 2, 2.0, 4.0):
        motion = make_motion("translate", np.random.default_rng(0), direction=direction, speed=0.4)
        scene = Scene(background=PLAIN, objects=(SceneObject("circle", "red", 0.1,
                                                             (0.5 - motion.velocity[0] / 2,
                                                              0.5 - motion.velocity[1] / 2), 0.0, motion),))
        mask = object_pixels(render(scene, 9, 128), "red")
        moved = centroid(mask[-1]) - centroid(mask[0])
        expect = np.array([math.cos(direction), math.sin(direction)]) * 0.4 * 128
        assert np.abs(moved - expect).max() < 1.5, (direction, moved, expect)


def test_rotation_direction_on_screen():
    # A horizontal ellipse turned a quarter turn clockwise passes through "long axis down-right".
    for kind, sign in (("rotate_cw", 1), ("rotate_ccw", -1)):
        motion = Motion(kind, spin=sign * math.pi / 2)
        scene = Scene(background=PLAIN, objects=(SceneObject("ellipse", "red", 0.3, (0.5, 0.5), 0.0, motion),))
        mask = object_pixels(render(scene, 5, 96), "red")
        assert abs(orientation_cov(mask[0])) < 1.0
        assert np.sign(orientation_cov(mask[2])) == sign
        assert np.abs(centroid(mask[2]) - centroid(mask[0])).max() < 0.5  # turns in place
        reversed_mask = object_pixels(render(scene.reversed(), 5, 96), "red")
        assert np.sign(orientation_cov(reversed_mask[2])) == sign  # same pose mid-clip ...
        # ... but reached from the other side: the reversed clip starts where the forward one ends.
        assert np.array_equal(reversed_mask[0], mask[-1])
    assert REVERSED_MOTION["rotate_cw"] == "rotate_ccw" and set(REVERSED_MOTION) == set(MOTIONS)


@pytest.mark.parametrize("kind", ["grow", "shrink", "approach", "recede"])
def test_scale_motions_change_area_and_distance(kind):
    for seed in range(3):
        scene, obj = single(kind, shape="circle", seed=seed)
        mask = object_pixels(render(scene, 6, 96), "red")
        areas = mask.sum(axis=(1, 2))
        assert areas.min() > 0
        growing = kind in ("grow", "approach")
        assert np.all(np.diff(areas) > 0) if growing else np.all(np.diff(areas) < 0), areas
        offset = [np.linalg.norm(centroid(m) - 48) for m in mask]
        if kind in ("grow", "shrink"):
            assert abs(offset[-1] - offset[0]) < 1.0  # grows in place
        elif abs(offset[0]) > 3:
            # perspective: drifts away from (approach) or towards (recede) the centre
            assert (offset[-1] > offset[0]) == growing, offset


def test_occluder_hides_main_object_mid_clip():
    rng = np.random.default_rng(2)
    main = make_object(rng, "static", shape="square", colour="red")
    occluder = make_occluder(main, rng, colour="blue")
    scene = Scene(background=PLAIN, objects=(main, occluder))
    visible = object_pixels(render(scene, 9, 64), "red").sum(axis=(1, 2))
    alone = object_pixels(render(Scene(background=PLAIN, objects=(main,)), 9, 64), "red").sum(axis=(1, 2))
    assert visible[4] < 0.5 * alone[4]
    assert occluder.role == "occluder" and scene.main_object() == main


def test_objects_stay_in_frame_and_every_motion_is_sampled():
    seen = set()
    for seed in range(40):
        scene = sample_scene(seed)
        for obj in scene.objects:
            seen.add(obj.motion.kind)
            track = object_track(obj, 9)
            if obj.role != "occluder":
                assert np.all((track["x"] > -0.05) & (track["x"] < 1.05)), obj
                assert np.all((track["y"] > -0.05) & (track["y"] < 1.05)), obj
    assert seen == set(MOTIONS)


def test_backgrounds_render_textures_and_drift():
    for kind in BACKGROUNDS:
        bg = Background(kind=kind, colours=("#000000", "#ffffff"), frequency=3.0, angle=0.3, drift=0.5, seed=1)
        clip = render(Scene(background=bg), 4, 48)
        if kind == "plain":
            assert np.all(clip == 0)
        else:
            assert clip[0].std() > 20, kind
            assert not np.array_equal(clip[0], clip[-1]), kind  # drift moves the texture
        still = render(Scene(background=Background(kind=kind, drift=0.0)), 3, 32)
        assert np.array_equal(still[0], still[-1])


def test_every_shape_draws_a_distinct_silhouette():
    masks = {}
    for shape in SHAPES:
        scene = Scene(background=PLAIN, objects=(SceneObject(shape, "white", 0.4, (0.5, 0.5)),))
        masks[shape] = object_pixels(render(scene, 1, 64), "white")[0]
        assert 0.05 < masks[shape].mean() < 0.6, shape
    for a in SHAPES:
        for b in SHAPES:
            if a < b:
                assert (masks[a] != masks[b]).mean() > 0.02, (a, b)
    # a point of the triangle is up: more pixels in the lower half
    tri = masks["triangle"]
    assert tri[32:].sum() > tri[:32].sum()


def test_scene_serialises_and_rejects_bad_values():
    scene = SyntheticVideos(seed=5)[3]
    data = json.loads(json.dumps(scene.to_dict()))
    restored = Scene.from_dict(data)
    assert restored == scene
    assert np.array_equal(render(restored, 4, 32), render(scene, 4, 32))
    bad = scene.to_dict()
    bad["objects"][0]["shape"] = "blob"
    with pytest.raises(ConfigError, match="objects\\[0\\].*blob"):
        Scene.from_dict(bad)
    bad = scene.to_dict()
    bad["background"]["kind"] = "zebra"
    with pytest.raises(ConfigError, match="zebra"):
        Scene.from_dict(bad)
    with pytest.raises(ConfigError, match="colr"):
        Scene.from_dict({"objects": [{"colr": "red"}]})
    with pytest.raises(ValueError, match="colour"):
        colour_rgb("#zzzzzz")
    assert colour_rgb("#0a0b0c") == (10, 11, 12) and colour_rgb("red") == COLOURS["red"]
