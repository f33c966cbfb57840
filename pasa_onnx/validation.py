"""Validate a rewritten model against its original: three onnxruntime runs on the same inputs
(original, rewritten, and the original lifted to fp32), every graph output and every replaced
attention's own output compared, plus per-attention overflow forensics.

Pairing: each ``ai.pasa::PasaAttention`` node's ``Y`` keeps the name of the last original
tensor it replaced, so that name is exposed as an extra graph output in both graphs. The node's
Q/K/V/mask (and past/nonpad) inputs are exposed in the rewritten graph for the forensics.

Memory: the runs happen one after another; each model and session is released before the next
one is loaded, and only the compared tensors are kept.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from pasa_onnx.comparison import Metrics, compare, within_tolerance
from pasa_onnx.errors import PasaError
from pasa_onnx.forensics import AttentionInputs, analyse
from pasa_onnx.fp32_reference import has_half_types, lift_feeds, lift_to_fp32
from pasa_onnx.inputs import (
    InputInfo,
    ModelInputs,
    check_arrays,
    generate_inputs,
    load_npz,
    parse_dims,
)
from pasa_onnx.runtime import DOMAIN, OP_TYPE

DEFAULT_ATOL = 1e-3
DEFAULT_RTOL = 1e-2
# Extra outputs above this size get a note in the progress output and the report.
LARGE_EXTRA_BYTES = 256 << 20
# Models whose protobuf would pass this size are handed to onnxruntime through a file with
# external data (protobuf cannot serialise 2 GiB).
_PROTO_LIMIT = 1_900_000_000
_OP_INPUTS = ("Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen")

Progress = Callable[[str], None]
ModelArg = str | os.PathLike | onnx.ModelProto


@dataclass
class OutputResult:
    name: str
    shape: list[int]
    dtype: str
    vs_original: Metrics | None
    vs_fp32_reference: Metrics | None
    original_vs_fp32_reference: Metrics | None
    within_tolerance: bool
    note: str = ""


@dataclass
class AttentionResult:
    node: str
    pattern: str
    replaced: list[str]
    output: str
    vs_original: Metrics | None
    vs_fp32_reference: Metrics | None
    original_vs_fp32_reference: Metrics | None
    max_abs_score: float
    plain_fp16_overflows: bool
    plain_fp16_nonfinite: int
    plain_fp16_max_abs_err: float
    within_tolerance: bool | None  # None: the output has no twin in the original graph
    note: str = ""


@dataclass
class ValidationResult:
    original: str
    rewritten: str
    verdict: str  # "pass" | "fail"
    atol: float
    rtol: float
    seed: int
    inputs: list[InputInfo]
    dims: dict[str, int]
    outputs: list[OutputResult]
    attentions: list[AttentionResult]
    fp32_reference: str  # how the reference was obtained
    extra_outputs_bytes: int
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def failures(self) -> list[str]:
        """One line per comparison outside tolerance, attentions first (they locate the cause)."""
        lines = []
        for a in self.attentions:
            if a.within_tolerance is False:
                m = a.vs_original
                detail = f": max_abs_err {m.max_abs_err:.3g} vs original" if m else ""
                lines.append(f"attention '{a.node}' (output '{a.output}'){detail}")
        for o in self.outputs:
            if not o.within_tolerance:
                m = o.vs_original
                detail = f": max_abs_err {m.max_abs_err:.3g} vs original" if m else ""
                lines.append(f"output '{o.name}'{detail}{' (' + o.note + ')' if o.note else ''}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The JSON report's content (field names documented in docs/report-format.md)."""
        from pasa_onnx import __version__

        return {
            "pasa_onnx_version": __version__,
            "verdict": self.verdict,
            "original": self.original,
            "rewritten": self.rewritten,
            "tolerance": {"atol": self.atol, "rtol": self.rtol},
            "seed": self.seed,
            "dims": dict(self.dims),
            "fp32_reference": self.fp32_reference,
            "inputs": {
                i.name: {
                    "shape": list(i.shape),
                    "dtype": i.dtype,
                    "generated": i.generated,
                    "kind": i.kind,
                }
                for i in self.inputs
            },
            "outputs": [asdict(o) for o in self.outputs],
            "attentions": [asdict(a) for a in self.attentions],
            "extra_outputs_bytes": self.extra_outputs_bytes,
            "notes": list(self.notes),
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass(frozen=True)
class _Site:
    """One PasaAttention node of the rewritten graph."""

    node: str
    pattern: str
    replaced: list[str]
    output: str
    inputs: dict[str, str]  # op input name -> tensor name (present ones only)
    attrs: dict[str, Any]


def _load(model: ModelArg, role: str, external: bool = True) -> tuple[onnx.ModelProto, str]:
    """A private ModelProto (we add outputs to it) and a label for messages."""
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy, f"<{role} model>"
    path = os.fspath(model)
    if not Path(path).is_file():
        raise PasaError(f"{path}: no such file ({role} model)")
    try:
        return onnx.load(path, load_external_data=external), path
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PasaError(f"{path}: cannot load the {role} model as ONNX ({first})") from None


def find_sites(model: onnx.ModelProto) -> list[_Site]:
    sites = []
    for i, node in enumerate(model.graph.node):
        if node.op_type != OP_TYPE or node.domain != DOMAIN:
            continue
        meta = {p.key: p.value for p in node.metadata_props}
        inputs = {
            op_name: tensor
            for op_name, tensor in zip(_OP_INPUTS, node.input, strict=False)
            if tensor  # "" marks an absent optional input
        }
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        replaced = [r.strip() for r in meta.get("pasa.replaced", "").split(",") if r.strip()]
        sites.append(
            _Site(
                node=node.name or f"PasaAttention_{i}",
                pattern=meta.get("pasa.pattern", ""),
                replaced=replaced,
                output=node.output[0],
                inputs=inputs,
                attrs=attrs,
            )
        )
    return sites


def _tensor_names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    names = {o for n in g.node for o in n.output}
    names |= {i.name for i in g.input} | {t.name for t in g.initializer}
    return names


def _expose(model: onnx.ModelProto, names: Iterable[str]) -> list[str]:
    """Add ``names`` as graph outputs (untyped: onnxruntime takes the producer's type); returns
    the names to fetch from the session (graph inputs/initializers are read directly)."""
    existing = {o.name for o in model.graph.output}
    produced = {o for n in model.graph.node for o in n.output}
    fetch = []
    for name in dict.fromkeys(names):
        if name in produced and name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
            existing.add(name)
        if name in existing:
            fetch.append(name)
    return fetch


def _estimate_bytes(model: onnx.ModelProto, names: list[str], feeds: Mapping) -> int | None:
    """Bytes of ``names`` from shape inference with the concrete input shapes (None if
    unknown)."""
    if not names:
        return 0
    try:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        # Weights become typed graph inputs (shapes suffice); small constants such as Reshape
        # targets stay, since shape inference reads their values.
        small = [t for t in probe.graph.initializer if _tensor_bytes(t) <= 4096]
        big = [t for t in probe.graph.initializer if _tensor_bytes(t) > 4096]
        probe.graph.ClearField("initializer")
        probe.graph.initializer.extend(small)
        listed = {vi.name for vi in probe.graph.input}  # old IRs list weights as inputs too
        probe.graph.input.extend(
            helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
            for t in big
            if t.name not in listed
        )
        for vi in probe.graph.input:
            if vi.name in feeds:
                shape = vi.type.tensor_type.shape
                shape.ClearField("dim")
                for n in feeds[vi.name].shape:
                    shape.dim.add().dim_value = int(n)
        inferred = onnx.shape_inference.infer_shapes(probe)
    except Exception:
        return None
    infos = {vi.name: vi for vi in (*inferred.graph.value_info, *inferred.graph.output)}
    total = 0
    for name in names:
        vi = infos.get(name)
        if vi is None:
            return None
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        if not tt.HasField("shape") or any(d < 0 for d in dims):
            return None
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
        total += int(np.prod(dims, dtype=np.int64)) * itemsize
    return total


def _tensor_bytes(t: onnx.TensorProto) -> int:
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return int(np.prod(t.dims, dtype=np.int64)) * itemsize


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB ({n} bytes)"


def _run(
    model: onnx.ModelProto, label: str, feeds: Mapping[str, np.ndarray], fetch: list[str]
) -> dict[str, np.ndarray]:
    """One onnxruntime session: create, run, release. Returns the fetched tensors."""
    import onnxruntime as ort

    from pasa_onnx.runtime import inference_session

    try:
        size = model.ByteSize()
    except Exception:
        size = _PROTO_LIMIT + 1
    with tempfile.TemporaryDirectory(prefix="pasa-validate-") as tmp:
        source: Any = model
        if size > _PROTO_LIMIT:
            source = str(Path(tmp) / "model.onnx")
            onnx.save(model, source, save_as_external_data=True, location="model.onnx.data")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: unused-initializer warnings are noise here
        try:
            session = inference_session(source, opts)
        except PasaError:
            raise
        except Exception as exc:
            raise PasaError(f"{label}: onnxruntime cannot load it: {_first_line(exc)}") from None
        try:
            values = session.run(fetch, dict(feeds))
        except Exception as exc:
            raise PasaError(f"{label}: onnxruntime failed to run it: {_first_line(exc)}") from None
        finally:
            del session
            gc.collect()
    return dict(zip(fetch, values, strict=True))


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _attention_inputs(site: _Site, values: Mapping[str, np.ndarray]) -> AttentionInputs:
    get = {op: values.get(tensor) for op, tensor in site.inputs.items()}
    a = site.attrs
    return AttentionInputs(
        q=get["Q"],
        k=get["K"],
        v=get["V"],
        attn_mask=get.get("attn_mask"),
        past_key=get.get("past_key"),
        past_value=get.get("past_value"),
        nonpad_kv_seqlen=get.get("nonpad_kv_seqlen"),
        scale=a.get("scale"),
        is_causal=bool(a.get("is_causal", 0)),
        q_num_heads=a.get("q_num_heads"),
        kv_num_heads=a.get("kv_num_heads"),
        softcap=float(a.get("softcap", 0.0)),
        left_window_size=int(a.get("left_window_size", -1)),
        right_window_size=int(a.get("right_window_size", -1)),
        block_kv=int(a.get("block_kv", 128)) or 128,
    )


def _check_report_paths(paths: list[str]) -> None:
    from pasa_onnx.reports import check_report_path

    for p in paths:
        check_report_path(p)


def validate(
    original: ModelArg,
    rewritten: ModelArg,
    *,
    inputs: str | os.PathLike | Mapping[str, np.ndarray] | None = None,
    dims: Mapping[str, int] | Iterable[str] | None = None,
    seed: int = 0,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    report: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
    progress: Progress | None = None,
) -> ValidationResult:
    """Run ``original`` and ``rewritten`` (paths or ModelProtos) on the same inputs and compare.

    ``inputs``: an ``.npz`` path or a name -> array mapping; otherwise inputs are generated with
    ``dims`` (``{"batch": 2}`` or ``["batch=2"]``) and ``seed``. ``report``: one or more paths
    whose extension (.json, .html, .md) picks the format. Returns a :class:`ValidationResult`;
    ``result.passed`` says whether everything is within tolerance.
    """
    say: Progress = progress or (lambda _msg: None)
    started = time.perf_counter()
    if atol < 0 or rtol < 0:
        raise PasaError(f"tolerances must be non-negative (atol={atol}, rtol={rtol})")
    if report is None:
        report_paths: list[str] = []
    elif isinstance(report, str | os.PathLike):
        report_paths = [os.fspath(report)]
    else:
        report_paths = [os.fspath(p) for p in report]
    _check_report_paths(report_paths)
    bound_dims = parse_dims(dims)
    # Cheap checks first, so a typo fails before any model is loaded.
    for model, role in ((original, "original"), (rewritten, "rewritten")):
        if not isinstance(model, onnx.ModelProto) and not Path(os.fspath(model)).is_file():
            raise PasaError(f"{os.fspath(model)}: no such file ({role} model)")
    if isinstance(inputs, str | os.PathLike) and not Path(os.fspath(inputs)).is_file():
        raise PasaError(f"{os.fspath(inputs)}: no such inputs file")

    # The rewritten graph's structure only (weights stay on disk): which attentions to pair.
    rw_struct, rw_label = _load(rewritten, "rewritten", external=False)
    sites = find_sites(rw_struct)
    rw_outputs = [o.name for o in rw_struct.graph.output]
    del rw_struct
    say(f"rewritten model: {len(sites)} PasaAttention node(s)")

    # Run 1: the original as it is, with each attention's output exposed.
    orig, orig_label = _load(original, "original")
    model_inputs = _resolve_inputs(orig, inputs, bound_dims, seed)
    _describe_inputs(model_inputs, say)
    graph_outputs = [o.name for o in orig.graph.output]
    missing = [n for n in graph_outputs if n not in rw_outputs]
    original_names = _tensor_names(orig)
    paired = [s for s in sites if s.output in original_names]
    notes: list[str] = []
    for s in sites:
        if s not in paired:
            notes.append(
                f"attention '{s.node}': no tensor '{s.output}' in the original graph, so only "
                "the graph outputs check it"
            )
    half = has_half_types(orig)
    attn_names = [s.output for s in paired]
    fetch = _expose(orig, graph_outputs + attn_names)
    extra_est = _estimate_bytes(
        orig, [n for n in attn_names if n not in graph_outputs], model_inputs.feeds
    )
    if extra_est is not None and extra_est > LARGE_EXTRA_BYTES:
        say(f"note: exposing attention outputs costs about {_mib(extra_est)} per run")
    t0 = time.perf_counter()
    say(f"[1/3] running the original ({orig_label})")
    got_orig = _run(orig, orig_label, model_inputs.feeds, fetch)
    say(f"[1/3] done in {time.perf_counter() - t0:.1f} s")
    del orig
    gc.collect()

    # Run 2: the rewritten model, with attention outputs and the op's inputs exposed.
    rw, _ = _load(rewritten, "rewritten")
    forensic_names = [t for s in sites for t in s.inputs.values()]
    fetch = _expose(rw, [n for n in graph_outputs if n in rw_outputs] + attn_names + forensic_names)
    extra_names = [n for n in fetch if n not in graph_outputs]
    extra_est = _estimate_bytes(rw, extra_names, model_inputs.feeds)
    if extra_est is not None and extra_est > LARGE_EXTRA_BYTES:
        say(f"note: exposing attention inputs/outputs costs about {_mib(extra_est)} in this run")
    t0 = time.perf_counter()
    say(f"[2/3] running the rewritten model ({rw_label})")
    values = _run(rw, rw_label, model_inputs.feeds, fetch)
    say(f"[2/3] done in {time.perf_counter() - t0:.1f} s")
    extra_bytes = sum(values[n].nbytes for n in extra_names if n in values)
    if extra_bytes > LARGE_EXTRA_BYTES:
        notes.append(f"extra outputs held {_mib(extra_bytes)} during the rewritten run")
    lookup = dict(model_inputs.feeds)
    lookup.update(
        {
            t.name: onnx.numpy_helper.to_array(t)
            for t in rw.graph.initializer
            if t.name in forensic_names
        }
    )
    lookup.update(values)
    del rw
    forensics = {}
    for i, s in enumerate(sites, 1):
        say(f"[2/3] forensics {i}/{len(sites)}: attention '{s.node}'")
        forensics[s.node] = analyse(_attention_inputs(s, lookup))
    keep = set(graph_outputs) | set(attn_names)
    got_rw = {n: v for n, v in values.items() if n in keep}
    del values, lookup
    gc.collect()

    # Run 3: the fp32 reference (the original lifted), or the original itself if already fp32.
    if half:
        ref_model, _ = _load(original, "original")
        lift_to_fp32(ref_model, in_place=True)
        fetch = _expose(ref_model, graph_outputs + attn_names)
        t0 = time.perf_counter()
        say("[3/3] running the fp32 reference (the original lifted to fp32)")
        got_ref = _run(
            ref_model, f"{orig_label} (lifted to fp32)", lift_feeds(model_inputs.feeds), fetch
        )
        say(f"[3/3] done in {time.perf_counter() - t0:.1f} s")
        del ref_model
        gc.collect()
        how = "original lifted to fp32"
    else:
        say("[3/3] the original is already fp32: it is its own reference")
        got_ref = got_orig
        how = "original (already fp32)"

    outputs = []
    for name in graph_outputs:
        note = "missing from the rewritten model" if name in missing else ""
        outputs.append(_compare_output(name, got_orig, got_rw, got_ref, atol, rtol, note))
    attentions = []
    for s in sites:
        f = forensics[s.node]
        if s in paired:
            o = _compare_output(s.output, got_orig, got_rw, got_ref, atol, rtol, "")
            vs_o, vs_r, o_r, ok, note = (
                o.vs_original,
                o.vs_fp32_reference,
                o.original_vs_fp32_reference,
                o.within_tolerance,
                o.note,
            )
        else:
            vs_o = vs_r = o_r = None
            ok, note = None, "no twin tensor in the original graph"
        attentions.append(
            AttentionResult(
                node=s.node,
                pattern=s.pattern,
                replaced=s.replaced,
                output=s.output,
                vs_original=vs_o,
                vs_fp32_reference=vs_r,
                original_vs_fp32_reference=o_r,
                max_abs_score=f.max_abs_score,
                plain_fp16_overflows=f.plain_fp16_overflows,
                plain_fp16_nonfinite=f.plain_fp16_nonfinite,
                plain_fp16_max_abs_err=f.plain_fp16_max_abs_err,
                within_tolerance=ok,
                note=note,
            )
        )
    passed = all(o.within_tolerance for o in outputs) and all(
        a.within_tolerance is not False for a in attentions
    )
    result = ValidationResult(
        original=orig_label,
        rewritten=rw_label,
        verdict="pass" if passed else "fail",
        atol=atol,
        rtol=rtol,
        seed=seed,
        inputs=model_inputs.info,
        dims=model_inputs.dims,
        outputs=outputs,
        attentions=attentions,
        fp32_reference=how,
        extra_outputs_bytes=int(extra_bytes),
        notes=notes,
        elapsed_s=time.perf_counter() - started,
    )
    if report_paths:
        from pasa_onnx.reports import write_report

        for p in report_paths:
            write_report(result, p)
            say(f"report written: {p}")
    return result


def _compare_output(
    name: str,
    got_orig: Mapping[str, np.ndarray],
    got_rw: Mapping[str, np.ndarray],
    got_ref: Mapping[str, np.ndarray],
    atol: float,
    rtol: float,
    note: str,
) -> OutputResult:
    orig = got_orig[name]
    rw = got_rw.get(name)
    ref = got_ref.get(name)
    if rw is None:
        return OutputResult(
            name,
            list(orig.shape),
            orig.dtype.name,
            None,
            None,
            None,
            False,
            note or "missing from the rewritten run",
        )
    if rw.shape != orig.shape:
        return OutputResult(
            name,
            list(orig.shape),
            orig.dtype.name,
            None,
            None,
            None,
            False,
            f"shape {list(rw.shape)} in the rewritten model, {list(orig.shape)} in the original",
        )
    ref_ok = ref is not None and ref.shape == orig.shape
    return OutputResult(
        name=name,
        shape=list(orig.shape),
        dtype=orig.dtype.name,
        vs_original=compare(rw, orig),
        vs_fp32_reference=compare(rw, ref) if ref_ok else None,
        original_vs_fp32_reference=compare(orig, ref) if ref_ok else None,
        within_tolerance=within_tolerance(rw, orig, ref if ref_ok else None, atol, rtol),
        note=note,
    )


def _resolve_inputs(
    model: onnx.ModelProto,
    inputs: str | os.PathLike | Mapping[str, np.ndarray] | None,
    dims: dict[str, int],
    seed: int,
) -> ModelInputs:
    if inputs is None:
        return generate_inputs(model, dims, seed)
    if isinstance(inputs, str | os.PathLike):
        return load_npz(model, inputs)
    return check_arrays(model, inputs, "inputs")


def _describe_inputs(mi: ModelInputs, say: Progress) -> None:
    if mi.dims:
        parts = [
            f"{k}={v}" + (" (default; bind with --dim)" if k in mi.default_dims else "")
            for k, v in sorted(mi.dims.items())
        ]
        say("dims: " + ", ".join(parts))
    for i in mi.info:
        origin = f"generated as {i.kind}" if i.generated else "given"
        say(f"input '{i.name}': {list(i.shape)} {i.dtype}, {origin}")
