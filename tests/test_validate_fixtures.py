"""Criterion 1 and 4 on real exports: every ``tests/fixtures/*.onnx`` (the rewriter's fixtures)
rewritten by ``pasa_onnx.rewriting.rewrite_file`` and validated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from validation_models import run_with_outputs

from pasa_onnx.inputs import embedding_rows, generate_inputs, graph_inputs

FIXTURES = sorted((Path(__file__).parent / "fixtures").glob("*.onnx"))


# The rewriter's fixtures must be there: an empty list would silently test nothing.
assert FIXTURES, "tests/fixtures/*.onnx missing (scripts/make_fixtures.py writes them)"


def _rewrite(src: Path, dst: Path) -> Path:
    from pasa_onnx.rewriting import rewrite_file

    rewrite_file(src, dst)
    assert dst.is_file(), f"rewrite_file did not produce {dst}"
    return dst


def _metrics(actual, reference) -> dict[str, float]:
    a = np.asarray(actual, np.float64).ravel()
    r = np.asarray(reference, np.float64).ravel()
    ok = np.isfinite(a) & np.isfinite(r)
    d = a[ok] - r[ok]
    return {
        "max_abs_err": float(np.abs(d).max(initial=0.0)),
        "rmse": float(np.sqrt(np.mean(d * d))) if d.size else 0.0,
        "nonfinite": int(np.count_nonzero(~np.isfinite(a))),
    }


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_fixture_validates(fixture, tmp_path):
    from pasa_onnx.validation import validate

    rewritten = _rewrite(fixture, tmp_path / f"{fixture.stem}.pasa.onnx")
    reports = [tmp_path / "r.json", tmp_path / "r.html", tmp_path / "r.md"]
    result = validate(fixture, rewritten, seed=0, report=reports)
    data = json.loads(reports[0].read_text())
    assert all(r.is_file() and r.stat().st_size > 0 for r in reports)
    assert data["verdict"] == result.verdict == "pass", result.failures()
    if not data["attentions"]:
        # Only fixtures whose attention returns its probabilities are left whole.
        assert "weights" in fixture.stem, "the rewriter replaced no attention in a fixture"

    # Criterion 4: generated inputs are valid for this model.
    original = onnx.load(str(fixture))
    for info, vi in zip(result.inputs, graph_inputs(original), strict=True):
        assert info.generated and info.name == vi.name
    feeds = generate_inputs(original, result.dims, seed=0).feeds
    for name, arr in feeds.items():
        assert list(arr.shape) == data["inputs"][name]["shape"]
        rows = embedding_rows(original, name) if arr.dtype.kind in "iu" else None
        if rows is not None:
            assert arr.min() >= 0 and arr.max() < rows, name
        if "mask" in name.lower():
            assert set(np.unique(arr).tolist()) <= {0, 1}, name
        if arr.dtype.kind == "f":
            assert np.isfinite(arr).all(), name

    # Criterion 1: the report's numbers against runs made here.
    rw_model = onnx.load(str(rewritten))
    names = [o["name"] for o in data["outputs"]] + [a["output"] for a in data["attentions"]]
    got_orig = run_with_outputs(original, feeds, names)
    got_rw = run_with_outputs(rw_model, feeds, names)
    entries = {o["name"]: o for o in data["outputs"]}
    entries.update({a["output"]: a for a in data["attentions"]})
    for name in names:
        want = _metrics(got_rw[name], got_orig[name])
        got = entries[name]["vs_original"]
        assert got["nonfinite"] == want["nonfinite"], name
        assert got["max_abs_err"] == pytest.approx(want["max_abs_err"], rel=1e-9, abs=1e-12)
        assert got["rmse"] == pytest.approx(want["rmse"], rel=1e-9, abs=1e-12)
    html = reports[1].read_text()
    assert "id='verdict'" in html and "id='attentions'" in html
