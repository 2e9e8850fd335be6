"""Video QA: toy-vqa's questions, the projector's shapes, the answer-only loss against a second
computation, batched greedy answers against one-at-a-time ones, a local transformers LM trained
through `vjepa2 train-vqa` and asked about a real video file, and bad inputs as one line."""

import json
import os

import pytest
import torch

pytest.importorskip("transformers")

from vjepa2.cli import main  # noqa: E402
from vjepa2.evals.toy import TOY_SSV2_CLASSES, ToyConfig, ToyTask  # noqa: E402
from vjepa2.vqa.questions import NUMBER_WORDS, SINGLE_FRAME, TEMPORAL, read_qa_jsonl, toy_vqa  # noqa: E402
from vjepa2.vqa.modeling import (IGNORE, ScratchLM, VideoQA, VisualProjector, scratch_lm, text_vocabulary,  # noqa: E402
                              word_tokenizer)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_toy_vqa_asks_one_temporal_and_one_single_frame_question_per_clip():
    config = ToyConfig(train_size=72, val_size=12)
    data, task = toy_vqa("train", config), ToyTask("toy-ssv2", "train", config)
    assert len(data.items) == 2 * 72 and data.kinds() == [TEMPORAL, SINGLE_FRAME]
    singles = {"shape": 0, "colour": 0, "count": 0}
    for i in range(72):
        temporal, single = data.items[2 * i:2 * i + 2]
        scene, main = task.scene(i), task.scene(i).main_object()
        assert temporal.video == single.video == i
        assert temporal.question == f"what is the {main.colour} {main.shape} doing?"
        assert temporal.answer == TOY_SSV2_CLASSES[task.label(i)]
        visible = [o for o in scene.objects if o.role != "occluder"]
        if single.question.startswith("what shape"):
            singles["shape"] += 1
            assert single.answer == main.shape and main.colour in single.question
        elif single.question.startswith("what colour"):
            singles["colour"] += 1
            assert single.answer == main.colour and sum(o.shape == main.shape for o in visible) == 1
        else:
            singles["count"] += 1
            assert single.answer == NUMBER_WORDS[len(visible)]
    assert min(singles.values()) >= 10  # every single-frame kind is asked
    # Classes come in time-reversed pairs: clip 1 is a clip of class 0 played backwards.
    assert (data.items[0].answer, data.items[2].answer) == ("moving left", "moving right")
    assert toy_vqa("val", config).items != data.items[:24]


def test_projector_shapes():
    tokens = torch.randn(3, 20, 48)
    assert VisualProjector(48, 32, num_queries=5, heads=4)(tokens).shape == (3, 5, 32)
    assert VisualProjector(48, 32, num_queries=0, heads=4)(tokens).shape == (3, 20, 32)  # every token kept


def small_model(texts, seed=0, enc_dim=24, visual_first=True):
    tokenizer = word_tokenizer(text_vocabulary(texts))
    lm = scratch_lm(tokenizer, ScratchLM(dim=32, depth=1, heads=2), seed)
    torch.manual_seed(seed)
    return VideoQA(VisualProjector(enc_dim, 32, num_queries=3, heads=4), lm, tokenizer, visual_first)


QUESTIONS = ["what is the red star doing?", "how many objects are there?", "what colour is the ring?"]
ANSWERS = ["moving left", "two", "blue"]


