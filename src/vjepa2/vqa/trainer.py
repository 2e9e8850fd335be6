"""``vjepa2 train-vqa``: a projector and a causal LM trained to answer questions about videos from a
V-JEPA 2 encoder's tokens, on the shared training loop (:mod:`vjepa2.engine.loop`: resume,
non-finite guard, checkpoints, logs; bf16 autocast and DDP as the other trainers).

::

    features = frozen encoder(every video of the split)         cached once: (videos, N, D)
    for each step: (video, question, answer) items -> VideoQA loss on the answer's tokens
    end: greedy answers on the validation items -> exact match per question kind (eval.json)

As the paper trains it, in two stages: the encoder frozen, then unfrozen (``encoder.trainable=true``
with ``init=`` the first stage's checkpoint: each step encodes its clips, the encoder trains at
``encoder.lr_scale`` x the learning rate, and checkpoints hold its weights).

Baselines are settings of the same run: ``encoder.random_init=true`` (the encoder's architecture,
random weights), ``data.clips.input=image`` (the middle frame repeated: no motion), and
``encoder.weights=none`` (a blind LM: the question alone).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vjepa2 import precision
from vjepa2.config import ConfigError, from_dict
from vjepa2.engine import distributed as dist_utils
from vjepa2.engine import loop
from vjepa2.engine.checkpoint import CheckpointDir
from vjepa2.engine.config import OptimConfig, RunSettings, StepScheduleConfig
from vjepa2.engine.monitor import RunMonitor
from vjepa2.engine.schedules import phase_lr
from vjepa2.evals.features import ClipConfig, EncoderFeatures, FeatureSet, build_features, make_views, raw_segments
from vjepa2.evals.toy import ToyConfig
from vjepa2.files import atomic_write_text
from vjepa2.vqa.questions import TOY_VQA, QAData, normalise_answer, open_qa_data
from vjepa2.vqa.modeling import (EncoderQA, ScratchLM, VideoQA, VisualProjector, load_lm, scratch_lm, text_vocabulary,
                                 word_tokenizer)

METADATA_KEY = "vjepa2_vqa"
NO_ENCODER = "none"


@dataclass(frozen=True)
class VQADataConfig:
    """``train`` / ``val``: ``toy-vqa`` or a JSON-lines file (:mod:`vjepa2.vqa.questions`; ``val`` null =
    no evaluation); ``clips``: what the encoder sees of each video (``clips.input=image`` for the
    image-only baseline); ``toy``: the toy-vqa splits; ``cache_dir``: features (default
    ``<output_dir>/features``)."""

    train: str = TOY_VQA
    val: str | None = TOY_VQA
    clips: ClipConfig = field(default_factory=lambda: ClipConfig(frames=8, size=64, train_views=1))
    toy: ToyConfig = field(default_factory=lambda: ToyConfig(train_size=2400, val_size=480))
    cache_dir: str | None = None


@dataclass(frozen=True)
class VQAEncoderConfig:
    """The encoder: a checkpoint, a transformers folder, ``random:<size>``, or ``none`` (a blind LM);
    ``random_init``: its architecture with seeded random weights (a baseline). Frozen (its tokens
    computed once and cached) unless ``trainable``: then it is trained with the projector and LM at
    ``lr_scale`` x the learning rate, every clip encoded at every step (the paper's second stage:
    start it from a frozen run's checkpoint with ``init``)."""

    weights: str = "random:tiny"
    random_init: bool = False
    batch_size: int = 16
    trainable: bool = False
    lr_scale: float = 0.1


@dataclass(frozen=True)
class ProjectorConfig:
    """``num_queries`` visual tokens from attentive pooling (0 = keep every encoder token), placed
    ``after_question`` (the causal LM reads them in the question's context: on toy-vqa with a
    2-block LM from scratch, 48.8 % exact match on temporal questions vs 26.0 % placed
    ``before_question``, LLaVA's order; docs/results.md)."""

    num_queries: int = 16
    heads: int = 4
    placement: Literal["before_question", "after_question"] = "after_question"

    def validate(self) -> None:
        if self.num_queries < 0 or self.heads < 1:
            raise ConfigError("projector.num_queries must be >= 0 and projector.heads >= 1")


@dataclass(frozen=True)
class LMConfig:
    """``path``: a local transformers causal-LM folder (trained with the projector); null = a
    Llama-style LM of ``dim`` x ``depth`` x ``heads`` built from scratch with a word-level
    tokenizer over the training questions and answers."""

    path: str | None = None
    dim: int = 128
    depth: int = 2
    heads: int = 4
    max_answer_tokens: int = 8

    def validate(self) -> None:
        if min(self.dim, self.depth, self.heads, self.max_answer_tokens) < 1 or self.dim % self.heads:
            raise ConfigError(f"lm: dim, depth, heads, max_answer_tokens must be >= 1 and heads must divide dim "
                              f"(got {self.dim}, {self.depth}, {self.heads}, {self.max_answer_tokens})")
        if self.path is not None and not Path(self.path).is_dir():
            raise ConfigError(f"lm.path: {self.path} is not a folder (a local transformers causal LM: config.json, "
                              f"weights, tokenizer files)")


@dataclass(frozen=True)
class VQATrainConfig(RunSettings):
    """One video-QA run (and the run settings of :class:`~vjepa2.engine.config.RunSettings`);
    ``batch_size`` is global (items per optimiser step); ``init``: a train-vqa checkpoint whose
    projector, LM (and trained encoder, if it has one) this run starts from, e.g. the frozen stage's
    last checkpoint for an ``encoder.trainable`` stage. ``dtype=fp64`` (the trained modules in
    float64: slow, for numerical checks) is allowed here too."""

    dtype: Literal["fp32", "bf16", "fp64"] = "fp32"
    data: VQADataConfig = field(default_factory=VQADataConfig)
    encoder: VQAEncoderConfig = field(default_factory=VQAEncoderConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.01, clip_grad=1.0))
    schedule: StepScheduleConfig = field(default_factory=lambda: StepScheduleConfig(iterations=1500, warmup=50,
                                                                                     cooldown=300))
    batch_size: int = 32
    output_dir: str = "runs/vqa"
    init: str | None = None

    def validate(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        self.check_run_settings()
        if self.encoder.trainable and (self.blind or self.encoder.lr_scale <= 0):
            raise ConfigError("encoder.trainable needs an encoder (not --encoder none) and encoder.lr_scale > 0")
        if self.init is not None and not Path(self.init).is_file():
            raise ConfigError(f"init: {self.init} is not a file (a train-vqa checkpoint, checkpoints/step-*.pt)")
        for key in ("train", "val"):
            source = getattr(self.data, key)
            if source not in (None, TOY_VQA) and not Path(source).is_file():
                raise ConfigError(f"data.{key}: {source} is neither toy-vqa nor a JSON-lines file")

    @property
    def blind(self) -> bool:
        return self.encoder.weights == NO_ENCODER

    @property
    def cache_dir(self) -> Path:
        return Path(self.data.cache_dir) if self.data.cache_dir else Path(self.output_dir) / "features"


def load_vqa_config(path: str | None = None, overrides=()) -> VQATrainConfig:
    """A YAML file or recipe (or the defaults) with dotted overrides, validated."""
    from vjepa2.config import apply_overrides, load_yaml, resolve_recipe

    data = load_yaml(resolve_recipe("train-vqa", path)) if path else {}
    return from_dict(VQATrainConfig, apply_overrides(data, overrides))


# ------------------------------------------------------------------------------------------------
# Building the pieces (shared by training, evaluation and `vjepa2 ask`)
# ------------------------------------------------------------------------------------------------


def build_language_model(lm: LMConfig, vocabulary: list[str] | None, seed: int):
    """``(model, tokenizer)``: the local folder's, or a scratch LM over ``vocabulary``."""
    if lm.path:
        return load_lm(lm.path)
    tokenizer = word_tokenizer(vocabulary)
    return scratch_lm(tokenizer, ScratchLM(lm.dim, lm.depth, lm.heads), seed), tokenizer


def build_model(cfg: VQATrainConfig, enc_dim: int | None, vocabulary: list[str] | None) -> VideoQA:
    lm, tokenizer = build_language_model(cfg.lm, vocabulary, cfg.seed)
    projector = None
    if enc_dim is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            projector = VisualProjector(enc_dim, lm.get_input_embeddings().embedding_dim,
                                        cfg.projector.num_queries, cfg.projector.heads)
    return VideoQA(projector, lm, tokenizer, visual_first=cfg.projector.placement == "before_question")


def model_settings(cfg: VQATrainConfig) -> dict:
    """What a checkpoint records of how its model was built: the encoder, projector and LM settings
    (the encoder's weights and the LM folder as absolute paths)."""
    from vjepa2.weights import absolute_weights

    lm = dataclasses.asdict(cfg.lm)
    if cfg.lm.path:
        lm["path"] = str(Path(cfg.lm.path).resolve())
    return {"encoder": {**dataclasses.asdict(cfg.encoder), "weights": absolute_weights(cfg.encoder.weights)},
            "projector": dataclasses.asdict(cfg.projector), "lm": lm}


def read_checkpoint(path: str | Path) -> dict:
    """A ``train-vqa`` checkpoint's contents (one-line errors for a missing or foreign file)."""
    from vjepa2.weights import safe_torch_load

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint (a train-vqa run's checkpoints/step-*.pt)")
    state = safe_torch_load(path)
    if METADATA_KEY not in state:
        raise ConfigError(f"{path} is not a train-vqa checkpoint (no {METADATA_KEY} entry)")
    return state


def read_init(cfg: VQATrainConfig) -> dict | None:
    """The ``init`` checkpoint (None without one), checked to hold this run's model: the same
    encoder, projector and LM settings (what only training changes may differ)."""
    if cfg.init is None:
        return None
    state = read_checkpoint(cfg.init)
    saved, ours = state[METADATA_KEY], model_settings(cfg)
    same = {"encoder": ("weights", "random_init"), "projector": tuple(ours["projector"]),
            "lm": ("path", "dim", "depth", "heads")}
    differ = [f"{part}.{key}={saved[part].get(key)!r} there, {ours[part][key]!r} here"
              for part, keys in same.items() for key in keys if saved[part].get(key) != ours[part][key]]
    if differ:
        raise ConfigError(f"init: {cfg.init} holds another model ({'; '.join(differ)}); give this run its settings")
    return state


def frozen_encoder(cfg: VQATrainConfig, init: dict | None = None):
    """The encoder the config names, frozen (None for a blind LM); the ``init`` checkpoint's trained
    encoder weights when it holds some."""
    from vjepa2.evals.probe import load_frozen_encoder

    if cfg.blind:
        return None
    encoder = load_frozen_encoder(cfg.encoder.weights, cfg.encoder.random_init, cfg.seed)
    if init is not None and "encoder" in init:
        encoder.load_state_dict(init["encoder"])
    return encoder


def encode_videos(data: QAData, encoder, cfg: VQATrainConfig, device: torch.device, progress: bool,
                  describe: str) -> FeatureSet | None:
    """The frozen encoder's tokens of every video of ``data`` (cached under ``cfg.cache_dir``)."""
    if encoder is None:
        return None
    from vjepa2.evals.probe import check_clip_geometry

    check_clip_geometry(cfg.data.clips, encoder.config)
    return build_features(data.videos, EncoderFeatures(encoder.to(device)), cfg.data.clips, training=False,
                          seed=cfg.seed, cache_dir=cfg.cache_dir, batch_clips=cfg.encoder.batch_size,
                          progress=progress, describe=describe)


def shared_features(data: QAData, encoder, cfg: VQATrainConfig, env: dist_utils.DistEnv,
                    describe: str) -> FeatureSet | None:
    """:func:`encode_videos` in a (possibly distributed) run: rank 0 encodes into the cache, the
    others wait and then read it."""
    if env.is_main:
        features = encode_videos(data, encoder, cfg, env.device, cfg.log.progress_bar, describe)
    dist_utils.barrier()
    if not env.is_main:
        features = encode_videos(data, encoder, cfg, env.device, False, describe)
    return features


def visual_tokens(features: FeatureSet | None, videos: list[int], device: torch.device) -> torch.Tensor | None:
    """``(B, N, D)`` cached tokens of ``videos`` (None without an encoder)."""
    if features is None:
        return None
    view = torch.zeros(len(videos), dtype=torch.long)  # the one (centre-crop) view cached per video
    return features.get(torch.tensor(videos), view).to(device=device, dtype=torch.float32)


# ------------------------------------------------------------------------------------------------
# Training: the shared loop's trainer
# ------------------------------------------------------------------------------------------------


class VQATrainer:
    """Video-QA training as a :class:`vjepa2.engine.loop.Trainer`: the projector and LM on cached
    frozen tokens, or with ``encoder.trainable`` the encoder too (:class:`EncoderQA`) on clips read at
    every step."""

    kind = "train-vqa"
    plot_column = "loss"
    phase_ends_matter = False
    columns = ("step", "loss", "lr", "grad_norm", "clips_per_s", "nonfinite_total", "elapsed_s")

    def __init__(self, cfg: VQATrainConfig, env: dist_utils.DistEnv, data: QAData, features: FeatureSet | None,
                 encoder, vocabulary: list[str] | None, init: dict | None = None) -> None:
        self.cfg, self.env, self.data, self.features, self.encoder = cfg, env, data, features, encoder
        self.micro = loop.per_micro_step(cfg.batch_size, "batch_size", env, cfg.optim.grad_accumulation)
        self.vocabulary, self.enc_dim = vocabulary, None if encoder is None else encoder.config.dim
        self.qa = build_model(cfg, self.enc_dim, vocabulary)
        if init is not None:
            self.qa.load_state_dict(init["vqa"])
        self.trains_encoder = cfg.encoder.trainable
        # the encoder's weights go into checkpoints when they are not the ones encoder.weights names
        self.saves_encoder = self.trains_encoder or (init is not None and "encoder" in init)
        self.checkpoint_keys = ("vqa", METADATA_KEY) + (("encoder",) if self.saves_encoder else ())
        self.model = (EncoderQA(encoder.requires_grad_(True).train(), self.qa) if self.trains_encoder
                      else self.qa).to(env.device, precision.PARAM_DTYPES[cfg.dtype])
        self.training_model = dist_utils.wrap_model(self.model, cfg.distributed.strategy, env)
        self.optimizer = loop.build_optimizer(self.model, cfg.optim, lr_scales={"encoder.": cfg.encoder.lr_scale})
        self.phases = cfg.schedule.segments()
        self.autocast = precision.autocast(env.device, cfg.dtype)

    def begin(self, start_step: int, counters: loop.Counters, monitor: RunMonitor) -> None:
        if self.env.is_main:
            params = sum(p.numel() for p in self.qa.parameters())
            seen = ("no encoder (blind LM)" if self.encoder is None else
                    f"encoder {self.cfg.encoder.weights} trained at {self.cfg.encoder.lr_scale:g} x the lr"
                    if self.trains_encoder else f"frozen encoder {self.cfg.encoder.weights}")
            print(f"vjepa2 train-vqa: {len(self.data.items)} questions about {len(self.data.videos)} videos, "
                  f"{seen}, projector + LM {params / 1e6:.2f} M params, {self.cfg.schedule.iterations} steps, "
                  f"global batch {self.cfg.batch_size}")

    def batch(self, step: int, micro_index: int) -> tuple:
        """``(visual input, questions, answers)``: cached tokens ``(B, N, D)`` (None: blind), or with a
        trained encoder the clips ``(B, S, 3, T, H, W)``."""
        rng = np.random.default_rng([self.cfg.seed, step, micro_index])
        items = [self.data.items[int(i)] for i in rng.integers(0, len(self.data.items), size=self.micro)]
        videos = [it.video for it in items]
        visual = self.clips(videos) if self.trains_encoder else visual_tokens(self.features, videos, self.env.device)
        return visual, [it.question for it in items], [it.answer for it in items]

    def clips(self, videos: list[int]) -> torch.Tensor:
        """The centre-crop clips of ``videos``, ``(B, S, 3, T, H, W)`` in the trained modules' dtype, as
        the cached tokens were computed."""
        clips, seed = self.cfg.data.clips, self.cfg.seed
        views = [make_views(raw_segments(self.data.videos, v, clips, seed), clips, False, seed, v)[0] for v in videos]
        return torch.stack(views).to(self.env.device, precision.PARAM_DTYPES[self.cfg.dtype])

    def step(self, step: int, where) -> loop.StepReport:
        cfg, env = self.cfg, self.env
        lr = phase_lr(where.phase, cfg.optim.lr, where.step_in_phase)
        accumulation = cfg.optim.grad_accumulation
        micro = [self.batch(step, env.rank * accumulation + m) for m in range(accumulation)]
        values, grad_norm, finite = loop.optimizer_step(self.training_model, self.optimizer, micro, lr=lr,
                                                        clip_grad=cfg.optim.clip_grad, autocast=self.autocast)
        return loop.StepReport(float(values[0]), finite, grad_norm, lr, cfg.batch_size)

    def checkpoint_payload(self, model_state: dict, step: int, where) -> dict:
        """The projector and LM weights (and the encoder's when trained), and what :func:`load_vqa`
        needs to rebuild the model."""
        qa, encoder = model_state, None
        if self.trains_encoder:
            qa, encoder = _sub_state(model_state, "qa."), _sub_state(model_state, "encoder.")
        elif self.saves_encoder:
            encoder = self.encoder.state_dict()
        meta = {**model_settings(self.cfg), "seed": self.cfg.seed, "clips": dataclasses.asdict(self.cfg.data.clips),
                "vocabulary": self.vocabulary, "enc_dim": self.enc_dim}
        return {"vqa": qa, METADATA_KEY: meta, **({"encoder": encoder} if encoder is not None else {})}

    def model_state(self, checkpoint: dict) -> dict:
        if not self.trains_encoder:
            return checkpoint["vqa"]
        return {**{f"qa.{k}": v for k, v in checkpoint["vqa"].items()},
                **{f"encoder.{k}": v for k, v in checkpoint["encoder"].items()}}


def _sub_state(state: dict, prefix: str) -> dict:
    """The entries of ``state`` under ``prefix``, with it removed."""
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def scratch_vocabulary(cfg: VQATrainConfig, train: QAData, init: dict | None) -> list[str] | None:
    """The words of a scratch LM's tokenizer: the ``init`` checkpoint's, or the training questions'
    and answers' (None for a local LM, which brings its tokenizer)."""
    if init is not None:
        return init[METADATA_KEY]["vocabulary"]
    if cfg.lm.path:
        return None
    return text_vocabulary([text for it in train.items for text in (it.question, it.answer)])


def train_vqa(cfg: VQATrainConfig, resume: bool = False) -> dict:
    """Train as ``cfg`` says (``resume``: continue the newest valid checkpoint exactly), then score
    the validation questions. Returns ``{"summary": RunSummary, "eval": scores or None}``."""
    inputs = {f"data.{k}": getattr(cfg.data, k) for k in ("train", "val")
              if getattr(cfg.data, k) not in (None, TOY_VQA)}
    with loop.distributed_run(cfg, inputs) as env:
        init = read_init(cfg)
        train = open_qa_data(cfg.data.train, "train", cfg.data.toy)
        val = open_qa_data(cfg.data.val, "val", cfg.data.toy) if cfg.data.val else None
        encoder = frozen_encoder(cfg, init)
        if env.is_main:
            loop.refuse_to_overwrite(CheckpointDir(Path(cfg.output_dir) / "checkpoints"), resume)
        features = None if cfg.encoder.trainable else shared_features(train, encoder, cfg, env, "train videos")
        trainer = VQATrainer(cfg, env, train, features, encoder, scratch_vocabulary(cfg, train, init), init)
        summary = loop.run_loop(trainer, cfg, env, resume)
        scores = None
        if val is not None and env.is_main:
            val_features = encode_videos(val, encoder, cfg, env.device, cfg.log.progress_bar, "val videos")
            scores = evaluate(trainer.qa, val, val_features, env.device, cfg.lm.max_answer_tokens)
            atomic_write_text(Path(cfg.output_dir) / "eval.json", json.dumps(scores, indent=1) + "\n")
            print("validation exact match: " + ", ".join(f"{k} {v['accuracy']:.1f}% ({v['count']})"
                                                         for k, v in scores.items()))
    return {"summary": summary, "eval": scores}


def evaluate(model: VideoQA, data: QAData, features: FeatureSet | None, device: torch.device,
             max_answer_tokens: int = 8, batch: int = 64) -> dict:
    """Exact match (after :func:`~vjepa2.vqa.questions.normalise_answer`) of greedy answers, per item
    kind and ``all``: ``{kind: {"accuracy": %, "count": n}}``."""
    model.eval()
    hits: dict[str, list[bool]] = {}
    for start in range(0, len(data.items), batch):
        items = data.items[start:start + batch]
        answers = model.answer(visual_tokens(features, [it.video for it in items], device),
                               [it.question for it in items], max_answer_tokens)
        for item, answer in zip(items, answers):
            hit = normalise_answer(answer) == normalise_answer(item.answer)
            for kind in ("all", item.kind) if item.kind else ("all",):
                hits.setdefault(kind, []).append(hit)
    model.train()
    return {kind: {"accuracy": 100.0 * sum(h) / len(h), "count": len(h)} for kind, h in hits.items()}


# ------------------------------------------------------------------------------------------------
# A trained model back from its checkpoint
# ------------------------------------------------------------------------------------------------


def load_vqa(checkpoint: str | Path, device: torch.device | str = "cpu") -> tuple[VideoQA, object, ClipConfig]:
    """``(model, encoder or None, clip settings)`` of a ``train-vqa`` checkpoint (the encoder frozen,
    with the checkpoint's trained weights when it holds some)."""
    state = read_checkpoint(checkpoint)
    meta = state[METADATA_KEY]
    cfg = from_dict(VQATrainConfig, {"encoder": meta["encoder"], "projector": meta["projector"], "lm": meta["lm"],
                                     "seed": meta["seed"], "data": {"val": None}})
    model = build_model(cfg, meta["enc_dim"], meta["vocabulary"])
    model.load_state_dict(state["vqa"])
    return model.to(device).eval(), frozen_encoder(cfg, state), from_dict(ClipConfig, meta["clips"])


def answer_video(checkpoint: str, video: str, question: str, max_tokens: int = 8) -> str:
    """The checkpoint's greedy answer to ``question`` about the file ``video`` (its clip read and
    encoded as the training features were: :func:`~vjepa2.evals.features.raw_segments`,
    :func:`~vjepa2.evals.features.encode_views`)."""
    from vjepa2.evals.features import encode_views
    from vjepa2.vqa.questions import VideoFiles

    if not question.strip():
        raise ConfigError("the question is empty; give it in quotes after the video")
    if not Path(video).is_file():
        raise ConfigError(f"{video}: no such video file")
    model, encoder, clips = load_vqa(checkpoint)
    tokens = None
    if encoder is not None:
        segments = raw_segments(VideoFiles([video], video), 0, clips, 0)
        views = make_views(segments, clips, training=False, seed=0, index=0)       # (1, S, 3, T, H, W)
        tokens = encode_views(EncoderFeatures(encoder), views[None])[:, 0]          # (1, S * N, D)
    return model.answer(tokens, [question], max_tokens)[0]
