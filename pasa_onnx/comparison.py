"""Comparing one tensor of the rewritten model against the original and the fp32 reference:
metrics (``numerics.error_metrics``), an error histogram for the reports, and the tolerance rule.

Tolerance rule (docs/report-format.md): element ``i`` is acceptable when

- the rewritten value is finite and ``|rw - orig| <= atol + rtol * |orig|`` (original finite), or
- the rewritten value is finite and ``|rw - ref| <= max(atol + rtol * |ref|, |orig - ref|)``
  (fp32 reference finite): within tolerance of the fp32 truth, or at least as close to it as
  the original is (an original inf/NaN is infinitely far), or
- all three values are the same non-finite value (a model that outputs -inf by design).

A tensor is within tolerance when every element is acceptable and the shapes agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pasa_onnx.numerics import error_metrics

# log10 |error| bins for the reports' pictures: 1e-8 .. 1e2 in half decades.
HIST_EDGES = tuple(float(x) for x in np.arange(-8.0, 2.01, 0.5))


@dataclass(frozen=True)
class Histogram:
    """Counts of log10 |error| in ``log10_edges`` bins (out-of-range values land in the end
    bins); ``exact`` counts zero errors, ``nonfinite`` elements where either side is inf/NaN."""

    log10_edges: list[float]
    counts: list[int]
    exact: int
    nonfinite: int


@dataclass(frozen=True)
class Metrics:
    max_abs_err: float
    rmse: float
    rel_rmse: float
    cosine: float
    nonfinite: int
    histogram: Histogram


def error_histogram(actual: np.ndarray, reference: np.ndarray) -> Histogram:
    a = np.asarray(actual, dtype=np.float64).ravel()
    r = np.asarray(reference, dtype=np.float64).ravel()
    finite = np.isfinite(a) & np.isfinite(r)
    err = np.abs(a[finite] - r[finite])
    exact = int((err == 0).sum())
    logs = np.log10(err[err > 0])
    edges = np.asarray(HIST_EDGES)
    logs = np.clip(logs, edges[0], edges[-1] - 1e-9)
    counts, _ = np.histogram(logs, bins=edges)
    return Histogram(list(HIST_EDGES), [int(c) for c in counts], exact, int((~finite).sum()))


def compare(actual: np.ndarray, reference: np.ndarray) -> Metrics:
    """Metrics of ``actual`` against ``reference`` (same shape)."""
    m = error_metrics(actual, reference)
    return Metrics(
        m.max_abs_err,
        m.rmse,
        m.rel_rmse,
        m.cosine,
        m.nonfinite,
        error_histogram(actual, reference),
    )


def within_tolerance(
    rewritten: np.ndarray,
    original: np.ndarray,
    reference: np.ndarray | None,
    atol: float,
    rtol: float,
) -> bool:
    """The module's tolerance rule, elementwise."""
    if rewritten.shape != original.shape:
        return False
    rw = np.asarray(rewritten, dtype=np.float64)
    orig = np.asarray(original, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.isfinite(rw) & np.isfinite(orig) & (np.abs(rw - orig) <= atol + rtol * np.abs(orig))
        same_nonfinite = ~np.isfinite(rw) & ((rw == orig) | (np.isnan(rw) & np.isnan(orig)))
        if reference is not None and reference.shape == rw.shape:
            ref = np.asarray(reference, dtype=np.float64)
            orig_err = np.abs(orig - ref)
            orig_err = np.where(np.isnan(orig_err), np.inf, orig_err)
            bound = np.maximum(atol + rtol * np.abs(ref), orig_err)
            ok |= np.isfinite(rw) & np.isfinite(ref) & (np.abs(rw - ref) <= bound)
            same_nonfinite &= (rw == ref) | (np.isnan(rw) & np.isnan(ref))
    return bool((ok | same_nonfinite).all())
