"""Issue 15 D7: a write killed by SIGTERM removes its temporaries; one killed by SIGKILL leaves
them, and the next write into the folder removes them with a warning. The test hook
PASA_ONNX_TEST_WRITE_DELAY holds the writer between writing its temporaries and renaming them."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from fixtures.support import FIXTURES, MANIFEST

from pasa_onnx.safe_io import TMP_PREFIX, WRITE_DELAY_ENV

SRC = FIXTURES / MANIFEST["bert_eager_ts17"]["file"]


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]


def _start_slow_write(src: Path, dst: Path) -> subprocess.Popen:
    env = {**os.environ, WRITE_DELAY_ENV: "60"}
    argv = [sys.executable, "-m", "pasa_onnx", "rewrite", str(src), "-o", str(dst), "-q"]
    proc = subprocess.Popen(
        argv, cwd=dst.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    seen = ""
    while time.monotonic() < deadline:  # the hook says when the writer is mid-write
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            line = proc.stderr.readline()
            seen += line
            if "test hook: waiting" in line:
                assert any(p.is_dir() for p in _temporaries(dst.parent))
                return proc
            if not line:
                break
    proc.kill()
    proc.communicate()
    pytest.fail(f"the write never paused mid-way (rc {proc.returncode}): {seen}")


@pytest.fixture(params=["inline", "external"])
def source(request, tmp_path: Path) -> Path:
    if request.param == "inline":
        return SRC
    src = tmp_path / "in" / "model.onnx"
    src.parent.mkdir()
    onnx.save(
        onnx.load(SRC),
        src,
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    return src


def test_sigterm_mid_write_removes_the_temporaries(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dst = out / "model.onnx"
    proc = _start_slow_write(source, dst)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "terminated by signal" in err and "Traceback" not in err
    assert sorted(out.iterdir()) == []  # no temporary, no half output, no orphan data file


def test_sigkill_leftovers_are_removed_by_the_next_write(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dst = out / "model.onnx"
    proc = _start_slow_write(source, dst)
    proc.kill()
    proc.communicate(timeout=60)
    stale = _temporaries(out)
    assert stale, "SIGKILL cannot clean up: the temporary is still there"
    done = subprocess.run(
        [sys.executable, "-m", "pasa_onnx", "rewrite", str(source), "-o", str(dst), "-q"],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for path in stale:
        assert f"pasa-onnx: warning: removed {path}" in done.stderr
    assert _temporaries(out) == []
    onnx.checker.check_model(str(dst))
    names = sorted(p.name for p in out.iterdir())
    assert names in (["model.onnx"], ["model.onnx", "model.onnx.data"])
