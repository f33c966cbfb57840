"""Validate a rewritten model against its original: three onnxruntime runs on the same inputs
(the original, the rewritten model, and the original lifted to fp32), every graph output and
every replaced attention's own output compared, plus per-attention overflow forensics.

Pairing: each ``ai.pasa::PasaAttention`` node's ``Y`` keeps the name of the last original tensor
it replaced, so that name is exposed as an extra graph output in both graphs. The node's
Q/K/V/mask (and past/nonpad) inputs are exposed in the rewritten graph for the forensics.

Memory: the runs happen one after another; each model is serialised and dropped before its
session is created, each session is released before the next model is loaded, and only the
compared tensors are kept.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from pasa_onnx.comparison import compare, within_tolerance
from pasa_onnx.contract import ATTRIBUTE_DEFAULTS
from pasa_onnx.errors import PasaError
from pasa_onnx.exposure import Site, estimate_bytes, expose, find_sites, tensor_names
from pasa_onnx.forensics import AttentionInputs, Forensics, analyse
from pasa_onnx.fp32_reference import has_half_types, lift_feeds, lift_to_fp32
from pasa_onnx.inputs import (
    ModelInputs,
    check_arrays,
    generate_inputs,
    load_npz,
    parse_dims,
)
from pasa_onnx.results import AttentionResult, OutputResult, ValidationResult

DEFAULT_ATOL = 1e-3
DEFAULT_RTOL = 1e-2
# Extra outputs above this size get a note in the progress output and the report.
LARGE_EXTRA_BYTES = 256 << 20
# Models above this size reach onnxruntime through a temporary file with external data instead
# of serialised bytes (protobuf cannot serialise 2 GiB, and bytes would be one more copy).
_IN_MEMORY_LIMIT = 256 << 20

Progress = Callable[[str], None]
ModelArg = str | os.PathLike | onnx.ModelProto
InputsArg = str | os.PathLike | Mapping[str, np.ndarray] | None


def validate(
    original: ModelArg,
    rewritten: ModelArg,
    *,
    inputs: InputsArg = None,
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
    ``result.passed`` says whether everything is within tolerance. Bad input raises
    :class:`~pasa_onnx.errors.PasaError`.
    """
    say: Progress = progress or (lambda _msg: None)
    started = time.perf_counter()
    report_paths = _report_paths(report)
    bound_dims = parse_dims(dims)
    _precheck(original, rewritten, inputs, bound_dims, atol, rtol)
    _check_reports_spare_models(report_paths, original, rewritten)

    # The rewritten graph's structure only (weights stay on disk): which attentions to pair.
    structure, rw_label = _load(rewritten, "rewritten", external=False)
    sites = find_sites(structure)
    rw_outputs = {o.name for o in structure.graph.output}
    del structure
    say(f"rewritten model: {len(sites)} PasaAttention node(s)")
    notes = [] if sites else ["the rewritten model has no PasaAttention node"]

    orig, orig_label = _load(original, "original")
    model_inputs = _resolve_inputs(orig, inputs, bound_dims, seed)
    _describe_inputs(model_inputs, say)
    feeds = model_inputs.feeds
    graph_outputs = [o.name for o in orig.graph.output]
    known = tensor_names(orig)
    paired = [s for s in sites if s.output in known]
    notes += [
        f"attention '{s.node}': no tensor '{s.output}' in the original graph, so only the graph "
        "outputs check it"
        for s in sites
        if s not in paired
    ]
    notes += [
        f"output '{n}' exists only in the rewritten model"
        for n in sorted(rw_outputs)
        if n not in graph_outputs
    ]
    attn_names = [s.output for s in paired]
    half = has_half_types(orig)

    # Run 1: the original as it is.
    try:
        got_orig = _run_step(
            "[1/3] the original", orig, orig_label, feeds, graph_outputs + attn_names, say
        )
    except PasaError as exc:
        if inputs is None and model_inputs.dims:  # generated at a shape the model rejects
            raise PasaError(_original_fails(exc, model_inputs)) from None
        raise
    del orig

    # Run 2: the rewritten model, then the forensics on its attention inputs.
    rw, _ = _load(rewritten, "rewritten")
    forensic_names = [t for s in sites for t in s.inputs.values()]
    constants = {
        t.name: onnx.numpy_helper.to_array(t)
        for t in rw.graph.initializer
        if t.name in forensic_names
    }
    wanted = [n for n in graph_outputs if n in rw_outputs] + attn_names + forensic_names
    values = _run_step("[2/3] the rewritten model", rw, rw_label, feeds, wanted, say)
    del rw
    extra_bytes = sum(v.nbytes for n, v in values.items() if n not in graph_outputs)
    if extra_bytes > LARGE_EXTRA_BYTES:
        notes.append(f"extra outputs held {_mib(extra_bytes)} during the rewritten run")
    available = {**feeds, **constants, **values}
    forensics: dict[int, Forensics | None] = {}
    for s in sites:
        say(f"[2/3] forensics {s.index + 1}/{len(sites)}: attention '{s.node}'")
        forensics[s.index] = _forensics(s, available, notes)
    keep = set(graph_outputs) | set(attn_names)
    got_rw = {n: v for n, v in values.items() if n in keep}
    del values, available, constants
    gc.collect()

    # Run 3: the fp32 reference (the original lifted), or the original itself if already fp32.
    if half:
        ref, _ = _load(original, "original")
        lift_to_fp32(ref, in_place=True)
        got_ref = _run_step(
            "[3/3] the fp32 reference",
            ref,
            f"{orig_label} lifted to fp32",
            lift_feeds(feeds),
            graph_outputs + attn_names,
            say,
        )
        del ref
        how = "original lifted to fp32"
    else:
        say("[3/3] the original is already fp32: it is its own reference")
        got_ref, how = got_orig, "original (already fp32)"

    outputs = [
        _compare_output(
            n,
            got_orig,
            got_rw,
            got_ref,
            atol,
            rtol,
            "" if n in rw_outputs else "missing from the rewritten model",
        )
        for n in graph_outputs
    ]
    attentions = [
        _attention_result(s, s in paired, forensics[s.index], got_orig, got_rw, got_ref, atol, rtol)
        for s in sites
    ]
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


