"""Scripts and benchmarks run as documented: the demo model regenerates bit for bit, the
benchmark scripts produce their tables and JSON, the CLI reports its version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pasa_onnx

ROOT = Path(__file__).resolve().parent.parent


def _run(*argv: str, cwd: Path = ROOT, timeout: int = 600) -> str:
    done = subprocess.run(
        [sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_demo_model_regenerates_bit_for_bit(tmp_path):
    out = tmp_path / "demo.onnx"
    _run(str(ROOT / "scripts" / "make_demo_model.py"), "--output", str(out))
    shipped = ROOT / "examples" / "models" / "demo_fp16.onnx"
    assert out.read_bytes() == shipped.read_bytes()
    assert shipped.stat().st_size <= 5 * 1024 * 1024


def test_version():
    out = _run("-m", "pasa_onnx", "--version")
    assert out.strip() == f"pasa-onnx {pasa_onnx.__version__}"


def test_paper_random_benchmark_runs(tmp_path):
    out = tmp_path / "paper.json"
    args = ["--heads", "2", "--kv-heads", "1", "--seq", "192", "--json", str(out)]
    table = _run(str(ROOT / "benchmarks" / "paper_random.py"), *args)
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 32 and "kernel non-finite outputs: 0" in table
    assert all(r["kernel_half_rel_rmse"] <= r["kernel_paper_rel_rmse"] for r in rows)


def test_attention_benchmark_runs(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--shapes", "2x32", "--seq", "128", "--causal", "0,1", "--decode", "", "--threads", "1"]
    args += [
        "--reps",
        "1",
        "--min-time",
        "0.001",
        "--variants",
        "pasa,mha_fp32",
        "--json",
        str(out),
    ]
    _run(str(ROOT / "benchmarks" / "bench_attention.py"), *args)
    assert json.loads(out.read_text())


def test_fma_ceiling_benchmark_runs(tmp_path):
    out = tmp_path / "fma.json"
    args = ["--threads", "1,2", "--reps", "1", "--iters", "2000000", "--json", str(out)]
    table = _run(str(ROOT / "benchmarks" / "fma_ceiling.py"), *args)
    rows = json.loads(out.read_text())["results"]
    assert [r["threads"] for r in rows] == [1, 2] and "vs 1 thread" in table
    assert all(r["per_thread_median"] > 0 for r in rows)
    assert rows[0]["scaling_bound"] == 1.0
