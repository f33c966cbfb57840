"""``pasa-onnx`` command line: git-style subcommands; each lives in pasa_onnx/commands/.

Exit codes: 0 success, 1 validation outside tolerance, 2 usage or input error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from pasa_onnx.errors import PasaError, ValidationFailed

# Subcommand modules in pasa_onnx.commands, in --help order.
COMMANDS: tuple[str, ...] = ("rewrite", "inspect", "validate")


def build_parser() -> argparse.ArgumentParser:
    from pasa_onnx import __version__

    parser = argparse.ArgumentParser(
        prog="pasa-onnx",
        description="Replace attention subgraphs of ONNX models with the overflow-safe "
        "PasaAttention op, and validate the result.",
    )
    parser.add_argument("--version", action="version", version=f"pasa-onnx {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"pasa_onnx.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except ValidationFailed as exc:
        print(f"pasa-onnx: {exc}", file=sys.stderr)
        return 1
    except PasaError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"pasa-onnx: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pasa-onnx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
