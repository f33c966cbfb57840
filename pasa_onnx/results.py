"""What validation found, as plain data: the validator fills these and the reports render
them, so neither has to import the other."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pasa_onnx.comparison import Metrics
from pasa_onnx.inputs import InputInfo


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
    # Forensics (None when the node's Q/K/V could not be read or analysed; see ``note``).
    max_abs_score: float | None
    plain_fp16_overflows: bool | None
    plain_fp16_nonfinite: int | None
    plain_fp16_max_abs_err: float | None
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
