"""scripts/make_fixtures.py's path, live: export two models with torch now, rewrite, compare."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest
from fixtures.support import RTOL_FP32, feeds, max_rel_err, run_original, run_rewritten

import pasa_onnx

pytest.importorskip("torch", reason="torch is in the test extra: pip install '.[test]'")
sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
import make_fixtures  # noqa: E402


@pytest.mark.parametrize(
    ("case", "exporter"), [("sdpa_causal", "dynamo18"), ("kv_step_eager", "ts17")]
)
def test_live_export_rewrites_and_matches(tmp_path: Path, case: str, exporter: str) -> None:
    (spec,) = [c for c in make_fixtures.cases() if c.name == case]
    entry = make_fixtures.export(spec, exporter, tmp_path)
    assert entry is not None, "the export itself failed"
    original = onnx.load(tmp_path / entry["file"])
    rewritten, summary = pasa_onnx.rewrite(original)
    assert summary.found == summary.replaced == 1
    inputs = feeds(entry)
    assert (
        max_rel_err(run_original(original, inputs), run_rewritten(rewritten, inputs)) <= RTOL_FP32
    )
