"""Accuracy on keys with a large shared part (issue #15's D11 and O1 cases), against float64.

For each case: RMSE and max error of PasaAttention (the installed library, or --library) and of
plain fp32 attention on the same inputs. ``tests/test_numerics_shift.py`` holds the kernel to
2x plain fp32 on these inputs.

    python benchmarks/shared_bias.py [--library OTHER.so]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

CASES = [  # (name, dtype, bias range, precision)
    ("fp32 keys 1e3-1e4 + noise", np.float32, (1e3, 1e4), "float"),
    ("fp16 keys 1e4-6e4 + noise", np.float16, (1e4, 6e4), "half"),
    ("fp16 keys 1e4-6e4 + noise", np.float16, (1e4, 6e4), "float"),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--library", help="a custom-op library file other than the installed one")
    args = ap.parse_args(argv)
    if args.library:
        os.environ["PASA_ONNX_LIBRARY"] = os.path.abspath(args.library)
    from ab_builds import _single_node  # this folder's one-node model builder
    from onnx import helper

    import pasa_onnx
    from pasa_onnx.numerics import (
        attention_golden,
        attention_plain_fp32,
        error_metrics,
        shared_bias_inputs,
    )

    widths = (28, 9, 12, 9, 16, 9)
    header = ("case", "precision", "kernel rmse", "max", "plain fp32 rmse", "max")
    print(
        " ".join(
            f"{h:<{w}}" if i < 2 else f"{h:>{w}}"
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    )
    for name, dtype, (low, high), precision in CASES:
        q, k, v = shared_bias_inputs(dtype, low, high)
        gold = attention_golden(q, k, v)
        model = _single_node(
            helper.np_dtype_to_tensor_dtype(q.dtype), q.shape, k.shape, precision=precision
        )
        sess = pasa_onnx.inference_session(model)
        (y,) = pasa_onnx.run(sess, {"Q": q, "K": k, "V": v})
        got, ref = error_metrics(y, gold, v), error_metrics(attention_plain_fp32(q, k, v), gold, v)
        print(
            f"{name:<28} {precision:<9} {got.rmse:12.2e} {got.max_abs_err:9.2e} {ref.rmse:16.2e} "
            f"{ref.max_abs_err:9.2e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
