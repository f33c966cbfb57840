"""Pairing by the naming contract, and what happens when a rewrite breaks it."""

from __future__ import annotations

from validation_models import primitive_attention_pair

import pasa_onnx.validation as validation


def _rename_tensor(model, old: str, new: str) -> None:
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]


def test_attention_without_twin_is_noted_not_failed():
    orig, rw = primitive_attention_pair(n_layers=2)
    _rename_tensor(rw, "l1_attn_out", "pasa_y_1")  # breaks the naming contract for layer 1
    result = validation.validate(orig, rw)
    by_node = {a.node: a for a in result.attentions}
    assert by_node["attn_0"].within_tolerance is True
    assert by_node["attn_1"].within_tolerance is None and by_node["attn_1"].vs_original is None
    assert by_node["attn_1"].max_abs_score is not None  # forensics still ran
    assert any("'attn_1': no tensor 'pasa_y_1' in the original graph" in n for n in result.notes)
    assert result.passed  # the graph outputs still agree


def test_output_missing_from_rewrite_fails():
    orig, rw = primitive_attention_pair()
    keep = [o for o in rw.graph.output if o.name != "logits"]
    del rw.graph.output[:]
    rw.graph.output.extend(keep)
    result = validation.validate(orig, rw)
    logits = next(o for o in result.outputs if o.name == "logits")
    assert not logits.within_tolerance and logits.note == "missing from the rewritten model"
    assert not result.passed
    assert result.failures() == ["output 'logits' (missing from the rewritten model)"]


def test_model_handed_over_as_file_when_large(monkeypatch):
    """Past the in-memory limit the model reaches onnxruntime as a file with external data."""
    monkeypatch.setattr(validation, "_IN_MEMORY_LIMIT", 0)
    saved = []
    real_save = validation.onnx.save

    def spy(model, path, **kw):
        saved.append((path, kw.get("save_as_external_data")))
        return real_save(model, path, **kw)

    monkeypatch.setattr(validation.onnx, "save", spy)
    orig, rw = primitive_attention_pair()
    result = validation.validate(orig, rw)
    assert result.passed
    assert len(saved) == 3 and all(external for _, external in saved)
