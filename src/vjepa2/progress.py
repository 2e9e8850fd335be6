"""Progress of long commands: the one place where progress is shown.

:func:`progress_bar` returns a tqdm bar when its stream (stderr by default) is a terminal, and otherwise
(output piped or redirected to a log file) a :class:`PlainProgress`, which never writes ``\\r`` and
prints one plain line at most every ``VJEPA2_PROGRESS_SECONDS`` seconds (default 30), e.g.::

    train-ac: step 1200/3000 (40%), 3.1 step/s, ETA 9m41s, loss 0.5123

and one more line when the bar closes, with the total time. ``VJEPA2_PROGRESS_SECONDS=0`` prints a
line at every update. :func:`progress_write` prints a message without breaking a bar on a terminal
(a plain line otherwise).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator

from tqdm import tqdm

#: Environment variable: seconds between two plain progress lines when the stream is not a terminal.
PROGRESS_SECONDS_ENV = "VJEPA2_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 30.0


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (False for pipes, files, closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def progress_seconds() -> float:
    """Seconds between plain progress lines: ``VJEPA2_PROGRESS_SECONDS`` if it is a number >= 0, else 30."""
    try:
        seconds = float(os.environ.get(PROGRESS_SECONDS_ENV, DEFAULT_PROGRESS_SECONDS))
    except ValueError:
        return DEFAULT_PROGRESS_SECONDS
    return seconds if seconds >= 0 and math.isfinite(seconds) else DEFAULT_PROGRESS_SECONDS


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, disable: bool = False, file=None, clock: Callable[[], float] | None = None):
    """A progress bar over ``iterable`` (or updated by hand with ``update(n)``) on ``file`` (default stderr).

    A tqdm bar on a terminal; otherwise a :class:`PlainProgress` (also when ``disable``: then silent).
    Both offer iteration, ``update``, ``set_postfix``, ``set_postfix_str``, ``write``, ``close`` and ``with``.
    ``clock`` (seconds, default :func:`time.monotonic`) times the plain lines.
    """
    stream = sys.stderr if file is None else file
    if not disable and is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=stream, dynamic_ncols=True)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable, file=stream,
                         clock=clock)


def progress_write(message: str, file=None) -> None:
    """Print ``message`` as a line of its own: above the bars on a terminal, a plain line otherwise."""
    stream = sys.stderr if file is None else file
    if is_terminal(stream):
        tqdm.write(message, file=stream)
    else:
        stream.write(message + "\n")
        stream.flush()


def format_duration(seconds: float) -> str:
    """``41s``, ``9m41s``, ``2h05m`` (``?`` if not finite)."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_rate(count: float, seconds: float, unit: str) -> str:
    """``3.1 step/s``, or ``20.5 s/pair`` below one per second."""
    if seconds <= 0 or count <= 0:
        return f"? {unit}/s"
    rate = count / seconds
    return f"{rate:.3g} {unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{unit}"


def _format_value(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class PlainProgress:
    """A progress bar for streams that are not a terminal: plain lines, never ``\\r``.

    Prints a line (what, step/total, percent, rate over the last interval, ETA, the postfix) when an
    update comes ``every`` seconds or more after the previous line (default :func:`progress_seconds`),
    and a last one at :meth:`close` (or when the iteration ends) with the total time and mean rate.
    Silent when ``disable``.
    """

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, disable: bool = False, file=None,
                 clock: Callable[[], float] | None = None, every: float | None = None) -> None:
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except TypeError:
                total = None
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = self.initial = initial
        self.disable = disable
        self.file = file
        self.clock = clock or time.monotonic
        self.every = progress_seconds() if every is None else every
        self.postfix = ""
        self.closed = False
        self.start = self.last_time = self.clock()
        self.last_n = initial

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("this progress bar has no iterable (use update())")
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()  # not on an early exit (break, or an error in the loop): its last line would follow the error

    def __len__(self) -> int:
        return self.total if self.total is not None else len(self.iterable)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _stream(self):
        return sys.stderr if self.file is None else self.file

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.disable or self.closed:
            return
        now = self.clock()
        if now - self.last_time >= self.every:
            self._print(self.status_line(now))
            self.last_time, self.last_n = now, self.n

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs) -> None:
        """Values shown after the counts, e.g. ``loss 0.5123`` (``refresh`` is ignored: lines keep their pace)."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{key} {_format_value(value)}" for key, value in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def write(self, message: str) -> None:
        if not self.disable:
            self._print(message)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        """Print the last line (total time, mean rate) once."""
        if self.closed:
            return
        self.closed = True
        if not self.disable:
            self._print(self.final_line(self.clock()))

    def _counts(self) -> str:
        if self.total:
            return f"{self.unit} {self.n}/{self.total} ({100 * self.n / self.total:.0f}%)"
        return f"{self.unit} {self.n}"

    def _line(self, parts: list[str]) -> str:
        parts = parts + ([self.postfix] if self.postfix else [])
        return f"{self.desc}: {', '.join(parts)}" if self.desc else ", ".join(parts)

    def status_line(self, now: float) -> str:
        """The periodic line; its rate and ETA use the updates since the previous line."""
        parts = [self._counts(), format_rate(self.n - self.last_n, now - self.last_time, self.unit)]
        if self.total and now > self.last_time and self.n > self.last_n:
            remaining = max(self.total - self.n, 0) * (now - self.last_time) / (self.n - self.last_n)
            parts.append(f"ETA {format_duration(remaining)}")
        return self._line(parts)

    def final_line(self, now: float) -> str:
        elapsed = now - self.start
        done = self.total is None or self.n >= self.total
        parts = [f"{self._counts()} {'done in' if done else 'stopped after'} {format_duration(elapsed)}",
                 format_rate(self.n - self.initial, elapsed, self.unit)]
        return self._line(parts)

    def _print(self, line: str) -> None:
        stream = self._stream()
        stream.write(line + "\n")
        stream.flush()
