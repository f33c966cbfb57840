"""Criterion 4 and input handling: generated inputs are valid for every fixture model; --dim,
--seed and .npz errors are one line naming the file or tensor."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from validation_models import onnx_attention_pair, primitive_attention_pair

from pasa_onnx.errors import PasaError
from pasa_onnx.inputs import embedding_rows, generate_inputs, load_npz, parse_dims

FIXTURES = {
    "primitive_fp16": lambda: primitive_attention_pair(vocab=37, max_positions=20),
    "primitive_fp32": lambda: primitive_attention_pair(dtype=np.float32, vocab=5),
    "overflow": lambda: primitive_attention_pair(qk_bias=100.0, head_dim=64),
    "gqa": lambda: onnx_attention_pair(),
}


def _table_rows(model: onnx.ModelProto, name: str) -> int:
    return next(t.dims[0] for t in model.graph.initializer if t.name == name)


@pytest.mark.parametrize("fixture", sorted(FIXTURES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_inputs_are_valid(fixture, seed):
    for model in FIXTURES[fixture]():  # the original and the rewritten model alike
        mi = generate_inputs(model, seed=seed)
        feeds = mi.feeds
        assert set(feeds) == {vi.name for vi in model.graph.input}
        mask = feeds["attention_mask"]
        assert set(np.unique(mask)) <= {0, 1}
        assert mask[0].all() and not mask.all()  # some padding, never in the first sample
        assert mask[:, 0].all()  # no sample is fully padded
        if "input_ids" in feeds:
            ids = feeds["input_ids"]
            assert ids.min() >= 0 and ids.max() < _table_rows(model, "tok_emb")
            assert len(np.unique(ids)) > 1
            pos = feeds["position_ids"]
            assert pos.max() < _table_rows(model, "pos_emb")
            np.testing.assert_array_equal(pos[1], np.arange(pos.shape[1]))
        else:
            x = feeds["hidden_states"]
            assert x.dtype == np.float16 and np.isfinite(x).all() and np.abs(x).max() <= 4
            assert 0.5 < x.astype(np.float64).std() < 1.5


def test_generated_inputs_run_and_respect_dims_and_seed():
    orig, _ = primitive_attention_pair()
    a = generate_inputs(orig, {"batch": 3, "sequence": 7}, seed=5)
    b = generate_inputs(orig, parse_dims(["batch=3", "sequence=7"]), seed=5)
    c = generate_inputs(orig, {"batch": 3, "sequence": 7}, seed=6)
    assert a.feeds["input_ids"].shape == (3, 7) and a.default_dims == set()
    np.testing.assert_array_equal(a.feeds["input_ids"], b.feeds["input_ids"])
    assert not np.array_equal(a.feeds["input_ids"], c.feeds["input_ids"])
    d = generate_inputs(orig)
    assert d.dims == {"batch": 2, "sequence": 16} and d.default_dims == {"batch", "sequence"}


def test_embedding_rows_follows_casts_to_the_table():
    table = numpy_helper.from_array(np.zeros((11, 4), np.float16), "table")
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Cast", ["table"], ["table32"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["table32", "ids32"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[table],
    )
    model = helper.make_model(g)
    assert embedding_rows(model, "ids") == 11
    ids = generate_inputs(model, seed=3).feeds["ids"]
    assert ids.max() < 11 and ids.min() >= 0


@pytest.mark.parametrize(
    "specs, message",
    [
        (["batch"], "--dim 'batch': expected NAME=VALUE"),
        (["batch=two"], "--dim batch=two: the value must be an integer"),
        (["batch=0"], "--dim batch=0: the value must be at least 1"),
    ],
)
def test_bad_dim_specs(specs, message):
    with pytest.raises(PasaError, match="^" + message.replace("(", r"\(")):
        parse_dims(specs)


def test_unknown_dim_names_the_known_ones():
    orig, _ = primitive_attention_pair()
    with pytest.raises(PasaError, match=r"--dim seq: no such symbolic dimension .*batch, "):
        generate_inputs(orig, {"seq": 4})


def test_position_table_too_short_is_an_error():
    orig, _ = primitive_attention_pair(max_positions=8)
    with pytest.raises(PasaError, match="'position_ids': 16 positions .* 8 rows"):
        generate_inputs(orig)


@pytest.fixture
def model_and_npz(tmp_path):
    orig, _ = primitive_attention_pair()
    good = generate_inputs(orig, {"batch": 2, "sequence": 5}).feeds
    return orig, good, tmp_path


def test_npz_round_trip(model_and_npz):
    orig, good, tmp = model_and_npz
    np.savez(tmp / "in.npz", **good)
    mi = load_npz(orig, tmp / "in.npz")
    assert mi.dims == {"batch": 2, "sequence": 5}
    assert all(not i.generated for i in mi.info)


def test_npz_errors_name_file_and_tensor(model_and_npz):
    orig, good, tmp = model_and_npz
    path = tmp / "in.npz"
    with pytest.raises(PasaError, match=f"^{path}: no such inputs file$"):
        load_npz(orig, path)
    np.savez(path, **{k: v for k, v in good.items() if k != "position_ids"})
    with pytest.raises(PasaError, match="no array for graph input 'position_ids'"):
        load_npz(orig, path)
    np.savez(path, **{**good, "input_ids": good["input_ids"].astype(np.int32)})
    with pytest.raises(PasaError, match="'input_ids' has dtype int32, the model expects int64"):
        load_npz(orig, path)
    np.savez(path, **{**good, "input_ids": good["input_ids"][:, :, None]})
    with pytest.raises(PasaError, match="'input_ids' has shape \\[2, 5, 1\\], .* rank 2"):
        load_npz(orig, path)
    np.savez(path, **{**good, "position_ids": good["position_ids"][:, :4]})
    with pytest.raises(PasaError, match="'position_ids' axis 1 is 4 but dimension 'sequence'"):
        load_npz(orig, path)
    path.write_text("not a zip")
    with pytest.raises(PasaError, match="not a readable .npz file"):
        load_npz(orig, path)


def test_sum_dims_and_fused_embedding_tables():
    """``past + 1`` style dims are sums of their parts; EmbedLayerNormalization tables count."""
    vi = helper.make_tensor_value_info
    inputs = [
        vi("input_ids", TensorProto.INT32, ["batch", "sequence"]),
        vi("segment_ids", TensorProto.INT32, ["batch", "sequence"]),
        vi("attention_mask", TensorProto.INT64, ["batch", "past_sequence + sequence"]),
        vi("past_key", TensorProto.FLOAT16, ["batch", 2, "past_sequence", 4]),
        vi("cache_position", TensorProto.INT64, ["past_sequence + 1"]),
    ]
    tables = [
        numpy_helper.from_array(np.zeros((n, 4), np.float32), name)
        for n, name in ((23, "word"), (64, "pos"), (2, "seg"))
    ]
    embed = helper.make_node(
        "EmbedLayerNormalization",
        ["input_ids", "segment_ids", "word", "pos", "seg", "gamma", "beta"],
        ["y", "mask_index"],
        domain="com.microsoft",
    )
    g = helper.make_graph([embed], "g", inputs, [vi("y", TensorProto.FLOAT, None)], tables)
    model = helper.make_model(g)
    assert embedding_rows(model, "input_ids") == 23 and embedding_rows(model, "segment_ids") == 2
    mi = generate_inputs(model, {"sequence": 5, "past_sequence": 3}, seed=1)
    f = mi.feeds
    assert f["attention_mask"].shape == (2, 8) and f["past_key"].shape == (2, 2, 3, 4)
    assert f["cache_position"].shape == (4,)
    assert f["input_ids"].max() < 23 and f["segment_ids"].max() < 2
    assert mi.dims["past_sequence + sequence"] == 8
    d = generate_inputs(model, seed=1)  # defaults: past 8, sequence 16
    assert d.feeds["attention_mask"].shape == (2, 24)
