"""Write docs/cli.md from the CLI's own --help texts (tests/test_docs.py keeps them in step).

python scripts/gen_cli_docs.py [--check]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def render() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width: fix it
    from pasa_onnx.cli import COMMANDS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = [
        "# Command line reference\n",
        "Generated from `pasa-onnx --help` by `scripts/gen_cli_docs.py`; a test keeps it in "
        "step. `python -m pasa_onnx` works like `pasa-onnx`.\n",
        "Exit codes: 0 success, 1 validation outside tolerance, 2 usage or input error.\n",
        "## pasa-onnx\n",
        "```text\n" + parser.format_help().replace("python -m pasa_onnx", "pasa-onnx") + "```\n",
    ]
    for name in COMMANDS:
        text = sub.choices[name].format_help()
        parts.append(f"## pasa-onnx {name}\n")
        parts.append("```text\n" + text + "```\n")
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        return 0 if DOC.read_text() == text else 1
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
