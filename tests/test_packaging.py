"""The package imports as installed: ``passes/`` ships only as ``pasa_onnx.passes``, and the
repository's other folders are not part of the package."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _editable() -> bool:
    text = distribution("pasa-onnx").read_text("direct_url.json") or "{}"
    return bool(json.loads(text).get("dir_info", {}).get("editable"))


def _probe(tmp_path: Path, code: str) -> str:
    """Run ``code`` in a fresh interpreter whose working directory is outside the repository,
    so only the installed package (wheel or editable redirect) can be found."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_passes_import_as_part_of_the_package(tmp_path):
    out = _probe(
        tmp_path,
        "import pasa_onnx.passes.pipeline as p, pasa_onnx.passes.emit as e;"
        "print(p.__name__, e.__name__, p.__file__)",
    )
    name, emit_name, path = out.split()
    assert (name, emit_name) == ("pasa_onnx.passes.pipeline", "pasa_onnx.passes.emit")
    assert Path(path).parts[-2:] == ("passes", "pipeline.py")
    if _editable():  # the redirect serves the checkout's own passes/ folder
        assert Path(path).resolve() == (ROOT / "passes" / "pipeline.py").resolve()


@pytest.mark.parametrize(
    "name", ["pasa_onnx.tests", "pasa_onnx.benchmarks", "pasa_onnx.custom_ops", "passes"]
)
def test_repository_folders_are_not_modules(tmp_path, name):
    if name == "passes" and _editable():
        pytest.skip(
            "scikit-build-core's editable .pth puts the repository root on sys.path; "
            "the wheel (CI's `pip install .`) is checked"
        )
    out = _probe(
        tmp_path,
        "import importlib.util, pasa_onnx;"
        f"spec = importlib.util.find_spec({name!r});"
        "print(spec.origin if spec else 'absent')",
    )
    assert out == "absent"


def test_op_contract_ships_with_the_package(tmp_path):
    out = _probe(
        tmp_path,
        "import json, importlib.resources as r;"
        "d = json.loads((r.files('pasa_onnx') / 'op_contract.json').read_text());"
        "print(d['op'], len(d['inputs']))",
    )
    assert out == "PasaAttention 7"
