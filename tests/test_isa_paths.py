"""Every instruction-set path of the kernel runs the numerics tests.

The library picks its path once per process, when it loads (the best the CPU supports, or the one
``PASA_ONNX_ISA`` names). This process runs the suite on the default path; the test below reruns
a numerics subset in a fresh process for every other path the CPU supports. CI that wants a
whole run on one path sets ``PASA_ONNX_ISA`` for the entire pytest invocation. Child processes
run from the tests folder so that they import the same installed package as this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pasa_onnx.numerics import (
    BFLOAT16,
    attention_emulated,
    attention_golden,
    bf16_split,
    error_metrics,
    split_products,
)
from pasa_onnx.runtime import isa_info

TESTS = Path(__file__).resolve().parent
# Kernel-vs-emulation and kernel-vs-float64 checks covering every precision mode, element type,
# masks, causal/window geometry, GQA, fully masked rows, fp32 tile fallback and NaN propagation.
SUBSET = [
    "test_op_basics.py",
    "test_conformance.py",
    "test_numerics_stress.py::test_fully_masked_rows_and_blocks",
    "test_numerics_stress.py::test_masked_key_rows_holding_garbage",
    "test_numerics_stress.py::test_spread_keys_overflow_falls_back_to_fp32_tiles",
    "test_numerics_paper.py::test_paper_grid[uniform-30-5]",
    "test_numerics_paper.py::test_paper_grid[normal-20-20]",
    "test_bad_input.py",
]


def test_library_reports_its_selection():
    info = isa_info()
    assert set(info) == {"active", "supported", "known", "error"}
    assert info["error"] == ""
    assert info["supported"][-1] == "portable"
    assert set(info["supported"]) <= set(info["known"])
    assert info["active"] in info["supported"]
    # unforced, the library runs the best path the CPU has
    assert info["active"] == (os.environ.get("PASA_ONNX_ISA") or info["supported"][0])


def _isa_info_in_child(isa: str) -> dict:
    """isa_info() of a fresh process started with PASA_ONNX_ISA=isa (the library dispatches
    once, when it loads)."""
    code = "import json, pasa_onnx.runtime as r; print(json.dumps(r.isa_info()))"
    env = dict(os.environ, PASA_ONNX_ISA=isa)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=TESTS
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize("isa", ["avx512bf16", "avx512", "avx2", "portable"])
def test_forcing_a_supported_path_makes_it_active(isa):
    if isa not in isa_info()["supported"]:
        pytest.skip(f"this CPU does not run the {isa} path")
    info = _isa_info_in_child(isa)
    assert (info["active"], info["error"]) == (isa, "")


def test_forcing_an_unknown_path_is_reported():
    info = _isa_info_in_child("sparc")
    assert "PASA_ONNX_ISA=sparc" in info["error"] and "not a known path" in info["error"]


def _other_paths() -> list[str]:
    info = isa_info()
    return [isa for isa in info["supported"] if isa != info["active"]]


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["amx", "avx512bf16", "avx512", "avx2", "portable"])
def test_numerics_subset_on_each_path(isa):
    if os.environ.get("PASA_ONNX_ISA_CHILD"):
        pytest.skip("already inside a per-path run")
    if isa not in isa_info()["supported"]:
        pytest.skip(f"this CPU does not run the {isa} path")
    if isa not in _other_paths():
        pytest.skip(f"{isa} is this process's path: the main run covers it")
    env = dict(os.environ, PASA_ONNX_ISA=isa, PASA_ONNX_ISA_CHILD="1")
    args = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
    args += [str(TESTS / s) for s in SUBSET] + [str(TESTS / "test_isa_paths.py")]
    out = subprocess.run(args, env=env, capture_output=True, text=True, cwd=TESTS)
    assert out.returncode == 0, f"{isa} path:\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}"


@pytest.mark.parametrize("dtype", [np.float16, BFLOAT16])
def test_paths_agree_to_rounding(rng, tmp_path, dtype):
    """The paths run one algorithm: each output is the emulation of its products to float
    rounding (for bf16 inputs avx512bf16 runs P·V on exact bf16 products: it differs by
    summation order only). The amx path's fp16 products are split bf16 terms: its scores round
    differently now and then, and an output there can move by several of its ulps, so it is held
    to its own emulation (amx_products), the other paths to the FMA products' one."""
    q = (rng.standard_normal((1, 4, 200, 64)) + 3).astype(dtype)
    k = (rng.standard_normal((1, 2, 260, 64)) + 3).astype(dtype)
    v = rng.standard_normal((1, 2, 260, 64)).astype(dtype)
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, q=q.astype(np.float32), k=k.astype(np.float32), v=v.astype(np.float32))
    dt = "BFLOAT16" if dtype == BFLOAT16 else "np.float16"
    outputs = {}
    for isa in isa_info()["supported"]:
        code = (
            "import sys, numpy as np; sys.path.insert(0, sys.argv[1]);"
            "from conftest import run_pasa; from pasa_onnx.numerics import BFLOAT16;"
            "d = np.load(sys.argv[2]);"
            f"t = {{n: d[n.lower()].astype({dt}) for n in 'QKV'}};"
            "y = run_pasa(t, is_causal=1);"
            "np.save(sys.argv[3], y.astype(np.float32))"
        )
        dest = tmp_path / f"{isa}.npy"
        env = dict(os.environ, PASA_ONNX_ISA=isa)
        subprocess.run(
            [sys.executable, "-c", code, str(TESTS), str(inputs), str(dest)],
            env=env,
            check=True,
            cwd=TESTS,
        )
        outputs[isa] = np.load(dest).astype(np.float64)
    emulation = {
        amx: attention_emulated(q, k, v, is_causal=True, amx_products=amx).astype(np.float64)
        for amx in (False, True)
    }
    tol = 2e-3 if dtype == np.float16 else 1.6e-2  # about one output ulp near 1
    for isa, y in outputs.items():
        assert np.abs(y - emulation[isa == "amx"]).max() <= tol, isa


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sparc", "not a known path"),
        ("amx", None),
        ("avx512bf16", None),
        ("avx512", None),
        ("avx2", None),
        ("portable", None),
    ],
)
def test_forcing_a_path_the_cpu_lacks_fails_with_the_reason(value, message):
    if message is None:
        if value in isa_info()["supported"]:
            pytest.skip(f"this CPU runs {value}")
        message = "this CPU lacks"
    code = (
        "import numpy as np, sys; sys.path.insert(0, sys.argv[1]);"
        "from conftest import run_pasa;"
        "x = np.ones((1, 1, 4, 8), np.float16);"
        "run_pasa({'Q': x, 'K': x, 'V': x})"
    )
    env = dict(os.environ, PASA_ONNX_ISA=value)
    out = subprocess.run(
        [sys.executable, "-c", code, str(TESTS)], env=env, capture_output=True, text=True, cwd=TESTS
    )
    assert out.returncode != 0
    assert f"PASA_ONNX_ISA={value}" in out.stderr and message in out.stderr


