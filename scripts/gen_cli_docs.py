"""Write docs/cli.md from the CLI's own --help texts (tests/test_docs.py keeps them in step).

python scripts/gen_cli_docs.py [--check]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"

# Appended after the --help texts: what the help cannot say in a line.
FILES = """## How outputs are written

- **Never the input.** `rewrite` refuses (exit 2) an output, or a `--report`, that is the input
  model or any file it references (its external data), by path or through a hard link; `validate`
  refuses a `--report` that is one of the two models or their data files.
- **Checked before written.** A rewritten model is written only if onnxruntime loads it (CPU
  execution provider, the PasaAttention library registered, no run); otherwise nothing is written
  and the one-line error gives onnxruntime's reason.
- **Model and data as one unit.** The model and its external data are written into a fresh
  temporary folder beside the output. The data file then gets a name that no existing file has:
  `OUT.data`, or `OUT.1.data` when the output being replaced still uses `OUT.data` (the names
  alternate between runs). Renaming the model over `OUT` is the one step that switches readers
  from the old model and weights to the new ones; the replaced data file is removed afterwards.
  A kill at any moment leaves the old pair or the new pair, never a graph with the other's
  weights. Copy `OUT` together with the data file it names (`onnx.load(OUT)` finds it).
- **Temporaries.** They are named `.pasa-tmp-<pid>-<random>` and live beside the output or
  report. SIGTERM and SIGHUP remove them (exit 143 or 129), as SIGINT does (exit 130). A process
  killed with SIGKILL cannot: the next write into the same folder removes the temporaries whose
  process is gone and prints a warning naming each; the next write of `OUT` also removes data
  files named `OUT.data`/`OUT.N.data` that neither `OUT` nor the input uses.
- **Permissions.** Models and reports get the mode of a new file under your umask (e.g. 0644).

## Errors

Every usage or input error (a missing, empty or not-ONNX file, a cyclic graph, an output under a
file or in an unwritable folder, an unwritable report, a `--dim` too large for memory, a bad
`.npz`) is one line on stderr starting `pasa-onnx: error:`, naming the file, node or tensor, and
exit code 2. `--debug` (before the command: `pasa-onnx --debug rewrite ...`) adds the traceback.
Exit code 1 means only one thing: validation found a difference outside tolerance.
"""


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
    parts.append(FILES)
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
