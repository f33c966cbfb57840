"""PASA's own setting on CUDA: the score product accumulated in fp16
(``PASA_ONNX_CUDA_SCORE_ACCUM=half``, docs/cuda-kernels.md). The variable is read once per
process, so the sessions run in a child process (cuda_score_accum_child.py); the outputs are held
here to ``attention_emulated_gpu(score_accumulation="half")`` where the mode applies (fp16, no
mask, no softcap, the mma.sync kernel), to the float32-accumulation emulation where it does not,
and to float64 attention."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cuda_support import requires_cuda
from test_cuda_flash import _inputs

from pasa_onnx.numerics import BFLOAT16, attention_golden, error_metrics, paper_random_inputs
from pasa_onnx.numerics_gpu import attention_emulated_gpu

pytestmark = requires_cuda()
TESTS = Path(__file__).parent


def _child_env(value: str) -> dict:
    # the child imports pasa_onnx and cuda_support from this checkout, as pytest does here
    path = os.pathsep.join(p for p in (str(TESTS.parent), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PASA_ONNX_CUDA_SCORE_ACCUM=value, PYTHONPATH=path)


def _qkv(rng, b, hq, hkv, sq, skv, d, dtype=np.float16):
    return _inputs(rng, dtype, b, hq, hkv, sq, 0, skv, d)  # test_cuda_flash's: Q, K mean 1


def _partial_sum_overflow(rng):
    # Even keys: +900 in the first 64 columns and -900 in the last 64. With q = 1.5 on rows 3 and
    # 40 the fp16 partial sum passes 65504 after 48 columns while S is about 0: their groups of 16
    # packed rows fall back to fp32 accumulation. (Scores that overflow fp16 themselves: the
    # selftest's "overflow fallback" case, run with PASA_ONNX_CUDA_SCORE_ACCUM=half.)
    q = np.full((1, 1, 64, 128), 0.01, dtype=np.float32)
    q[0, 0, [3, 40]] = 1.5
    k = rng.standard_normal((1, 1, 256, 128)).astype(np.float32)
    k[0, 0, ::2, :64] = 900.0
    k[0, 0, ::2, 64:] = -900.0
    v = rng.standard_normal((1, 1, 256, 128))
    return {"Q": q.astype(np.float16), "K": k.astype(np.float16), "V": v.astype(np.float16)}


def _paper(dist, mean, am):
    q, k, v = paper_random_inputs(dist, mean, am, q_heads=14, kv_heads=2, seq=1407)
    return {"Q": q, "K": k, "V": v}


# name -> (inputs, attributes, whether the fp16-accumulator kernel runs it)
def _cases(rng) -> dict:
    no_shift = {"scale": 1.0, "alpha": 0.0}
    keep = np.arange(300)[None, :] < np.array([300, 201])[:, None]
    return {
        "d64": (_qkv(rng, 2, 4, 4, 300, 300, 64), {}, True),
        "d128_gqa_causal": (_qkv(rng, 1, 8, 2, 257, 257, 128), {"is_causal": 1}, True),
        "d80_causal": (_qkv(rng, 1, 2, 2, 130, 130, 80), {"is_causal": 1}, True),
        "d256": (_qkv(rng, 1, 2, 2, 70, 150, 256), {}, True),
        "d128_window": (
            _qkv(rng, 1, 4, 4, 400, 400, 128),
            {"left_window_size": 100, "right_window_size": 20},
            True,
        ),
        "paper_normal_30_20": (_paper("normal", 30, 20), {}, True),
        "paper_uniform_30_05": (_paper("uniform", 30, 0.5), {}, True),
        "partial_sum_overflow": (_partial_sum_overflow(rng), no_shift, True),
        "bf16_keeps_fp32": (_qkv(rng, 1, 4, 2, 200, 200, 128, BFLOAT16), {"is_causal": 1}, False),
        "mask_keeps_fp32": (
            {**_qkv(rng, 2, 4, 2, 300, 300, 64), "attn_mask": keep[:, None, None, :]},
            {},
            False,
        ),
    }


def write_inputs(path: Path) -> dict:
    """The cases, their inputs and attributes written to ``path`` for the child (also used by
    scripts/device/cuda_checks.sh to run the child under compute-sanitizer)."""
    cases = _cases(np.random.default_rng(7))
    # npz keeps no bfloat16: those inputs travel as their uint16 bits, named in "bf16"
    arrays = {
        f"{n}/{k}": x.view(np.uint16) if x.dtype == BFLOAT16 else x
        for n, (feeds, _, _) in cases.items()
        for k, x in feeds.items()
    }
    bf16 = [
        f"{n}/{k}"
        for n, (feeds, _, _) in cases.items()
        for k, x in feeds.items()
        if x.dtype == BFLOAT16
    ]
    meta = json.dumps({"attrs": {n: attrs for n, (_, attrs, _) in cases.items()}, "bf16": bf16})
    np.savez(path, cases=np.array(meta), **arrays)
    return cases


@pytest.fixture(scope="module")
def half_mode(tmp_path_factory):
    """The cases, and their outputs from a child process with PASA_ONNX_CUDA_SCORE_ACCUM=half."""
    tmp = tmp_path_factory.mktemp("score_accum")
    cases = write_inputs(tmp / "in.npz")
    env = _child_env("half")
    args = [
        sys.executable,
        str(TESTS / "cuda_score_accum_child.py"),
        str(tmp / "in.npz"),
        str(tmp / "out.npz"),
    ]
    out = subprocess.run(args, env=env, cwd=TESTS, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    outputs = dict(np.load(tmp / "out.npz"))
    for name, (feeds, _, _) in cases.items():  # bfloat16 outputs came as their uint16 bits
        if feeds["Q"].dtype == BFLOAT16:
            outputs[name] = outputs[name].view(BFLOAT16)
    return cases, outputs


@pytest.mark.parametrize("name", list(_cases(np.random.default_rng(7))))
def test_half_mode_matches_its_emulation(half_mode, name):
    cases, outputs = half_mode
    feeds, attrs, applies = cases[name]
    y = outputs[name]
    q, k, v = feeds["Q"], feeds["K"], feeds["V"]
    mask = feeds.get("attn_mask")
    gold = attention_golden(q, k, v, mask, **{a: x for a, x in attrs.items() if a != "alpha"})
    emu = attention_emulated_gpu(
        q, k, v, mask, score_accumulation="half" if applies else "float", **attrs
    )
    err, emu_err = error_metrics(y, gold, v), error_metrics(emu, gold, v)
    assert err.nonfinite == 0, err
    diff = error_metrics(y, emu.astype(np.float64), v)
    # as tests/test_cuda_flash.py: agreement to rounding, and as accurate as the emulation
    assert diff.rel_rmse <= 1.5 * emu_err.rel_rmse + 1e-6, (diff, emu_err)
    assert err.rel_rmse <= 1.25 * emu_err.rel_rmse + 1e-6, (err, emu_err)


def test_half_mode_is_in_effect(half_mode):
    # On the paper's normal data (mean 30, amplitude 20) fp16 partial sums move the scores: the
    # kernel's output sits nearer the fp16-accumulation emulation than the float32 one.
    cases, outputs = half_mode
    feeds, attrs, _ = cases["paper_normal_30_20"]
    q, k, v = feeds["Q"], feeds["K"], feeds["V"]
    y = outputs["paper_normal_30_20"]
    near = error_metrics(
        y, attention_emulated_gpu(q, k, v, score_accumulation="half").astype(np.float64), v
    )
    far = error_metrics(y, attention_emulated_gpu(q, k, v).astype(np.float64), v)
    assert near.rel_rmse < far.rel_rmse, (near, far)


def test_an_unknown_setting_fails_the_session_with_the_variable_named():
    code = (
        "import numpy as np\n"
        "from cuda_support import run_pasa_cuda\n"
        "q = np.zeros((1, 1, 4, 64), np.float16)\n"
        "run_pasa_cuda({'Q': q, 'K': q, 'V': q})\n"
    )
    env = _child_env("double")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=TESTS, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "PASA_ONNX_CUDA_SCORE_ACCUM is 'double'; expected 'float' or 'half'" in out.stderr
