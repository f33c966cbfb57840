"""Large-model behaviour: one session at a time, the cost of the extra outputs reported,
external-data models, and the hook ``rewrite --validate`` uses."""

from __future__ import annotations

import argparse
import json
import weakref

import onnx
import pytest
from validation_models import primitive_attention_pair, save_pair

import pasa_onnx.runtime
import pasa_onnx.validation as validation
from pasa_onnx.commands.validate import add_validation_options, run_validation
from pasa_onnx.errors import ValidationFailed


def test_one_session_alive_at_a_time(tmp_path, monkeypatch):
    orig, rw = save_pair(primitive_attention_pair(n_layers=2), tmp_path, "m")
    real = pasa_onnx.runtime.inference_session
    alive: set[int] = set()
    peak = []

    def tracking(model, options=None, providers=None):
        session = real(model, options, providers)
        key = id(session)
        alive.add(key)
        weakref.finalize(session, alive.discard, key)
        peak.append(len(alive))
        return session

    monkeypatch.setattr(pasa_onnx.runtime, "inference_session", tracking)
    result = validation.validate(orig, rw)
    assert result.passed
    assert peak == [1, 1, 1]  # original, rewritten, fp32 reference: never two at once
    assert not alive


def test_extra_output_cost_is_reported(tmp_path, monkeypatch):
    orig, rw = save_pair(primitive_attention_pair(n_layers=2), tmp_path, "m")
    monkeypatch.setattr(validation, "LARGE_EXTRA_BYTES", 0)  # treat any size as large
    messages: list[str] = []
    result = validation.validate(
        orig,
        rw,
        dims={"batch": 3, "sequence": 20},
        progress=messages.append,
        report=tmp_path / "r.json",
    )
    # Per layer: attention output + Q, K, V as [3, 2, 20, 16] fp16; one shared mask [3,1,1,20].
    per_tensor = 3 * 2 * 20 * 16 * 2
    want_rw = 2 * 4 * per_tensor + 3 * 20 * 2
    want_orig = 2 * per_tensor
    notes = [m for m in messages if m.startswith("note: the extra outputs of this run cost")]
    assert notes == [
        f"note: the extra outputs of this run cost about {n / 2**20:.1f} MiB ({n} bytes)"
        # original, rewritten, fp32 reference (its attention outputs are fp32: twice the bytes)
        for n in (want_orig, want_rw, 2 * want_orig)
    ]
    assert result.extra_outputs_bytes == want_rw
    assert json.loads((tmp_path / "r.json").read_text())["extra_outputs_bytes"] == want_rw
    assert any("extra outputs held" in n for n in result.notes)


def test_external_data_models(tmp_path):
    orig, rw = primitive_attention_pair()
    paths = []
    for model, name in ((orig, "orig"), (rw, "rw")):
        path = tmp_path / name / f"{name}.onnx"
        path.parent.mkdir()
        onnx.save(
            model, path, save_as_external_data=True, location=f"{name}.data", size_threshold=0
        )
        paths.append(path)
    assert (tmp_path / "orig" / "orig.data").stat().st_size > 10_000
    result = validation.validate(*paths)
    assert result.passed and len(result.attentions) == 1


def _rewrite_like_parser() -> argparse.ArgumentParser:
    """What ``pasa-onnx rewrite IN -o OUT --validate`` adds to its own parser."""
    p = argparse.ArgumentParser()
    p.add_argument("--validate", action="store_true")
    add_validation_options(p)
    return p


def test_rewrite_validate_hook(tmp_path, capsys):
    good = save_pair(primitive_attention_pair(), tmp_path, "good")
    bad = save_pair(primitive_attention_pair(wrong_scale_layer=0), tmp_path, "bad")
    argv = ["--validate", "-q", "--report", str(tmp_path / "r.md")]
    args = _rewrite_like_parser().parse_args(argv)
    assert run_validation(*good, args) == 0
    assert (tmp_path / "r.md").read_text().startswith("### ✅")
    with pytest.raises(ValidationFailed, match="attention 'attn_0'"):
        run_validation(*bad, args)
    assert (tmp_path / "r.md").read_text().startswith("### ❌")
    capsys.readouterr()
