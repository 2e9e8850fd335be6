"""Writing files safely: the one place for atomic writes, output-path checks and run-folder locks.

* :func:`atomic_path` / :func:`atomic_write` (and the ``_text`` / ``_json`` / torch variants): the
  data goes to a temporary file next to the destination, is flushed and fsync'ed, gets the mode any
  new file would get (``0666 & ~umask``: a lab's shared folder can read checkpoints and logs), and is
  renamed over its final name (atomic on POSIX); the directory entry is fsync'ed too. A process
  killed at any moment leaves the old file or the complete new one, at worst a stale ``.*.tmp``. A
  full disk raises :class:`DiskFullError` naming the file instead of a library's traceback.
* :func:`check_output_dir` / :func:`check_output_file`: is an output path usable? Called by every
  command before any work, so that a bad ``--out`` never costs a training run.
* :func:`check_not_an_input`: an output path that is one of the command's inputs (or lies inside an
  input folder) is refused, so no command writes onto what it reads.
* :class:`RunLock`: an advisory ``fcntl`` lock on a run folder, so that a second process (say a
  second ``--resume`` of a live run) stops with one line naming the PID that holds it.
* :func:`run_kind` / :func:`claim_run_folder`: a run folder records which command wrote it
  (``vjepa2-run.json``); another command refuses to train into it.

Test hook: with ``VJEPA2_TEST_PAUSE_BEFORE_RENAME="<file name>=<seconds>"`` in the environment, the
writer sleeps between the fsync of the temporary file and the rename when it writes that file, so a
test can kill the process exactly there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from vjepa2.errors import InputError, RunError

PAUSE_ENV = "VJEPA2_TEST_PAUSE_BEFORE_RENAME"
LOCK_NAME = ".lock"
RUN_FILE = "vjepa2-run.json"
#: What a run folder holds: files, and folders (see :mod:`vjepa2.engine.monitor` and the loop).
RUN_FILES = (RUN_FILE, "config.yaml", "log.csv", "loss.png", "skipped_files.tsv")
RUN_FOLDERS = ("checkpoints", "tensorboard", "features")
#: What each training command's run folder is called in messages.
RUN_KINDS = {"pretrain": "pretraining run", "train-ac": "world-model (train-ac) run"}


class DiskFullError(OSError, RunError):
    """The disk (or quota) filled up while writing a file; the message names the file."""


class OutputPathError(InputError):
    """An output path that cannot be used (a file where a folder is needed, or the reverse)."""


class RunLockedError(InputError):
    """Another live process holds the run folder's lock."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory (Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _test_pause(path: Path) -> None:
    spec = os.environ.get(PAUSE_ENV)
    if not spec or "=" not in spec:
        return
    name, seconds = spec.rsplit("=", 1)
    if name == path.name:
        print(f"[{PAUSE_ENV}] pausing {seconds}s before renaming {path.name}", file=sys.stderr, flush=True)
        time.sleep(float(seconds))


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an error it wraps) is a full disk or quota."""
    seen = set()
    while err is not None and id(err) not in seen:  # a library may wrap the OSError in its own error
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it is fsync'ed, given the umask's mode
    and renamed to ``path``. For writers that want a file name (safetensors, PyAV); the body may
    create the file itself. On an error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        _test_pause(path)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(err):
            raise DiskFullError(errno.ENOSPC, f"disk full while writing {path}; free space and run again "
                                              f"(the previous {path.name}, if any, is intact)") from None
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on a clean exit it gets the umask's mode and takes
    the place of ``path`` (an existing ``path`` is moved aside first, then deleted). On an error the
    temporary folder is removed and ``path`` is untouched."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            trash = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, trash / "old")
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(err):
            raise DiskFullError(errno.ENOSPC, f"disk full while writing {path}; free space and run again") from None
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary binary file next to ``path``, then move it into place."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (UTF-8)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_json(data, path: str | os.PathLike) -> Path:
    """JSON to ``path`` atomically (NaN allowed, as Python's json writes it)."""
    return atomic_write_text(path, json.dumps(data, indent=1, allow_nan=True) + "\n")


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


# ------------------------------------------------------------------------------------------------
# Output paths, checked before any work
# ------------------------------------------------------------------------------------------------


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` is (or can become) a writable folder; raises :class:`OutputPathError` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {path} is a file, not a folder; choose a folder")
    parent = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not parent.is_dir():
        raise OutputPathError(f"{what} {path}: {parent} is a file, so the folder cannot be made")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {path}: no permission to write in {parent}")
    return path


def check_output_file(path: str | os.PathLike, what: str = "--out", overwrite: bool = True) -> Path:
    """``path`` can be written as a file (its folder can be made; it is not a folder; with
    ``overwrite=False`` it does not exist yet)."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputPathError(f"{what} {path} exists; remove it or choose another name")
    check_output_dir(path.parent, f"{what} {path}: folder")
    return path


def _same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name the same file or folder (links resolved)."""
    return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))


def check_not_an_input(out: str | os.PathLike, inputs: dict[str, str | os.PathLike], what: str = "--out",
                       inside: bool = False) -> None:
    """Refuse an output ``out`` that is one of ``inputs`` (``{how the input was given: path}``), or,
    with ``inside``, lies inside an input folder (a run folder inside a data folder would become
    training data). Raises :class:`OutputPathError` naming both."""
    out = Path(out)
    for given, path in inputs.items():
        path = Path(path)
        given = given if given == str(path) else f"{given} {path}"
        if _same_file(out, path):
            raise OutputPathError(f"{what} {out} is also the input {given}; writing it would destroy the input: "
                                  f"choose another {what}")
        if inside and path.is_dir() and path.resolve() in out.resolve().parents:
            raise OutputPathError(f"{what} {out} is inside the input folder {given} ({path}); what the run writes "
                                  f"there would be read as input: choose an {what} outside it")


# ------------------------------------------------------------------------------------------------
# Run folders: which command wrote them, and a lock
# ------------------------------------------------------------------------------------------------


class RunLock:
    """Advisory exclusive lock on ``directory/.lock`` (``fcntl.flock``; released when the process
    ends, however it ends). The holder's PID is written into the file for the refusal message.

    Use as a context manager, or :meth:`acquire` / :meth:`release`. Where ``fcntl`` does not exist
    (Windows) the lock is a no-op.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(f"{self.directory} is in use by another process (PID {holder}); wait for it "
                                 f"to finish or stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def run_kind(directory: str | os.PathLike) -> str | None:
    """The command that wrote the run folder ``directory`` (a key of :data:`RUN_KINDS`), or None for a
    folder no training run wrote. Read from ``vjepa2-run.json``; for runs written before that file
    existed, told from the top-level keys of their ``config.yaml``."""
    directory = Path(directory)
    marker, config = directory / RUN_FILE, directory / "config.yaml"
    if marker.is_file():
        try:
            kind = json.loads(marker.read_text(encoding="utf-8")).get("kind")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            raise OutputPathError(f"{marker} is not readable JSON; it says which command wrote {directory}: "
                                  f"restore it or choose another --out") from None
        return kind if kind in RUN_KINDS else None
    if config.is_file() and (directory / "checkpoints").exists():
        import yaml

        try:
            keys = yaml.safe_load(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None
        if isinstance(keys, dict):
            return "pretrain" if "phases" in keys else "train-ac" if "schedule" in keys and "encoder" in keys else None
    return None


def is_run_folder(directory: str | os.PathLike) -> bool:
    """Whether a training run wrote ``directory`` (see :func:`run_kind`)."""
    try:
        return run_kind(directory) is not None
    except OutputPathError:
        return True


def claim_run_folder(directory: str | os.PathLike, kind: str) -> None:
    """Record that ``kind`` (a key of :data:`RUN_KINDS`) writes the run folder ``directory``; a
    folder another command wrote is refused with :class:`OutputPathError` before anything in it changes."""
    directory = Path(directory)
    for name in RUN_FILES:
        if (directory / name).is_dir():
            raise OutputPathError(f"{directory / name} is a folder, but the run writes a file of that name there: "
                                  f"move it away, or choose another --out")
    for name in RUN_FOLDERS:
        if (directory / name).exists() and not (directory / name).is_dir():
            raise OutputPathError(f"{directory / name} is a file, but the run keeps a folder of that name there: "
                                  f"move it away, or choose another --out")
    found = run_kind(directory)
    if found is not None and found != kind:
        raise OutputPathError(f"{directory} is a {RUN_KINDS[found]} folder (written by vjepa2 {found}); vjepa2 {kind} "
                              f"will not write into it: choose another --out")
    if found is None or not (directory / RUN_FILE).is_file():
        write_json({"kind": kind}, directory / RUN_FILE)


@contextlib.contextmanager
def open_run_folder(directory: str | os.PathLike, kind: str, is_main: bool = True) -> Iterator[None]:
    """Hold ``directory`` for a training run of ``kind``: rank 0 takes its :class:`RunLock` and
    :func:`claim_run_folder` s it (the other processes of a distributed run do nothing)."""
    if not is_main:
        yield
        return
    with RunLock(directory):
        claim_run_folder(directory, kind)
        yield
