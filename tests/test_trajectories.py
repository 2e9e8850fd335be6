"""Trajectory format, pose maths (Euler convention, wrap-around), resampling and the DROID layout."""

import json
import math

import numpy as np
import pytest
import torch

from vjepa2.data.trajectories.trajectory import (TrajectoryError, actions_from_states, apply_action, euler_to_matrix,
                                                 load_trajectories, matrix_to_euler, read_droid_episode, read_trajectory,
                                                 resample_actions, resample_indices, write_trajectory)
from vjepa2.data.clips.video import write_video


def axis_rotation(axis, angle):
    """Rotation by ``angle`` about a unit axis via the matrix exponential of its skew matrix (independent path)."""
    x, y, z = axis
    skew = torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], dtype=torch.float64)
    return torch.linalg.matrix_exp(skew * angle).numpy()


X, Y, Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)


# ------------------------------------------------------------------------------------------------
# Euler convention
# ------------------------------------------------------------------------------------------------


def test_euler_is_extrinsic_xyz():
    rx, ry, rz = 0.3, -0.7, 2.1
    expected = axis_rotation(Z, rz) @ axis_rotation(Y, ry) @ axis_rotation(X, rx)
    np.testing.assert_allclose(euler_to_matrix(np.array([rx, ry, rz])), expected, atol=1e-12)


