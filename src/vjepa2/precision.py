"""bf16 autocast in one place, with a warning where bf16 is emulated and therefore slow.

Every model that offers ``dtype: bf16`` (pretraining, embedding, AC training and features,
planning) enters its autocast through :func:`autocast`. On CUDA and on CPUs with native bf16
matrix instructions (AVX512-BF16 or AMX) that is a speed-up; on other CPUs (e.g. AVX2-only ones)
oneDNN has no bf16 kernels and PyTorch falls back to a reference path that is 50-100x *slower* than
fp32 (measured: ~1 GFLOP/s against ~110 GFLOP/s for a 1024 x 1024 product on 2 AVX2 cores). Such a run
still computes the right numbers, so it is not an error, but the user is told once, with the fix.
"""

from __future__ import annotations

import functools
import warnings
from contextlib import nullcontext
from typing import Callable, ContextManager

import torch

DTYPES = ("fp32", "bf16", "fp64")
#: Parameter dtype of each ``dtype`` setting: bf16 is autocast over fp32 weights; fp64 holds the whole
#: model in float64 (slow; for numerical checks whose answer must not depend on the CPU's kernels).
PARAM_DTYPES = {"fp32": torch.float32, "bf16": torch.float32, "fp64": torch.float64,
                "auto": torch.float32}  # auto: fp32 or bf16, both over fp32 weights


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (oneDNN's bf16 kernels are usable)."""
    probe = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if probe is not None:
        try:
            return bool(probe())
        except (RuntimeError, AttributeError):
            pass
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def warn_if_slow_bf16(device: torch.device | str) -> bool:
    """Warn (once per process) when bf16 would run emulated on this CPU; returns True if it would."""
    device = torch.device(device)
    slow = device.type == "cpu" and not cpu_has_native_bf16()
    if slow:
        _warn_slow_bf16()
    return slow


@functools.lru_cache(maxsize=None)
def _warn_slow_bf16() -> None:
    warnings.warn("bf16 was asked for on a CPU without native bf16 instructions (no AVX512-BF16 / AMX): "
                  "PyTorch emulates it, 50-100x slower than fp32. Use dtype fp32 on this machine "
                  "(bf16 pays off on CUDA and on CPUs with AVX512-BF16 or AMX).", RuntimeWarning, stacklevel=4)


def resolve_dtype(dtype: str, device: torch.device | str) -> str:
    """``auto`` -> ``bf16`` on CUDA and on CPUs with native bf16 (AVX512-BF16 / AMX), else ``fp32``;
    any other setting is returned as it is. (A trainer that can time its own step decides ``auto``
    by :func:`fastest_dtype` instead, where bf16 is native.)"""
    if dtype != "auto":
        return dtype
    return "bf16" if bf16_is_native(device) else "fp32"


def bf16_is_native(device: torch.device | str) -> bool:
    """Whether bf16 runs in hardware on ``device`` (CUDA, or a CPU with AVX512-BF16 / AMX)."""
    device = torch.device(device)
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def fastest_dtype(run: Callable[[str], object], device: torch.device | str,
                  repeats: int = 3) -> tuple[str, dict[str, float]]:
    """``auto`` decided by measurement: ``(dtype, {dtype: median seconds})`` of ``run(dtype)`` (e.g.
    one forward and backward of the model at the run's shapes) in ``fp32`` and, where bf16 is native,
    ``bf16``; each timed ``repeats`` times after one warm-up call. Where bf16 is emulated it is not
    timed (50-100x slower, see the module docstring) and the answer is ``fp32``."""
    import statistics
    import time

    device = torch.device(device)
    candidates = ("fp32", "bf16") if bf16_is_native(device) else ("fp32",)
    seconds = {}
    for dtype in candidates:
        run(dtype)
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            run(dtype)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        seconds[dtype] = statistics.median(times)
    return min(seconds, key=seconds.get), seconds


def autocast(device: torch.device | str, dtype: str) -> ContextManager:
    """The autocast context for ``dtype`` (``fp32``, ``fp64``: none; ``bf16``: bf16 autocast on ``device``'s type)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype != "bf16":
        return nullcontext()
    device = torch.device(device)
    warn_if_slow_bf16(device)
    return torch.autocast(device.type, dtype=torch.bfloat16)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or as it is if wider (float64): losses keep the precision of an fp64 run."""
    return x if x.dtype == torch.float64 else x.float()
