"""The GPU suite: the paper's scale on one accelerator, one command, one table (under 8 minutes on one GPU).

    python benchmarks/gpu_suite.py                              # on a GPU; writes docs/benchmarks.md's GPU section
    python benchmarks/gpu_suite.py --device cpu --tiny --no-write   # the same code on tiny models, seconds

Rows (each timed after a warm-up, CUDA synchronised, median of ``--repeats``):

* **encoder inference**, ViT-L and ViT-g, one clip of 16 x 256 x 256: ours in fp32, bf16 autocast and
  ``torch.compile``-d bf16, next to ``transformers``' ``VJEPA2Model`` on the very same weights (fp32 and
  bf16 autocast, SDPA attention); the relative gap of our fp32 output to theirs is printed.
* **pretraining step**, ViT-L at 16 x 256 x 256 (batch ``--batch``, the public masks, drop mode, bf16):
  forward, backward, AdamW and EMA as ``vjepa2 pretrain`` runs them; seconds and peak memory. The public
  release's own step needs its source tree, which the GPU machines here cannot fetch (no network): its
  row says so; on a machine with that checkout, time its ``app/vjepa`` step at the same shape beside it.
* **planning call**, the paper's AC predictor (24 blocks x 1024 on ViT-g's 1408-D features, 256 tokens a
  frame) under the paper's CEM (800 samples x 10 iterations), horizon 1 and 2: one call plans one
  action, so its seconds are the seconds per action the paper reports as 16 s.

Memory is the device's peak allocation during the call (CUDA), or the resident-memory rise (CPU).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import machine_line, peak_memory_mib, print_table  # noqa: E402
from encoder_speed import build_transformers  # noqa: E402

from vjepa2.config import from_dict  # noqa: E402
from vjepa2.engine import distributed as dist_utils  # noqa: E402
from vjepa2.engine.loop import build_optimizer  # noqa: E402
from vjepa2.models import Predictor, VisionEncoder, encoder_config, predictor_config  # noqa: E402
from vjepa2.models.ac_predictor import ACPredictor, ac_predictor_config  # noqa: E402
from vjepa2.train.config import PretrainConfig  # noqa: E402
from vjepa2.train.pretrain import JEPA, noise_generators, open_loaders, train_step  # noqa: E402
from vjepa2.world_model.planner import LatentPlanner, cem_config  # noqa: E402

#: What each scale runs: encoders (label, size, frames, pixels), the step's model, the planner's.
SCALES = {
    "paper": dict(encoders=[("ViT-L", "large", 16, 256), ("ViT-g", "giant", 16, 256)],
                  step=("large", 16, 256), planner=dict(size="large", enc_dim=1408, img_size=256, grid=16),
                  cem=(800, 10)),
    "tiny": dict(encoders=[("tiny", "tiny", 4, 32)], step=("tiny", 4, 32),
                 planner=dict(size="tiny", enc_dim=192, depth=2, img_size=64, grid=4), cem=(16, 2)),
}
PAPER_SECONDS_PER_ACTION = 16.0  # arXiv 2506.09985, V-JEPA 2-AC planning (one GPU, CEM 800 x 10)
SECTION = "## GPU suite (`benchmarks/gpu_suite.py`)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, repeats: int) -> tuple[float, float]:
    """``(median seconds, peak MiB)`` of ``fn()`` after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    else:
        peak = peak_memory_mib(fn)
    return statistics.median(times), peak


def encoder_rows(args, device: torch.device) -> list[list]:
    """Ours (fp32, bf16, compiled bf16) vs transformers (fp32, bf16) per encoder of the scale."""
    rows = []
    for label, size, frames, pixels in SCALES[args.scale]["encoders"]:
        torch.manual_seed(0)
        enc = VisionEncoder(encoder_config(size, img_size=pixels, num_frames=frames)).eval().to(device)
        hf = build_transformers(enc.cpu(), Predictor(predictor_config(enc.config)), "sdpa").to(device)
        enc.to(device)
        clip = torch.randn(1, 3, frames, pixels, pixels, device=device)
        video = clip.permute(0, 2, 1, 3, 4)
        compiled = torch.compile(enc) if args.compile else None

        def run(model, x, autocast=False):
            @torch.inference_mode()
            def call():
                if not autocast:
                    return model(x)
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return model(x)
            return call

        with torch.inference_mode():
            reference = hf.get_vision_features(video)
            gap = float((enc(clip) - reference).norm() / reference.norm())
        print(f"{label}: ours fp32 vs transformers fp32, relative gap {gap:.1e}", flush=True)
        variants = [("transformers fp32", run(hf.get_vision_features, video)),
                    ("transformers bf16", run(hf.get_vision_features, video, True)),
                    ("ours fp32", run(enc, clip)), ("ours bf16", run(enc, clip, True))]
        if compiled is not None:
            variants.append(("ours bf16 compiled", run(compiled, clip, True)))
        base = None
        for name, fn in variants:
            seconds, peak = measure(fn, device, args.repeats)
            base = base or seconds
            rows.append([f"encoder {label}, 1 x {frames} x {pixels}^2", name, round(seconds, 4),
                         f"{base / seconds:.2f}x", round(peak)])
        del enc, hf, compiled
    return rows


