"""The library loads, registers ai.pasa::PasaAttention, and matches the float64 golden."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import run_pasa

import pasa_onnx
from pasa_onnx.numerics import BFLOAT16, attention_emulated, attention_golden, error_metrics
from pasa_onnx.runtime import isa_info


def test_library_path_is_absolute_file():
    path = pasa_onnx.library_path()
    assert os.path.isabs(path) and os.path.isfile(path)


def test_library_exports_only_registration_and_its_queries():
    import subprocess

    out = subprocess.run(
        ["nm", "-D", "--defined-only", pasa_onnx.library_path()], capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.skip("nm not available")
    symbols = [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]
    assert sorted(symbols) == ["PasaOnnxBuildInfo", "PasaOnnxIsaInfo", "RegisterCustomOps"]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, BFLOAT16])
@pytest.mark.parametrize("causal", [0, 1])
def test_matches_golden_and_emulation(rng, dtype, causal):
    q = (rng.standard_normal((2, 4, 150, 32)) + 1).astype(dtype)
    k = (rng.standard_normal((2, 2, 170, 32)) + 1).astype(dtype)
    v = rng.standard_normal((2, 2, 170, 32)).astype(dtype)
    y = run_pasa({"Q": q, "K": k, "V": v}, is_causal=causal)
    assert y.dtype == dtype and y.shape == (2, 4, 150, 32)
    gold = attention_golden(q, k, v, is_causal=causal)
    # The emulation of the path that ran: on an AMX CPU the amx path's fp16 score products go
    # through the exact bf16 split, which can put S on the other side of a half rounding
    # boundary than fp32 FMA products do (on the lent Xeon: 2.4e-3 from the FMA emulation).
    amx = isa_info()["active"] == "amx"
    emu = attention_emulated(q, k, v, is_causal=causal, amx_products=amx)
    tol = {np.float16: 2e-3, np.float32: 1e-5}.get(dtype, 2e-2)
    assert error_metrics(y, gold, v).rel_rmse < tol
    # Kernel and emulation round at the same points: a few output ulps apart at most.
    ulps = {np.float16: 2e-3, np.float32: 1e-5}.get(dtype, 2e-2)
    assert np.abs(y.astype(np.float64) - emu.astype(np.float64)).max() < ulps


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_threads_do_not_change_results(rng, threads):
    q = (rng.standard_normal((2, 6, 300, 64)) + 2).astype(np.float16)
    k = (rng.standard_normal((2, 3, 300, 64)) + 2).astype(np.float16)
    v = rng.standard_normal((2, 3, 300, 64)).astype(np.float16)
    feeds = {"Q": q, "K": k, "V": v}
    single = run_pasa(feeds, threads=1, is_causal=1)
    multi = run_pasa(feeds, threads=threads, is_causal=1)
    assert np.array_equal(single, multi)


@pytest.mark.parametrize("sq", [1, 3, 300])
def test_block_q_does_not_change_results(rng, sq):
    # Tiles of any height run the same per-row arithmetic (and decode-sized problems the same
    # row-major path): outputs are bit-identical.
    q = (rng.standard_normal((1, 4, sq, 40)) + 2).astype(np.float16)
    k = (rng.standard_normal((1, 2, 330, 40)) + 2).astype(np.float16)
    v = rng.standard_normal((1, 2, 330, 40)).astype(np.float16)
    feeds = {"Q": q, "K": k, "V": v}
    ref = run_pasa(feeds, is_causal=1)
    for block_q in (1, 7, 64, 128):
        assert np.array_equal(run_pasa(feeds, is_causal=1, block_q=block_q), ref), block_q


@pytest.mark.parametrize("dtype", [np.float16, np.float32, BFLOAT16])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("sq", [1, 2, 4])
@pytest.mark.parametrize(("hq", "hkv"), [(3, 3), (6, 3), (8, 1)])
def test_decode_reads_keys_in_place_with_the_same_bits(rng, dtype, masked, sq, hq, hkv):
    # Decode-sized problems read K and V in place (no prepared fp32 copy); with GQA one tile
    # holds all heads of a group. With block_q=1 (and sq >= 2) the same problem takes the
    # prepared, per-head path. Head size 24 has a tail past the vector width, 330 keys a partial
    # block; the mask invalidates keys 140-149, so that block is prepared while the others are
    # read in place.
    q = (rng.standard_normal((2, hq, sq, 24)) + 2).astype(dtype)
    k = (rng.standard_normal((2, hkv, 330, 24)) + 2).astype(dtype)
    v = rng.standard_normal((2, hkv, 330, 32)).astype(dtype)
    feeds = {"Q": q, "K": k, "V": v}
    if masked:
        mask = np.ones((1, 1, sq, 330), dtype=bool)
        mask[..., 140:150] = False
        feeds["attn_mask"] = mask
    direct = run_pasa(feeds, is_causal=1)
    if sq > 1:
        prepared = run_pasa(feeds, is_causal=1, block_q=1)
        assert np.array_equal(direct.view(np.uint8), prepared.view(np.uint8))
    emu = attention_emulated(q, k, v, attn_mask=feeds.get("attn_mask"), is_causal=True)
    tol = {np.float16: 2e-3, np.float32: 1e-5}.get(dtype, 2e-2)
    assert np.abs(direct.astype(np.float64) - emu.astype(np.float64)).max() < tol
    threaded = run_pasa(feeds, is_causal=1, threads=3)
    assert np.array_equal(threaded.view(np.uint8), direct.view(np.uint8))


@pytest.mark.parametrize("precision", ["half", "paper", "float"])
@pytest.mark.parametrize("sq", [1, 4, 70])
def test_gqa_per_head_mask_with_past(rng, precision, sq):
    # Decode-sized queries (row-major K'), per-head masks (heads of a GQA group that do not share
    # shifted key blocks), a past cache and partial key blocks, against the emulation.
    b, hq, hkv, past, d = 2, 4, 2, 150, 24
    q = (rng.standard_normal((b, hq, sq, d)) + 1).astype(np.float16)
    k = (rng.standard_normal((b, hkv, sq, d)) + 1).astype(np.float16)
    v = rng.standard_normal((b, hkv, sq, d)).astype(np.float16)
    pk = (rng.standard_normal((b, hkv, past, d)) + 1).astype(np.float16)
    pv = rng.standard_normal((b, hkv, past, d)).astype(np.float16)
    mask = rng.random((b, hq, sq, past + sq)) < 0.8
    mask[:, 1, :, :40] = False  # head 1 differs from head 0 of its group
    feeds = {"Q": q, "K": k, "V": v, "attn_mask": mask, "past_key": pk, "past_value": pv}
    y = run_pasa(feeds, precision=precision, is_causal=1)
    emu = attention_emulated(q, k, v, mask, pk, pv, precision=precision, is_causal=1)
    assert np.abs(y.astype(np.float64) - emu.astype(np.float64)).max() < 4e-3


def test_bool_mask_on_shapeless_inputs_loads_and_runs():
    # Issue #15 D2: with no shapes to infer from, onnxruntime gave Y the element type of the
    # last open-typed input (the bool mask) and session creation failed; Y takes Q's type.
    from onnx import TensorProto, helper

    node = helper.make_node("PasaAttention", ["Q", "K", "V", "M"], ["Y"], domain="ai.pasa")
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT16, None) for n in "QKV"]
    inputs.append(helper.make_tensor_value_info("M", TensorProto.BOOL, None))
    out = helper.make_tensor_value_info("Y", TensorProto.FLOAT16, None)
    graph = helper.make_graph([node], "g", inputs, [out])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("ai.pasa", 1)]
    )
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 4, 8)).astype(np.float16) for _ in range(3))
    mask = np.tril(np.ones((4, 4), dtype=bool))
    sess = pasa_onnx.inference_session(model)
    (y,) = pasa_onnx.run(sess, {"Q": q, "K": k, "V": v, "M": mask})
    expected = run_pasa({"Q": q, "K": k, "V": v, "attn_mask": mask})
    assert y.dtype == np.float16 and y.shape == (1, 2, 4, 8)
    np.testing.assert_array_equal(y, expected)
