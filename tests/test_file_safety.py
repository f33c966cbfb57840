"""Issue 15, files and usage: the input and every file it references are never written (D1);
every input or usage error is exit 2 with one line and no traceback (D3); an empty or other
not-ONNX file is an input error (D4); model and data are replaced as one unit (D6); cyclic graphs
are refused (D12); reports get the model's permissions; a not-a-zip .npz says so."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest
from fixtures.support import FIXTURES, MANIFEST, feeds, max_rel_err, run_original, run_rewritten
from onnx import TensorProto, helper, numpy_helper
from validation_models import primitive_attention_pair, save_pair

from pasa_onnx import rewriting, safe_io
from pasa_onnx.cli import main
from pasa_onnx.errors import PasaError

KEY = "bert_eager_ts17"
SRC = FIXTURES / MANIFEST[KEY]["file"]


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def _save_external(proto: onnx.ModelProto, path: Path, location: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)  # onnx.save moves the tensors of what it saves out to the file
    onnx.save(
        copy,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return path


@pytest.fixture
def external_model(tmp_path: Path) -> Path:
    return _save_external(onnx.load(SRC), tmp_path / "in" / "model.onnx", "weights.bin")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pasa-onnx: error: "), err
    assert "Traceback" not in err
    return err


# D1 -------------------------------------------------------------------------------------------


def test_output_onto_the_inputs_external_data_is_refused(external_model: Path, capsys) -> None:
    folder = external_model.parent
    before = _digest(folder)
    assert main(["rewrite", str(external_model), "-o", str(folder / "weights.bin"), "-q"]) == 2
    err = _one_error_line(capsys)
    assert "weights.bin" in err and "external data file of the input" in err
    assert _digest(folder) == before
    # the same file through a hard link, and through a path with '..'
    os.link(folder / "weights.bin", folder.parent / "alias.bin")
    assert main(["rewrite", str(external_model), "-o", str(folder.parent / "alias.bin")]) == 2
    capsys.readouterr()
    dotted = folder / ".." / "in" / "weights.bin"
    assert main(["rewrite", str(external_model), "-o", str(dotted)]) == 2
    capsys.readouterr()
    assert _digest(folder) == before
    (folder.parent / "alias.bin").unlink()
    assert onnx.load(external_model) is not None


def test_report_onto_an_input_file_is_refused(tmp_path: Path, capsys) -> None:
    """External data named like a report: neither rewrite --validate nor validate write it."""
    src = _save_external(onnx.load(SRC), tmp_path / "in" / "model.onnx", "weights.md")
    before = _digest(src.parent)
    argv = ["rewrite", str(src), "-o", str(tmp_path / "o.onnx"), "--validate", "-q"]
    assert main([*argv, "--report", str(src.parent / "weights.md")]) == 2
    assert "weights.md" in _one_error_line(capsys)
    assert main([*argv, "--report", str(tmp_path / "o.onnx.json")]) == 0  # a fine report
    capsys.readouterr()
    argv = ["validate", str(src), str(tmp_path / "o.onnx"), "-q"]
    assert main([*argv, "--report", str(src.parent / "weights.md")]) == 2
    assert "weights.md" in _one_error_line(capsys)
    assert _digest(src.parent) == before


# D3 -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("pair")
    orig, rw = save_pair(primitive_attention_pair(), tmp, "m")
    (tmp / "a_file").write_text("x")
    (tmp / "empty.onnx").write_bytes(b"")
    (tmp / "text.npz").write_text("not a zip\n")
    np.save(tmp / "array.npy", np.zeros(3))
    return tmp, orig, rw


# (id, argv with {tmp}/{orig}/{rw} placeholders, a fragment the one-line error must contain)
USAGE_ERRORS = [
    ("out-under-a-file", ["rewrite", "{orig}", "-o", "{tmp}/a_file/o.onnx"], "a_file"),
    ("out-in-proc", ["rewrite", "{orig}", "-o", "/proc/pasa-o.onnx"], "/proc/pasa-o.onnx"),
    ("out-in-sys", ["rewrite", "{orig}", "-o", "/sys/pasa-o.onnx"], "/sys/pasa-o.onnx"),
    ("out-is-a-folder", ["rewrite", "{orig}", "-o", "{tmp}/"], "folder"),
    ("out-is-the-input", ["rewrite", "{orig}", "-o", "{orig}"], "is the input"),
    ("missing-input", ["rewrite", "{tmp}/nope.onnx", "-o", "{tmp}/o.onnx"], "nope.onnx"),
    ("empty-input", ["rewrite", "{tmp}/empty.onnx", "-o", "{tmp}/o.onnx"], "empty"),
    ("report-in-proc", ["validate", "{orig}", "{rw}", "--report", "/proc/r.json"], "/proc/r.json"),
    (
        "rewrite-report-in-proc",
        ["rewrite", "{orig}", "-o", "{tmp}/o2.onnx", "--validate", "--report", "/proc/r.md"],
        "/proc/r.md",
    ),
    (
        "report-under-a-file",
        ["validate", "{orig}", "{rw}", "--report", "{tmp}/a_file/r.html"],
        "a_file",
    ),
    (
        "report-is-the-output",
        ["rewrite", "{orig}", "-o", "{tmp}/o3.json", "--validate", "--report", "{tmp}/o3.json"],
        "output model",
    ),
    ("huge-dim", ["validate", "{orig}", "{rw}", "--dim", "sequence=4000000000000"], "--dim"),
    (
        "rewrite-huge-dim",
        ["rewrite", "{orig}", "-o", "{tmp}/o4.onnx", "--validate", "--dim", "batch=10**9"],
        "integer",
    ),
    ("npz-not-a-zip", ["validate", "{orig}", "{rw}", "--inputs", "{tmp}/text.npz"], "zip"),
    ("npy-not-npz", ["validate", "{orig}", "{rw}", "--inputs", "{tmp}/array.npy"], "zip"),
    ("validate-empty", ["validate", "{tmp}/empty.onnx", "{rw}"], "empty"),
    ("inspect-empty", ["inspect", "{tmp}/empty.onnx"], "empty"),
    ("inspect-missing", ["inspect", "{tmp}/nope.onnx"], "nope.onnx"),
]


@pytest.mark.parametrize(
    ("argv", "fragment"), [c[1:] for c in USAGE_ERRORS], ids=[c[0] for c in USAGE_ERRORS]
)
def test_usage_and_input_errors_exit_2_with_one_line(pair, capsys, argv, fragment) -> None:
    tmp, orig, rw = pair
    before = _digest(tmp)
    args = [a.format(tmp=tmp, orig=orig, rw=rw) for a in argv]
    assert main([*args, "-q"] if args[0] != "inspect" else args) == 2
    err = _one_error_line(capsys)
    assert fragment in err
    assert _digest(tmp) == before  # nothing written, nothing changed
    assert not [p for p in tmp.iterdir() if p.name.startswith(safe_io.TMP_PREFIX)]


def test_an_unexpected_exception_is_one_line_and_not_exit_1(pair, capsys, monkeypatch) -> None:
    _, orig, rw = pair

    def boom(*_a, **_k):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr("pasa_onnx.validation.validate", boom)
    assert main(["validate", str(orig), str(rw), "-q"]) == 2
    assert "unexpected RuntimeError: something broke" in _one_error_line(capsys)


# D4 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"", b"\x08\x07", b"\x08\x07\x12\x03abc"],  # empty; ir_version only; + producer_name
    ids=["empty", "ir-version-only", "no-graph"],
)
def test_not_onnx_files_are_input_errors(tmp_path: Path, capsys, content: bytes) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    assert main(["rewrite", str(bad), "-o", str(tmp_path / "o.onnx"), "-q"]) == 2
    assert "bad.onnx: not an ONNX model" in _one_error_line(capsys)
    assert main(["inspect", str(bad)]) == 2
    assert "bad.onnx: not an ONNX model" in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]  # no 0-byte output
    with pytest.raises(PasaError, match="not an ONNX model"):
        rewriting.load(bad)


# D6 -------------------------------------------------------------------------------------------


def _scaled(proto: onnx.ModelProto, factor: float) -> onnx.ModelProto:
    """The same graph with every float initializer scaled: same structure, other weights."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for i, t in enumerate(out.graph.initializer):
        arr = numpy_helper.to_array(t)
        if arr.dtype.kind == "f" and arr.size > 1:
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr * factor, t.name))
    return out


