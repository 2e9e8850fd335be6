"""LeRobot datasets (v3.0 and v2.1) as world-model data: the reader on datasets the tests write by
hand (pyarrow + PyAV, independent of our writer), the writer checked field by field against the
format, train-ac / eval-ac on both versions, and the bad-dataset messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from vjepa2.cli import main  # noqa: E402
from vjepa2.data.trajectories.lerobot import LeRobotDataset, LeRobotError, Streams  # noqa: E402
from vjepa2.data.trajectories.sources import find_sources, read_source  # noqa: E402
from vjepa2.data.clips.video import write_video  # noqa: E402

FPS = 10
SIZE = 32
CAMERA = "observation.images.front"


def grey(level: int) -> np.ndarray:
    return np.full((SIZE, SIZE, 3), level, np.uint8)


def level_of(index: int) -> int:
    """Grey level of global frame ``index``: far enough apart to survive h264."""
    return 10 + 12 * index


def frame_rows(index: int, episode: int, frame: int) -> dict:
    return {"observation.state": [float(index), 2.0 * index, 0.5],
            "observation.state.pose": [0.1 * index, -0.1 * index],
            "action": [float(index), -float(index)], "timestamp": frame / FPS, "frame_index": frame,
            "episode_index": episode, "index": index, "task_index": 0}


def features(extra: dict | None = None) -> dict:
    spec = {"observation.state": {"dtype": "float32", "shape": [3], "names": ["a", "b", "c"]},
            "observation.state.pose": {"dtype": "float32", "shape": [2], "names": None},
            "action": {"dtype": "float32", "shape": [2], "names": None},
            CAMERA: {"dtype": "video", "shape": [SIZE, SIZE, 3], "names": ["height", "width", "channels"]}}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        spec[name] = {"dtype": "int64", "shape": [1], "names": None}
    spec["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    return {**spec, **(extra or {})}


def data_table(rows: list[dict]):
    columns = {}
    for name in rows[0]:
        values = [r[name] for r in rows]
        if isinstance(values[0], list):
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(np.ravel(values), pa.float32()), len(values[0]))
        else:
            columns[name] = pa.array(values, pa.float32() if name == "timestamp" else pa.int64())
    return pa.table(columns)


def write_v3(root: Path, lengths=(5, 4, 6)) -> Path:
    """Episodes 0 and 1 share data file-000 and video file-000 (back to back); episode 2 has file-001 of each."""
    placement = [(0, 0), (0, 0), (0, 1)]  # (chunk, file) per episode
    rows: dict[int, list] = {}
    frames: dict[int, list] = {}
    episodes = []
    index = 0
    for episode, (length, (_, file)) in enumerate(zip(lengths, placement)):
        start_time = len(frames.get(file, [])) / FPS
        for frame in range(length):
            rows.setdefault(file, []).append(frame_rows(index, episode, frame))
            frames.setdefault(file, []).append(grey(level_of(index)))
            index += 1
        episodes.append({"episode_index": episode, "tasks": ["push"], "length": length, "data/chunk_index": 0,
                         "data/file_index": file, "dataset_from_index": index - length, "dataset_to_index": index,
                         f"videos/{CAMERA}/chunk_index": 0, f"videos/{CAMERA}/file_index": file,
                         f"videos/{CAMERA}/from_timestamp": start_time,
                         f"videos/{CAMERA}/to_timestamp": start_time + length / FPS})
    for file in rows:
        (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(data_table(rows[file]), root / f"data/chunk-000/file-{file:03d}.parquet")
        write_video(root / f"videos/{CAMERA}/chunk-000/file-{file:03d}.mp4", np.stack(frames[file]), fps=FPS)
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episodes), root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(pa.table({"task_index": [0], "task": ["push"]}), root / "meta/tasks.parquet")
    info = {"codebase_version": "v3.0", "fps": FPS, "features": features(), "total_episodes": len(lengths),
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"}
    (root / "meta/info.json").write_text(json.dumps(info))
    return root


def write_v21(root: Path, lengths=(5, 6)) -> Path:
    """One parquet and one mp4 per episode; JSON-lines metadata."""
    index = 0
    (root / "meta").mkdir(parents=True)
    lines = []
    for episode, length in enumerate(lengths):
        rows = [frame_rows(index + f, episode, f) for f in range(length)]
        (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(data_table(rows), root / f"data/chunk-000/episode_{episode:06d}.parquet")
        write_video(root / f"videos/chunk-000/{CAMERA}/episode_{episode:06d}.mp4",
                    np.stack([grey(level_of(index + f)) for f in range(length)]), fps=FPS)
        lines.append(json.dumps({"episode_index": episode, "tasks": ["push"], "length": length}))
        index += length
    (root / "meta/episodes.jsonl").write_text("\n".join(lines) + "\n")
    (root / "meta/tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "push"}) + "\n")
    info = {"codebase_version": "v2.1", "fps": FPS, "features": features(), "chunks_size": 1000,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}
    (root / "meta/info.json").write_text(json.dumps(info))
    return root


def check_episode(traj, first_index: int, length: int) -> None:
    """States, actions and frames of an episode whose first global frame is ``first_index``."""
    g = np.arange(first_index, first_index + length, dtype=np.float32)
    np.testing.assert_array_equal(traj.states, np.stack([g, 2 * g, np.full_like(g, 0.5)], 1))
    np.testing.assert_array_equal(traj.actions, np.stack([g, -g], 1)[:-1])  # the last frame's action is dropped
    means = traj.frames.reshape(length, -1).mean(1)
    np.testing.assert_allclose(means, [level_of(int(i)) for i in g], atol=3)  # the right frame, not a neighbour


@pytest.mark.parametrize("writer, lengths", [(write_v3, (5, 4, 6)), (write_v21, (5, 6))])
def test_reader_finds_each_episode_by_its_rows_and_timestamps(tmp_path, writer, lengths):
    root = writer(tmp_path / "ds", lengths=lengths)
    sources = find_sources(root)
    assert [s.name for s in sources] == [f"episode_{i:06d}" for i in range(len(lengths))]
    starts = np.cumsum((0,) + lengths)
    for source, start, length in zip(sources, starts, lengths):
        traj = read_source(source.source)
        assert traj.frames.shape == (length, SIZE, SIZE, 3) and traj.fps == FPS
        check_episode(traj, int(start), length)


def test_streams_pick_the_camera_concatenate_states_and_derive_actions(tmp_path):
    root = write_v3(tmp_path / "ds")
    dataset = LeRobotDataset(root)
    episode = dataset.episodes[1]  # global frames 5..8
    traj = dataset.read_episode(episode, Streams(camera="front", state="observation.state.pose+observation.state",
                                                 action="derive"), convention="delta")
    g = np.arange(5, 9, dtype=np.float32)
    assert traj.states.shape == (4, 5)
    np.testing.assert_allclose(traj.states[:, :2], np.stack([0.1 * g, -0.1 * g], 1), rtol=1e-6)
    np.testing.assert_allclose(traj.actions, np.diff(traj.states, axis=0), atol=1e-6)
    with pytest.raises(LeRobotError, match="camera 'side'.*observation.images.front"):
        dataset.resolve(Streams(camera="side"))
    with pytest.raises(LeRobotError, match="no state feature 'observation.joints'.*observation.state.pose"):
        find_sources(root, Streams(state="observation.joints"))  # checked before any episode is read
    with pytest.raises(LeRobotError, match="no action feature 'action.velocity'.*derive"):
        dataset.resolve(Streams(action="action.velocity"))


def test_resampling_a_lerobot_episode_keeps_every_other_frame(tmp_path):
    root = write_v3(tmp_path / "ds")
    traj = read_source(find_sources(root)[2].source, fps=5, convention="delta")  # global frames 9..14 at 10 fps
    assert len(traj) == 3
    np.testing.assert_array_equal(traj.states[:, 0], [9, 11, 13])
    # 2-D actions next to 3-D states are commands, not state changes: each interval keeps its last one
    np.testing.assert_array_equal(traj.actions, [[10, -10], [12, -12]])


# ------------------------------------------------------------------------------------------------
# The writer: `vjepa2 collect --format lerobot`, field by field
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("lr") / "toy"
    assert main(["collect", "--env", "toy-push", "--episodes", "3", "--steps", "6", "--size", str(SIZE),
                 "--out", str(out), "--format", "lerobot"]) == 0
    return out


def test_collect_writes_the_v3_info_json(collected):
    info = json.loads((collected / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 21, 1)
    assert info["splits"] == {"train": "0:3"} and info["chunks_size"] == 1000
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    feats = info["features"]
    assert feats["observation.state"] == {"dtype": "float32", "shape": [7], "names": None}
    assert feats["action"]["shape"] == [7] and feats["observation.environment_state"]["shape"] == [5]
    for name, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                        ("index", "int64"), ("task_index", "int64")):
        assert feats[name] == {"dtype": dtype, "shape": [1], "names": None}
    video = feats["observation.images.camera"]
    assert video["dtype"] == "video" and video["shape"] == [SIZE, SIZE, 3]
    assert video["names"] == ["height", "width", "channels"]
    assert video["info"]["video.codec"] == "h264" and video["info"]["video.fps"] == 10
    assert {"video.height", "video.width", "video.pix_fmt", "video.is_depth_map", "video.channels",
            "has_audio"} <= set(video["info"])
    stats = json.loads((collected / "meta/stats.json").read_text())
    assert np.array(stats["observation.images.camera"]["mean"]).shape == (3, 1, 1)
    assert stats["observation.state"]["count"] == [21]


def test_collect_writes_the_v3_parquet_schemas(collected):
    data = pq.read_table(collected / "data/chunk-000/file-000.parquet")
    types = {f.name: f.type for f in data.schema}
    assert types["observation.state"] == pa.list_(pa.float32(), 7)  # fixed-size list
    assert types["action"] == pa.list_(pa.float32(), 7)
    assert types["timestamp"] == pa.float32()
    assert all(types[n] == pa.int64() for n in ("frame_index", "episode_index", "index", "task_index"))
    assert "observation.images.camera" not in types  # video frames live in the mp4 only
    assert data.column("index").to_pylist() == list(range(21))
    assert data.column("timestamp").to_pylist()[7:10] == pytest.approx([0.0, 0.1, 0.2])
    episodes = pq.read_table(collected / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    key = "videos/observation.images.camera"
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [(0, 7), (7, 14), (14, 21)]
    assert [e[f"{key}/from_timestamp"] for e in episodes] == pytest.approx([0.0, 0.7, 1.4])
    assert [e[f"{key}/to_timestamp"] for e in episodes] == pytest.approx([0.7, 1.4, 2.1])
    assert all(e["tasks"] == ["toy-push: random actions"] and e["length"] == 7 for e in episodes)
    assert all(e["data/file_index"] == 0 and e[f"{key}/file_index"] == 0 for e in episodes)
    tasks = pq.read_table(collected / "meta/tasks.parquet")
    assert tasks.to_pylist() == [{"task_index": 0, "task": "toy-push: random actions"}]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]


def test_collected_dataset_reads_back_as_the_recorded_episodes(collected):
    from vjepa2.world_model.collect import make_source, record_episode

    source = make_source("toy-push", size=SIZE)
    for index, entry in enumerate(find_sources(collected)):
        recorded = record_episode(source, 6, seed=index)
        traj = read_source(entry.source)
        np.testing.assert_array_equal(traj.states, recorded["states"])
        np.testing.assert_array_equal(traj.actions, recorded["actions"])
        # h264 is lossy; each decoded frame is still nearest to its own original
        errors = np.abs(traj.frames[:, None].astype(int) - recorded["frames"][None].astype(int)).mean((2, 3, 4))
        assert (errors.argmin(1) == np.arange(len(traj))).all() and errors.diagonal().max() < 8


def test_collect_refuses_a_used_folder_without_overwrite(collected, capsys):
    assert main(["collect", "--episodes", "1", "--steps", "2", "--out", str(collected), "--format", "lerobot"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((collected / "meta/info.json").read_text())["total_episodes"] == 3  # untouched


# ------------------------------------------------------------------------------------------------
# train-ac and eval-ac on both versions
# ------------------------------------------------------------------------------------------------


def tiny_ac(out):
    return ["encoder.weights=random:tiny", f"encoder.img_size={SIZE}", "model.dim=48", "model.heads=4",
            "model.depth=1", "model.mlp_hidden=96", "batch_size=4", "data.clip_steps=3", "loss.rollout_steps=1",
            "schedule.iterations=2", "schedule.warmup=1", "schedule.cooldown=1", "checkpoint.every=2",
            "log.every=1", "log.tensorboard=false", "log.progress_bar=false"]


@pytest.mark.parametrize("writer", [write_v3, write_v21])
def test_train_ac_and_eval_ac_take_a_lerobot_dataset(tmp_path, writer, one_thread, capsys):
    root = writer(tmp_path / "ds")
    out = tmp_path / "run"
    assert main(["train-ac", "--data", str(root), "--out", str(out), *tiny_ac(out),
                 "data.state=observation.state.pose"]) == 0
    assert main(["eval-ac", "--run", str(out), "--data", str(root), "--horizons", "1", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"{len(find_sources(root))} trajectories" in printed and "copy" in printed
    from vjepa2.world_model.model import load_world_model

    world = load_world_model(out)
    assert world.streams.state == "observation.state.pose" and world.predictor.config.state_dim == 2


# ------------------------------------------------------------------------------------------------
# Bad datasets: one line naming file and field; one bad episode is skipped and named
# ------------------------------------------------------------------------------------------------


def test_missing_info_json_is_one_line(tmp_path, capsys):
    root = write_v3(tmp_path / "ds")
    (root / "meta/info.json").unlink()
    assert main(["train-ac", "--data", str(root), "--out", str(tmp_path / "run"), *tiny_ac(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "meta/info.json: missing" in err


def test_a_state_feature_the_dataset_lacks_is_named_before_any_work(tmp_path, capsys):
    root = write_v3(tmp_path / "ds")
    assert main(["train-ac", "--data", str(root), "--out", str(tmp_path / "run"), *tiny_ac(tmp_path),
                 "data.state=observation.joints"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no state feature 'observation.joints'" in err


def break_episode(root: Path, how: str) -> None:
    if how == "timestamps":  # episode 1 claims to start after its mp4 ends
        path = root / "meta/episodes/chunk-000/file-000.parquet"
        rows = pq.read_table(path).to_pylist()
        rows[1][f"videos/{CAMERA}/from_timestamp"] = 30.0
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif how == "codec":  # episode 2's mp4 is not a video PyAV can decode
        (root / f"videos/{CAMERA}/chunk-000/file-001.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    elif how == "column":  # episode 2's parquet lacks the state column
        path = root / "data/chunk-000/file-001.parquet"
        pq.write_table(pq.read_table(path).drop(["observation.state"]), path)


@pytest.mark.parametrize("how, episode, says", [
    ("timestamps", 1, "starts at 30.000 s, outside the video"),
    ("codec", 2, "file-001.mp4"),
    ("column", 2, "file-001.parquet: no column 'observation.state'"),
])
def test_a_bad_episode_is_skipped_and_named(tmp_path, how, episode, says):
    from vjepa2.models.encoder import VisionEncoder
    from vjepa2.models.sizes import encoder_config
    from vjepa2.world_model.feature_cache import build_feature_cache

    root = write_v3(tmp_path / "ds")
    break_episode(root, how)
    encoder = VisionEncoder(encoder_config("tiny", dim=48, depth=1, heads=2, mlp_hidden=96))
    features = build_feature_cache(root, encoder, tmp_path / "cache", img_size=SIZE, progress=False)
    assert len(features.files) == 2
    assert len(features.skipped) == 1
    skipped = features.skipped[0]
    assert str(skipped.path).endswith(f"#episode={episode}") and says in skipped.reason


def test_columns_may_be_plain_lists_scalars_or_fixed_size_lists(tmp_path):
    from vjepa2.data.trajectories.lerobot import column_array

    table = pa.table({"a": pa.array([[1.0, 2.0], [3.0, 4.0]], pa.list_(pa.float32())), "b": pa.array([5, 6]),
                      "c": pa.array([[1.0], [2.0, 3.0]], pa.list_(pa.float64()))})
    assert column_array(table, "a", tmp_path).tolist() == [[1, 2], [3, 4]]
    assert column_array(table, "b", tmp_path).tolist() == [[5], [6]]
    with pytest.raises(LeRobotError, match="lists of different lengths"):
        column_array(table, "c", tmp_path)