def _run_on(isa: str, feeds: dict[str, np.ndarray], tmp_path: Path, **attrs) -> np.ndarray:
    """run_pasa in a child process on one forced path (feeds of one element type)."""
    dtype = next(iter(feeds.values())).dtype
    dt = "BFLOAT16" if dtype == BFLOAT16 else f"np.{dtype.name}"
    inputs, dest = tmp_path / f"in_{isa}.npz", tmp_path / f"out_{isa}.npy"
    np.savez(inputs, **{n.lower(): t.astype(np.float32) for n, t in feeds.items()})
    code = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]);"
        "from conftest import run_pasa; from pasa_onnx.numerics import BFLOAT16;"
        "d = np.load(sys.argv[2]);"
        f"t = {{n: d[n.lower()].astype({dt}) for n in {sorted(feeds)!r}}};"
        f"y = run_pasa(t, **{attrs!r});"
        "np.save(sys.argv[3], y.astype(np.float32))"
    )
    env = dict(os.environ, PASA_ONNX_ISA=isa)
    subprocess.run(
        [sys.executable, "-c", code, str(TESTS), str(inputs), str(dest)],
        env=env,
        check=True,
        cwd=TESTS,
    )
    return np.load(dest).astype(np.float64)


def test_bf16_split_is_exact_for_half_values_and_close_for_float(rng):
    x16 = (rng.standard_normal(4096) * np.exp2(rng.integers(-20, 15, 4096))).astype(np.float16)
    hi, lo = bf16_split(x16.astype(np.float32))
    assert np.array_equal(hi.astype(np.float64) + lo, x16.astype(np.float64))
    assert np.array_equal(hi, hi.astype(BFLOAT16).astype(np.float32))  # both terms are bf16 values
    assert np.array_equal(lo, lo.astype(BFLOAT16).astype(np.float32))
    xb = rng.standard_normal(4096).astype(BFLOAT16).astype(np.float32)
    assert not bf16_split(xb)[1].any()  # bf16 values: a single term
    x32 = rng.standard_normal(4096).astype(np.float32)
    hi, lo = bf16_split(x32)
    assert np.all(np.abs(x32 - (hi.astype(np.float64) + lo)) <= np.exp2(-16) * np.abs(x32))
    # fp16 queries against float32 keys: three products stay far below fp16 score rounding.
    q = (rng.standard_normal((64, 128)) * 4 + 10).astype(np.float16).astype(np.float32)
    kt = rng.standard_normal((128, 96)).astype(np.float32)
    exact = q.astype(np.float64) @ kt.astype(np.float64)
    rel = np.sqrt(np.mean((split_products(q, kt) - exact) ** 2) / np.mean(exact**2))
    assert rel < 2e-5


@pytest.mark.parametrize("dtype", [np.float16, BFLOAT16])
@pytest.mark.parametrize("precision", ["half", "paper"])
def test_amx_path_matches_its_split_product_emulation(rng, tmp_path, dtype, precision):
    """The amx path against the emulation of its own products (split_products), as the paper
    grid holds the other paths to theirs; odd sizes exercise partial tiles and padding."""
    if "amx" not in isa_info()["supported"]:
        pytest.skip("this CPU or OS does not run the amx path (no AMX-BF16 tiles granted)")
    q = (rng.standard_normal((1, 3, 149, 80)) * 2 + 5).astype(dtype)
    k = (rng.standard_normal((1, 3, 301, 80)) * 2 + 5).astype(dtype)
    v = (rng.standard_normal((1, 3, 301, 48)) + 1).astype(dtype)
    feeds = {"Q": q, "K": k, "V": v}
    for causal in (0, 1):
        y = _run_on("amx", feeds, tmp_path, is_causal=causal, precision=precision)
        emu = attention_emulated(
            q, k, v, precision=precision, is_causal=bool(causal), amx_products=True
        )
        gold = attention_golden(q, k, v, is_causal=bool(causal))
        err, emu_err = error_metrics(y, gold, v), error_metrics(emu, gold, v)
        assert err.nonfinite == 0
        diff = error_metrics(y, emu.astype(np.float64), v)
        assert diff.rel_rmse <= 0.35 * emu_err.rel_rmse + 1e-6, (causal, diff, emu_err)
        assert abs(err.rel_rmse - emu_err.rel_rmse) <= 0.05 * emu_err.rel_rmse + 1e-7
