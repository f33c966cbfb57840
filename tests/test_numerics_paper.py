"""The PASA paper's random benchmark (fp16, S = 1407, D = 128, GQA), kernel vs float64.

Q, K, V are uniform ``(rand - 0.5) * 2 * Am + mean`` or ``normal(mean, 1) + normal(0, Am) *
Bernoulli(0.001)``, mean in {0, 10, 20, 30}, Am in {0.5, 5, 10, 20}. Relative RMSE = RMSE / RMS(V).
Heads are 4 query / 2 kv here to keep CI short; `benchmarks/paper_random.py` runs 14 / 2.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_pasa

from pasa_onnx.numerics import (
    attention_emulated,
    attention_golden,
    attention_plain_half,
    error_metrics,
    paper_random_inputs,
)
from pasa_onnx.runtime import isa_info

S, D, HQ, HKV = 1407, 128, 4, 2
MEANS = [0, 10, 20, 30]
AMPLITUDES = [0.5, 5, 10, 20]


def paper_inputs(dist: str, mean: float, am: float):
    return paper_random_inputs(dist, mean, am, q_heads=HQ, kv_heads=HKV, seq=S, dim=D)


CASES = [(d, m, a) for d in ("uniform", "normal") for m in MEANS for a in AMPLITUDES]


@pytest.mark.parametrize(("dist", "mean", "am"), CASES)
def test_paper_grid(dist, mean, am):
    q, k, v = paper_inputs(dist, mean, am)
    gold = attention_golden(q, k, v)
    feeds = {"Q": q, "K": k, "V": v}
    kernel = {p: run_pasa(feeds, precision=p) for p in ("half", "paper")}
    # The amx path's tile products round differently (split bf16 terms): its own emulation.
    amx = isa_info()["active"] == "amx"
    emulated = {
        p: attention_emulated(q, k, v, precision=p, amx_products=amx) for p in ("half", "paper")
    }
    err = {p: error_metrics(kernel[p], gold, v) for p in kernel}
    emu_err = {p: error_metrics(emulated[p], gold, v) for p in emulated}

    for p in ("half", "paper"):
        assert err[p].nonfinite == 0, f"{p}: {err[p].nonfinite} non-finite outputs"
        # Kernel == emulation up to rounding: their difference is a fraction of the pipeline's
        # own error against float64, and the two errors agree closely.
        diff = error_metrics(kernel[p], emulated[p].astype(np.float64), v)
        assert diff.rel_rmse <= 0.35 * emu_err[p].rel_rmse + 1e-6, (p, diff, emu_err[p])
        assert abs(err[p].rel_rmse - emu_err[p].rel_rmse) <= 0.05 * emu_err[p].rel_rmse + 1e-7
    assert err["half"].rel_rmse <= err["paper"].rel_rmse
    assert err["half"].rel_rmse <= 1.5 * emu_err["half"].rel_rmse


@pytest.mark.parametrize("dist", ["uniform", "normal"])
@pytest.mark.parametrize("am", AMPLITUDES)
def test_plain_half_flash_attention_overflows_at_mean_30(dist, am):
    q, k, v = paper_inputs(dist, 30, am)
    plain = attention_plain_half(q, k, v)
    assert error_metrics(plain, attention_golden(q, k, v), v).nonfinite > 0
    # ... while the PASA kernel on the same inputs stays finite.
    assert np.isfinite(run_pasa({"Q": q, "K": k, "V": v}).astype(np.float32)).all()


def test_plain_half_flash_attention_is_accurate_without_bias():
    # The baseline itself is sound: at mean 0 it is finite and close to float64.
    q, k, v = paper_inputs("uniform", 0, 0.5)
    plain = attention_plain_half(q, k, v)
    m = error_metrics(plain, attention_golden(q, k, v), v)
    assert m.nonfinite == 0 and m.rel_rmse < 1e-3