@pytest.mark.parametrize("visual_first", [True, False])
def test_the_loss_is_the_answers_cross_entropy_only(visual_first):
    model = small_model(QUESTIONS + ANSWERS, visual_first=visual_first).double()
    tokens = torch.randn(3, 7, 24, dtype=torch.float64)
    loss, logged = model(tokens, QUESTIONS, ANSWERS)
    # Second computation: each sample alone, no padding, the answer tokens' log-probabilities by hand.
    total, count = 0.0, 0
    for i in range(3):
        prompt, answer = model._prompt_ids(QUESTIONS[i]), model._answer_ids(ANSWERS[i])
        visual = model.projector(tokens[i:i + 1])
        text = model.lm.get_input_embeddings()(torch.tensor([prompt + answer]))
        parts = [visual, text] if visual_first else [text[:, :len(prompt)], visual, text[:, len(prompt):]]
        embeds = torch.cat(parts, dim=1)
        logp = torch.log_softmax(model.lm(inputs_embeds=embeds).logits[0].detach(), dim=-1)
        start = visual.shape[1] + len(prompt)  # position of the first answer token
        total -= sum(float(logp[start - 1 + k, t]) for k, t in enumerate(answer))
        count += len(answer)
    # transformers computes the loss from float32 logits: agreement to float32 precision.
    loss = float(loss.detach())
    assert loss == pytest.approx(total / count, rel=1e-6) and float(logged[0]) == loss
    assert IGNORE == -100  # what transformers' loss skips


