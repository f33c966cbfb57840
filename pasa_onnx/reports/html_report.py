"""HTML report: one self-contained page (inline CSS and SVG, no scripts, no external URLs) with
the verdict on top, summary tables, and a section with its own table and error picture for every
attention and every output."""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from pasa_onnx.comparison import Metrics
from pasa_onnx.reports.formatting import headline, num, ok, overflow_summary
from pasa_onnx.reports.svg import COLORS, histogram_svg

if TYPE_CHECKING:
    from pasa_onnx.results import AttentionResult, OutputResult, ValidationResult

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px;margin:0 0 12px} h2{font-size:17px;margin:28px 0 8px}
h3{font-size:15px;margin:18px 0 6px}
.verdict{padding:12px 16px;border-radius:6px;font-size:18px;font-weight:600}
.pass{background:#e6f4ea;color:#137333;border:1px solid #137333}
.fail{background:#fce8e6;color:#a50e0e;border:1px solid #a50e0e}
table{border-collapse:collapse;margin:6px 0} td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right} th{background:#f3f3f3} td.l,th.l{text-align:left}
tr.bad td{background:#fce8e6} .muted{color:#777} code{font-size:13px}
.warn{color:#a50e0e;font-weight:600}
"""
_METRICS = ("max_abs_err", "rmse", "rel_rmse", "cosine", "nonfinite")


def _metric_cells(m: Metrics | None) -> str:
    if m is None:
        return "".join("<td>–</td>" for _ in _METRICS)
    return "".join(f"<td>{escape(num(getattr(m, k)))}</td>" for k in _METRICS)


def _metrics_table(rows: list[tuple[str, Metrics | None]]) -> str:
    head = "".join(f"<th>{k}</th>" for k in _METRICS)
    body = "".join(
        f"<tr><td class='l'>{escape(label)}</td>{_metric_cells(m)}</tr>" for label, m in rows
    )
    return f"<table><tr><th class='l'>comparison</th>{head}</tr>{body}</table>"


def _picture(vs_o: Metrics | None, vs_r: Metrics | None) -> str:
    return histogram_svg(
        [
            ("vs original", vs_o.histogram if vs_o else None),
            ("vs fp32 reference", vs_r.histogram if vs_r else None),
        ]
    )


def _attention_section(a: AttentionResult) -> str:
    flag = (
        f"<span class='warn'>YES (emulated plain kernel: {a.plain_fp16_nonfinite} non-finite "
        f"outputs, max abs err {escape(num(a.plain_fp16_max_abs_err))} vs float64)</span>"
        if a.plain_fp16_overflows
        else {False: "no", None: "unknown"}[a.plain_fp16_overflows]
    )
    return (
        f"<section class='attention' id='attention-{escape(a.node)}'>"
        f"<h3>Attention <code>{escape(a.node)}</code></h3>"
        f"<p>pattern <code>{escape(a.pattern or '?')}</code>, output "
        f"<code>{escape(a.output)}</code>, replaced: {escape(', '.join(a.replaced) or '?')}<br>"
        f"largest |score|: {escape(num(a.max_abs_score))}; a plain fp16 flash-attention kernel "
        f"would overflow: {flag}; within tolerance: {ok(a.within_tolerance)}"
        f"{' — ' + escape(a.note) if a.note else ''}</p>" + _comparisons(a) + "</section>"
    )


def _comparisons(x: AttentionResult | OutputResult) -> str:
    """The metrics table and error picture of one attention or output."""
    return _metrics_table(
        [
            ("rewritten vs original", x.vs_original),
            ("rewritten vs fp32 reference", x.vs_fp32_reference),
            ("original vs fp32 reference", x.original_vs_fp32_reference),
        ]
    ) + _picture(x.vs_original, x.vs_fp32_reference)


def _output_section(o: OutputResult) -> str:
    return (
        f"<section class='output' id='output-{escape(o.name)}'>"
        f"<h3>Output <code>{escape(o.name)}</code></h3>"
        f"<p>shape {escape(str(o.shape))} {escape(o.dtype)}; within tolerance: "
        f"{ok(o.within_tolerance)}{' — ' + escape(o.note) if o.note else ''}</p>"
        + _comparisons(o)
        + "</section>"
    )


def _summary_tables(r: ValidationResult) -> str:
    def rel(m: Metrics | None) -> str:
        return escape(num(m.rel_rmse if m else None))

    def nf(m: Metrics | None) -> str:
        return escape(num(m.nonfinite if m else None))

    att = "".join(
        f"<tr class='{'bad' if a.within_tolerance is False else ''}'>"
        f"<td class='l'><a href='#attention-{escape(a.node)}'>{escape(a.node)}</a></td>"
        f"<td class='l'>{escape(a.pattern)}</td><td class='l'>{escape(a.output)}</td>"
        f"<td>{escape(num(a.max_abs_score))}</td>"
        f"<td>{ {True: 'YES', False: 'no', None: 'n/a'}[a.plain_fp16_overflows] }</td>"
        f"<td>{escape(num(a.vs_original.max_abs_err if a.vs_original else None))}</td>"
        f"<td>{rel(a.vs_fp32_reference)}</td><td>{rel(a.original_vs_fp32_reference)}</td>"
        f"<td>{nf(a.vs_original)}</td><td>{nf(a.original_vs_fp32_reference)}</td>"
        f"<td>{ok(a.within_tolerance)}</td></tr>"
        for a in r.attentions
    )
    out = "".join(
        f"<tr class='{'' if o.within_tolerance else 'bad'}'>"
        f"<td class='l'><a href='#output-{escape(o.name)}'>{escape(o.name)}</a></td>"
        f"<td class='l'>{escape(str(o.shape))}</td>"
        f"<td>{escape(num(o.vs_original.max_abs_err if o.vs_original else None))}</td>"
        f"<td>{rel(o.vs_original)}</td><td>{rel(o.vs_fp32_reference)}</td>"
        f"<td>{rel(o.original_vs_fp32_reference)}</td>"
        f"<td>{nf(o.vs_original)}</td><td>{nf(o.original_vs_fp32_reference)}</td>"
        f"<td>{ok(o.within_tolerance)}</td></tr>"
        for o in r.outputs
    )
    return (
        "<h2>Attentions</h2><table id='attentions'><tr><th class='l'>node</th>"
        "<th class='l'>pattern</th><th class='l'>output</th><th>max |score|</th>"
        "<th>plain fp16 overflows</th><th>max abs err vs original</th>"
        "<th>rel RMSE rewritten vs fp32</th><th>rel RMSE original vs fp32</th>"
        "<th>non-finite rewritten</th><th>non-finite original</th><th>within tolerance</th>"
        f"</tr>{att}</table>"
        "<h2>Graph outputs</h2><table id='outputs'><tr><th class='l'>output</th>"
        "<th class='l'>shape</th><th>max abs err vs original</th>"
        "<th>rel RMSE vs original</th><th>rel RMSE rewritten vs fp32</th>"
        "<th>rel RMSE original vs fp32</th><th>non-finite rewritten</th>"
        f"<th>non-finite original</th><th>within tolerance</th></tr>{out}</table>"
    )


def render(r: ValidationResult) -> str:
    cls = "pass" if r.passed else "fail"
    failures = "".join(f"<li>{escape(f)}</li>" for f in r.failures())
    overflow = overflow_summary(r)
    inputs = "".join(
        f"<tr><td class='l'>{escape(i.name)}</td><td class='l'>{escape(str(list(i.shape)))}</td>"
        f"<td class='l'>{escape(i.dtype)}</td><td class='l'>"
        f"{escape(i.kind if i.generated else 'given')}</td></tr>"
        for i in r.inputs
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in r.notes)
    dims = ", ".join(f"{k}={v}" for k, v in sorted(r.dims.items())) or "none"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>pasa-onnx validation: {r.verdict.upper()}</title><style>{_CSS}</style></head>"
        "<body><h1>pasa-onnx validation</h1>"
        f"<div id='verdict' class='verdict {cls}'>{escape(headline(r))}</div>"
        + (f"<ul id='failures'>{failures}</ul>" if failures else "")
        + (f"<p id='overflow' class='warn'>{escape(overflow)}</p>" if overflow else "")
        + "<table id='run'>"
        f"<tr><th class='l'>original</th><td class='l'><code>{escape(r.original)}</code></td></tr>"
        f"<tr><th class='l'>rewritten</th><td class='l'><code>{escape(r.rewritten)}</code></td>"
        f"</tr><tr><th class='l'>tolerance</th><td class='l'>atol={r.atol:g}, rtol={r.rtol:g} "
        "(elementwise vs the original, or at least as close to the fp32 reference as the "
        "original)</td></tr>"
        f"<tr><th class='l'>fp32 reference</th><td class='l'>{escape(r.fp32_reference)}</td></tr>"
        f"<tr><th class='l'>dims, seed</th><td class='l'>{escape(dims)}; seed {r.seed}</td></tr>"
        "</table>"
        + (f"<ul id='notes'>{notes}</ul>" if notes else "")
        + _summary_tables(r)
        + "<h2>Per attention</h2>"
        + "".join(_attention_section(a) for a in r.attentions)
        + "<h2>Per output</h2>"
        + "".join(_output_section(o) for o in r.outputs)
        + "<h2>Inputs</h2><table id='inputs'><tr><th class='l'>name</th><th class='l'>shape</th>"
        f"<th class='l'>dtype</th><th class='l'>source</th></tr>{inputs}</table>"
        f"<p class='muted'>Pictures: log10 |error| per element; "
        f"<span style='color:{COLORS[0]}'>rewritten vs original</span>, "
        f"<span style='color:{COLORS[1]}'>rewritten vs fp32 reference</span>. "
        f"{r.elapsed_s:.1f} s.</p></body></html>\n"
    )