def test_known_rotations_move_axes_as_expected():
    np.testing.assert_allclose(euler_to_matrix(np.array([0, 0, math.pi / 2])) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(euler_to_matrix(np.array([math.pi / 2, 0, 0])) @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(euler_to_matrix(np.array([0, math.pi / 2, 0])) @ [0, 0, 1], [1, 0, 0], atol=1e-12)


def test_matrix_to_euler_inverts_including_gimbal_lock():
    rng = np.random.default_rng(0)
    angles = np.column_stack([rng.uniform(-math.pi, math.pi, 200), rng.uniform(-1.5, 1.5, 200),
                              rng.uniform(-math.pi, math.pi, 200)])
    np.testing.assert_allclose(matrix_to_euler(euler_to_matrix(angles)), angles, atol=1e-10)
    locked = np.array([[0.4, math.pi / 2, -1.0], [1.2, -math.pi / 2, 0.3]])
    np.testing.assert_allclose(euler_to_matrix(matrix_to_euler(euler_to_matrix(locked))), euler_to_matrix(locked),
                               atol=1e-9)


def pose(xyz=(0, 0, 0), rot=(0, 0, 0), grip=0.0):
    return np.array([*xyz, *rot, grip], dtype=np.float64)


def test_action_is_relative_rotation_with_wrap_around():
    # Yaw crosses +pi -> -pi: the action is a small +0.1 turn, not a -2pi + 0.1 jump.
    states = np.stack([pose(rot=(0, 0, math.pi - 0.05)), pose(rot=(0, 0, -math.pi + 0.05))])
    action = actions_from_states(states)[0]
    np.testing.assert_allclose(action, [0, 0, 0, 0, 0, 0.1, 0], atol=1e-12)
    # Roll crossing -pi -> +pi the other way.
    states = np.stack([pose(rot=(-math.pi + 0.02, 0, 0)), pose(rot=(math.pi - 0.03, 0, 0))])
    np.testing.assert_allclose(actions_from_states(states)[0][3:6], [-0.05, 0, 0], atol=1e-12)


def test_relative_rotation_is_in_the_world_frame():
    # R_{t+1} = Rx(0.2) @ Rz(0.3): a turn about the world x axis after a yaw.
    start = pose(rot=(0, 0, 0.3))
    after = matrix_to_euler(axis_rotation(X, 0.2) @ axis_rotation(Z, 0.3))
    states = np.stack([start, pose(xyz=(0.1, -0.2, 0.05), rot=after, grip=0.7)])
    np.testing.assert_allclose(actions_from_states(states)[0], [0.1, -0.2, 0.05, 0.2, 0, 0, 0.7], atol=1e-12)


def test_apply_action_inverts_actions_from_states():
    rng = np.random.default_rng(1)
    states = np.column_stack([rng.normal(size=(30, 3)), rng.uniform(-3, 3, (30, 1)), rng.uniform(-1.4, 1.4, (30, 1)),
                              rng.uniform(-3, 3, (30, 1)), rng.uniform(0, 1, (30, 1))])
    actions = actions_from_states(states)
    replayed = apply_action(states[:-1], actions)
    np.testing.assert_allclose(replayed[:, [0, 1, 2, 6]], states[1:, [0, 1, 2, 6]], atol=1e-12)
    np.testing.assert_allclose(euler_to_matrix(replayed[:, 3:6]), euler_to_matrix(states[1:, 3:6]), atol=1e-12)
    # torch in -> torch out, batched.
    out = apply_action(torch.as_tensor(states[:-1]), torch.as_tensor(actions))
    assert isinstance(out, torch.Tensor) and out.shape == (29, 7)


def test_other_state_sizes_use_plain_differences():
    states = np.array([[0.0, 1.0], [0.5, 3.0], [0.0, 0.0]])
    np.testing.assert_allclose(actions_from_states(states), [[0.5, 2.0], [-0.5, -3.0]])
    with pytest.raises(ValueError, match="7-D"):
        actions_from_states(states, convention="pose7")


# ------------------------------------------------------------------------------------------------
# Resampling
# ------------------------------------------------------------------------------------------------


def test_resample_indices():
    assert resample_indices(10, 10, 5).tolist() == [0, 2, 4, 6, 8]
    assert resample_indices(31, 15, 4).tolist() == [0, 3, 7, 11, 15, 18, 22, 26, 30]  # floor(k * 3.75)
    assert resample_indices(5, 10, 10).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="cannot resample"):
        resample_indices(10, 5, 10)


def test_resampled_actions_compose_the_skipped_ones():
    rng = np.random.default_rng(2)
    states = np.column_stack([rng.normal(size=(12, 3)), rng.uniform(-1, 1, (12, 3)), rng.uniform(0, 1, (12, 1))])
    idx = resample_indices(12, 6, 2)
    ours = resample_actions(states, actions_from_states(states), idx)
    np.testing.assert_allclose(ours, actions_from_states(states[idx]), atol=1e-6)
    # delta convention: the sum over each interval
    flat = rng.normal(size=(9, 2))
    np.testing.assert_allclose(resample_actions(flat, np.diff(flat, axis=0), np.array([0, 4, 8])),
                               [flat[4] - flat[0], flat[8] - flat[4]], atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Our format
# ------------------------------------------------------------------------------------------------


def frames_with_levels(T, size=32):
    """Frames whose grey level encodes their index (survives lossy video coding)."""
    return np.stack([np.full((size, size, 3), 10 + 20 * i, np.uint8) for i in range(T)])


def test_png_trajectory_round_trip_is_lossless(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    states = rng.normal(size=(6, 7)).astype(np.float32)
    actions = rng.normal(size=(5, 7)).astype(np.float32)
    write_trajectory(tmp_path / "t", frames, states, actions, fps=10, extras={"env_states": np.ones((6, 5))})
    traj = read_trajectory(tmp_path / "t")
    assert np.array_equal(traj.frames, frames) and np.array_equal(traj.states, states)
    assert np.array_equal(traj.actions, actions) and traj.fps == 10
    assert traj.extras["env_states"].shape == (6, 5)
    assert not list(tmp_path.glob(".*")), "temporary directories left behind"


def test_missing_actions_are_derived_from_states(tmp_path):
    states = np.zeros((4, 7), np.float32)
    states[:, 0] = [0.0, 0.1, 0.3, 0.6]
    states[:, 5] = [3.1, -3.1, -3.0, -3.0]
    write_trajectory(tmp_path / "t", frames_with_levels(4), states, None, fps=4)
    traj = read_trajectory(tmp_path / "t")
    np.testing.assert_allclose(traj.actions[:, 0], [0.1, 0.2, 0.3], atol=1e-6)
    np.testing.assert_allclose(traj.actions[:, 5], [2 * math.pi - 6.2, 0.1, 0.0], atol=1e-5)


def test_mp4_trajectory_and_resampling(tmp_path):
    T = 9
    states = np.zeros((T, 2), np.float32)
    states[:, 0] = np.arange(T)
    write_trajectory(tmp_path / "t", frames_with_levels(T), states, np.ones((T - 1, 2)), fps=8, video=True)
    traj = read_trajectory(tmp_path / "t", fps=4)
    assert traj.frames.shape == (5, 32, 32, 3) and traj.fps == 4
    assert traj.states[:, 0].tolist() == [0, 2, 4, 6, 8]
    np.testing.assert_allclose(traj.actions, np.full((4, 2), 2.0))  # two unit actions per kept interval
    levels = traj.frames.reshape(5, -1).mean(1)
    np.testing.assert_allclose(levels, 10 + 20 * np.array([0, 2, 4, 6, 8]), atol=3)


def test_malformed_trajectories_name_the_file(tmp_path):
    write_trajectory(tmp_path / "t", frames_with_levels(3), np.zeros((3, 7)), fps=4)
    np.save(tmp_path / "t" / "states.npy", np.zeros((4, 7)))
    with pytest.raises(TrajectoryError, match=r"frames.*3 images for 4 states"):
        read_trajectory(tmp_path / "t")
    np.save(tmp_path / "t" / "states.npy", np.zeros((3, 7)))
    np.save(tmp_path / "t" / "actions.npy", np.zeros((3, 7)))
    with pytest.raises(TrajectoryError, match=r"actions must be \(T-1=2, A\)"):
        read_trajectory(tmp_path / "t")
    with pytest.raises(TrajectoryError, match="states.npy"):
        read_trajectory(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_trajectory(tmp_path / "t", frames_with_levels(3), np.zeros((3, 7)), fps=4)


def test_short_trajectories_are_skipped_and_reported(tmp_path):
    write_trajectory(tmp_path / "long", frames_with_levels(8), np.zeros((8, 2)), fps=8)
    write_trajectory(tmp_path / "short", frames_with_levels(3), np.zeros((3, 2)), fps=8)
    kept, skipped = load_trajectories(tmp_path, min_steps=4, progress=False)
    assert [t.name for t in kept] == ["long"]
    assert [s.path.name for s in skipped] == ["short"] and "3 steps" in skipped[0].reason
    kept, skipped = load_trajectories(tmp_path, min_steps=4, fps=4, progress=False)  # long -> 4 frames
    assert [t.name for t in kept] == ["long"] and len(kept[0]) == 4


# ------------------------------------------------------------------------------------------------
# DROID raw layout
# ------------------------------------------------------------------------------------------------


def write_droid_fixture(root, T=30, fps=15):
    h5py = pytest.importorskip("h5py")
    root.mkdir()
    rng = np.random.default_rng(3)
    # x moves, y/z jitter, roll near pi, pitch 0, yaw turning past pi (wraps to -pi)
    position = np.column_stack([np.linspace(0, 0.29, T), rng.normal(size=(T, 2)) * 0.01, np.full(T, 3.1),
                                np.zeros(T), np.linspace(3.0, 3.6, T)])
    position[:, 5] = (position[:, 5] + math.pi) % (2 * math.pi) - math.pi
    gripper = np.linspace(0, 1, T)
    with h5py.File(root / "trajectory.h5", "w") as f:
        robot = f.create_group("observation/robot_state")
        robot["cartesian_position"] = position
        robot["gripper_position"] = gripper
        f.create_group("observation/camera_extrinsics")["12345_left"] = np.zeros((T, 6))
    (root / "metadata_abc.json").write_text(json.dumps(
        {"left_mp4_path": "gs://bucket/success/ep/recordings/MP4/12345.mp4", "right_mp4_path": "x"}))
    (root / "recordings" / "MP4").mkdir(parents=True)
    frames = np.stack([np.full((48, 64, 3), 5 + 8 * i, np.uint8) for i in range(T)])
    write_video(root / "recordings" / "MP4" / "12345.mp4", frames, fps=fps)
    return np.column_stack([position, gripper])


def test_droid_episode_is_read_and_resampled(tmp_path):
    states = write_droid_fixture(tmp_path / "ep")
    traj = read_trajectory(tmp_path / "ep", fps=5)  # detected by trajectory.h5
    idx = np.arange(0, 30, 3)
    assert traj.frames.shape == (10, 48, 64, 3) and traj.fps == 5
    np.testing.assert_allclose(traj.states, states[idx], atol=1e-6)
    np.testing.assert_allclose(traj.actions, actions_from_states(states[idx]), atol=1e-5)
    assert np.abs(traj.actions[:, 5]).max() < 0.2  # the yaw wrap gives small turns, not 2 pi jumps
    np.testing.assert_allclose(traj.frames.reshape(10, -1).mean(1), 5 + 8 * idx, atol=3)  # frame i shows row i
    full = read_droid_episode(tmp_path / "ep")
    assert len(full) == 30 and full.fps == pytest.approx(15)


def test_droid_missing_metadata_is_reported(tmp_path):
    write_droid_fixture(tmp_path / "ep")
    (tmp_path / "ep" / "metadata_abc.json").unlink()
    with pytest.raises(TrajectoryError, match="left_mp4_path"):
        read_droid_episode(tmp_path / "ep")