def _report_paths(report) -> list[str]:
    from pasa_onnx.reports import check_report_path

    if report is None:
        paths: list[str] = []
    elif isinstance(report, str | os.PathLike):
        paths = [os.fspath(report)]
    else:
        paths = [os.fspath(p) for p in report]
    for p in paths:
        check_report_path(p)
    return paths


def _precheck(original, rewritten, inputs, dims: dict, atol: float, rtol: float) -> None:
    """Cheap checks first, so a typo fails before any model is loaded."""
    if atol < 0 or rtol < 0:
        raise PasaError(f"tolerances must be non-negative (atol={atol}, rtol={rtol})")
    for model, role in ((original, "original"), (rewritten, "rewritten")):
        if not isinstance(model, onnx.ModelProto) and not Path(os.fspath(model)).is_file():
            raise PasaError(f"{os.fspath(model)}: no such file ({role} model)")
    if isinstance(inputs, str | os.PathLike) and not Path(os.fspath(inputs)).is_file():
        raise PasaError(f"{os.fspath(inputs)}: no such inputs file")
    if inputs is not None and dims:
        raise PasaError("--dim binds generated inputs only; given inputs fix every dimension")


def _check_reports_spare_models(reports: list[str], *models: ModelArg) -> None:
    """A report never overwrites a model being compared, or one of its data files."""
    from pasa_onnx.safe_io import model_files, same_file

    for model in models:
        if isinstance(model, onnx.ModelProto):
            continue
        files = model_files(os.fspath(model))
        for report in reports:
            if same_file(Path(report), files):
                raise PasaError(
                    f"--report {report}: that is {os.fspath(model)} or one of its data files; "
                    "choose another file"
                )


