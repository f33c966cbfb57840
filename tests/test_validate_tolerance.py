"""The documented tolerance rule and the error histogram, element by element."""

from __future__ import annotations

import numpy as np
import pytest

from pasa_onnx.comparison import HIST_EDGES, compare, error_histogram, within_tolerance

nan, inf = np.nan, np.inf


def a(*xs):
    return np.array(xs, dtype=np.float64)


@pytest.mark.parametrize(
    "rw, orig, ref, expected, why",
    [
        (a(1.0, 2.0), a(1.0005, 2.0), None, True, "within atol of the original"),
        (a(100.0), a(100.9), None, True, "within rtol * |orig|"),
        (a(1.0), a(1.02), None, False, "beyond atol + rtol*|orig|, no reference"),
        (a(1.0), a(1.02), a(1.0), True, "off the original but within tolerance of the reference"),
        (a(1.5), a(2.0), a(1.0), True, "as close to the reference as the original is"),
        (a(1.6), a(1.5), a(1.0), False, "further from the reference than the original"),
        (a(0.2), a(nan), a(0.2), True, "original NaN, rewrite matches the reference"),
        (a(0.2), a(inf), a(0.2), True, "original overflowed, rewrite matches the reference"),
        (a(5.0), a(nan), a(0.2), True, "original NaN is infinitely far: any finite rewrite"),
        (a(nan), a(1.0), a(1.0), False, "rewrite NaN where the original is finite"),
        (a(inf), a(inf), a(1.0), False, "both inf but the reference is finite"),
        (a(-inf), a(-inf), a(-inf), True, "-inf by design in all three"),
        (a(nan), a(nan), None, True, "same NaN, no separate reference"),
    ],
)
def test_rule(rw, orig, ref, expected, why):
    assert within_tolerance(rw, orig, ref, atol=1e-3, rtol=1e-2) is expected, why


def test_one_bad_element_fails_the_tensor():
    orig = np.linspace(-1, 1, 1000)
    rw = orig.copy()
    assert within_tolerance(rw, orig, orig, 1e-3, 1e-2)
    rw[417] += 0.5
    assert not within_tolerance(rw, orig, orig, 1e-3, 1e-2)


def test_shape_mismatch_fails():
    assert not within_tolerance(np.zeros((2, 3)), np.zeros((3, 2)), None, 1.0, 1.0)


def test_histogram_counts_log10_errors():
    ref = np.zeros(7)
    act = np.array([0.0, 1e-9, 3e-6, 3e-6, 0.02, 1e3, np.nan])
    h = error_histogram(act, ref)
    assert h.exact == 1 and h.nonfinite == 1 and sum(h.counts) == 5
    edges = np.array(HIST_EDGES)
    assert h.counts[0] == 1  # 1e-9 is below the range: first bin
    assert h.counts[int(np.searchsorted(edges, np.log10(3e-6), side="right")) - 1] == 2
    assert h.counts[int(np.searchsorted(edges, np.log10(0.02), side="right")) - 1] == 1
    assert h.counts[-1] == 1  # 1e3 is above the range: last bin
    m = compare(act, ref)
    assert m.nonfinite == 1 and m.max_abs_err == 1e3
