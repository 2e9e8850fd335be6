"""Speed of one V-JEPA 2 training step (forward, backward, AdamW, EMA) on this machine.

    python benchmarks/train_step.py --size small --frames 16 --res 128 --batch 4 --dtype fp32 --mode drop
    python benchmarks/train_step.py --dtype both --mode both            # the four-row table
    python benchmarks/train_step.py --compare-steps 100 --size tiny     # bf16 vs fp32 loss trajectory

Prints the machine and its load, the measured matmul peak (2048 x 2048 matrices, fp32 and bf16),
then per (mode, dtype): median step seconds, tokens through the online and target encoders,
FLOPs of one step (``torch.utils.flop_counter``), achieved GFLOP/s, % of the matmul peak of the
same dtype and the bf16 speed-up. Steps and matmuls are timed in interleaved rounds and the
percentages / speed-ups are medians of per-round ratios, so a load that drifts during the run (a
shared machine) cancels out. The predictor is the public 384 x 12 one; batches come from the synthetic data loader
and are prepared before timing (data loading is not timed).

``--compare-steps N`` trains N steps from the same initial weights on the same batches in fp32 and
bf16, and (for the noise level) in fp32 with another weight seed, then prints the loss of both dtypes
every N/10 steps and the mean |difference| over the last half next to the seed-to-seed difference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import count_flops, cpu_bf16_rows, machine_line, median_time, print_table  # noqa: E402

from vjepa2.config import from_dict  # noqa: E402
from vjepa2.engine import distributed as dist_utils  # noqa: E402
from vjepa2.train.config import PretrainConfig  # noqa: E402
from vjepa2.engine.loop import build_optimizer  # noqa: E402
from vjepa2.train.pretrain import JEPA, noise_generators, open_loaders, train_step  # noqa: E402


def make_config(args, dtype: str, mode: str, seed: int = 0) -> PretrainConfig:
    return from_dict(PretrainConfig, {
        "phases": [{"name": "bench", "iterations": 10**6, "frames": args.frames, "resolution": args.res}],
        "model": {"size": args.size, "activation_checkpointing": args.checkpointing},
        "mask": {"mode": mode},
        "batch_size": args.batch, "dtype": dtype, "device": "cpu", "seed": seed,
        "optim": {"lr": 1e-4 if args.compare_steps else 5.25e-4},
    })


def build(cfg: PretrainConfig, weight_seed: int):
    torch.manual_seed(weight_seed)
    model = JEPA(cfg.encoder_config(), cfg.predictor_config(), cfg.mask, cfg.loss)
    return model, build_optimizer(model, cfg.optim, fused=True)


def batches(cfg: PretrainConfig, count: int) -> list:
    loader = open_loaders(cfg, cfg.phases[0], 0, dist_utils.DistEnv())[0]
    out = [next(loader) for _ in range(count)]
    getattr(loader, "close", lambda: None)()
    return out


def run_steps(model, optimizer, cfg, batch_list, start: int = 0) -> list[float]:
    env = dist_utils.DistEnv()
    return [train_step(model, optimizer, [b], lr=cfg.optim.lr, momentum=0.99925, cfg=cfg, device=env.device,
                       noise=noise_generators(cfg, start + i, env)).loss for i, b in enumerate(batch_list)]


def encoder_tokens(cfg: PretrainConfig, batch) -> tuple[int, int]:
    """Tokens through the online encoder (all mask generators) and through the target encoder, per step."""
    b, _, t, h, w = batch.clips.shape
    full = b * (t // cfg.model.tubelet_size) * (h // cfg.model.patch_size) * (w // cfg.model.patch_size)
    if cfg.mask.mode == "noise":
        return full * len(batch.masks), full
    return sum(int(c.numel()) for c, _ in batch.masks), full


def timing(args) -> None:
    """Interleaved rounds: in each round every (mode, dtype) step runs once, next to a fp32 and a bf16
    matmul; percentages and speed-ups are per-round ratios (robust to the load of a shared machine)."""
    n = 2048
    dtypes = ["fp32", "bf16"] if args.dtype == "both" else [args.dtype]
    if "bf16" in dtypes and not cpu_bf16_rows(force=args.force_bf16):
        dtypes.remove("bf16")
    torch_dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    mats = {d: (torch.randn(n, n).to(torch_dtypes[d]), torch.randn(n, n).to(torch_dtypes[d])) for d in dtypes}
    peak_fns = {d: (lambda m: lambda: torch.mm(*m))(mats[d]) for d in dtypes}
    variants = []
    for mode in (["drop", "noise"] if args.mode == "both" else [args.mode]):
        for dtype in dtypes:
            cfg = make_config(args, dtype, mode)
            model, optimizer = build(cfg, 0)
            (batch,) = batches(cfg, 1)
            step = (lambda m, o, c, b: lambda: run_steps(m, o, c, [b]))(model, optimizer, cfg, batch)
            for _ in range(2):  # warm-up: allocator, kernels' first-call set-up
                step()
            flops = count_flops(step)
            variants.append({"mode": mode, "dtype": dtype, "step": step, "flops": flops,
                             "tokens": encoder_tokens(cfg, batch), "times": [], "pct": []})
    for fn in peak_fns.values():
        fn()
    peaks = {d: [] for d in dtypes}
    for _ in range(args.repeats):
        for v in variants:
            seconds = median_time(v["step"], repeats=1, warmup=0)
            peak = 2 * n**3 / median_time(peak_fns[v["dtype"]], repeats=1, warmup=0) / 1e9
            peaks[v["dtype"]].append(peak)
            v["times"].append(seconds)
            v["pct"].append(100 * v["flops"] / seconds / 1e9 / peak)
    print(f"matmul peak ({torch.get_num_threads()} threads, {n}x{n}, median over rounds): "
          + ", ".join(f"{d} {statistics.median(p):.0f} GFLOP/s" for d, p in peaks.items() if p))
    rows = []
    for v in variants:
        seconds = statistics.median(v["times"])
        speedup = ""
        if v["dtype"] == "bf16":
            fp32 = next((w for w in variants if w["mode"] == v["mode"] and w["dtype"] == "fp32"), None)
            if fp32:
                speedup = f"{statistics.median(a / b for a, b in zip(fp32['times'], v['times'])):.2f}x"
        online, target = v["tokens"]
        rows.append([v["mode"], v["dtype"], f"{seconds:.3f}", online, target, f"{v['flops'] / 1e9:.1f}",
                     f"{v['flops'] / seconds / 1e9:.0f}", f"{statistics.median(v['pct']):.0f}%", speedup])
    print_table(["mode", "dtype", "step s (median)", "online-encoder tokens", "target-encoder tokens",
                 "GFLOP/step", "GFLOP/s", "% of matmul peak", "bf16 speed-up"], rows)


def compare(args) -> None:
    n = args.compare_steps
    for mode in (["drop", "noise"] if args.mode == "both" else [args.mode]):
        cfg32, cfg16 = make_config(args, "fp32", mode), make_config(args, "bf16", mode)
        data = batches(cfg32, n)
        curves = {}
        for name, cfg, weight_seed in (("fp32", cfg32, 0), ("bf16", cfg16, 0), ("fp32 seed 1", cfg32, 1)):
            model, optimizer = build(cfg, weight_seed)
            curves[name] = run_steps(model, optimizer, cfg, data)
        every = max(n // 10, 1)
        rows = [[i + 1] + [f"{curves[k][i]:.4f}" for k in curves] for i in range(every - 1, n, every)]
        print(f"\nloss trajectory, mode {mode} ({n} steps, same batches; 'fp32 seed 1' = other initial weights)")
        print_table(["step"] + list(curves), rows)
        half = slice(n // 2, n)
        dtype_gap = statistics.mean(abs(a - b) for a, b in zip(curves["fp32"][half], curves["bf16"][half]))
        seed_gap = statistics.mean(abs(a - b) for a, b in zip(curves["fp32"][half], curves["fp32 seed 1"][half]))
        print(f"mean |fp32 - bf16| over steps {n // 2 + 1}-{n}: {dtype_gap:.4f}; "
              f"mean |fp32 - fp32 seed 1|: {seed_gap:.4f} -> bf16 is {'within' if dtype_gap <= seed_gap else 'OUTSIDE'} "
              f"seed-to-seed noise")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--res", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dtype", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--mode", choices=["drop", "noise", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing on")
    parser.add_argument("--force-bf16", action="store_true", help="time bf16 even where the CPU emulates it")
    parser.add_argument("--compare-steps", type=int, default=0,
                        help="instead of timing, compare the fp32 and bf16 loss over this many steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    print(f"train step: size {args.size}, {args.frames} frames x {args.res} px, batch {args.batch}, "
          f"activation checkpointing {'on' if args.checkpointing else 'off'}")
    if args.compare_steps:
        compare(args)
    else:
        timing(args)


if __name__ == "__main__":
    main()
