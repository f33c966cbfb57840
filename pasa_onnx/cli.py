"""``pasa-onnx`` command line: git-style subcommands; each lives in pasa_onnx/commands/.

Exit codes: 0 success, 1 validation outside tolerance, 2 usage or input error (every error is
one line on stderr; ``--debug`` adds the traceback), 130 on SIGINT, 143 on SIGTERM (128 + the
signal number; temporaries are removed first).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
import warnings

from pasa_onnx.errors import PasaError, ValidationFailed
from pasa_onnx.safe_io import Terminated, clean_exit_on_signals

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


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"pasa-onnx: warning: {message}", file=sys.stderr)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    debug = getattr(args, "debug", False)
    try:
        with clean_exit_on_signals(), warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except ValidationFailed as exc:
        print(f"pasa-onnx: {exc}", file=sys.stderr)
        return 1
    except PasaError as exc:
        if debug:
            traceback.print_exc()
        print(f"pasa-onnx: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the checks did not foresee: still a usage error
        if debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"pasa-onnx: error: {where}{exc.strerror or _one_line(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        if debug:
            traceback.print_exc()
        print(
            "pasa-onnx: error: out of memory; bind smaller dimensions with --dim",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("pasa-onnx: interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:
        print(f"pasa-onnx: terminated by signal {exc.signum}", file=sys.stderr)
        return 128 + exc.signum
    except Exception as exc:  # a bug: one line (and exit 2, never 1: 1 means out of tolerance)
        cause: BaseException | None = exc
        while cause is not None:  # SIGTERM during an import surfaces as an ImportError
            if isinstance(cause, Terminated):
                print(f"pasa-onnx: terminated by signal {cause.signum}", file=sys.stderr)
                return 128 + cause.signum
            cause = cause.__cause__ or cause.__context__
        if debug:
            traceback.print_exc()
        print(
            f"pasa-onnx: error: unexpected {type(exc).__name__}: {_one_line(exc)} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