def _load(model: ModelArg, role: str, external: bool = True) -> tuple[onnx.ModelProto, str]:
    """A private ModelProto (outputs get added to it) and a label for messages."""
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy, f"<{role} model>"
    from pasa_onnx.rewriting import not_onnx_reason

    path = os.fspath(model)
    try:
        proto = onnx.load(path, load_external_data=external)
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise PasaError(
            f"{path}: cannot load the {role} model as ONNX ({_first_line(exc)})"
        ) from None
    reason = "the file is empty" if Path(path).stat().st_size == 0 else not_onnx_reason(proto)
    if reason:
        raise PasaError(f"{path}: cannot load the {role} model as ONNX ({reason})")
    return proto, path


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB ({n} bytes)"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _run_step(
    step: str,
    model: onnx.ModelProto,
    label: str,
    feeds: Mapping[str, np.ndarray],
    wanted: list[str],
    say: Progress,
) -> dict[str, np.ndarray]:
    """Expose ``wanted``, say what the extra outputs cost when that is large, run, time it."""
    existing = {o.name for o in model.graph.output}
    fetch = expose(model, wanted)
    extra = [n for n in fetch if n not in existing]
    estimate = estimate_bytes(model, extra, feeds)
    if estimate is not None and estimate > LARGE_EXTRA_BYTES:
        say(f"note: the extra outputs of this run cost about {_mib(estimate)}")
    say(f"{step}: running {label}")
    t0 = time.perf_counter()
    values = _run(model, label, feeds, fetch)
    say(f"{step}: done in {time.perf_counter() - t0:.1f} s")
    return values


def _run(
    model: onnx.ModelProto, label: str, feeds: Mapping[str, np.ndarray], fetch: list[str]
) -> dict[str, np.ndarray]:
    """One onnxruntime session: create, run, release. ``model`` is consumed (cleared once
    serialised) so its weights are not held next to the session's own copy."""
    import onnxruntime as ort

    from pasa_onnx.runtime import inference_session
    from pasa_onnx.runtime import run as run_session

    try:
        size = model.ByteSize()
    except Exception:  # protobuf refuses sizes past 2 GiB
        size = _IN_MEMORY_LIMIT + 1
    with tempfile.TemporaryDirectory(prefix="pasa-validate-") as tmp:
        if size > _IN_MEMORY_LIMIT:
            source: Any = str(Path(tmp) / "model.onnx")
            onnx.save(model, source, save_as_external_data=True, location="model.onnx.data")
        else:
            source = model.SerializeToString()
        model.Clear()
        gc.collect()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: unused-initializer warnings are noise here
        try:
            session = inference_session(source, opts)
        except Exception as exc:
            raise PasaError(f"{label}: onnxruntime cannot load it: {_first_line(exc)}") from None
        del source
        try:
            values = run_session(session, dict(feeds), fetch)  # bfloat16-aware session.run
        except Exception as exc:
            raise PasaError(f"{label}: onnxruntime failed to run it: {_first_line(exc)}") from None
        finally:
            del session
            gc.collect()
    return dict(zip(fetch, values, strict=True))


def _forensics(
    site: Site, available: Mapping[str, np.ndarray], notes: list[str]
) -> Forensics | None:
    """Score forensics for one attention, or None (with a note) when its inputs can't be read."""
    got = {op: available.get(tensor) for op, tensor in site.inputs.items()}
    unread = sorted(op for op, v in got.items() if v is None)
    q, k, v = got.get("Q"), got.get("K"), got.get("V")
    if unread or q is None or k is None or v is None:
        notes.append(f"attention '{site.node}': forensics skipped, inputs not readable: {unread}")
        return None
    a = {**ATTRIBUTE_DEFAULTS, **site.attrs}  # what the kernel runs with
    try:
        return analyse(
            AttentionInputs(
                q=q,
                k=k,
                v=v,
                attn_mask=got.get("attn_mask"),
                past_key=got.get("past_key"),
                past_value=got.get("past_value"),
                nonpad_kv_seqlen=got.get("nonpad_kv_seqlen"),
                scale=a.get("scale"),
                is_causal=bool(a["is_causal"]),
                q_num_heads=a["q_num_heads"] or None,  # 0: not given (4-D inputs)
                kv_num_heads=a["kv_num_heads"] or None,
                softcap=float(a["softcap"]),
                left_window_size=int(a["left_window_size"]),
                right_window_size=int(a["right_window_size"]),
                block_kv=int(a["block_kv"]) or ATTRIBUTE_DEFAULTS["block_kv"],
            )
        )
    except ValueError as exc:  # shapes the numpy references reject
        notes.append(f"attention '{site.node}': forensics skipped: {_first_line(exc)}")
        return None


