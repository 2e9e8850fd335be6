"""``vjepa2 eval toy-report``: did the tiny pretraining learn anything temporal? One seeded command.

1. Pretrain the tiny model on the synthetic videos (``vjepa2 pretrain`` recipe ``tiny`` by default;
   an existing run in ``out/pretrain`` is resumed, a finished one reused).
2. For toy-SSv2 and toy-appearance, probe four inputs, each with the light and the full probe:
   the pretrained encoder on the videos; a random-init encoder of the same size; the pretrained
   encoder on image-only clips (middle frame repeated); the pretrained encoder on shuffled frames.
3. Action anticipation on toy-anticipation: pretrained encoder + predictor vs random-init ones.
   toy-seg (:mod:`vjepa2.evals.dense`: a linear head on every token, mIoU) for the pretrained
   encoder, a random-init one and the pretrained one on image-only clips.
4. Write ``out/summary.json``; with ``image_dir`` / ``results_md`` given, the confusion matrices to
   ``<image_dir>/eval-*.png`` and the section "Frozen evaluation (toy-SSv2)" of that page (other
   sections are left as they are).

toy-SSv2's classes come in time-reversed pairs, so besides top-1 the table splits accuracy into
*pair* accuracy (the predicted class is in the right pair: which motion) and *direction* accuracy
(of the clips whose pair is right, the share whose direction of time is right; chance 50%).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vjepa2.config import ConfigError, from_dict, to_dict
from vjepa2.evals.anticipation import HEAD_NAMES, AnticipationFeatures
from vjepa2.evals.data import ToyVideos
from vjepa2.evals.dense import ToySegConfig, toy_seg
from vjepa2.evals.features import ClipConfig, EncoderFeatures, build_features
from vjepa2.engine.monitor import effective_rank
from vjepa2.evals.probe import (GridConfig, fit_and_report, load_frozen_encoder, resolve_device)
from vjepa2.files import atomic_write_text, check_output_dir, write_json
from vjepa2.evals.toy import TOY_SSV2_PAIRS, ToyConfig, ToyTask
from vjepa2.models.attentive_probe import ProbeVariant, probe_config

SECTION_TITLE = "## Frozen evaluation (toy-SSv2)"
# A hand-written subsection under this heading survives re-running the report.
ANALYSIS_HEADING = "### Analysis"
# (row label, encoder, input mode, whitened features, probe variants)
ROWS = (("pretrained", "pretrained", "video", False, ("light", "full")),
        ("random-init", "random", "video", False, ("light", "full")),
        ("image-only", "pretrained", "image", False, ("light", "full")),
        ("shuffled frames", "pretrained", "shuffled", False, ("light", "full")),
        ("pretrained, whitened*", "pretrained", "video", True, ("light",)),
        ("random-init, whitened*", "random", "video", True, ("light",)))
TASKS = ("toy-ssv2", "toy-appearance")


@dataclass(frozen=True)
class ToyReportConfig:
    """Settings of the toy report (defaults fit in ~40 min on a 2-core CPU, pretraining included).

    Attributes:
        out: run directory (pretraining, features, every probe's results, summary.json).
        pretrain_config / pretrain_overrides: the pretraining recipe and dotted overrides.
        clips: clip sampling and the cached training views.
        toy: split sizes and seed of the built-in tasks.
        light_grid / full_grid: the probe grids (smaller than the paper's 5 x 4 to fit the CPU budget).
        whitened_rows: add the diagnostic rows with PCA-whitened features (light probe).
        anticipation: also run the anticipation comparison; ``anticipation_variant`` its probe.
        toy_seg: the dense probe's settings (null: not run).
        results_md / image_dir: where the section and the figures go (null, the default: not written;
            the project's own page is ``results_md=docs/results.md image_dir=docs/img``).
    """

    out: str = "runs/toy-report"
    pretrain_config: str = "tiny"
    pretrain_overrides: tuple[str, ...] = ()
    clips: ClipConfig = field(default_factory=lambda: ClipConfig(frames=8, size=64, train_views=2))
    toy: ToyConfig = field(default_factory=lambda: ToyConfig(train_size=2400, val_size=480))
    light_grid: GridConfig = field(default_factory=lambda: GridConfig(
        lrs=(1e-2, 3e-3), weight_decays=(0.01,), epochs=8, batch_size=16))
    # The self-attention blocks at 1/100 of the rate: at one shared rate the full probe does not
    # learn within a CPU budget (docs/results.md, "Frozen evaluation").
    full_grid: GridConfig = field(default_factory=lambda: GridConfig(
        lrs=(1e-2,), weight_decays=(0.01,), epochs=4, warmup_epochs=0.25, batch_size=16, block_lr_scale=0.01))
    whitened_rows: bool = True
    anticipation: bool = True
    anticipation_variant: ProbeVariant = "light"
    toy_seg: ToySegConfig | None = field(default_factory=ToySegConfig)
    seed: int = 0
    device: str = "cpu"
    results_md: str | None = None
    image_dir: str | None = None

    def validate(self) -> None:
        if self.clips.input != "video":
            raise ConfigError("clips.input: the report sets the input of each row itself; leave it at video")
        if self.light_grid.loss != "cross_entropy" or self.full_grid.loss != "cross_entropy":
            raise ConfigError("light_grid.loss / full_grid.loss: classification probes use cross_entropy")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"device must be cpu, cuda or auto, got {self.device!r}")


def report_config(data: dict) -> ToyReportConfig:
    """Typed report config; a partly given section keeps the report's defaults for the rest."""
    return from_dict(ToyReportConfig, data)


def pair_metrics(confusion: list[list[int]]) -> tuple[float, float]:
    """toy-SSv2 ``(pair accuracy, direction accuracy within the right pair)`` in percent."""
    c = torch.tensor(confusion, dtype=torch.float64)
    within, correct = 0.0, float(c.diag().sum())
    for p in range(len(TOY_SSV2_PAIRS)):
        within += float(c[2 * p:2 * p + 2, 2 * p:2 * p + 2].sum())
    total = float(c.sum())
    return 100.0 * within / total, (100.0 * correct / within if within else float("nan"))


@dataclass(frozen=True)
class ToyProbeScore:
    """What :func:`probe_toy_task` measured for one encoder on one built-in task.

    Attributes:
        top1: validation top-1 accuracy (%) of the best probe of the grid.
        effective_rank: effective rank of the encoder's validation tokens (1 .. D; see
            :func:`vjepa2.engine.monitor.effective_rank`).
        top3_variance: share (%) of the tokens' variance on their 3 main directions.
        pair / direction: toy-SSv2 only (None otherwise): :func:`pair_metrics` of the best probe (%).
    """

    top1: float
    effective_rank: float
    top3_variance: float
    pair: float | None = None
    direction: float | None = None

    def as_dict(self) -> dict:
        """``{"top1", "effective_rank", "top3_variance"}`` plus ``"pair"``, ``"direction"`` on toy-SSv2."""
        data = {"top1": self.top1, "effective_rank": self.effective_rank, "top3_variance": self.top3_variance}
        if self.pair is not None:
            data["pair"], data["direction"] = self.pair, self.direction
        return data


def probe_toy_task(encoder, task: str, *, clips: ClipConfig, toy: ToyConfig, grid: GridConfig, seed: int,
                   out: Path, variant: ProbeVariant = "light", progress: bool = False) -> ToyProbeScore:
    """Probe a frozen ``encoder`` on the built-in ``task`` (features cached under ``out/features``);
    the effective rank is that of the encoder's validation tokens (up to 240 clips)."""
    train, val = (ToyVideos(ToyTask(task, split, toy)) for split in ("train", "val"))
    fn, cache_dir = EncoderFeatures(encoder), str(out / "features")
    report = fit_and_report(
        train_data=train, val_data=val, fn=fn, clips=clips,
        probe_cfg=probe_config(encoder.config.dim, len(train.head_classes[0]), variant), grid=grid, seed=seed,
        cache_dir=cache_dir, cache_dtype="float32", encode_batch=16, out=out / task / variant,
        head_names=("class",), selection=("top1", 0), settings={"task": task, "variant": variant},
        device=next(encoder.parameters()).device, progress=progress, describe=task)
    metrics = report.best.heads["class"]
    val_features = build_features(val, fn, clips, False, seed, cache_dir, progress=False)
    sample = val_features.get(torch.arange(min(len(val), 240)))  # (M, V, L, D)
    pair, direction = pair_metrics(metrics.confusion) if task == "toy-ssv2" else (None, None)
    return ToyProbeScore(metrics.top1, **effective_rank(sample.reshape(-1, sample.shape[-1])), pair=pair,
                         direction=direction)


def pretrain_tiny(cfg: ToyReportConfig, progress: bool) -> tuple[Path, dict]:
    """Run (or resume, or reuse) the pretraining; returns the final checkpoint and a summary."""
    from vjepa2.engine.checkpoint import CheckpointDir
    from vjepa2.train.config import load_pretrain_config
    from vjepa2.train.pretrain import pretrain

    overrides = list(cfg.pretrain_overrides) + [f"output_dir={Path(cfg.out) / 'pretrain'}", f"seed={cfg.seed}"]
    if not progress:
        overrides.append("log.progress_bar=false")
    pre_cfg = load_pretrain_config(cfg.pretrain_config, overrides)
    started = time.time()
    checkpoints = CheckpointDir(Path(pre_cfg.output_dir) / "checkpoints")
    done = [p for s, p in checkpoints.steps() if s == pre_cfg.total_iterations]
    if not done:
        result = pretrain(pre_cfg, resume=True)
        final = result.checkpoint
    else:
        final = done[0]
    state = torch.load(final, map_location="cpu", weights_only=True)
    train_state = state.get("vjepa2_train", {})
    info = {"recipe": cfg.pretrain_config, "overrides": list(cfg.pretrain_overrides), "checkpoint": str(final),
            "steps": pre_cfg.total_iterations, "seconds_this_run": round(time.time() - started, 1),
            "phases": [f"{p.name}: {p.iterations} steps, {p.frames} frames @ {p.resolution} px" for p in pre_cfg.phases],
            "batch_size": pre_cfg.batch_size, "final_phase": train_state.get("phase")}
    log_csv = Path(pre_cfg.output_dir) / "log.csv"
    if log_csv.is_file():
        rows = log_csv.read_text().strip().splitlines()
        header, last = rows[0].split(","), rows[-1].split(",")
        info["final_loss"] = float(last[header.index("loss")])
        info["first_loss"] = float(rows[1].split(",")[header.index("loss")]) if len(rows) > 1 else None
        info["pretrain_seconds"] = float(last[header.index("elapsed_s")]) if "elapsed_s" in header else None
    return Path(final), info


def run_toy_report(cfg: ToyReportConfig, progress: bool = True) -> Path:
    """Everything in the module docstring; returns the path of ``summary.json``."""
    started = time.time()
    out = check_output_dir(cfg.out)
    device = resolve_device(cfg.device)
    checkpoint, pre_info = pretrain_tiny(cfg, progress)
    pretrain_done = time.time()
    encoders = {"pretrained": load_frozen_encoder(str(checkpoint)).to(device),
                "random": load_frozen_encoder(str(checkpoint), random_init=True, seed=cfg.seed).to(device)}
    dim = encoders["pretrained"].config.dim
    cache_dir = str(out / "features")
    results: dict = {"pretraining": pre_info, "probes": [], "anticipation": []}
    for task in TASKS:
        train = ToyVideos(ToyTask(task, "train", cfg.toy))
        val = ToyVideos(ToyTask(task, "val", cfg.toy))
        for label, encoder_kind, mode, whiten, variants in ROWS:
            if whiten and not cfg.whitened_rows:
                continue
            clips = dataclasses.replace(cfg.clips, input=mode)
            fn = EncoderFeatures(encoders[encoder_kind])
            for variant in variants:
                grid = cfg.light_grid if variant == "light" else cfg.full_grid
                run_dir = out / task / label.replace(",", "").replace("*", "").replace(" ", "-") / variant
                report = fit_and_report(
                    train_data=train, val_data=val, fn=fn, clips=clips,
                    probe_cfg=probe_config(dim, len(train.head_classes[0]), variant), grid=grid, seed=cfg.seed,
                    cache_dir=cache_dir, cache_dtype="float32", encode_batch=16, out=run_dir, head_names=("class",),
                    selection=("top1", 0), settings={"task": task, "row": label, "variant": variant},
                    device=device, progress=progress, describe=f"{task} {label} {variant}", whiten=whiten)
                metrics = report.best.heads["class"]
                if variant == "light" and not whiten:  # once per feature set: the cached validation features
                    val_features = build_features(val, fn, clips, False, cfg.seed, cache_dir, progress=False)
                    sample = val_features.get(torch.arange(min(len(val), 240)))  # (M, V, L, D)
                    spread = effective_rank(sample.reshape(-1, sample.shape[-1]))
                elif whiten:
                    spread = {}
                entry = {"task": task, "row": label, "variant": variant, "dim": dim, "top1": metrics.top1,
                         "top5": metrics.top5, "lr": report.best.lr, "weight_decay": report.best.weight_decay,
                         "count": metrics.count, "dir": str(run_dir), **spread}
                if task == "toy-ssv2":
                    entry["pair"], entry["direction"] = pair_metrics(metrics.confusion)
                results["probes"].append(entry)
    if cfg.anticipation:
        results["anticipation"] = _anticipation(cfg, checkpoint, device, progress)
    if cfg.toy_seg:
        results["toy_seg"] = toy_seg_rows(encoders, cfg.toy_seg)
    results["seconds"] = {"pretraining": round(pretrain_done - started, 1),
                          "evaluation": round(time.time() - pretrain_done, 1),
                          "total": round(time.time() - started, 1)}
    results["machine"] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "platform": platform.platform(), "torch": torch.__version__, "device": str(device)}
    results["settings"] = to_dict(cfg)
    summary = write_json(results, out / "summary.json")
    if cfg.image_dir:
        _copy_figures(results, Path(cfg.image_dir))
    if cfg.results_md:
        write_section(Path(cfg.results_md), render_section(results, cfg))
    return summary


#: toy-seg rows of the report: (row label, encoder, input).
SEG_ROWS = (("pretrained", "pretrained", "video"), ("random-init", "random", "video"),
            ("image-only", "pretrained", "image"))


def toy_seg_rows(encoders: dict, seg: ToySegConfig) -> list[dict]:
    """toy-seg for each of :data:`SEG_ROWS`: ``[{"row", "miou", "token_accuracy", "per_class", ...}]``."""
    return [{"row": label, **toy_seg(encoders[kind], dataclasses.replace(seg, input=mode))}
            for label, kind, mode in SEG_ROWS]


def _anticipation(cfg: ToyReportConfig, checkpoint: Path, device: torch.device, progress: bool) -> list[dict]:
    from vjepa2.evals.anticipation import load_predictor_pair

    train = ToyVideos(ToyTask("toy-anticipation", "train", cfg.toy))
    val = ToyVideos(ToyTask("toy-anticipation", "val", cfg.toy))
    clips = dataclasses.replace(cfg.clips, train_views=1)
    grid = dataclasses.replace(cfg.light_grid, loss="focal")
    rows = []
    for label, random_init, use_predictor in (("pretrained", False, True), ("random-init", True, True),
                                              ("pretrained, no predictor", False, False)):
        encoder, predictor = load_predictor_pair(str(checkpoint), random_init, cfg.seed)
        fn = AnticipationFeatures(encoder.to(device), predictor.to(device), use_predictor=use_predictor)
        run_dir = Path(cfg.out) / "toy-anticipation" / label.replace(" ", "-").replace(",", "")
        report = fit_and_report(
            train_data=train, val_data=val, fn=fn, clips=clips,
            probe_cfg=probe_config(encoder.config.dim, tuple(len(c) for c in train.head_classes),
                                   cfg.anticipation_variant),
            grid=grid, seed=cfg.seed, cache_dir=str(Path(cfg.out) / "features"), cache_dtype="float32",
            encode_batch=16, out=run_dir, head_names=HEAD_NAMES, selection=("recall@5", 2),
            settings={"task": "toy-anticipation", "row": label}, device=device, progress=progress,
            describe=f"toy-anticipation {label}")
        heads = report.best.heads
        rows.append({"row": label, **{f"{h}_recall5": heads[h].recall_at_5 for h in HEAD_NAMES},
                     **{f"{h}_top1": heads[h].top1 for h in HEAD_NAMES}, "count": heads["action"].count,
                     "lr": report.best.lr, "weight_decay": report.best.weight_decay})
    return rows


def _copy_figures(results: dict, image_dir: Path) -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    for entry in results["probes"]:
        if entry["variant"] == "light" and entry["row"] in ("pretrained", "random-init", "image-only"):
            name = f"eval-{entry['task']}-{entry['row']}-light-confusion.png"
            shutil.copyfile(Path(entry["dir"]) / "confusion.png", image_dir / name)
            entry["figure"] = name


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def toy_seg_lines(rows: list[dict], seg: ToySegConfig) -> list[str]:
    """The toy-seg table of the report (rows of :func:`toy_seg_rows`), with the sentence before it."""
    lines = ["", f"**toy-seg** (dense: which shape, or background, covers most of each token, and whether an "
                 f"object does (figure-ground); a linear head on every frozen token for each, "
                 f"{seg.train_size} training / {seg.val_size} validation scenes, {seg.frames} frames at "
                 f"{seg.size} px; mIoU over the classes present, %):", "",
             "| encoder / input | shape mIoU | token accuracy | figure-ground mIoU | object IoU |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        ground = row["figure_ground"]
        lines.append(f"| {row['row']} | {_fmt(100 * row['miou'])} | {_fmt(100 * row['token_accuracy'])} | "
                     f"{_fmt(100 * ground['miou'])} | {_fmt(100 * ground['object_iou'])} |")
    return lines


def render_section(results: dict, cfg: ToyReportConfig) -> str:
    """The markdown of the section (title line included)."""
    pre, secs, probes = results["pretraining"], results["seconds"], results["probes"]
    by = {(e["task"], e["row"], e["variant"]): e for e in probes}
    lines = [SECTION_TITLE, "",
             "Produced by `vjepa2 eval toy-report` (equivalently `python benchmarks/toy_ssv2.py`); seeded "
             f"(seed {cfg.seed}), CPU. This run: {secs['total'] / 60:.1f} min in total, of which "
             f"{secs['pretraining'] / 60:.1f} min pretraining ({results['machine']['cpus']} CPUs, "
             f"{results['machine']['torch_threads']} torch threads, torch {results['machine']['torch']}).", "",
             f"- **Pretraining**: recipe `{pre['recipe']}`"
             + (f" with `{' '.join(pre['overrides'])}`" if pre["overrides"] else "")
             + f", {pre['steps']} steps of batch {pre['batch_size']} ({'; '.join(pre['phases'])})"
             + (f", loss {pre['first_loss']:.3f} → {pre['final_loss']:.3f}" if pre.get("final_loss") else "") + ".",
             f"- **Data**: toy-SSv2 = 12 classes in 6 time-reversed pairs; toy-appearance = 8 shapes; "
             f"{cfg.toy.train_size} training / {cfg.toy.val_size} validation clips each (seed {cfg.toy.seed}); "
             f"{cfg.clips.frames} frames at {cfg.clips.size} px, {cfg.clips.segments} segment(s) x "
             f"{cfg.clips.views} view(s); {cfg.clips.train_views} cached training views per clip.",
             f"- **Probes** (frozen encoder; best of the grid on validation, as in the paper): light = "
             f"cross-attention block only, grid {len(cfg.light_grid.lrs)} lr x {len(cfg.light_grid.weight_decays)} "
             f"wd, {cfg.light_grid.epochs} epochs; full = 3 self-attention blocks + cross-attention, grid "
             f"{len(cfg.full_grid.lrs)} x {len(cfg.full_grid.weight_decays)}, {cfg.full_grid.epochs} epochs"
             + (f", self-attention blocks at {cfg.full_grid.block_lr_scale:g} x the lr"
                if cfg.full_grid.block_lr_scale != 1 else "") + ".", "",
             "Top-1 accuracy (%) on the validation split. *pair* = the predicted class is in the right "
             "time-reversed pair; *direction* = of those, the share with the right direction of time. "
             f"*feature rank* = effective rank of the encoder's toy-SSv2 validation tokens (exp of the entropy "
             f"of their PCA variance shares; at most {results['probes'][0].get('dim', 'D')}).", "",
             "| encoder / input | probe | toy-SSv2 top-1 | pair | direction | appearance top-1 | feature rank |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for label, *_ in ROWS:
        for variant in ("light", "full"):
            s, a = by.get(("toy-ssv2", label, variant)), by.get(("toy-appearance", label, variant))
            if s is None:
                continue
            lines.append(f"| {label} | {variant} | {_fmt(s['top1'])} | {_fmt(s.get('pair'))} | "
                         f"{_fmt(s.get('direction'))} | {_fmt(a['top1'] if a else None)} | "
                         f"{_fmt(s.get('effective_rank'))} |")
    lines.append("| *chance* | | 8.3 | 16.7 | 50.0 | 12.5 | |")
    if cfg.whitened_rows:
        lines.append("")
        lines.append("\\* Diagnostic, not the paper's protocol: the tokens PCA-whitened with training statistics "
                     "before the probe (`vjepa2 eval probe ... whiten=true`), which shows whether information that "
                     "the raw features hold in low-variance directions is there at all.")
    lines.append("")
    checks = []
    pre_light, rnd_light = by.get(("toy-ssv2", "pretrained", "light")), by.get(("toy-ssv2", "random-init", "light"))
    img_light = by.get(("toy-ssv2", "image-only", "light"))
    if pre_light and rnd_light:
        gap = pre_light["top1"] - rnd_light["top1"]
        checks.append(f"- Pretrained vs random-init, light probe, toy-SSv2: {gap:+.1f} points "
                      f"(target ≥ +20: {'met' if gap >= 20 else 'not met'}).")
    if img_light:
        checks.append(f"- Image-only input, light probe: direction accuracy {img_light['direction']:.1f}% "
                      f"(chance 50%: one frame cannot tell a clip from its time reversal).")
    lines += checks
    if results["anticipation"]:
        lines += ["", f"**Anticipation** (toy-anticipation: 4 verbs x 7 nouns = 28 actions; the clip shows the "
                      f"first half of an approach, the contact is in the future; {cfg.anticipation_variant} probe "
                      f"with 3 queries, focal loss; %). The paper's metric is the action's class-mean recall@5; "
                      f"with 4 verbs and 7 nouns recall@5 says little for them, so they get top-1:", "",
                  "| encoder + predictor | action recall@5 | action top-1 | verb top-1 | noun top-1 |",
                  "|---|---:|---:|---:|---:|"]
        for row in results["anticipation"]:
            lines.append(f"| {row['row']} | {_fmt(row['action_recall5'])} | {_fmt(row['action_top1'])} | "
                         f"{_fmt(row['verb_top1'])} | {_fmt(row['noun_top1'])} |")
        lines.append("| *chance* | 17.9 | 3.6 | 25.0 | 14.3 |")
    if results.get("toy_seg"):
        lines += toy_seg_lines(results["toy_seg"], cfg.toy_seg)
    figures = [e for e in probes if e.get("figure")]
    if figures:
        lines += ["", "Confusion matrices (light probe): " + ", ".join(
            f"[{e['task']} {e['row']}](img/{e['figure']})" for e in figures) + "."]
    lines += ["", f"Per-probe results, the whole grid and the figures: `{cfg.out}/` (`summary.json`)."]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> Path:
    """Replace the section of ``path`` whose heading is ``section``'s first line (from that heading to
    the next ``## `` heading), or append it; the rest of the file is kept byte for byte. A
    hand-written subsection starting with :data:`ANALYSIS_HEADING` inside the old section is carried
    over below the new numbers. Written atomically. Shared by every script that writes a section of
    ``docs/results.md``."""
    title = section.split("\n", 1)[0].rstrip()
    if not title.startswith("## "):
        raise ValueError(f"a section must start with its '## ' heading, got {title!r}")
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Results\n"
    start = _find_heading(text, title)
    if start < 0:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + len(title))
        old = text[start:nxt + 1] if nxt >= 0 else text[start:]
        tail = text[nxt + 1:] if nxt >= 0 else ""
        kept = old.find(ANALYSIS_HEADING)
        if kept >= 0:
            section = section.rstrip("\n") + "\n\n" + old[kept:].rstrip("\n") + "\n"
        new = text[:start] + section + ("\n" + tail if tail else "")
    return atomic_write_text(path, new)


def _find_heading(text: str, title: str) -> int:
    """Offset of the line that is exactly ``title`` (not a longer heading it prefixes), or -1."""
    found = re.search(rf"^{re.escape(title)}[ \t]*$", text, flags=re.MULTILINE)
    return found.start() if found else -1


__all__ = ["ToyProbeScore", "ToyReportConfig", "pair_metrics", "probe_toy_task", "render_section", "report_config",
           "run_toy_report", "write_section"]