@pytest.mark.parametrize("visual_first", [True, False])
def test_batched_greedy_answers_equal_one_at_a_time(visual_first):
    # Questions of different lengths (so the batch pads them), memorised first so that the answers
    # depend on the inputs: a position or padding error changes them.
    model = small_model(QUESTIONS + ANSWERS, seed=3, visual_first=visual_first).double()
    tokens = torch.randn(3, 7, 24, dtype=torch.float64)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        loss, _ = model(tokens, QUESTIONS, ANSWERS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    batched = model.answer(tokens, QUESTIONS, max_new_tokens=4)
    alone = [model.answer(tokens[i:i + 1], [QUESTIONS[i]], max_new_tokens=4)[0] for i in range(3)]
    assert batched == alone == ANSWERS


def write_clips(folder, count=4):
    from vjepa2.data.clips.synthetic import render
    from vjepa2.data.clips.video import write_video

    task = ToyTask("toy-ssv2", "train", ToyConfig(train_size=count, val_size=1))
    paths = []
    for i in range(count):
        path = folder / f"clip{i}.mp4"
        write_video(path, render(task.scene(i), 8, 74), fps=8)
        paths.append(path)
    return paths


def test_train_vqa_with_a_local_transformers_lm_then_ask_about_a_video(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    # A tiny Llama-style LM and its tokenizer, saved as a local folder (what from_pretrained reads).
    words = text_vocabulary(["which way does it move?", "left right up down"])
    tokenizer = word_tokenizer(words)
    lm_dir = tmp_path / "tiny-llama"
    config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    transformers.LlamaForCausalLM(config).save_pretrained(lm_dir)
    tokenizer.save_pretrained(lm_dir)
    # Four videos (toy-SSv2 classes 0-3: left, right, up, down), one question each: learnable only from the video.
    clips = write_clips(tmp_path)
    rows = [{"video": p.name, "question": "which way does it move?", "answer": a, "kind": TEMPORAL}
            for p, a in zip(clips, ["left", "right", "up", "down"])]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    code = main(["train-vqa", "--train", str(qa), "--val", str(qa), "--lm", str(lm_dir), "--encoder", "random:tiny",
                 "--out", str(out), "schedule.iterations=150", "schedule.warmup=10", "schedule.cooldown=20",
                 "batch_size=8", "optim.lr=3e-3", "projector.num_queries=0", "projector.heads=3",
                 "log.progress_bar=false", "log.tensorboard=false", "data.clips.size=64"])
    assert code == 0
    scores = json.loads((out / "eval.json").read_text())
    assert scores["temporal"]["count"] == 4 and scores["all"]["accuracy"] == 100.0  # memorised its 4 videos
    checkpoint = sorted((out / "checkpoints").glob("step-*.pt"))[-1]
    capsys.readouterr()
    assert main(["ask", str(clips[2]), "which way does it move?", "--checkpoint", str(checkpoint)]) == 0
    assert capsys.readouterr().out.strip() == "up"


# A few steps of a 1-block LM on 12 toy-vqa clips (the benchmark's rows add their encoder and logging).
TINY = ["data.toy.train_size=12", "data.toy.val_size=6", "schedule.iterations=4", "schedule.warmup=1",
        "schedule.cooldown=1", "batch_size=4", "lm.dim=16", "lm.depth=1", "lm.heads=2", "projector.heads=3", "threads=1"]
TINY_RUN = TINY + ["encoder.weights=random:tiny", "log.progress_bar=false", "log.tensorboard=false"]


def test_the_unfrozen_stage_starts_where_the_frozen_one_ended_and_trains_the_encoder(tmp_path):
    from vjepa2.config import ConfigError
    from vjepa2.engine.distributed import DistEnv
    from vjepa2.vqa.questions import open_qa_data
    from vjepa2.vqa.trainer import (METADATA_KEY, VQATrainer, encode_videos, frozen_encoder, load_vqa, load_vqa_config,
                                    read_init, train_vqa, visual_tokens)

    def config(out, *extra):
        return load_vqa_config("toy", TINY_RUN + [f"output_dir={tmp_path / out}", f"data.cache_dir={tmp_path}/f", *extra])

    def last_checkpoint(out):
        return sorted((tmp_path / out / "checkpoints").glob("step-*.pt"))[-1]

    train_vqa(config("frozen"))
    first = last_checkpoint("frozen")
    cfg = config("unfrozen", f"init={first}", "encoder.trainable=true", "encoder.lr_scale=0.5")
    init, data = read_init(cfg), open_qa_data("toy-vqa", "train", cfg.data.toy)
    trainer = VQATrainer(cfg, DistEnv(), data, None, frozen_encoder(cfg, init), init[METADATA_KEY]["vocabulary"], init)
    # Clips read at every step give the tokens the frozen stage cached, and the model its loss.
    videos, items = [0, 5, 7], [data.items[i] for i in (0, 11, 15)]
    clips = trainer.clips(videos)                                             # (3, 1, 3, T, H, W)
    cached = visual_tokens(encode_videos(data, frozen_encoder(cfg), cfg, torch.device("cpu"), False, ""), videos,
                           torch.device("cpu"))
    with torch.no_grad():
        assert torch.allclose(trainer.model.encoder(clips[:, 0]), cached, atol=1e-5)
        questions, answers = [it.question for it in items], [it.answer for it in items]
        frozen_loss = load_vqa(first)[0](cached, questions, answers)[0]
        assert torch.allclose(trainer.model(clips, questions, answers)[0], frozen_loss, atol=1e-5)
    scaled = {id(p) for g in trainer.optimizer.param_groups if g.get("lr_scale") == 0.5 for p in g["params"]}
    assert scaled == {id(p) for p in trainer.model.encoder.parameters()}
    # Trained, its checkpoint holds the new encoder weights, which `load_vqa` (and `ask`) use.
    train_vqa(cfg)
    state = torch.load(last_checkpoint("unfrozen"), weights_only=True)
    untrained = frozen_encoder(cfg).state_dict()
    assert any(not torch.equal(w, untrained[k]) for k, w in state["encoder"].items())
    _, encoder, _ = load_vqa(last_checkpoint("unfrozen"))
    assert all(torch.equal(w, state["encoder"][k]) for k, w in encoder.state_dict().items())
    with pytest.raises(ConfigError, match=r"init: .* holds another model \(lm.dim=16 there, 32 here\)"):
        read_init(config("other", f"init={first}", "lm.dim=32"))


@pytest.mark.parametrize("trainable", [False, True])
def test_two_processes_reach_the_weights_of_one_process_with_two_micro_steps(tmp_path, trainable):
    # Process r of 2 draws micro-batch r, as micro-step r of one process does; float64, so that the
    # layouts' summation orders cannot move a weight measurably on any CPU.
    import subprocess
    import sys

    from vjepa2.vqa.trainer import build_model, load_vqa_config, train_vqa

    settings = TINY_RUN + ["dtype=fp64", "schedule.iterations=3", "data.val=null", "checkpoint.every=3",
                           f"encoder.trainable={str(trainable).lower()}"]
    train_vqa(load_vqa_config("toy", settings + [f"output_dir={tmp_path / 'one'}", "optim.grad_accumulation=2"]))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "vjepa2",
               "train-vqa", "--config", "toy", "--out", str(tmp_path / "two"), *settings]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    one, two = (torch.load(tmp_path / run / "checkpoints" / "step-00000003.pt", weights_only=True)
                for run in ("one", "two"))
    assert len(two["vjepa2_train"]["rng"]) == 2 and ("encoder" in two) == trainable
    for part in ("vqa", "encoder") if trainable else ("vqa",):
        assert one[part].keys() == two[part].keys()
        for name, value in one[part].items():
            assert value.dtype == torch.float64
            torch.testing.assert_close(two[part][name], value, rtol=1e-9, atol=1e-11, msg=f"{part} {name}")
    meta = one["vjepa2_vqa"]  # and the steps moved the weights they started from
    start = build_model(load_vqa_config("toy", settings), meta["enc_dim"], meta["vocabulary"]).state_dict()
    assert not any(torch.allclose(start[name].double(), value) for name, value in one["vqa"].items() if "proj" in name)


def test_bad_inputs_are_one_line(tmp_path, capsys):
    assert main(["ask", str(tmp_path / "x.mp4"), "  ", "--checkpoint", "x.pt"]) == 2
    assert "the question is empty" in capsys.readouterr().err
    assert main(["train-vqa", "--lm", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "lm.path" in err and "is not a folder" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "qa.jsonl"
    bad.write_text('{"video": "a.mp4", "question": "q?", "answer": "a"}\n')
    with pytest.raises(Exception, match=r"qa.jsonl:1: video .*a.mp4 does not exist"):
        read_qa_jsonl(bad)
    bad.write_text('{"video": "a.mp4", "answer": "a"}\n')
    with pytest.raises(Exception, match="qa.jsonl:1: needs non-empty text for question"):
        read_qa_jsonl(bad)
    clip = write_clips(tmp_path, 1)[0]
    assert main(["ask", str(clip), "what?", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_the_benchmark_runs_every_row_and_judges_the_bars(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "toy_vqa.py"
    spec = importlib.util.spec_from_file_location("toy_vqa_benchmark", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    md = tmp_path / "results.md"
    md.write_text("# Results\n")
    assert bench.main(["--encoder", "random:tiny", "--seeds", "0", "1", "--out", str(tmp_path / "runs"),
                       "--results-md", str(md), "--second-stage", "2", *TINY]) == 0
    text = md.read_text()
    assert bench.SECTION_TITLE in text and text.count("| yes |") + text.count("| **no** |") == len(bench.BARS)
    for row in [*bench.ROWS, *bench.SECOND_STAGE]:
        assert f"| {row} | " in text
        assert (tmp_path / "runs" / row.replace(" ", "-") / "seed-1" / "eval.json").is_file()
    # The second stage started from the pretrained run's last weights; unfrozen, it trained the encoder.
    unfrozen = torch.load(next((tmp_path / "runs" / "encoder-unfrozen" / "seed-0" / "checkpoints").glob("*.pt")),
                          weights_only=True)
    assert unfrozen["vjepa2_vqa"]["encoder"]["trainable"] and "encoder" in unfrozen
    assert "Unfrozen minus frozen on temporal questions" in text
    # A re-run reuses every finished run.
    capsys.readouterr()
    assert bench.main(["--encoder", "random:tiny", "--seeds", "0", "1", "--out", str(tmp_path / "runs"),
                       "--results-md", "none", "--second-stage", "2", *TINY]) == 0
    assert " seed " not in capsys.readouterr().out.split(bench.SECTION_TITLE)[0]
