"""Accuracy cost of a bfloat16 P·V product (AVX512-BF16 ``vdpbf16ps``) in the numpy emulation.

The kernel's contract (shared/PASA.md) rounds P to the input's half type and accumulates P·V in
fp32. A ``vdpbf16ps`` product needs P and V in bfloat16: exact for bf16 inputs, a rounding of both
for fp16 inputs. This script compares, against float64 attention, the emulated pipeline as
contracted and the same pipeline with P and V rounded to bf16 in the product, and reports the
largest change of an output between the two, relative to RMS(V).

Usage: python benchmarks/bf16_pv_accuracy.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from pasa_onnx.numerics import BFLOAT16, attention_emulated, attention_golden, error_metrics


def cases(rng):
    d = 64
    # Near-uniform attention over many keys, peaked attention, the paper's biased inputs.
    yield (
        "near-uniform S=1024",
        [(0.1 * rng.standard_normal((1, 2, 1024, d))).astype(np.float16) for _ in range(3)],
    )
    yield (
        "normal S=1024",
        [rng.standard_normal((1, 2, 1024, d)).astype(np.float16) for _ in range(3)],
    )
    yield (
        "peaked (x3 scores) S=1024",
        [(3 * rng.standard_normal((1, 2, 1024, d))).astype(np.float16) for _ in range(3)],
    )
    yield (
        "paper uniform mean 30 amp 5 S=1407 D=128",
        [((rng.random((1, 2, 1407, 128)) - 0.5) * 10 + 30).astype(np.float16) for _ in range(3)],
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for name, (q, k, v) in cases(rng):
        for dtype in (np.float16, BFLOAT16):
            qq, kk, vv = (t.astype(dtype) for t in (q, k, v))
            gold = attention_golden(qq, kk, vv)
            base = attention_emulated(qq, kk, vv)
            bf = attention_emulated(qq, kk, vv, pv_bfloat16=True)
            e_base = error_metrics(base, gold, vv)
            e_bf = error_metrics(bf, gold, vv)
            # Largest change of an output, relative to RMS(V) (the paper's scale).
            diff = np.abs(bf.astype(np.float64) - base.astype(np.float64))
            rms_v = float(np.sqrt(np.mean(vv.astype(np.float64) ** 2)))
            row = {
                "case": name,
                "dtype": np.dtype(dtype).name,
                "rel_rmse_contract": e_base.rel_rmse,
                "rel_rmse_bf16_pv": e_bf.rel_rmse,
                "rmse_ratio": e_bf.rel_rmse / e_base.rel_rmse if e_base.rel_rmse else float("nan"),
                "max_change_rel_rms_v": float(diff.max()) / rms_v,
                "frac_outputs_changed": float((diff > 0).mean()),
            }
            rows.append(row)
            print(
                f"{name:42s} {row['dtype']:8s} rel RMSE {row['rel_rmse_contract']:.3e} -> "
                f"{row['rel_rmse_bf16_pv']:.3e} (x{row['rmse_ratio']:.2f}), "
                f"max change {row['max_change_rel_rms_v']:.1e}·RMS(V), "
                f"{100 * row['frac_outputs_changed']:.1f}% outputs changed"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
