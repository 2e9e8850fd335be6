"""Progress output: tqdm bars on a terminal, plain timed lines (never ``\\r``) when stderr is piped or a file."""

import io

import pytest
from pretrain_tiny import tiny_config
from tqdm import tqdm

from vjepa2.cli import main
from vjepa2.progress import (PROGRESS_SECONDS_ENV, PlainProgress, format_duration, progress_bar, progress_seconds,
                             progress_write)
from vjepa2.train.pretrain import pretrain


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_piped_progress_prints_a_plain_line_per_interval_and_at_close(monkeypatch):
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, "30")
    stream, clock = io.StringIO(), Clock()
    bar = progress_bar(total=3000, desc="train-ac", unit="step", file=stream, clock=clock)
    assert isinstance(bar, PlainProgress)
    for _ in range(1200):  # 4 step/s for 300 s: a line every 120 steps
        clock.now += 0.25
        bar.set_postfix({"loss": 0.51234567, "lr": "1e-4"}, refresh=False)
        bar.update(1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0] == "train-ac: step 120/3000 (4%), 4 step/s, ETA 12m00s, loss 0.5123, lr 1e-4"
    assert lines[-1] == "train-ac: step 1200/3000 (40%), 4 step/s, ETA 7m30s, loss 0.5123, lr 1e-4"
    clock.now += 10
    bar.update(30)
    assert len(stream.getvalue().splitlines()) == 10  # less than 30 s since the last line
    bar.close()
    bar.close()
    final = stream.getvalue().splitlines()[10:]
    assert final == ["train-ac: step 1230/3000 (41%) stopped after 5m10s, 3.97 step/s, loss 0.5123, lr 1e-4"]
    assert "\r" not in stream.getvalue()


def test_piped_iteration_closes_with_the_total_time_and_slow_rates_read_seconds_per_unit(monkeypatch):
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, "60")
    stream, clock = io.StringIO(), Clock()
    seen = []
    for item in progress_bar(range(4), desc="plan-eval reach", unit="pair", file=stream, clock=clock):
        seen.append(item)
        clock.now += 25.0
    assert seen == [0, 1, 2, 3]
    assert stream.getvalue().splitlines() == [
        "plan-eval reach: pair 3/4 (75%), 25 s/pair, ETA 25s",
        "plan-eval reach: pair 4/4 (100%) done in 1m40s, 25 s/pair"]


def test_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, "0")
    stream = io.StringIO()
    with progress_bar(total=None, desc="x", file=stream) as bar:
        bar.update(2)
        bar.update(1)
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["x: it 2", "x: it 3", "x: it 3 done in 0s"]
    for value, seconds in (("", 30.0), ("abc", 30.0), ("-1", 30.0), ("2.5", 2.5)):
        monkeypatch.setenv(PROGRESS_SECONDS_ENV, value)
        assert progress_seconds() == seconds
    monkeypatch.delenv(PROGRESS_SECONDS_ENV)
    assert progress_seconds() == 30.0
    assert [format_duration(s) for s in (0, 41.4, 581, 7500)] == ["0s", "41s", "9m41s", "2h05m"]


def test_a_loop_left_by_an_error_prints_no_last_line_and_disabled_bars_are_silent():
    stream = io.StringIO()
    with pytest.raises(RuntimeError):
        for _ in progress_bar(range(5), desc="x", file=stream):
            raise RuntimeError("bad input")  # the command prints its one-line error last, not a progress line
    assert stream.getvalue() == ""
    bar = progress_bar(range(3), desc="quiet", disable=True, file=FakeTerminal())
    assert isinstance(bar, PlainProgress) and list(bar) == [0, 1, 2]
    bar.write("hidden")
    assert bar.file.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar_and_written_messages():
    terminal = FakeTerminal()
    bar = progress_bar(range(3), desc="collecting", unit="episode", file=terminal)
    assert isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2]
    progress_write("skipped a.mp4: unreadable", file=terminal)
    assert "\r" in terminal.getvalue() and "collecting" in terminal.getvalue()
    assert terminal.getvalue().endswith("skipped a.mp4: unreadable\n")
    piped = io.StringIO()
    progress_write("skipped a.mp4: unreadable", file=piped)
    assert piped.getvalue() == "skipped a.mp4: unreadable\n"


def test_collect_command_writes_no_carriage_return(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, "0")
    assert main(["collect", "--env", "toy-push", "--episodes", "2", "--steps", "3", "--out", str(tmp_path / "d"),
                 "--size", "16"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines()[-1].startswith("collecting toy-push: episode 2/2 (100%) done in")


def test_pretraining_with_its_bar_on_writes_plain_lines(tmp_path, capsys, monkeypatch, one_thread):
    monkeypatch.setenv(PROGRESS_SECONDS_ENV, "0")
    cfg = tiny_config(tmp_path, log={"every": 1, "tensorboard": False, "progress_bar": True},
                      phases=[{"name": "main", "iterations": 3, "frames": 4, "resolution": 32}])
    pretrain(cfg)
    err = capsys.readouterr().err
    assert "\r" not in err
    steps = [line for line in err.splitlines() if line.startswith("pretrain: step ")]
    assert len(steps) == 4 and steps[-1].startswith("pretrain: step 3/3 (100%) done in"), err
    assert "ETA" in steps[1] and "loss " in steps[1] and "step/s" in steps[1]
