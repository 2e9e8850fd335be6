"""Path-label list files, folders and weighted mixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vjepa2.data.clips.lists import (ListError, Mixture, VideoEntry, VideoSource, parse_list_line, read_folder, read_list,
                                     read_video_source)


def test_parse_line_splits_at_last_whitespace():
    assert parse_list_line("/a/b.mp4 3\n") == ("/a/b.mp4", 3)
    assert parse_list_line("  my holiday video.mp4\t17  ") == ("my holiday video.mp4", 17)
    assert parse_list_line("a.mp4 -1") == ("a.mp4", -1)
    assert parse_list_line("   \n") is None
    assert parse_list_line("# comment 3") is None
    with pytest.raises(ValueError, match="'path label'"):
        parse_list_line("lonely.mp4")
    with pytest.raises(ValueError, match="not an integer"):
        parse_list_line("a.mp4 dog")


def test_read_list_resolves_relative_paths_and_names_bad_lines(tmp_path):
    (tmp_path / "sub").mkdir()
    listing = tmp_path / "sub" / "train.txt"
    listing.write_text("# header\nclips/a b.mp4 1\n\n/abs/c.mp4 2\n")
    source = read_list(listing)
    assert [e.path for e in source.entries] == [str(tmp_path / "sub" / "clips" / "a b.mp4"), "/abs/c.mp4"]
    assert [e.label for e in source.entries] == [1, 2]
    assert source.entries[1].origin == f"{listing}:4"
    assert source.classes is None and len(source) == 2

    listing.write_text("a.mp4 1\nb.mp4 cat\n")
    with pytest.raises(ListError, match=rf"{listing}:2: .*'cat' is not an integer"):
        read_list(listing)
    listing.write_text("# nothing\n\n")
    with pytest.raises(ListError, match="lists no samples"):
        read_list(listing)
    with pytest.raises(ListError, match="does not exist"):
        read_list(tmp_path / "missing.txt")
    listing.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ListError, match="UTF-8"):
        read_list(listing)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_read_folder_labels_by_subfolder(tmp_path):
    touch(tmp_path / "dogs" / "a.mp4")
    touch(tmp_path / "dogs" / "deep" / "b.webm")
    touch(tmp_path / "cats" / "c.jpg")
    touch(tmp_path / "cats" / "notes.txt")
    touch(tmp_path / ".hidden" / "d.mp4")
    touch(tmp_path / "empty" / "readme.md")
    source = read_folder(tmp_path)
    assert source.classes == ("cats", "dogs")
    got = {Path(e.path).name: e.label for e in source.entries}
    assert got == {"c.jpg": 0, "a.mp4": 1, "b.webm": 1}
    touch(tmp_path / "loose.png")
    source = read_folder(tmp_path)
    assert source.classes == ("", "cats", "dogs")
    assert {Path(e.path).name: e.label for e in source.entries}["loose.png"] == 0

    flat = tmp_path / "flat"
    touch(flat / "x.mp4")
    touch(flat / "y.mp4")
    assert [e.label for e in read_folder(flat).entries] == [0, 0]
    with pytest.raises(ListError, match="holds no video"):
        read_folder(tmp_path / "empty")
    with pytest.raises(ListError, match="does not exist"):
        read_folder(tmp_path / "nope")
    assert read_video_source(flat).classes == ("",)
    with pytest.raises(ListError, match="kind"):
        read_video_source(flat, kind="csv")


def fake_source(name: str, size: int) -> VideoSource:
    return VideoSource(name, tuple(VideoEntry(f"{name}/{i}.mp4", i, name) for i in range(size)))


def test_mixture_follows_weights():
    sources = [fake_source("a", 10), fake_source("b", 1000), fake_source("c", 3)]
    mixture = Mixture(sources, [0.5, 0.3, 0.2])
    assert len(mixture) == 1013
    assert mixture.sample_weight(0) == pytest.approx(0.05)
    assert mixture.sample_weight(1) == pytest.approx(0.0003)
    rng = np.random.default_rng(0)
    draws = 20000
    counts = np.zeros(3)
    per_entry_c = np.zeros(3)
    for _ in range(draws):
        i, entry = mixture.sample(rng)
        counts[i] += 1
        assert entry.path.startswith(sources[i].name + "/")
        if i == 2:
            per_entry_c[entry.label] += 1
    expected = np.array([0.5, 0.3, 0.2]) * draws
    # binomial standard deviations are < 71 here: 5 sigma
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts
    assert np.all(np.abs(per_entry_c - counts[2] / 3) < 5 * np.sqrt(counts[2] / 3))


def test_mixture_zero_weight_and_errors():
    mixture = Mixture([fake_source("a", 2), fake_source("b", 2)], [0.0, 1.0])
    rng = np.random.default_rng(1)
    assert all(mixture.sample(rng)[0] == 1 for _ in range(200))
    with pytest.raises(ListError, match="sum to 0"):
        Mixture([fake_source("a", 2)], [0.0])
    with pytest.raises(ListError, match="2 weights .* for 1 sources"):
        Mixture([fake_source("a", 2)], [1.0, 2.0])
    with pytest.raises(ListError, match="a: weight"):
        Mixture([fake_source("a", 2)], [-1.0])
    with pytest.raises(ListError, match="at least one"):
        Mixture([])


def test_mixture_with_unbounded_source():
    from vjepa2.data.clips.synthetic import Scene, SyntheticVideos

    mixture = Mixture([SyntheticVideos(seed=0), fake_source("a", 4)], [3.0, 1.0], names=["synthetic", "a"])
    rng = np.random.default_rng(0)
    kinds = [type(mixture.sample(rng)[1]) for _ in range(400)]
    assert 250 < kinds.count(Scene) < 350
    assert mixture.sample_weight(0) == 0.0 and mixture.sample_weight(1) == pytest.approx(0.0625)
    with pytest.raises(TypeError, match="unbounded"):
        len(mixture)
