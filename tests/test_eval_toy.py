"""The built-in evaluation tasks: reversed pairs, fixed splits, balanced classes, baselines' inputs."""

import numpy as np
import pytest

from vjepa2.config import ConfigError
from vjepa2.data.clips.synthetic import render
from vjepa2.evals.features import apply_input_mode
from vjepa2.evals.toy import (ANTICIPATION_NOUNS, ANTICIPATION_VERBS, TOY_SSV2_CLASSES, TOY_SSV2_PAIRS, ToyConfig,
                              ToyTask)

FRAMES, SIZE = 8, 40


def frame_multiset(clip):
    """The frames of a clip as an order-free collection (sorted by their bytes)."""
    return sorted(frame.tobytes() for frame in clip)


@pytest.mark.parametrize("pair", range(len(TOY_SSV2_PAIRS)))
def test_each_pair_is_one_scene_distribution_played_both_ways(pair):
    task = ToyTask("toy-ssv2", "train", ToyConfig(train_size=48, seed=1))
    forward = [i for i in range(48) if task.label(i) == 2 * pair]
    backward = [i for i in range(48) if task.label(i) == 2 * pair + 1]
    assert forward and backward
    for i in forward:
        scene = task.scene(i)
        clip, twin = render(scene, FRAMES, SIZE), render(task.twin(i), FRAMES, SIZE)
        # The twin is a clip of the other class: the same frames, in the opposite order.
        assert frame_multiset(clip) == frame_multiset(twin)
        assert np.array_equal(twin, clip[::-1])
        assert not np.array_equal(twin, clip)  # the order does change: something moves
        assert not scene.time_reversed and task.twin(i).time_reversed
    for i in backward:
        # A second-class clip is built as the reversal of a first-class scene, not drawn on its own.
        scene = task.scene(i)
        assert scene.time_reversed
        assert np.array_equal(render(scene, FRAMES, SIZE), render(scene.reversed(), FRAMES, SIZE)[::-1])


def test_forward_classes_move_the_way_their_names_say():
    task = ToyTask("toy-ssv2", "train", ToyConfig(train_size=36, seed=2))
    for i in range(36):
        name, main = TOY_SSV2_CLASSES[task.label(i)], task.scene(i).main_object()
        m = main.motion
        sign = -1 if task.scene(i).time_reversed else 1  # the reversed scene plays the motion backwards
        if name in ("moving left", "moving right"):
            assert sign * m.velocity[0] < 0 if name == "moving left" else sign * m.velocity[0] > 0
        elif name in ("moving up", "moving down"):
            assert sign * m.velocity[1] < 0 if name == "moving up" else sign * m.velocity[1] > 0
        elif name.startswith("rotating"):
            assert sign * m.spin > 0 if name == "rotating clockwise" else sign * m.spin < 0
        elif name in ("growing", "shrinking", "approaching", "receding"):
            assert (sign * m.growth > 0) == (name in ("growing", "approaching"))
            assert m.perspective == (name in ("approaching", "receding"))
        else:
            occluder = task.scene(i).objects[-1]
            assert occluder.role == "occluder" and m.kind == "static"


def test_splits_are_fixed_by_seed_balanced_and_distinct():
    cfg = ToyConfig(train_size=24, val_size=24, seed=4)
    a, b = ToyTask("toy-ssv2", "train", cfg), ToyTask("toy-ssv2", "train", cfg)
    val = ToyTask("toy-ssv2", "val", cfg)
    assert all(a.scene(i) == b.scene(i) for i in range(24))
    assert all(a.scene(i) != val.scene(i) for i in range(24))
    assert np.bincount([a.label(i) for i in range(24)]).tolist() == [2] * 12
    other = ToyTask("toy-ssv2", "train", ToyConfig(train_size=24, seed=5))
    assert a.scene(0) != other.scene(0)
    with pytest.raises(IndexError):
        a.scene(24)


def test_distractors_and_backgrounds_vary():
    task = ToyTask("toy-ssv2", "train", ToyConfig(train_size=60, seed=0))
    scenes = [task.scene(i) for i in range(60)]
    assert len({s.background.kind for s in scenes}) >= 4
    counts = {sum(o.role == "distractor" for o in s.objects) for s in scenes}
    assert counts == {0, 1, 2}
    # Distractors are static: they never carry a direction of time.
    assert all(o.motion.kind == "static" for s in scenes for o in s.objects if o.role == "distractor")


def test_appearance_and_anticipation_labels():
    shapes = ToyTask("toy-appearance", "val", ToyConfig(val_size=16))
    assert [shapes.scene(i).main_object().shape for i in range(8)] == list(shapes.classes)
    task = ToyTask("toy-anticipation", "train", ToyConfig(train_size=12))
    for i in range(12):
        verb, noun, action = task.label(i)
        scene = task.scene(i)
        mover = scene.main_object()
        target = scene.objects[verb]
        assert target.shape == ANTICIPATION_NOUNS[noun] and action == verb * len(ANTICIPATION_NOUNS) + noun
        # Within the clip the mover heads for the target but does not reach it.
        dx, dy = target.position[0] - mover.position[0], target.position[1] - mover.position[1]
        assert dx * mover.motion.velocity[0] + dy * mover.motion.velocity[1] > 0
        end = np.add(mover.position, mover.motion.velocity)
        assert np.hypot(*(np.asarray(target.position) - end)) > target.size + mover.size
    assert len(task.head_classes) == 3 and task.head_classes[0] == ANTICIPATION_VERBS


def test_image_baseline_cannot_tell_a_pair_apart():
    task = ToyTask("toy-ssv2", "train", ToyConfig(train_size=12))
    clip = task.render(0, 9, 32)  # odd length: the middle frame is shared by the clip and its reversal
    twin = render(task.twin(0), 9, 32)
    rng = np.random.default_rng(0)
    assert np.array_equal(apply_input_mode([clip], "image", rng)[0], apply_input_mode([twin], "image", rng)[0])
    shuffled = apply_input_mode([clip], "shuffled", np.random.default_rng(1))[0]
    assert frame_multiset(shuffled) == frame_multiset(clip) and not np.array_equal(shuffled, clip)


def test_bad_task_names_fail_clearly():
    with pytest.raises(ConfigError, match="toy-ssv2"):
        ToyTask("ssv2", "train")
    with pytest.raises(ConfigError, match="split"):
        ToyTask("toy-ssv2", "test")
