"""File handling: external data, atomic writes, the input never touched, one-line errors with
exit code 2, and the rewrite/inspect commands."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import onnx
import onnx_ir as ir
import pytest
from fixtures.support import FIXTURES, MANIFEST, feeds, max_rel_err, run_original, run_rewritten

import pasa_onnx
from pasa_onnx import rewriting
from pasa_onnx.cli import main
from pasa_onnx.errors import PasaError

KEY = "bert_eager_ts17"
SRC = FIXTURES / MANIFEST[KEY]["file"]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def external_model(tmp_path: Path) -> Path:
    """The fixture saved with every initializer in an external data file."""
    src = tmp_path / "in" / "model.onnx"
    src.parent.mkdir()
    onnx.save(
        onnx.load(SRC),
        src,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    return src


def test_cli_rewrite_writes_output_and_prints_summary(tmp_path: Path, capsys) -> None:
    dst = tmp_path / "out.onnx"
    before = hashlib.sha256(SRC.read_bytes()).hexdigest()
    assert main(["rewrite", str(SRC), "-o", str(dst)]) == 0
    out = capsys.readouterr()
    assert "attention found: 1, replaced: 1, left alone: 0" in out.out
    assert "primitive/BSHd+3d" in out.out
    assert hashlib.sha256(SRC.read_bytes()).hexdigest() == before
    onnx.checker.check_model(str(dst))
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]  # no temporary left behind


def test_rewriting_the_output_again_gives_the_same_file(tmp_path: Path, capsys) -> None:
    once, twice = tmp_path / "once.onnx", tmp_path / "twice.onnx"
    assert main(["rewrite", str(SRC), "-o", str(once), "-q"]) == 0
    assert main(["rewrite", str(once), "-o", str(twice), "-q"]) == 0
    assert (
        "found: 0, replaced: 0, left alone: 0, already PasaAttention: 1" in capsys.readouterr().out
    )
    assert twice.read_bytes() == once.read_bytes()


def test_external_data_is_read_and_written(external_model: Path, tmp_path: Path) -> None:
    before = _digest(external_model.parent)
    dst = tmp_path / "out" / "rewritten.onnx"
    summary = rewriting.rewrite_file(external_model, dst)
    assert summary.replaced == 1
    assert _digest(external_model.parent) == before  # input and its data untouched
    assert (dst.parent / "rewritten.onnx.data").stat().st_size > 10_000
    assert dst.stat().st_size < SRC.stat().st_size / 2  # the weights live in the data file
    model = onnx.load(dst)
    onnx.checker.check_model(str(dst))
    inputs = feeds(MANIFEST[KEY])
    err = max_rel_err(run_original(onnx.load(SRC), inputs), run_rewritten(model, inputs))
    assert err <= 1e-4


def test_output_never_overwrites_the_inputs_external_data(external_model: Path, capsys) -> None:
    """in/renamed.onnx keeps its weights in in/model.onnx.data; writing in/model.onnx would
    put the output's data file exactly there."""
    renamed = external_model.with_name("renamed.onnx")
    external_model.rename(renamed)
    before = _digest(renamed.parent)
    assert main(["rewrite", str(renamed), "-o", str(external_model)]) == 2
    assert "would overwrite the input's external data" in capsys.readouterr().err
    assert _digest(renamed.parent) == before


def test_missing_external_data_is_a_one_line_error(external_model: Path, tmp_path, capsys):
    (external_model.parent / "model.onnx.data").unlink()
    assert main(["rewrite", str(external_model), "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "model.onnx.data" in err and "missing" in err
    assert not (tmp_path / "o.onnx").exists()


def test_truncated_external_data_is_a_one_line_error(external_model: Path, tmp_path, capsys):
    data = external_model.parent / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:1000])
    assert main(["rewrite", str(external_model), "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "model.onnx.data is too short" in err


def test_not_onnx_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \xff\xfe")
    assert main(["rewrite", str(bad), "-o", str(tmp_path / "o.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "bad.onnx: not an ONNX model" in err


def test_output_equal_to_input_is_refused(tmp_path: Path, capsys) -> None:
    src = tmp_path / "m.onnx"
    shutil.copy(SRC, src)
    before = src.read_bytes()
    assert main(["rewrite", str(src), "-o", str(tmp_path / "." / "m.onnx")]) == 2
    assert "output path is the input" in capsys.readouterr().err
    assert src.read_bytes() == before


def test_output_path_that_is_a_directory_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "out.onnx").mkdir()
    assert main(["rewrite", str(SRC), "-o", str(tmp_path / "out.onnx"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "out.onnx: cannot write" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_rewrite_validate_runs_validation(tmp_path: Path, capsys) -> None:
    report = tmp_path / "r.json"
    argv = ["rewrite", str(SRC), "-o", str(tmp_path / "o.onnx"), "--validate", "-q"]
    assert main([*argv, "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "replaced" in out and "validation passed" in out
    assert report.is_file()


def test_report_without_validate_is_a_usage_error(tmp_path: Path, capsys) -> None:
    argv = ["rewrite", str(SRC), "-o", str(tmp_path / "o.onnx"), "--report", "r.json"]
    assert main(argv) == 2
    assert "need --validate" in capsys.readouterr().err


def test_failed_write_keeps_the_previous_output(tmp_path: Path, monkeypatch) -> None:
    dst = tmp_path / "out.onnx"
    dst.write_bytes(b"previous")

    def broken_save(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ir, "save", broken_save)
    with pytest.raises(PasaError, match="cannot write"):
        rewriting.rewrite_file(SRC, dst)
    assert dst.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_inspect_lists_and_writes_nothing(tmp_path: Path, capsys) -> None:
    src = tmp_path / "m.onnx"
    shutil.copy(FIXTURES / MANIFEST["mha_weights_ts17"]["file"], src)
    before = _digest(tmp_path)
    assert main(["inspect", str(src)]) == 0
    out = capsys.readouterr().out
    assert "left alone: the attention probabilities are consumed elsewhere" in out
    assert _digest(tmp_path) == before


def test_python_api_accepts_path_proto_and_ir() -> None:
    proto = onnx.load(SRC)
    snapshot = proto.SerializeToString()
    from_proto, s1 = pasa_onnx.rewrite(proto)
    assert proto.SerializeToString() == snapshot  # the caller's proto is left as it was
    assert isinstance(from_proto, onnx.ModelProto)
    from_path, s2 = pasa_onnx.rewrite(SRC)
    assert isinstance(from_path, ir.Model)
    model = ir.from_proto(proto)
    same, s3 = pasa_onnx.rewrite(model)
    assert same is model
    assert s1.replaced == s2.replaced == s3.replaced == 1
    with pytest.raises(PasaError, match="cannot rewrite a int"):
        pasa_onnx.rewrite(3)
