"""AC predictor rollout speed: KV-cached vs full recomputation, for the planner's batched rollouts.

    python benchmarks/ac_rollout.py [--sizes toy paper --horizons 1 2 3 4 --toy-batch 800 --paper-batch 1]

One observed frame, then ``H`` imagined frames for a batch of candidate action sequences (what the
CEM planner does with 800 samples). *cached* feeds one step at a time through the KV cache;
*uncached* recomputes the whole sequence for every new frame (the reference). Prints a Markdown
table: median seconds per rollout, speed-up over uncached, GFLOP per call (counted on the meta
device, so counting costs no arithmetic), achieved GFLOP/s and % of this machine's fp32 matmul
peak, and the relative difference of the two paths' outputs ``||cached - uncached|| / ||uncached||``.

Models: ``toy`` = the predictor ``vjepa2 train-ac`` trains by default for toy-push (4 blocks x 96
wide x 2 heads on the 96-wide features of the ``vjepa2 pretrain`` tiny encoder, 64 px frames =
4 x 4 tokens); ``paper`` = the paper's 24 x 1024 x 16 on ViT-g
features (width 1408) of 256 px frames (16 x 16 tokens). Weights are random (speed only).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import count_flops, machine_line, matmul_peak, median_time, print_table  # noqa: E402

from vjepa2.data.trajectories.trajectory import apply_action  # noqa: E402
from vjepa2.models.ac_predictor import ACPredictor, ac_predictor_config, normalize_latents  # noqa: E402

MODELS = {
    "toy": dict(size="tiny", enc_dim=96, dim=96, depth=4, heads=2, mlp_hidden=384, img_size=64, tokens=16),
    "paper": dict(size="large", enc_dim=1408, img_size=256, tokens=256),
}


def build(name: str, device: str = "cpu") -> tuple[ACPredictor, int]:
    spec = dict(MODELS[name])
    tokens = spec.pop("tokens")
    size = spec.pop("size")
    torch.manual_seed(0)
    with torch.device(device):
        return ACPredictor(ac_predictor_config(size, **spec)).eval(), tokens


def rollout_flops(name: str, batch: int, horizon: int, use_cache: bool) -> int:
    """FLOPs of one rollout, counted on the meta device (shapes only, no arithmetic run)."""
    model, tokens = build(name, "meta")
    cfg = model.config
    with torch.device("meta"):
        frame = torch.zeros(batch, 1, tokens, cfg.enc_dim)
        actions = torch.zeros(batch, horizon, cfg.action_dim)
        state = torch.zeros(batch, 1, cfg.state_dim)
    return count_flops(lambda: model.rollout(frame, actions, state, state_update=apply_action, use_cache=use_cache))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["toy", "paper"], choices=sorted(MODELS))
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--toy-batch", type=int, default=800)
    parser.add_argument("--paper-batch", type=int, default=1,
                        help="samples for the paper-size model (800 does not fit a CPU run's time; default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paper-repeats", type=int, default=1)
    args = parser.parse_args()

    print(machine_line())
    peak = matmul_peak(torch.float32)
    print(f"fp32 matmul peak on this machine now: {peak:.1f} GFLOP/s")
    headers = ["model", "batch", "horizon", "path", "seconds", "speed-up", "GFLOP", "GFLOP/s", "% peak", "rel diff"]
    rows = []
    for name in args.sizes:
        model, tokens = build(name)
        batch = args.toy_batch if name == "toy" else args.paper_batch
        repeats = args.repeats if name == "toy" else args.paper_repeats
        cfg = model.config
        g = torch.Generator().manual_seed(1)
        frame = normalize_latents(torch.randn(1, 1, tokens, cfg.enc_dim, generator=g)).expand(batch, -1, -1, -1)
        state = torch.randn(1, 1, cfg.state_dim, generator=g).expand(batch, -1, -1)
        for horizon in args.horizons:
            actions = torch.randn(batch, horizon, cfg.action_dim, generator=g) * 0.05

            def run(use_cache: bool):
                with torch.inference_mode():
                    return model.rollout(frame, actions, state, state_update=apply_action, use_cache=use_cache)

            results = {}
            for path, use_cache in (("cached", True), ("uncached", False)):
                last = {}

                def call(use_cache=use_cache, last=last):
                    last["out"] = run(use_cache)

                seconds = median_time(call, repeats=repeats, warmup=1 if name == "toy" else 0)
                results[path] = (seconds, rollout_flops(name, batch, horizon, use_cache), last["out"])
            cached, full = results["cached"], results["uncached"]
            diff = f"{float((cached[2] - full[2]).norm() / full[2].norm()):.1e}"
            for path, (seconds, flops, _) in results.items():
                rate = flops / seconds / 1e9
                rows.append([name, batch, horizon, path, round(seconds, 3),
                             f"{full[0] / seconds:.2f}x", round(flops / 1e9, 1), round(rate, 1),
                             f"{100 * rate / peak:.0f}%", diff])
            print(f"done {name} batch {batch} horizon {horizon}", file=sys.stderr, flush=True)
    print()
    print_table(headers, rows)
    print(machine_line())


if __name__ == "__main__":
    main()
