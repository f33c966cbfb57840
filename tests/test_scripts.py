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


def test_score_accumulation_accuracy_benchmark_runs(tmp_path):
    out = tmp_path / "acc.json"
    args = ["--cases", "2", "--seq", "160", "--json", str(out)]
    table = _run(str(ROOT / "benchmarks" / "score_accum_accuracy.py"), *args)
    rows = json.loads(out.read_text())
    assert len(rows) == 2 and "non-finite outputs with fp16 sums: 0" in table
    assert all(r["gpu_half_sums"] >= r["gpu_float_sums"] > 0 for r in rows)


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


def _ncu_source_block(kernel: str, body: list[tuple[str, int, int, int]]) -> str:
    """One kernel block of ncu's source-page CSV: (SASS, executions, samples, long_sb samples)."""
    head = '"Address","Source","Warp Stall Sampling (All Samples)","Instructions Executed",'
    head += '"stall_long_sb","stall_wait","stall_long_sb (Not Issued)"'
    rows = [f'"Kernel Name","{kernel}",', head]
    for i, (sass, ex, samples, long_sb) in enumerate(body):
        stalls = f'"{long_sb}","{samples - long_sb}","0"'
        rows.append(f'"0x{i:04x}","{sass}","{samples}","{ex:,}",{stalls}')
    return "\n".join(rows)


def test_ncu_summary_ranks_regions_by_samples(tmp_path):
    loop = [("LDGSTS.E.128 [R2], desc[UR4][R4.64]", 4096, 10, 0)] * 3
    wait = [("@!P0 BRA 0x100", 1024, 300, 297), ("SYNCS.PHASECHK P0, [UR6]", 1024, 20, 20)]
    tail = [("EXIT", 1, 1, 0)]
    block = _ncu_source_block("void k<128>(Params)", loop + wait + tail)
    other = _ncu_source_block("void other(Params)", [("FFMA R1, R2, R3, R4", 8, 5, 0)])
    path = tmp_path / "source.csv"
    path.write_text("\n".join([block, block, other]))  # the export repeats blocks
    out = _run(str(ROOT / "benchmarks" / "ncu_summary.py"), str(path), "--kernel", "k<128>")
    lines = out.splitlines()
    assert lines[0] == "== void k<128>(Params)" and out.count("== ") == 1
    assert "6 instructions, 14,337 executed, 351 samples" in lines[1]
    # the mbarrier wait (2 instructions run 1024 times) holds 320 of the 351 samples
    top = lines[3].split()
    assert top[0] == "91.2%" and top[2:4] == ["2", "1,024"] and "long_sb:99%" in lines[3]
    assert lines[4].split()[0] == "8.5%" and "LDGSTS:3" in lines[4]


def test_ncu_summary_names_the_file_it_cannot_read(tmp_path):
    bad = tmp_path / "details.csv"
    bad.write_text('"Kernel Name","k",\n"ID","Metric Name"\n"0","Duration"\n')
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ncu_summary.py"), str(bad)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert str(bad) in done.stderr and "--set full" in done.stderr
