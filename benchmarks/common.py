"""Shared benchmark helpers: timing, FLOP counting, the machine's matmul peak, peak memory, tables."""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from vjepa2.precision import cpu_has_native_bf16


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


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_mib(fn: Callable[[], object], interval: float = 0.001) -> float:
    """Peak resident memory (MiB) during ``fn()`` above the resident memory before it (Linux).

    A background thread samples ``/proc/self/statm`` every ``interval`` seconds while ``fn`` runs,
    so the number is the extra memory the call itself needs (activations, temporary casts), not the
    weights. (An earlier version ran ``fn`` in a forked child; fork after OpenMP has started its
    threads can deadlock the child, so this stays in-process.)
    """
    import gc

    gc.collect()
    before = _rss_bytes()
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    peak[0] = max(peak[0], _rss_bytes())
    return (peak[0] - before) / 2**20


def print_table(headers: list[str], rows: list[list[object]]) -> str:
    """Print (and return) a Markdown table."""
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    text = "\n".join(lines)
    print(text)
    return text


def cpu_model() -> str:
    """The CPU's model name (Linux), or the platform's processor string."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    """One line describing the machine and load, for the record."""
    load = os.getloadavg()[0]
    return (f"torch {torch.__version__}, {cpu_model()} ({torch.backends.cpu.get_cpu_capability()}, native bf16: "
            f"{'yes' if cpu_has_native_bf16() else 'no'}), {torch.get_num_threads()} threads, "
            f"CPU count {os.cpu_count()}, 1-min load average {load:.2f}")


def cpu_bf16_rows(force: bool = False) -> bool:
    """Whether to time bf16 on the CPU: only where it is native (else emulated, 50-100x slower than
    fp32: a 1.6 TFLOP ViT-L forward would take half an hour). Prints the measured reason when skipping."""
    if force or cpu_has_native_bf16():
        return True
    rate = matmul_peak(torch.bfloat16, n=256, repeats=3)
    print(f"bf16 rows skipped: this CPU has no native bf16 (no AVX512-BF16 / AMX), a 256 x 256 bf16 matmul "
          f"runs at {rate:.1f} GFLOP/s (emulated); --force-bf16 times them anyway")
    return False
