"""Generated validation inputs respect the model's own relations: genai's
``total_sequence_length = past + sequence`` and its symbolic head size (from the projection
weights or the head-split Reshape), image channels and patch-grid sizes from the first Conv's
weights, ``--dim past_sequence_length=0`` (the prompt step); and when the original model itself
fails at the generated shape, one line that says so and names the dims to bind (exit 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from fixtures.support import run_original
from onnx import TensorProto, helper, numpy_helper

import pasa_onnx
from pasa_onnx.cli import main as cli_main
from pasa_onnx.errors import PasaError
from pasa_onnx.inputs import generate_inputs, parse_dims

TOOLS = Path(__file__).parent / "fixtures" / "tools"
GENAI = ["genai_llama_cpu_fp32", "genai_llama_cpu_fp16"]  # GroupQueryAttention, MHA + Reshape


@pytest.mark.parametrize("key", GENAI)
@pytest.mark.parametrize("past", [None, 0, 3])
def test_genai_inputs_follow_total_and_head_size(key: str, past: int | None) -> None:
    model = onnx.load(TOOLS / f"{key}.onnx")
    dims = {} if past is None else {"past_sequence_length": past}
    mi = generate_inputs(model, dims)
    p, s = mi.dims["past_sequence_length"], mi.dims["sequence_length"]
    if past is None or past > 0:  # a past takes one new token per row (the decode step)
        assert s == 1
    else:
        assert s == 16
    assert mi.dims["total_sequence_length"] == p + s
    assert mi.feeds["attention_mask"].shape == (2, p + s)
    assert mi.dims["kv_cache_dim"] == 16 and "kv_cache_dim" not in mi.default_dims
    assert mi.feeds["past_key_values.0.key"].shape == (2, 2, p, 16)
    run_original(model, mi.feeds)  # the original accepts them


@pytest.mark.parametrize("key", GENAI)
def test_validate_genai_prompt_step_with_zero_past(key: str, tmp_path: Path) -> None:
    original = TOOLS / f"{key}.onnx"
    rewritten = tmp_path / "rw.onnx"
    onnx.save(pasa_onnx.rewrite(onnx.load(original))[0], rewritten)
    result = pasa_onnx.validate(original, rewritten, dims=["past_sequence_length=0"])
    assert result.passed


def test_zero_is_a_valid_past_length_only() -> None:
    assert parse_dims(["past_sequence_length=0"]) == {"past_sequence_length": 0}
    with pytest.raises(PasaError, match=r"^--dim sequence_length=0: the value must be at least 1"):
        parse_dims(["sequence_length=0"])
    with pytest.raises(PasaError, match=r"^--dim past_sequence_length=-1: the value must be"):
        parse_dims(["past_sequence_length=-1"])


def _vision_model(patch: bool) -> onnx.ModelProto:
    """pixel_values [batch, num_channels, height, width] -> Conv(3 -> 8 channels); a patch Conv
    (4x4, stride 4) adds a position table of 4x4 patches + a class slot, as ViT does."""
    rng = np.random.default_rng(0)
    kernel = 4 if patch else 3
    w = numpy_helper.from_array(rng.standard_normal((8, 3, kernel, kernel)).astype(np.float32), "w")
    inits = [w]
    conv_attrs = {"strides": [4, 4]} if patch else {"pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["pixel_values", "w"], ["c"], **conv_attrs)]
    out = "c"
    if patch:
        inits += [
            numpy_helper.from_array(rng.standard_normal((1, 17, 8)).astype(np.float32), "pos"),
        ]
        nodes += [
            helper.make_node("Reshape", ["c", "shape"], ["r"]),
            helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
            helper.make_node("Slice", ["pos", "one", "end", "one"], ["pos16"]),
            helper.make_node("Add", ["t", "pos16"], ["y"]),
        ]
        inits += [
            numpy_helper.from_array(np.array([0, 8, -1], np.int64), "shape"),
            numpy_helper.from_array(np.array([1], np.int64), "one"),
            numpy_helper.from_array(np.array([17], np.int64), "end"),
        ]
        out = "y"
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info(
                "pixel_values", TensorProto.FLOAT, ["batch", "num_channels", "height", "width"]
            )
        ],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("patch", [False, True])
def test_image_channels_and_patch_grid_from_the_first_conv(patch: bool) -> None:
    model = _vision_model(patch)
    mi = generate_inputs(model)
    assert mi.dims["num_channels"] == 3 and "num_channels" not in mi.default_dims
    if patch:  # 4x4 patches of 4 pixels
        assert (mi.dims["height"], mi.dims["width"]) == (16, 16)
        assert not {"height", "width"} & mi.default_dims
    run_original(model, mi.feeds)


def _fixed_length_model() -> onnx.ModelProto:
    """x [batch, sequence, 8] + a [1, 5, 8] table: only sequence = 5 runs."""
    table = numpy_helper.from_array(np.ones((1, 5, 8), np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "table"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 8])],
        [table],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_original_failing_at_the_generated_shape_names_the_dims(tmp_path: Path, capsys) -> None:
    path = tmp_path / "fixed.onnx"
    onnx.save(_fixed_length_model(), path)
    with pytest.raises(PasaError) as exc:
        pasa_onnx.validate(path, path)
    message = str(exc.value)
    assert message.startswith(
        "the original model itself fails on the generated inputs (batch=2, sequence=16), so "
        "nothing was compared: "
    )
    assert message.endswith("; set batch, sequence with --dim (e.g. --dim batch=VALUE)")
    assert "\n" not in message
    assert cli_main(["validate", str(path), str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the original model itself fails" in err
    # bound to what the model accepts, it runs
    assert cli_main(["validate", str(path), str(path), "-q", "--dim", "sequence=5"]) != 2