def step_rows(args, device: torch.device) -> list[list]:
    """Our pretraining step (bf16 on CUDA, fp32 on a CPU) and the public release's row (not run here)."""
    size, frames, pixels = SCALES[args.scale]["step"]
    dtype = "bf16" if device.type == "cuda" else "fp32"
    cfg = from_dict(PretrainConfig, {
        "phases": [{"name": "bench", "iterations": 10**6, "frames": frames, "resolution": pixels}],
        "model": {"size": size}, "batch_size": args.batch, "dtype": dtype, "device": device.type, "seed": 0})
    torch.manual_seed(0)
    model = JEPA(cfg.encoder_config(), cfg.predictor_config(), cfg.mask, cfg.loss).to(device)
    optimizer = build_optimizer(model, cfg.optim, fused=True)
    env = dist_utils.DistEnv(device=device)
    loader = open_loaders(cfg, cfg.phases[0], 0, env)[0]
    batch = next(loader)
    getattr(loader, "close", lambda: None)()

    def step():
        return train_step(model, optimizer, [batch], lr=1e-4, momentum=0.99925, cfg=cfg, device=device,
                          noise=noise_generators(cfg, 0, env))

    seconds, peak = measure(step, device, args.repeats)
    where = f"pretrain step {size}, {args.batch} x {frames} x {pixels}^2"
    rows = [[where, f"ours {dtype}", round(seconds, 4), "", round(peak)]]
    rows.append([where, "public release", "not run: its source is not on this machine", "", ""])
    del model, optimizer
    return rows


def planner_rows(args, device: torch.device) -> list[list]:
    """Seconds per planning call (= per action) of the AC predictor under CEM, horizons 1 and 2."""
    spec = dict(SCALES[args.scale]["planner"])
    grid, (samples, iterations) = spec.pop("grid"), SCALES[args.scale]["cem"]
    torch.manual_seed(0)
    predictor = ACPredictor(ac_predictor_config(spec.pop("size"), **spec)).eval().to(device)
    dim = predictor.config.enc_dim
    frame = F.layer_norm(torch.randn(1, grid * grid, dim, device=device), (dim,))
    goal = F.layer_norm(torch.randn(grid * grid, dim, device=device), (dim,))
    state = torch.zeros(1, 7, device=device)
    rows = []
    for horizon in (1, 2):
        for dtype in ("fp32", "bf16") if device.type == "cuda" else ("fp32",):
            cem = cem_config(samples=samples, iterations=iterations, elites=10, horizon=horizon, constraint="box",
                             radius=0.075, action_dims=(0, 1, 2), seed=0, dtype=dtype)
            planner = LatentPlanner(predictor, cem)
            seconds, peak = measure(lambda: planner.plan(frame, state, goal), device, args.repeats)
            rows.append([f"plan call, {predictor.config.depth} x {predictor.config.dim} predictor, "
                         f"{grid * grid} tok/frame, CEM {samples} x {iterations}, H={horizon}", f"ours {dtype}",
                         round(seconds, 4), f"paper {PAPER_SECONDS_PER_ACTION:.0f} s / action", round(peak)])
    return rows


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return machine_line()


def write_section(path: Path, text: str) -> None:
    """Replace (or append) the GPU suite's section of ``path``."""
    old = path.read_text() if path.is_file() else ""
    pattern = re.compile(rf"{re.escape(SECTION)}\n.*?(?=\n## |\Z)", re.S)
    new = pattern.sub(lambda _: text.rstrip("\n") + "\n", old) if pattern.search(old) else \
        old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--tiny", dest="scale", action="store_const", const="tiny", default="paper",
                   help="tiny models (a smoke run of the same code, seconds on a CPU)")
    p.add_argument("--batch", type=int, default=4, help="clips of the pretraining step")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile row")
    p.add_argument("--parts", nargs="+", default=["encoder", "step", "planner"],
                   choices=["encoder", "step", "planner"])
    p.add_argument("--out", default="docs/benchmarks.md", help="the file whose GPU section is rewritten")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here; run on a GPU machine, or pass --device cpu --tiny")
    started = time.perf_counter()
    print(f"device: {device_name(device)}", flush=True)
    parts = {"encoder": encoder_rows, "step": step_rows, "planner": planner_rows}
    rows = [row for part in args.parts for row in parts[part](args, device)]
    table = print_table(["work", "variant", "seconds", "vs first row / anchor", "peak MiB"], rows)
    text = (f"{SECTION}\n\n`python benchmarks/gpu_suite.py{' --tiny' if args.scale == 'tiny' else ''} --device "
            f"{args.device}` on {device_name(device)}, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s in all.\n\n{table}\n")
    if not args.no_write:
        write_section(Path(args.out), text)
        print(f"wrote the table into {args.out}")
    return text


if __name__ == "__main__":
    main()
