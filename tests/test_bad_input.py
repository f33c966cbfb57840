"""Bad input reaches the user as an onnxruntime error naming the op, the node, the input and
what was expected -- never a crash, never a silent wrong number."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import pasa_model, run_pasa
from onnx import TensorProto, helper

import pasa_onnx

F16 = np.float16


def _qkv(b=1, hq=4, hkv=2, sq=8, skv=10, d=16, dv=16, dtype=F16):
    rng = np.random.default_rng(0)
    return {
        "Q": rng.standard_normal((b, hq, sq, d)).astype(dtype),
        "K": rng.standard_normal((b, hkv, skv, d)).astype(dtype),
        "V": rng.standard_normal((b, hkv, skv, dv)).astype(dtype),
    }


def _fails(inputs, match, n_outputs=1, **attrs):
    with pytest.raises(Exception, match=match) as info:
        run_pasa(inputs, n_outputs=n_outputs, **attrs)
    text = str(info.value)
    assert "PasaAttention node 'attn0'" in text, text
    return text


def test_mismatched_head_sizes():
    x = _qkv()
    x["K"] = x["K"][..., :8].copy()
    _fails(x, r"input 'K' has head size 8 .*expected the query head size 16")


def test_k_and_v_sequence_lengths_differ():
    x = _qkv()
    x["V"] = x["V"][:, :, :7].copy()
    _fails(x, r"'K' \[1,2,10,16\] and 'V' \[1,2,7,16\] have different sequence lengths")


@pytest.mark.parametrize("shape", [(3, 10), (1, 4, 8, 11), (2, 1, 8, 10), (8, 12)])
def test_mask_that_does_not_broadcast(shape):
    x = _qkv()
    x["attn_mask"] = np.ones(shape, dtype=bool)
    _fails(x, r"input 'attn_mask' has shape .*(does not broadcast|last dimension must be)")


def test_query_heads_not_a_multiple_of_kv_heads():
    x = _qkv(hq=5, hkv=2)
    _fails(x, r"query heads \(5\) must be a positive multiple of key/value heads \(2\)")


def test_wrong_element_types():
    x = _qkv()
    x["K"] = x["K"].astype(np.float32)
    _fails(x, r"input 'K' has element type float32; expected float16 like 'Q'")
    y = _qkv(dtype=np.float64)
    _fails(y, r"input 'Q' has element type float64; expected float16, bfloat16 or float32")
    z = _qkv()
    z["attn_mask"] = np.zeros((8, 10), dtype=np.int64)
    _fails(z, r"input 'attn_mask' has element type int64; expected bool or float16")


def test_rank_errors():
    x = _qkv()
    x["Q"] = x["Q"][0].copy()
    _fails(x, r"input 'K' has shape \[1,2,10,16\]; expected rank 3 \[B,S,H\*D\] like 'Q'")
    y = _qkv()
    y["K"] = y["K"][0].copy()
    _fails(y, r"input 'K' has shape \[2,10,16\]; expected rank 4")
    z = _qkv()
    z["Q"] = z["Q"][0, 0].copy()
    _fails(z, r"expected rank 3 \[B,S,H\*D\] or rank 4")


def test_3d_needs_head_counts_and_divisible_hidden():
    x = _qkv()
    x3 = {k: v.transpose(0, 2, 1, 3).reshape(1, v.shape[2], -1) for k, v in x.items()}
    _fails(x3, r"3-D inputs need attributes q_num_heads and kv_num_heads")
    _fails(
        x3, r"hidden size 64; expected a multiple of q_num_heads=5", q_num_heads=5, kv_num_heads=2
    )


def test_empty_sequences():
    x = _qkv(sq=0)
    _fails(x, r"empty input")
    y = _qkv(skv=0)
    _fails(y, r"empty key sequence")


@pytest.mark.parametrize("name", ["Q", "K", "V"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs(name, bad):
    x = _qkv()
    x[name][0, 1, 3, 2] = bad
    _fails(x, rf"input '{name}'.* holds a non-finite value at \[batch=0, head=1, seq=3, dim=2\]")


@pytest.mark.parametrize("hq", [2, 4])  # one head per key head, or GQA group tiles
@pytest.mark.parametrize("name", ["K", "V"])
def test_non_finite_key_in_decode(name, hq):
    # Decode-sized problems read K and V in place; the check is the same.
    x = _qkv(hq=hq, sq=1, skv=300)
    x[name][0, 1, 250, 2] = np.nan
    _fails(x, rf"input '{name}'.* holds a non-finite value at \[batch=0, head=1, seq=250, dim=2\]")


# (heads, queries): one tile per head, which builds only the key blocks it reads; several tiles
# and GQA heads sharing key blocks built in a prepare stage; a decode-sized GQA group tile.
@pytest.mark.parametrize(("hq", "sq"), [(2, 8), (4, 200), (4, 1)])
@pytest.mark.parametrize("name", ["K", "V"])
def test_non_finite_key_outside_every_window_is_still_rejected(name, hq, sq):
    # Key 250 is outside every query's window (|i - r| <= 2, i < sq <= 200). Inputs are checked
    # as they are converted; blocks a tile never reads are checked too, so whether an input is
    # accepted does not depend on how the work is split.
    x = _qkv(hq=hq, sq=sq, skv=300)
    x[name][0, 1, 250, 2] = np.inf
    _fails(
        x,
        rf"input '{name}'.* holds a non-finite value at \[batch=0, head=1, seq=250, dim=2\]",
        left_window_size=2,
        right_window_size=2,
        block_kv=16,
    )


def test_non_finite_additive_mask():
    x = _qkv()
    mask = np.zeros((8, 10), dtype=F16)
    mask[2, 3] = np.inf
    x["attn_mask"] = mask
    _fails(x, r"input 'attn_mask' holds \+inf at flat index 23; expected finite values or -inf")


def test_past_key_without_past_value_and_bad_past_shape():
    x = _qkv()
    x["past_key"] = np.zeros((1, 2, 3, 16), F16)
    _fails(x, r"'past_key' and 'past_value' must be given together", n_outputs=3)
    x["past_value"] = np.zeros((1, 2, 4, 16), F16)
    _fails(x, r"input 'past_value' has shape \[1,2,4,16\]; expected \[1,2,3,16\]", n_outputs=3)


def test_nonpad_out_of_range():
    x = _qkv(b=2)
    x["nonpad_kv_seqlen"] = np.array([10, 11], dtype=np.int64)
    _fails(x, r"'nonpad_kv_seqlen' holds 11 for batch 1; expected a value in \[0, 10\]")


def test_bad_attributes():
    x = _qkv()
    _fails(x, r"attribute precision is 'double'", precision="double")
    _fails(x, r"attribute alpha must be in \[0, 1\]", alpha=1.5)
    _fails(x, r"attribute alpha must be in \[0, 1\]", alpha=-0.25)
    # Paper mode divides by 1 - alpha; half and float take alpha = 1 (their default).
    _fails(x, r"attribute alpha=1 needs precision 'half' or 'float'", alpha=1.0, precision="paper")
    _fails(x, r"block_q/block_kv must be in \[1, 4096\]", block_kv=0)


def test_qk_matmul_output_is_rejected():
    x = _qkv()
    model = pasa_model(x, n_outputs=1)
    node = model.graph.node[0]
    node.output.extend(["", "", "qk"])
    model.graph.output.append(helper.make_tensor_value_info("qk", TensorProto.FLOAT16, None))
    with pytest.raises(Exception, match=r"output 'qk_matmul_output' is not supported"):
        pasa_onnx.inference_session(model)


def test_missing_library_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PASA_ONNX_LIBRARY", str(tmp_path / "nope.so"))
    with pytest.raises(pasa_onnx.PasaError, match=r"custom-op library not found at .*nope.so"):
        pasa_onnx.library_path()
