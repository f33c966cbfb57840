"""``pasa-onnx validate ORIGINAL REWRITTEN``: run both models (and the original lifted to fp32)
on the same inputs, compare outputs and every replaced attention, write reports.

``add_validation_options`` and ``run_validation`` are shared with ``rewrite --validate``.
"""

from __future__ import annotations

import argparse
import sys
import time

from pasa_onnx.errors import ValidationFailed


def add_validation_options(parser: argparse.ArgumentParser) -> None:
    """The options validation takes, for ``validate`` and for ``rewrite --validate``."""
    from pasa_onnx.validation import DEFAULT_ATOL, DEFAULT_RTOL

    parser.add_argument(
        "--inputs",
        metavar="NPZ",
        help="inputs as an .npz (one array per graph input); default: generated from the graph",
    )
    parser.add_argument(
        "--dim",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="bind a symbolic dimension of generated inputs (repeatable); defaults are printed",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for generated inputs (0)")
    parser.add_argument(
        "--atol", type=float, default=DEFAULT_ATOL, help=f"absolute tolerance ({DEFAULT_ATOL:g})"
    )
    parser.add_argument(
        "--rtol", type=float, default=DEFAULT_RTOL, help=f"relative tolerance ({DEFAULT_RTOL:g})"
    )
    parser.add_argument(
        "--report",
        action="append",
        default=[],
        metavar="PATH",
        help="write a report; .json, .html or .md by extension (repeatable)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def run_validation(original, rewritten, args: argparse.Namespace) -> int:
    """Validate, print a summary, and turn a failure into exit code 1 (ValidationFailed)."""
    from pasa_onnx.reports.formatting import num
    from pasa_onnx.validation import validate

    start = time.perf_counter()

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    result = validate(
        original,
        rewritten,
        inputs=args.inputs,
        dims=args.dim,
        seed=args.seed,
        atol=args.atol,
        rtol=args.rtol,
        report=args.report,
        progress=progress,
    )
    for a in result.attentions:
        flag = " PLAIN-FP16-OVERFLOW" if a.plain_fp16_overflows else ""
        err = a.vs_original.max_abs_err if a.vs_original else float("nan")
        print(
            f"attention {a.node}: max_abs_err {err:.3g}, max |score| {num(a.max_abs_score)}"
            f"{flag}, within tolerance: {a.within_tolerance}"
        )
    for o in result.outputs:
        err = o.vs_original.max_abs_err if o.vs_original else float("nan")
        print(f"output {o.name}: max_abs_err {err:.3g}, within tolerance: {o.within_tolerance}")
    if not result.passed:
        raise ValidationFailed("validation failed: " + "; ".join(result.failures()))
    print(f"validation passed (atol={result.atol:g}, rtol={result.rtol:g})")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_validation(args.original, args.rewritten, args)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "validate",
        help="compare a rewritten model with its original",
        description="Run ORIGINAL, REWRITTEN and ORIGINAL lifted to fp32 in onnxruntime on the "
        "same inputs; compare every graph output and every PasaAttention output. An element is "
        "within tolerance when |rewritten - original| <= atol + rtol*|original|, or when it is "
        "within tolerance of the fp32 reference or at least as close to it as the original "
        "(docs/report-format.md). "
        "Exit 0 within tolerance, 1 outside, 2 on usage or input errors.",
    )
    p.add_argument("original", help="the model before rewriting (.onnx)")
    p.add_argument("rewritten", help="the model with PasaAttention nodes (.onnx)")
    add_validation_options(p)
    p.set_defaults(func=run)
