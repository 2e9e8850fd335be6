"""bf16 autocast goes through one helper that warns where bf16 is emulated on the CPU."""

import warnings

import pytest
import torch

from vjepa2 import precision


@pytest.fixture
def fresh_warning(monkeypatch):
    precision._warn_slow_bf16.cache_clear()
    yield
    precision._warn_slow_bf16.cache_clear()


def test_fp32_is_no_autocast():
    with precision.autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_bf16_autocasts_matmuls(monkeypatch, fresh_warning):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native bf16: no warning
        with precision.autocast("cpu", "bf16"):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_emulated_bf16_warns_once_and_still_runs(monkeypatch, fresh_warning):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="without native bf16"):
        with precision.autocast(torch.device("cpu"), "bf16"):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # second time: silent
        with precision.autocast("cpu", "bf16"):
            pass


def test_bad_dtype_is_named():
    with pytest.raises(ValueError, match="float16"):
        precision.autocast("cpu", "float16")


def test_native_bf16_probe_returns_a_bool():
    assert isinstance(precision.cpu_has_native_bf16(), bool)


def test_auto_dtype_is_bf16_exactly_where_bf16_is_native(monkeypatch):
    from vjepa2 import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_dtype("auto", "cpu") == "bf16" and precision.resolve_dtype("auto", "cuda") == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_dtype("auto", "cpu") == "fp32" and precision.resolve_dtype("auto", "cuda") == "bf16"
    assert precision.resolve_dtype("fp64", "cpu") == "fp64" and precision.resolve_dtype("bf16", "cpu") == "bf16"


def test_fastest_dtype_times_both_where_bf16_is_native_and_only_fp32_elsewhere(monkeypatch):
    import time

    calls = []

    def run(dtype):
        calls.append(dtype)
        time.sleep(0.02 if dtype == "fp32" else 0.001)

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    chosen, seconds = precision.fastest_dtype(run, "cpu", repeats=2)
    assert chosen == "bf16" and set(seconds) == {"fp32", "bf16"} and seconds["bf16"] < seconds["fp32"]
    assert calls.count("fp32") == 3 and calls.count("bf16") == 3  # one warm-up + 2 timed each
    calls.clear()
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.fastest_dtype(run, "cpu")[0] == "fp32" and "bf16" not in calls
