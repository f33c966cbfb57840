"""Markdown report, sized for a pull-request comment: verdict, what failed, one table of
attentions and one of outputs; inputs folded away."""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

from pasa_onnx.reports.formatting import headline, num, ok, overflow_summary

if TYPE_CHECKING:
    from pasa_onnx.results import ValidationResult


_PUNCTUATION = frozenset(string.punctuation)
_BLANKS = frozenset("\r\n\t\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def _cell(text: str) -> str:
    """Any string as literal inline Markdown: every ASCII punctuation character is
    backslash-escaped (CommonMark allows that for each of them), so no name can open a code
    span, link, image, emphasis, table cell or raw HTML; line breaks become spaces (a cell is
    one line) and NUL the replacement character (as CommonMark reads it)."""
    out = []
    for ch in text:
        if ch in _PUNCTUATION:
            out.append("\\" + ch)
        elif ch in _BLANKS:
            out.append(" ")
        elif ch == "\0":
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def _code(text: str) -> str:
    """A name in monospace. Not a code span: backslash escapes do not work inside one."""
    return f"<code>{_cell(text)}</code>"


def render(r: ValidationResult) -> str:
    icon = "✅" if r.passed else "❌"
    lines = [
        f"### {icon} pasa-onnx validation — {headline(r, _cell)}",
        "",
        f"{_code(r.original)} → {_code(r.rewritten)} · atol={r.atol:g}, rtol={r.rtol:g} · "
        f"seed {r.seed} · fp32 reference: {_cell(r.fp32_reference)}",
        "",
    ]
    fails = r.failures()
    if fails:
        lines += ["**Outside tolerance:**", *[f"- {_cell(f)}" for f in fails], ""]
    overflow = overflow_summary(r)
    if overflow:
        lines += [f"**Overflow protection:** {overflow}.", ""]  # no names in it
    if r.attentions:
        lines += [
            "| attention | pattern | max \\|score\\| | plain fp16 overflows | max abs err vs "
            "original | rel RMSE vs fp32 (rewritten / original) | non-finite (rewritten / "
            "original) | within tolerance |",
            "|---|---|---:|---|---:|---:|---:|---|",
        ]
        for a in r.attentions:
            vo, vr, orr = a.vs_original, a.vs_fp32_reference, a.original_vs_fp32_reference
            lines.append(
                f"| {_code(a.node)} | {_cell(a.pattern or '?')} | {num(a.max_abs_score)} | "
                f"{ {True: '**yes**', False: 'no', None: 'n/a'}[a.plain_fp16_overflows] } | "
                f"{num(vo.max_abs_err if vo else None)} | "
                f"{num(vr.rel_rmse if vr else None)} / {num(orr.rel_rmse if orr else None)} | "
                f"{num(vo.nonfinite if vo else None)} / {num(orr.nonfinite if orr else None)} | "
                f"{ok(a.within_tolerance)} |"
            )
        lines.append("")
    lines += [
        "| output | shape | max abs err vs original | rel RMSE vs original | rel RMSE vs fp32 "
        "(rewritten / original) | cosine | non-finite (rewritten / original) | within "
        "tolerance |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for o in r.outputs:
        vo, vr, orr = o.vs_original, o.vs_fp32_reference, o.original_vs_fp32_reference
        lines.append(
            f"| {_code(o.name)} | {_cell(str(o.shape))} | {num(vo.max_abs_err if vo else None)} | "
            f"{num(vo.rel_rmse if vo else None)} | {num(vr.rel_rmse if vr else None)} / "
            f"{num(orr.rel_rmse if orr else None)} | {num(vo.cosine if vo else None)} | "
            f"{num(vo.nonfinite if vo else None)} / {num(orr.nonfinite if orr else None)} | "
            f"{ok(o.within_tolerance)}{' — ' + _cell(o.note) if o.note else ''} |"
        )
    lines += [
        "",
        "<details><summary>Inputs</summary>",
        "",
        "| input | shape | dtype | source |",
        "|---|---|---|---|",
    ]
    for i in r.inputs:
        lines.append(
            f"| {_code(i.name)} | {_cell(str(list(i.shape)))} | {_cell(i.dtype)} | "
            f"{_cell(i.kind) if i.generated else 'given'} |"
        )
    lines += ["", "</details>", ""]
    lines += [f"> {_cell(n)}" for n in r.notes]
    return "\n".join(lines) + "\n"
