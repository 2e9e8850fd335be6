"""Planning speed: seconds per CEM planning call of our planner vs a plain batched CEM.

    python benchmarks/plan_speed.py                                   # tiny predictor, 800 x 10, H = 1, 2
    python benchmarks/plan_speed.py --model paper --samples 32 --iterations 2 --repeats 1

*Ours* is :class:`vjepa2.world_model.planner.LatentPlanner`: all samples rolled out in one batched
pass, each imagined step fed through the KV cache, each distinct candidate scored once (fp32, and
bf16 autocast; a row with the cache alone separates the two savings). The *reference*,
written here, is the plain way: the same CEM loop, but every rollout step re-runs the whole
block-causal sequence so far (``[a0, s0, z0]``, then ``[a0, s0, z0, a1, s1, z1]``, ...) in fp32.
Both use the same seed and a box constraint, so in fp32 they return the same plan (the gap is printed).

Models: ``tiny`` = the toy-world AC predictor (192 wide, 4 blocks, 3 heads, 192-D encoder
features: ``vjepa2 train-ac``'s default), ``paper`` = 24 x 1024 x 16 on 1408-D (ViT-g) features.
Frames are the toy grid (``--grid 4`` = 16 tokens per frame, a 64 px frame at patch 16); the paper
runs 256 tokens per frame, far beyond a CPU at 800 samples.

Prints a Markdown table: seconds per planning call, speed-up over the reference, GFLOP per call
(counted with ``benchmarks/common.py:count_flops``), achieved GFLOP/s and % of this machine's
measured matmul peak (fp32 peak for fp32 rows, bf16 peak for bf16 rows), plus the load average.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from common import count_flops, cpu_bf16_rows, machine_line, matmul_peak, median_time, print_table  # noqa: E402

from vjepa2.data.trajectories.trajectory import apply_action  # noqa: E402
from vjepa2.models.ac_predictor import ACPredictor, ac_predictor_config  # noqa: E402
from vjepa2.world_model.planner import LatentPlanner, cem_config  # noqa: E402

MODELS = {
    "tiny": dict(size="tiny", enc_dim=192, depth=4, img_size=64),
    "paper": dict(size="large", enc_dim=1408, img_size=256),
}
RADIUS = 0.075
REFERENCE = "reference fp32 (recompute)"
CONTROLLED = (0, 1, 2)  # xyz of the 7-D robot action, as in the paper's arm tasks


@torch.no_grad()
def plain_cem(predictor: ACPredictor, frame: torch.Tensor, state: torch.Tensor, goal: torch.Tensor,
              samples: int, iterations: int, elites: int, horizon: int, seed: int) -> torch.Tensor:
    """The reference: batched CEM whose rollout recomputes the whole sequence at every step (fp32).

    Args:
        frame: ``(1, N, D)`` observed latent; state: ``(1, 7)``; goal: ``(N, D)``.

    Returns:
        ``(horizon, len(CONTROLLED))`` the final mean.
    """
    generator = torch.Generator().manual_seed(seed)
    shape = (horizon, len(CONTROLLED))
    mean, std = torch.zeros(shape), torch.ones(shape)
    for _ in range(iterations):
        planned = (mean + std * torch.randn((samples, *shape), generator=generator)).clamp(-RADIUS, RADIUS)
        actions = torch.zeros(samples, horizon, 7)
        actions[..., list(CONTROLLED)] = planned
        frames = frame[None].expand(samples, -1, -1, -1)  # (S, 1, N, D)
        states = state[None].expand(samples, -1, -1)  # (S, 1, 7)
        for step in range(horizon):
            predicted = F.layer_norm(predictor(frames, actions[:, :step + 1], states)[:, -1],
                                     (frame.shape[-1],))
            frames = torch.cat((frames, predicted[:, None]), dim=1)
            states = torch.cat((states, apply_action(states[:, -1], actions[:, step])[:, None]), dim=1)
        energies = (predicted - goal).abs().mean(dim=(1, 2))
        elite = planned[torch.argsort(energies, stable=True)[:elites]]
        mean = 0.15 * mean + 0.85 * elite.mean(dim=0)
        std = 0.15 * std + 0.85 * elite.std(dim=0, unbiased=False)
    return mean.clamp(-RADIUS, RADIUS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), nargs="+", default=["tiny"])
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--elites", type=int, default=10)
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--grid", type=int, default=4, help="frame token grid side (4 = 16 tokens per frame)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    parser.add_argument("--force-bf16", action="store_true", help="time bf16 even where the CPU emulates it")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(machine_line())
    with_bf16 = cpu_bf16_rows(force=args.force_bf16)
    peaks = {"fp32": matmul_peak(torch.float32, n=2048),
             "bf16": matmul_peak(torch.bfloat16, n=2048) if with_bf16 else float("nan")}
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    rows = []
    for name in args.model:
        torch.manual_seed(0)
        spec = dict(MODELS[name])
        predictor = ACPredictor(ac_predictor_config(spec.pop("size"), **spec)).eval()
        tokens = args.grid * args.grid
        generator = torch.Generator().manual_seed(1)
        frame = F.layer_norm(torch.randn(1, tokens, predictor.config.enc_dim, generator=generator),
                             (predictor.config.enc_dim,))
        goal = F.layer_norm(torch.randn(tokens, predictor.config.enc_dim, generator=generator),
                            (predictor.config.enc_dim,))
        state = torch.zeros(1, 7)
        state[0, :3] = torch.tensor([0.4, 0.0, 0.2])
        for horizon in args.horizons:
            cfg = dict(samples=args.samples, iterations=args.iterations, elites=args.elites, horizon=horizon,
                       constraint="box", radius=RADIUS, init_std=1.0, action_dims=CONTROLLED, seed=0)
            planners = {
                "cache": LatentPlanner(predictor, cem_config(**cfg, deduplicate=False)),
                "fp32": LatentPlanner(predictor, cem_config(**cfg)),
                "bf16": LatentPlanner(predictor, cem_config(**cfg, dtype="bf16")),
            }
            variants = {
                REFERENCE: ("fp32", lambda: plain_cem(predictor, frame, state, goal, args.samples, args.iterations,
                                                      args.elites, horizon, 0)),
                "ours fp32, KV cache only": ("fp32", lambda: planners["cache"].plan(frame, state, goal).planned),
                "ours fp32 (KV cache + distinct)": ("fp32", lambda: planners["fp32"].plan(frame, state, goal).planned),
                "ours bf16 (KV cache + distinct)": ("bf16", lambda: planners["bf16"].plan(frame, state, goal).planned),
            }
            if not with_bf16:
                del variants["ours bf16 (KV cache + distinct)"]
            # First call of each variant: counts its FLOPs (and warms it up) and gives its plan.
            flops, plans = {}, {}
            for label, (_, fn) in variants.items():
                if args.no_flops:
                    flops[label], plans[label] = float("nan"), fn()
                else:
                    flops[label] = count_flops(lambda: plans.__setitem__(label, fn()))
            gaps = ", ".join(f"{label}: {float((plan - plans[REFERENCE]).abs().max()):.1e}"
                             for label, plan in plans.items() if label != REFERENCE)
            scored = [h["scored"] for h in planners["fp32"].plan(frame, state, goal).history]
            print(f"{name}, H={horizon}: max |plan - reference plan| (box half-width {RADIUS}): {gaps}; "
                  f"distinct candidates scored per iteration: {scored}", flush=True)
            times = {label: median_time(fn, repeats=args.repeats, warmup=0) for label, (_, fn) in variants.items()}
            reference = times[REFERENCE]
            for label, (dtype, _) in variants.items():
                gflops = flops[label] / times[label] / 1e9
                rows.append([name, f"{tokens} tok/frame", horizon, f"{args.samples} x {args.iterations}", label,
                             round(times[label], 3), round(reference / times[label], 2),
                             round(flops[label] / 1e9, 1), round(gflops, 1), f"{100 * gflops / peaks[dtype]:.0f}%"])
    print_table(["predictor", "frames", "H", "samples x iters", "variant", "s / plan", "x reference",
                 "GFLOP / plan", "GFLOP/s", "% of peak"], rows)
    print(machine_line())


if __name__ == "__main__":
    main()