def test_model_and_data_are_replaced_as_one_unit(tmp_path: Path, monkeypatch) -> None:
    """A write that dies at the model rename leaves the previous output's model and weights as
    they were (before: the data had already been swapped in under the old graph)."""
    base = onnx.load(SRC)
    a = _save_external(base, tmp_path / "a" / "model.onnx", "model.onnx.data")
    b = _save_external(_scaled(base, 1.5), tmp_path / "b" / "model.onnx", "model.onnx.data")
    dst = tmp_path / "out" / "model.onnx"
    rewriting.rewrite_file(a, dst)
    before = _digest(dst.parent)
    inputs = feeds(MANIFEST[KEY])
    want = run_original(onnx.load(a), inputs)

    real_replace = os.replace

    def dying_replace(src, target, *args, **kwargs):
        if Path(target) == dst:
            raise OSError(5, "Input/output error")
        return real_replace(src, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(PasaError, match="cannot write"):
        rewriting.rewrite_file(b, dst)
    monkeypatch.setattr(os, "replace", real_replace)
    assert _digest(dst.parent) == before  # the old pair, untouched; no new file left
    assert max_rel_err(want, run_rewritten(onnx.load(dst), inputs)) <= 1e-4

    # the write that succeeds switches to the new pair and removes the replaced data file
    rewriting.rewrite_file(b, dst)
    names = sorted(p.name for p in dst.parent.iterdir())
    assert names == ["model.onnx", "model.onnx.1.data"]
    want_b = run_original(onnx.load(b), inputs)
    assert max_rel_err(want_b, run_rewritten(onnx.load(dst), inputs)) <= 1e-4
    rewriting.rewrite_file(a, dst)  # and back: the names alternate
    assert sorted(p.name for p in dst.parent.iterdir()) == ["model.onnx", "model.onnx.data"]


def test_a_data_file_that_no_model_uses_is_not_taken_over(tmp_path: Path) -> None:
    """out.onnx.data left by an interrupted write (no out.onnx uses it) is removed; the input's
    data file of the same family is never touched."""
    dst = tmp_path / "out.onnx"
    (tmp_path / "out.onnx.data").write_bytes(b"stale")
    src = _save_external(onnx.load(SRC), tmp_path / "src.onnx", "out.onnx.1.data")
    before = (tmp_path / "out.onnx.1.data").read_bytes()
    rewriting.rewrite_file(src, dst)
    assert (tmp_path / "out.onnx.1.data").read_bytes() == before
    assert (tmp_path / "out.onnx.data").stat().st_size > 10_000


# D12 ------------------------------------------------------------------------------------------


def _cyclic_model() -> onnx.ModelProto:
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT16, [1, 2, 4, 8]) for n in "QKV"]
    nodes = [
        helper.make_node("Add", ["Q", "back"], ["q2"], name="loop_add"),
        helper.make_node("Attention", ["q2", "K", "V"], ["Y"], name="attention"),
        helper.make_node("Relu", ["Y"], ["back"], name="loop_relu"),
    ]
    out = helper.make_tensor_value_info("Y", TensorProto.FLOAT16, None)
    graph = helper.make_graph(nodes, "cyclic", vi, [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


def test_cyclic_graphs_are_input_errors(tmp_path: Path, capsys) -> None:
    src = tmp_path / "cyclic.onnx"
    onnx.save(_cyclic_model(), src)
    assert main(["rewrite", str(src), "-o", str(tmp_path / "o.onnx"), "-q"]) == 2
    err = _one_error_line(capsys)
    assert "cyclic.onnx: the graph has a cycle through node '" in err
    assert any(f"'{n}'" in err for n in ("loop_add", "attention", "loop_relu"))
    assert main(["inspect", str(src)]) == 2
    assert "cycle" in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cyclic.onnx"]
    with pytest.raises(PasaError, match="cycle"):
        rewriting.rewrite(_cyclic_model())


# reports, .npz --------------------------------------------------------------------------------


def test_reports_get_the_models_permissions(pair, tmp_path: Path) -> None:
    _, orig, rw = pair
    old = os.umask(0o022)
    try:
        dst = tmp_path / "o.onnx"
        reports = [tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.html"]
        argv = ["rewrite", str(orig), "-o", str(dst), "--validate", "-q"]
        assert main([*argv, *[a for r in reports for a in ("--report", str(r))]]) == 0
    finally:
        os.umask(old)
    model_mode = stat.S_IMODE(dst.stat().st_mode)
    assert model_mode == 0o644
    assert [stat.S_IMODE(r.stat().st_mode) for r in reports] == [model_mode] * 3


def test_npz_that_is_not_a_zip_names_the_problem(pair, capsys) -> None:
    tmp, orig, rw = pair
    assert main(["validate", str(orig), str(rw), "-q", "--inputs", str(tmp / "text.npz")]) == 2
    err = _one_error_line(capsys)
    assert "text.npz: not a readable .npz file: not a zip archive" in err
    assert "pickled" not in err
