"""``pasa-onnx rewrite IN.onnx -o OUT.onnx``: replace attention subgraphs with PasaAttention."""

from __future__ import annotations

import argparse
import sys
import time

from pasa_onnx.commands.validate import add_validation_options, run_validation
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
        "--validate",
        action="store_true",
        help="then run both models in onnxruntime and compare them (exit 1 outside tolerance); "
        "the options below are those of `pasa-onnx validate`",
    )
    add_validation_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    validation_only = args.report or args.inputs or args.dim
    if validation_only and not args.validate:
        raise PasaError("--report, --inputs and --dim need --validate")
    from pasa_onnx.rewriting import rewrite_file

    start = time.perf_counter()

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr)

    summary = rewrite_file(args.model, args.output, progress=progress)
    print(f"{args.model} -> {args.output}")
    print(summary.format())
    if args.validate:
        return run_validation(args.model, args.output, args)
    return 0
