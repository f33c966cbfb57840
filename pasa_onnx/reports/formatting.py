"""Number formatting and verdict wording shared by the human-readable reports."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pasa_onnx.results import ValidationResult


def num(x: float | int | None) -> str:
    if x is None:
        return "–"
    if isinstance(x, int):
        return str(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}"


def ok(flag: bool | None) -> str:
    return {True: "yes", False: "NO", None: "n/a"}[flag]


def headline(result: ValidationResult, name: Callable[[str], str] = str) -> str:
    """The verdict in one line; ``name`` quotes the node name for the report's format."""
    n_out, n_att = len(result.outputs), len(result.attentions)
    if result.passed:
        return f"PASS: {n_out} output(s) and {n_att} attention(s) within tolerance"
    text = f"FAIL: {len(result.failures())} comparison(s) outside tolerance"
    # Nodes are stored in topological order: the first failing attention is the upstream-most,
    # the likely cause of differences further down.
    first = next((a for a in result.attentions if a.within_tolerance is False), None)
    return f"{text}; first at attention '{name(first.node)}'" if first else text


def overflow_summary(result: ValidationResult) -> str | None:
    """What PASA protects against here, in one sentence (None when nothing would overflow)."""
    hit = [a for a in result.attentions if a.plain_fp16_overflows]
    if not hit:
        return None
    # vs_original.nonfinite counts the rewritten model's own inf/NaN.
    finite = all(a.vs_original is not None and a.vs_original.nonfinite == 0 for a in hit)
    tail = "; PasaAttention keeps them finite" if finite else ""
    return (
        f"{len(hit)} of {len(result.attentions)} attention(s) would overflow in a plain fp16 "
        f"flash-attention kernel (emulated){tail}"
    )
