"""The CPU planner's own unit tests (custom_ops/tests/planner_test.cc), compiled and run here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_planner_unit_tests(tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.fail("a C++ compiler is needed to build custom_ops/tests/planner_test.cc")
    exe = tmp_path / "planner_test"
    src = ROOT / "custom_ops"
    subprocess.run(
        [
            cxx,
            "-std=c++17",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{src / 'src'}",
            str(src / "tests" / "planner_test.cc"),
            str(src / "src" / "cpu" / "planner.cc"),
            "-o",
            str(exe),
        ],
        check=True,
    )
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "planner tests passed" in out.stdout