def _compare_output(
    name: str,
    got_orig: Mapping[str, np.ndarray],
    got_rw: Mapping[str, np.ndarray],
    got_ref: Mapping[str, np.ndarray],
    atol: float,
    rtol: float,
    note: str = "",
) -> OutputResult:
    orig = got_orig[name]
    rw, ref = got_rw.get(name), got_ref.get(name)
    shape, dtype = list(orig.shape), orig.dtype.name
    if rw is None:
        note = note or "missing from the rewritten run"
        return OutputResult(name, shape, dtype, None, None, None, False, note)
    if rw.shape != orig.shape:
        note = f"shape {list(rw.shape)} in the rewritten model, {shape} in the original"
        return OutputResult(name, shape, dtype, None, None, None, False, note)
    if ref is not None and ref.shape != orig.shape:
        ref = None
    return OutputResult(
        name=name,
        shape=shape,
        dtype=dtype,
        vs_original=compare(rw, orig),
        vs_fp32_reference=compare(rw, ref) if ref is not None else None,
        original_vs_fp32_reference=compare(orig, ref) if ref is not None else None,
        within_tolerance=within_tolerance(rw, orig, ref, atol, rtol),
        note=note,
    )


def _attention_result(
    site: Site,
    paired: bool,
    f: Forensics | None,
    got_orig: Mapping[str, np.ndarray],
    got_rw: Mapping[str, np.ndarray],
    got_ref: Mapping[str, np.ndarray],
    atol: float,
    rtol: float,
) -> AttentionResult:
    if paired:
        o = _compare_output(site.output, got_orig, got_rw, got_ref, atol, rtol)
        cmp = (o.vs_original, o.vs_fp32_reference, o.original_vs_fp32_reference)
        ok, note = o.within_tolerance, o.note
    else:
        cmp, ok, note = (None, None, None), None, "no twin tensor in the original graph"
    return AttentionResult(
        node=site.node,
        pattern=site.pattern,
        replaced=site.replaced,
        output=site.output,
        vs_original=cmp[0],
        vs_fp32_reference=cmp[1],
        original_vs_fp32_reference=cmp[2],
        max_abs_score=f.max_abs_score if f else None,
        plain_fp16_overflows=f.plain_fp16_overflows if f else None,
        plain_fp16_nonfinite=f.plain_fp16_nonfinite if f else None,
        plain_fp16_max_abs_err=f.plain_fp16_max_abs_err if f else None,
        within_tolerance=ok,
        note=note,
    )


def _resolve_inputs(
    model: onnx.ModelProto, inputs: InputsArg, dims: dict[str, int], seed: int
) -> ModelInputs:
    if inputs is None:
        return generate_inputs(model, dims, seed)
    if isinstance(inputs, str | os.PathLike):
        return load_npz(model, inputs)
    return check_arrays(model, inputs, "inputs")


def _original_fails(exc: PasaError, mi: ModelInputs) -> str:
    """One line: the original model itself fails at the generated shape, and which dims to
    bind (those that took a default, else every symbolic one)."""
    shape = ", ".join(f"{k}={v}" for k, v in sorted(mi.dims.items()))
    names = sorted(mi.default_dims) or sorted(mi.dims)
    example = names[0]
    return (
        f"the original model itself fails on the generated inputs ({shape}), so nothing was "
        f"compared: {str(exc).splitlines()[0]}; set {', '.join(names)} with --dim "
        f"(e.g. --dim {example}=VALUE)"
    )


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
