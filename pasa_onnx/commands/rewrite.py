"""``pasa-onnx rewrite IN.onnx -o OUT.onnx``: replace attention subgraphs with PasaAttention."""

from __future__ import annotations

import argparse
import sys
import time

from pasa_onnx.errors import PasaError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "rewrite",
        help="replace attention subgraphs with PasaAttention",
        description="Replace every attention subgraph that PasaAttention reproduces exactly and "
        "print what was found, replaced and left alone (with the reason). The input file is "
        "never modified; the output is written atomically, with external data when the input "
        "has it.",
    )
    parser.add_argument("model", help="input ONNX model")
    parser.add_argument("-o", "--output", required=True, help="output ONNX model")
    parser.add_argument(
        "--validate", action="store_true", help="run both models and compare (not available yet)"
    )
    parser.add_argument("--report", metavar="PATH", help="write a validation report (not yet)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.validate or args.report:
        raise PasaError("--validate and --report are not available yet (validation is pending)")
    from pasa_onnx.rewriting import rewrite_file

    start = time.perf_counter()

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr)

    summary = rewrite_file(args.model, args.output, progress=progress)
    print(f"{args.model} -> {args.output}")
    print(summary.format())
    return 0
