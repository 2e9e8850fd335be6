"""Labelled evaluation data from list files: bad input fails early, naming the file and line."""

import numpy as np
import pytest

from vjepa2.data.clips.video import write_video
from vjepa2.evals.data import EvalDataError, ListVideos, open_lists
from vjepa2.evals.features import ClipConfig, EncoderFeatures, build_features
from vjepa2.models import VisionEncoder, encoder_config


def video(path, frames=12, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return write_video(path, rng.integers(0, 255, (frames, size, size, 3), dtype=np.uint8), fps=8)


@pytest.fixture
def lists(tmp_path):
    for i in range(3):
        video(tmp_path / f"v{i}.mp4", seed=i)
    (tmp_path / "train.txt").write_text("v0.mp4 0\nv1.mp4 2\n# a comment\n")
    (tmp_path / "val.txt").write_text("v2.mp4 1\n")
    return tmp_path


def test_lists_share_the_training_class_set(lists):
    train, val = open_lists(lists / "train.txt", lists / "val.txt")
    assert len(train) == 2 and len(val) == 1
    assert train.head_classes == val.head_classes == (("0", "1", "2"),)
    assert val.labels(0) == (1,) and val.origin(0).endswith("val.txt:1")
    (segment,) = train.segments(1, frames=8, size=32, fps=None, num_segments=1)
    assert segment.shape == (8, 32, 32, 3) and segment.dtype == np.uint8
    two = train.segments(0, frames=4, size=32, fps=None, num_segments=2)
    assert len(two) == 2 and not np.array_equal(two[0], two[1])


def test_empty_list_names_the_file(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing here\n\n")
    (tmp_path / "val.txt").write_text("x.mp4 0\n")
    with pytest.raises(EvalDataError, match=r"empty\.txt lists no samples"):
        open_lists(tmp_path / "empty.txt", tmp_path / "val.txt")


def test_label_outside_the_class_set_names_file_and_line(lists):
    (lists / "val.txt").write_text("v2.mp4 1\nv0.mp4 3\n")
    with pytest.raises(EvalDataError, match=r"val\.txt:2: label 3 is outside the class set 0\.\.2"):
        open_lists(lists / "train.txt", lists / "val.txt")
    with pytest.raises(EvalDataError, match=r"train\.txt:2: label 2 is outside the class set 0\.\.1"):
        open_lists(lists / "train.txt", lists / "val.txt", num_classes=2)
    (lists / "neg.txt").write_text("v0.mp4 -1\n")
    with pytest.raises(EvalDataError, match=r"neg\.txt:1: label -1"):
        ListVideos(lists / "neg.txt", num_classes=3)


def test_video_shorter_than_a_segment_names_file_and_line(lists):
    video(lists / "short.mp4", frames=3)
    (lists / "val.txt").write_text("v2.mp4 1\nshort.mp4 0\n")
    _, val = open_lists(lists / "train.txt", lists / "val.txt")
    val.segments(0, frames=8, size=32, fps=None, num_segments=1)
    with pytest.raises(EvalDataError, match=r"val\.txt:2: .*short\.mp4 is shorter than one segment.*3 of the 8"):
        val.segments(1, frames=8, size=32, fps=None, num_segments=1)
    # ... and stops the feature extraction instead of being skipped.
    encoder = VisionEncoder(encoder_config("tiny", dim=48, depth=1, heads=3, mlp_hidden=96))
    with pytest.raises(EvalDataError, match=r"val\.txt:2"):
        build_features(val, EncoderFeatures(encoder), ClipConfig(frames=8, size=32), False, 0, lists / "cache",
                       progress=False)
    assert not list((lists / "cache").glob("*.safetensors"))  # nothing half-written
    _, padded = open_lists(lists / "train.txt", lists / "val.txt", allow_short=True)
    clip = padded.segments(1, frames=8, size=32, fps=None, num_segments=1)[0]
    assert np.array_equal(clip[-1], clip[3])  # padded with the last frame


def test_unreadable_video_names_file_and_line(lists):
    (lists / "broken.mp4").write_bytes(b"not a video")
    (lists / "val.txt").write_text("broken.mp4 0\n")
    _, val = open_lists(lists / "train.txt", lists / "val.txt")
    with pytest.raises(EvalDataError, match=r"val\.txt:1: cannot read .*broken\.mp4"):
        val.segments(0, frames=4, size=32, fps=None, num_segments=1)


def test_folder_splits_must_have_the_same_classes(tmp_path):
    for split, classes in (("train", ("cat", "dog")), ("val", ("cat", "cow"))):
        for c in classes:
            video(tmp_path / split / c / "a.mp4")
    with pytest.raises(EvalDataError, match="differ from the training classes"):
        open_lists(tmp_path / "train", tmp_path / "val")
    train = ListVideos(tmp_path / "train")
    assert train.head_classes == (("cat", "dog"),) and train.labels(1) == (1,)
