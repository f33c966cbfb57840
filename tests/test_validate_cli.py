"""``pasa-onnx validate`` and ``pasa_onnx.validate``: exit codes 0/1/2, one-line errors that
name the file or tensor, progress and dimension defaults on stderr."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from validation_models import onnx_attention_pair, primitive_attention_pair, save_pair

import pasa_onnx
import pasa_onnx.inputs
from pasa_onnx.cli import main
from pasa_onnx.cli import main as cli_main


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    return (tmp, *save_pair(primitive_attention_pair(), tmp, "m"))


def test_python_api_returns_result(pair):
    _, orig, rw = pair
    result = pasa_onnx.validate(str(orig), str(rw), dims=["sequence=9"], seed=4)
    assert result.passed and result.dims == {"batch": 2, "sequence": 9}
    assert [i.shape for i in result.inputs] == [(2, 9)] * 3
    assert result.failures() == []


def test_python_api_accepts_model_protos_and_arrays():
    orig, rw = onnx_attention_pair()
    x = np.random.default_rng(0).standard_normal((1, 5, 64)).astype(np.float16)
    feeds = {"hidden_states": x, "attention_mask": np.ones((1, 5), np.int64)}
    result = pasa_onnx.validate(orig, rw, inputs=feeds)
    assert result.passed and result.inputs[0].generated is False
    assert len(orig.graph.output) == 1  # the caller's model is not modified


def test_progress_and_default_dims_on_stderr(pair, capsys):
    _, orig, rw = pair
    assert main(["validate", str(orig), str(rw)]) == 0
    captured = capsys.readouterr()
    assert "dims: batch=2 (default; bind with --dim), sequence=16 (default" in captured.err
    for step in (
        "[1/3] the original: running",
        "[2/3] the rewritten model: running",
        "[3/3] the fp32 reference: running",
    ):
        assert step in captured.err
    assert "attention attn_0: max_abs_err" in captured.out
    assert main(["validate", str(orig), str(rw), "-q", "--dim", "batch=1"]) == 0
    assert capsys.readouterr().err == ""


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pasa-onnx: error: "), err
    return err


def test_usage_errors_exit_2(pair, capsys):
    tmp, orig, rw = pair

    def main(argv):  # quiet: stderr then holds nothing but the error
        return cli_main([*argv, "-q"])

    assert main(["validate", str(tmp / "nope.onnx"), str(rw)]) == 2
    assert "nope.onnx: no such file (original model)" in _one_line_error(capsys)
    junk = tmp / "junk.onnx"
    junk.write_bytes(b"\x00not onnx")
    assert main(["validate", str(orig), str(junk)]) == 2
    assert "junk.onnx: cannot load the rewritten model as ONNX" in _one_line_error(capsys)
    assert main(["validate", str(orig), str(rw), "--dim", "batch"]) == 2
    assert "--dim 'batch': expected NAME=VALUE" in _one_line_error(capsys)
    assert main(["validate", str(orig), str(rw), "--report", str(tmp / "r.pdf")]) == 2
    assert "unknown report format" in _one_line_error(capsys)
    np.savez(tmp / "in.npz", input_ids=np.zeros((1, 3), np.int64))
    assert main(["validate", str(orig), str(rw), "--inputs", str(tmp / "in.npz")]) == 2
    assert "in.npz: no array for graph input 'attention_mask'" in _one_line_error(capsys)
    np.savez(tmp / "ok.npz", **pasa_onnx.inputs.generate_inputs(onnx.load(orig)).feeds)
    assert main(["validate", str(orig), str(rw), "--inputs", str(tmp / "ok.npz")]) == 0
    capsys.readouterr()
    assert (
        main(["validate", str(orig), str(rw), "--inputs", str(tmp / "ok.npz"), "--dim", "batch=1"])
        == 2
    )
    assert "--dim binds generated inputs only" in _one_line_error(capsys)
    assert main(["validate", str(orig), str(rw), "--atol", "-1"]) == 2
    assert "tolerances must be non-negative" in _one_line_error(capsys)
    with pytest.raises(SystemExit) as exc:  # argparse: missing positional
        main(["validate", str(orig)])
    assert exc.value.code == 2


def test_console_entry_point_runs(pair):
    tmp, orig, rw = pair
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pasa_onnx",
            "validate",
            str(orig),
            str(rw),
            "-q",
            "--report",
            str(tmp / "cli.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,  # the installed package, not the source tree (which has no built library)
    )
    assert out.returncode == 0, out.stderr
    assert (tmp / "cli.json").is_file()
