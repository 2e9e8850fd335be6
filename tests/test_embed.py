"""``vjepa2 embed`` end to end through ``vjepa2.cli.main`` with tiny encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from video_fixtures import corner_image, index_video

from vjepa2.cli import main
from vjepa2.data.clips.transforms import EvalTransform
from vjepa2.data.clips.video import read_clip, write_video
from vjepa2.embed import SafetensorsStreamWriter, read_embeddings, video_keys
from vjepa2.weights import load_encoder
from vjepa2.models import VisionEncoder, encoder_config
from vjepa2.weights import save_public

SMALL = ["--frames", "4", "--size", "32", "--no-progress"]


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(1)
    encoder = VisionEncoder(encoder_config("tiny", dim=48, depth=2, heads=4, mlp_hidden=96))
    path = tmp_path / "tiny.pt"
    save_public(path, encoder)
    return path, encoder.eval()


@pytest.fixture
def video_dir(tmp_path):
    root = tmp_path / "videos"
    index_video(root / "a.mp4", 20, fps=30)
    index_video(root / "sub" / "b.webm", 12, fps=10)
    write_video(root / "still.png", corner_image(40, 56)[None])
    return root


def test_embed_writes_tokens_and_pooled_and_reports_bad_files(tmp_path, video_dir, tiny_checkpoint, capsys):
    weights, encoder = tiny_checkpoint
    (video_dir / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(2000))
    (video_dir / "empty.avi").write_bytes(b"")
    out = tmp_path / "features.safetensors"
    code = main(["embed", str(video_dir), "--weights", str(weights), "--out", str(out), *SMALL])
    captured = capsys.readouterr()
    assert code == 1  # some files failed
    for name, reason in [("broken.mp4", "not a readable video"), ("empty.avi", "empty")]:
        line = next(line for line in captured.err.splitlines() if line.strip().startswith(str(video_dir / name)))
        assert reason in line
    assert "embedded 3 of 5" in captured.out

    videos, meta = read_embeddings(out)
    assert sorted(videos) == ["a.mp4", "still.png", "sub/b.webm"]
    assert sorted(meta["failed"]) == sorted(str(video_dir / n) for n in ("broken.mp4", "empty.avi"))
    assert meta["settings"]["frames"] == 4 and meta["settings"]["encoder"]["dim"] == 48
    transform = EvalTransform(32)
    for key, video in videos.items():
        assert video.tokens.shape == (8, 48) and video.tokens.dtype == torch.float32  # (4/2) * (32/16)^2
        assert video.pooled.shape == (48,)
        assert torch.allclose(video.pooled, video.tokens.mean(dim=0), atol=1e-6)
        assert video.grid == (2, 2, 2) and video.path == str(video_dir / key)
        # Second code path: decode, preprocess and encode here, by hand.
        clip, _ = read_clip(video_dir / key, frames=4)
        with torch.no_grad():
            expected = encoder(transform(clip)[None])[0]
        assert torch.allclose(video.tokens, expected, atol=1e-5)
    # the raw file is plain safetensors: any reader sees the same tensors
    with safe_open(str(out), framework="pt") as f:
        assert set(f.keys()) == {f"{kind}/{key}" for kind in ("tokens", "pooled") for key in videos}
        assert json.loads(f.metadata()["videos"])["a.mp4"]["grid"] == [2, 2, 2]


def test_embed_exit_zero_and_batching_does_not_change_features(tmp_path, video_dir):
    outs = []
    for batch_size in (1, 2):
        out = tmp_path / f"b{batch_size}.safetensors"
        code = main(["embed", str(video_dir / "a.mp4"), str(video_dir / "sub"), "--weights", "random:tiny",
                     "--batch-size", str(batch_size), "--out", str(out), *SMALL])
        assert code == 0
        outs.append(read_embeddings(out)[0])
    assert sorted(outs[0]) == ["a.mp4", "sub/b.webm"]
    for key in outs[0]:
        assert torch.allclose(outs[0][key].tokens, outs[1][key].tokens, atol=1e-5)


def test_embed_bf16_is_close_to_fp32(tmp_path, video_dir):
    results = {}
    for dtype in ("fp32", "bf16"):
        out = tmp_path / f"{dtype}.safetensors"
        assert main(["embed", str(video_dir / "a.mp4"), "--weights", "random:tiny", "--dtype", dtype,
                     "--out", str(out), *SMALL]) == 0
        results[dtype] = read_embeddings(out)[0]["a.mp4"].tokens
    assert results["bf16"].dtype == torch.float32  # stored as float32 whatever the compute dtype
    error = (results["bf16"] - results["fp32"]).norm() / results["fp32"].norm()
    assert 0 < error < 5e-2


def test_embed_writes_nothing_when_every_file_fails(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    out = tmp_path / "out.safetensors"
    assert main(["embed", str(bad), "--weights", "random:tiny", "--out", str(out), *SMALL]) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]  # no temp files left behind
    assert "bad.mp4" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    ([], "at least one video"),
    (["{video}"], "--weights is required"),
    (["{missing}", "--weights", "random:tiny"], "missing.mp4: no such file"),
    (["{video}", "--weights", "random:huge2"], "unknown size 'huge2'"),
    (["{video}", "--weights", "{missing}"], "--weights"),
    (["{video}", "--weights", "random:tiny", "--frames", "3"], "multiple of the encoder's tubelet size 2"),
    (["{video}", "--weights", "random:tiny", "--size", "40"], "multiple of the encoder's patch size 16"),
    (["{video}", "--weights", "random:tiny", "--fps", "0"], "--fps > 0"),
    (["{video}", "--demo"], "--demo"),
])
def test_embed_usage_errors_exit_2_with_a_message(tmp_path, capsys, args, message):
    video = index_video(tmp_path / "v.mp4", 6)
    args = [a.format(video=video, missing=tmp_path / "missing.mp4") for a in args]
    assert main(["embed", *args, "--out", str(tmp_path / "o.safetensors"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()


def test_embed_demo_runs_without_inputs(tmp_path, capsys):
    out = tmp_path / "demo.safetensors"
    assert main(["embed", "--demo", "--out", str(out), "--frames", "8", "--size", "64", "--no-progress"]) == 0
    videos, meta = read_embeddings(out)
    assert list(videos) == ["demo.mp4"] and videos["demo.mp4"].tokens.shape == (4 * 4 * 4, 192)
    assert meta["settings"]["weights"] == "random:tiny"
    assert "embedded 1 of 1" in capsys.readouterr().out


@pytest.mark.slow
def test_embed_demo_at_default_settings(tmp_path):
    out = tmp_path / "demo.safetensors"
    assert main(["embed", "--demo", "--out", str(out)]) == 0
    assert read_embeddings(out)[0]["demo.mp4"].tokens.shape == (8 * 16 * 16, 192)


def test_random_encoder_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = load_encoder("random:tiny", seed=0), load_encoder("random:tiny", seed=0), load_encoder(
        "random:tiny", seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    wa, wb, wc = (m.patch_embed.proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert not a.training


def test_stream_writer_is_atomic_and_readable_by_safetensors(tmp_path):
    out = tmp_path / "t.safetensors"
    out.write_bytes(b"old content")
    tensors = {"x": torch.randn(3, 5), "y/z": torch.arange(7, dtype=torch.int64),
               "h": torch.randn(4).to(torch.bfloat16), "empty": torch.zeros(0, 3)}
    with pytest.raises(RuntimeError, match="crash"):
        with SafetensorsStreamWriter(out) as writer:
            writer.add("x", tensors["x"])
            raise RuntimeError("crash before commit")
    assert out.read_bytes() == b"old content" and sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]
    with SafetensorsStreamWriter(out) as writer:
        for name, tensor in tensors.items():
            writer.add(name, tensor)
        with pytest.raises(ValueError, match="twice"):
            writer.add("x", tensors["x"])
        writer.commit({"note": "hello"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata() == {"note": "hello"}
        for name, tensor in tensors.items():
            got = f.get_tensor(name)
            assert got.dtype == tensor.dtype and torch.equal(got, tensor)


def test_video_keys_are_relative_to_the_common_directory(tmp_path):
    paths = [tmp_path / "a" / "x.mp4", tmp_path / "a" / "b" / "y.mp4"]
    assert video_keys(paths) == ["x.mp4", "b/y.mp4"]
    assert video_keys([tmp_path / "one.mp4"]) == ["one.mp4"]
