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
    from pathlib import Path

    from pasa_onnx.inputs import parse_dims
    from pasa_onnx.reports import check_report_path
    from pasa_onnx.rewriting import check_output_path, rewrite_file

    parse_dims(args.dim)  # a malformed --dim fails before anything is written
    for report in args.report:  # before any work: a report never lands on a model file
        check_report_path(report)
        if Path(report).resolve() == Path(args.output).resolve():
            raise PasaError(f"--report {report}: that is the output model; choose another file")
        check_output_path(Path(args.model), Path(report), "the --report path")
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
