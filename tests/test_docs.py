"""The README's and docs' commands run as written; docs/cli.md matches the CLI's --help."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch directory that sees the repository's examples/ like the repository root does."""
    d = tmp_path_factory.mktemp("docs")
    (d / "examples").symlink_to(ROOT / "examples")
    return d


def _run_shell_lines(block: str, cwd: Path) -> None:
    for line in block.strip().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        argv = shlex.split(line)
        if argv[:2] == ["pip", "install"]:
            continue  # the test environment is that install
        if argv[0] == "pasa-onnx":
            argv = [sys.executable, "-m", "pasa_onnx", *argv[1:]]
        elif argv[0] == "python":
            argv[0] = sys.executable
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"


def test_readme_has_two_leading_bash_blocks():
    blocks = _blocks(ROOT / "README.md", "bash")
    assert len(blocks) >= 2
    assert "pip install ." in blocks[0] and "pasa-onnx rewrite examples/models/" in blocks[0]
    assert blocks[1].split() == ["pip", "install", "'.[test]'", "pytest", "-q"]


def test_readme_main_job_and_deploy_snippet(workdir):
    readme = ROOT / "README.md"
    _run_shell_lines(_blocks(readme, "bash")[0], workdir)
    report = (workdir / "report.html").read_text()
    assert "PASS" in report and "would overflow in a plain fp16" in report
    assert (workdir / "demo.pasa.onnx").is_file()
    for code in _blocks(readme, "python"):
        subprocess.run([sys.executable, "-c", code], cwd=workdir, check=True, timeout=300)


def test_python_api_doc_runs(workdir):
    for code in _blocks(ROOT / "docs" / "python-api.md", "python"):
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{code}\n{done.stderr}"


def test_deploying_doc_runs(workdir):
    doc = ROOT / "docs" / "deploying.md"
    for block in _blocks(doc, "bash"):
        _run_shell_lines(block, workdir)
    model = workdir / "model.pasa.onnx"
    if not model.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pasa_onnx",
                "rewrite",
                "examples/models/demo_fp16.onnx",
                "-o",
                str(model),
                "-q",
            ],
            cwd=workdir,
            check=True,
            capture_output=True,
            timeout=300,
        )
    for code in _blocks(doc, "python"):
        subprocess.run([sys.executable, "-c", code], cwd=workdir, check=True, timeout=300)


def test_cli_doc_is_current():
    env = {**os.environ}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, "docs/cli.md is stale: run python scripts/gen_cli_docs.py"
