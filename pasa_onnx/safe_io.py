"""File safety shared by the rewriter, validation and the reports: temporaries with one
recognisable prefix (removed on SIGTERM, and found and removed at the next run when an earlier
process was killed with SIGKILL), the set of files a model reads (never written), and one-line
errors for paths that cannot be written.

Temporaries are named ``.pasa-tmp-<pid>-<random>`` and live beside the file they become, so the
final ``os.replace`` is a rename within one file system. A temporary whose process no longer
exists is stale: :func:`remove_stale_temporaries` deletes it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from pasa_onnx.errors import PasaError

TMP_PREFIX = ".pasa-tmp-"
_TMP_RE = re.compile(r"^\.pasa-tmp-(\d+)-")
# Test hook: seconds to sleep once a temporary is written, before it is renamed into place
# (tests/test_signals.py kills the process in that window).
WRITE_DELAY_ENV = "PASA_ONNX_TEST_WRITE_DELAY"


def tmp_prefix() -> str:
    return f"{TMP_PREFIX}{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries in ``folder`` whose writing process is gone; return them."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        if not m or _alive(int(m.group(1))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    return removed


def clean_before_write(folder: str | os.PathLike) -> None:
    """Remove stale temporaries beside an output, with a warning naming each."""
    for path in remove_stale_temporaries(folder):
        warnings.warn(
            f"removed {path}, a temporary left by an interrupted pasa-onnx write",
            stacklevel=3,
        )


def write_delay() -> None:
    """The test hook: a slow write (see WRITE_DELAY_ENV)."""
    delay = os.environ.get(WRITE_DELAY_ENV)
    if delay:
        print(f"pasa-onnx: test hook: waiting {delay} s before the rename", file=sys.stderr)
        sys.stderr.flush()
        time.sleep(float(delay))


def os_error(path: str | os.PathLike, exc: OSError, what: str = "cannot write") -> PasaError:
    return PasaError(f"{os.fspath(path)}: {what} ({exc.strerror or exc})")


def ensure_folder(path: Path) -> None:
    """Create the folder an output goes to, or raise a one-line PasaError."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PasaError(
            f"{path}: cannot create the folder {parent} ({exc.strerror or exc})"
        ) from None
    if not parent.is_dir():
        raise PasaError(f"{path}: {parent} is not a folder")


@contextlib.contextmanager
def temporary_folder(beside: Path) -> Iterator[Path]:
    """A fresh temporary folder next to ``beside`` (removed on exit, SIGTERM included)."""
    ensure_folder(beside)
    try:
        tmp = tempfile.mkdtemp(prefix=tmp_prefix(), dir=beside.parent)
    except OSError as exc:
        raise os_error(beside, exc) from None
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def default_file_mode() -> int:
    """The mode ``open(..., 'w')`` gives a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def model_files(path: str | os.PathLike) -> set[Path]:
    """The resolved paths of a model file and every external data file it references (empty
    when it cannot be read as ONNX; the loader reports that)."""
    import onnx

    p = Path(path)
    files = {p.resolve()}
    try:
        model = onnx.load(os.fspath(p), load_external_data=False)
    except Exception:
        return files
    base = p.resolve().parent

    def tensors():
        yield from model.graph.initializer
        for node in model.graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t

    for t in tensors():
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        for entry in t.external_data:
            if entry.key == "location":
                files.add((base / entry.value).resolve())
    return files


def same_file(a: Path, files: set[Path]) -> bool:
    """``a`` is one of ``files`` (by resolved path, or the same inode through a hard link)."""
    if a.resolve() in files:
        return True
    if not a.exists():
        return False
    return any(f.exists() and os.path.samefile(a, f) for f in files)


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM/SIGHUP while :func:`clean_exit_on_signals` is
    active, so that ``finally`` blocks and context managers remove temporaries."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def clean_exit_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` for the duration (main thread only;
    elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise Terminated(signum)

    wanted = [signal.SIGTERM, signal.SIGHUP]
    previous: list[tuple[int, Callable | int | None]] = []
    for sig in wanted:
        previous.append((sig, signal.signal(sig, handler)))
    try:
        yield
    finally:
        for sig_number, old in previous:
            signal.signal(sig_number, old)
