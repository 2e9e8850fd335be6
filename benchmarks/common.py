"""Shared benchmark helpers: timing, FLOP counting, the machine's matmul peak, peak memory, tables."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import statistics
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def median_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of attention (two matrix products) for ``(B, H, Nq, d)`` / ``(B, H, Nk, d)`` inputs."""
    *batch, n_q, d = query_shape
    n_k, d_v = key_shape[-2], value_shape[-1]
    b = 1
    for s in batch:
        b *= s
    return 2 * b * n_q * n_k * d + 2 * b * n_q * n_k * d_v


def _cpu_sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                             **kwargs) -> int:
    return 2 * _cpu_sdpa_flops(query_shape, key_shape, value_shape)  # dQ, dK, dV, dP: twice the forward


# PyTorch's counter knows the CUDA attention kernels but not the CPU ones (it reports 0 FLOPs).
_EXTRA_FLOP_RULES = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations (multiply-add = 2) of one call of ``fn``: PyTorch's counter plus
    the CPU attention kernels it does not know."""
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_RULES)
    with counter:
        fn()
    return counter.get_total_flops()


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """Achieved GFLOP/s of an ``n x n`` matrix product in ``dtype`` on the current threads."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    seconds = median_time(lambda: torch.mm(a, b), repeats=repeats, warmup=2)
    return 2 * n**3 / seconds / 1e9


def _child(fn, queue):
    import gc

    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put((before, after))


def peak_memory_mib(fn: Callable[[], object]) -> float:
    """Peak resident memory (MiB) of ``fn()`` run in a forked child, above the child's starting peak.

    The child starts from a copy of this process (models already built), so the number is the extra
    memory the call itself needs (activations, temporary casts), not the weights.
    """
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, queue))
    proc.start()
    before, after = queue.get()
    proc.join()
    return (after - before) / 1024.0  # ru_maxrss is KiB on Linux


def print_table(headers: list[str], rows: list[list[object]]) -> str:
    """Print (and return) a Markdown table."""
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text)
    return text


def machine_line() -> str:
    """One line describing the machine and load, for the record."""
    load = os.getloadavg()[0]
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"CPU count {os.cpu_count()}, 1-min load average {load:.2f}")
