"""benchmarks/gpu_suite.py: the GPU suite's code runs on a CPU with tiny models (``--device cpu --tiny``),
prints every row of the table and rewrites its own section of the benchmarks page in place."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


@pytest.fixture(scope="module")
def suite():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_suite_on_cpu_writes_its_section_once(suite, tmp_path, one_thread):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n## Before\n\nkept\n\n## After\n\nkept too\n")
    args = ["--device", "cpu", "--tiny", "--no-compile", "--repeats", "1", "--out", str(page)]
    first = suite.main(args)
    for row in ("transformers fp32", "ours fp32", "ours bf16", "pretrain step tiny", "public release",
                "H=1", "H=2", "paper 16 s / action"):
        assert row in first, row
    suite.main(args)  # a second run replaces the section instead of appending another
    text = page.read_text()
    assert text.count(suite.SECTION) == 1
    assert "## Before\n\nkept" in text and "## After\n\nkept too" in text
    seconds = [line.split("|")[3].strip() for line in text.splitlines() if line.startswith("| encoder")]
    assert seconds and all(float(s) > 0 for s in seconds)


def test_cuda_without_a_gpu_is_one_line(suite, monkeypatch):
    monkeypatch.setattr(suite.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="no CUDA device here.*--device cpu --tiny"):
        suite.main(["--device", "cuda"])
