"""Encoder inference speed: ours (fp32, bf16) vs `transformers` (fp32) on the same random weights.

    python benchmarks/encoder_speed.py [--size large --frames 16 --res 256 --repeats 3]

Prints a Markdown table: median seconds per clip, ratio to transformers, achieved GFLOP/s and % of
this machine's measured matmul peak (fp32 peak for fp32 rows, bf16 peak for bf16 rows), extra peak
memory of the call, and the relative error of bf16 vs our fp32 output. On a CPU without native bf16
(AVX2-only) the bf16 row is skipped with the measured reason (emulated bf16 is 50-100x slower than
fp32); ``--force-bf16`` times it anyway.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import (count_flops, cpu_bf16_rows, machine_line, matmul_peak, median_time,  # noqa: E402
                    peak_memory_mib, print_table)

from vjepa2.models import Predictor, VisionEncoder, encoder_config, predictor_config  # noqa: E402
from vjepa2.weights import encoder_to_transformers, predictor_to_transformers, transformers_config  # noqa: E402


def build_transformers(enc: VisionEncoder, pred: Predictor, attn: str):
    import transformers

    cfg = transformers.VJEPA2Config(**{k: v for k, v in transformers_config(enc, pred).items()
                                       if k not in ("architectures", "model_type")})
    cfg._attn_implementation = attn
    model = transformers.VJEPA2Model(cfg).eval()
    sd = {**encoder_to_transformers(enc.state_dict()), **predictor_to_transformers(pred.state_dict())}
    model.load_state_dict(sd)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="large")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--force-bf16", action="store_true", help="time bf16 even where the CPU emulates it")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    enc = VisionEncoder(encoder_config(args.size, img_size=args.res, num_frames=args.frames)).eval()
    pred = Predictor(predictor_config(enc.config)).eval()
    hf = build_transformers(enc, pred, "sdpa")
    clip = torch.randn(1, 3, args.frames, args.res, args.res)
    video = clip.permute(0, 2, 1, 3, 4)

    @torch.inference_mode()
    def ours_fp32():
        return enc(clip)

    @torch.inference_mode()
    def ours_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return enc(clip)

    @torch.inference_mode()
    def hf_fp32():
        return hf.get_vision_features(video)

    print(machine_line())
    with_bf16 = cpu_bf16_rows(force=args.force_bf16)
    peak32 = matmul_peak(torch.float32)
    peak16 = matmul_peak(torch.bfloat16) if with_bf16 else float("nan")
    print(f"matmul peak: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s")
    flops = count_flops(ours_fp32)
    print(f"encoder FLOPs per clip: {flops / 1e9:.0f} GFLOP ({args.size}, {args.frames}x{args.res}x{args.res})")

    ref = ours_fp32().float()
    hf_out = hf_fp32()
    parity = ((ref - hf_out).norm() / hf_out.norm()).item()
    bf16_err = ((ours_bf16().float() - ref).norm() / ref.norm()).item() if with_bf16 else float("nan")

    variants = [("transformers fp32 (sdpa)", hf_fp32, peak32), ("ours fp32", ours_fp32, peak32)]
    if with_bf16:
        variants.append(("ours bf16 (autocast)", ours_bf16, peak16))
    times = {name: median_time(fn, repeats=args.repeats, warmup=1) for name, fn, _ in variants}
    base = times["transformers fp32 (sdpa)"]
    rows = []
    for name, fn, peak in variants:
        mem = float("nan") if args.no_memory else peak_memory_mib(fn)
        gflops = flops / times[name] / 1e9
        rows.append([name, round(times[name], 3), round(times[name] / base, 3), round(gflops, 1),
                     f"{100 * gflops / peak:.0f}%", round(mem, 0)])
    print_table(["variant", "seconds", "x transformers", "GFLOP/s", "% of matmul peak", "extra peak MiB"], rows)
    print(f"relative error: ours fp32 vs transformers {parity:.2e}; ours bf16 vs ours fp32 {bf16_err:.2e}")


if __name__ == "__main__":
    main()
