"""Ctrl-C and SIGTERM during training: finish the step, write a checkpoint, stop.

While :class:`GracefulStop` is active, the first SIGINT or SIGTERM only sets a flag: the loop
checks it after each optimiser step, writes a checkpoint of that step and raises
:class:`Interrupted` (a ``KeyboardInterrupt`` whose message says where ``--resume`` continues).
A second signal aborts at once, as Python's default does. Signal handlers can be installed from the
main thread only; elsewhere (a training run in a worker thread) the class does nothing.
"""

from __future__ import annotations

import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT / SIGTERM after writing a checkpoint; ``exit_code`` is 128 + the
    signal number (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a process killed by it."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class GracefulStop:
    """Context manager: ``stop.signum`` is the first SIGINT / SIGTERM received (or None)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:  # the second one: abort now
            self._restore()
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this step with a checkpoint "
              f"(send it again to abort without one)", file=sys.stderr, flush=True)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
