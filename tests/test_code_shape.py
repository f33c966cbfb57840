"""Code-shape rule of custom_ops/: no function body longer than 150 lines (issue #10)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "custom_ops"
# A line that ends a function header: `...) [const] [noexcept] [-> T] {`, not a control statement.
HEADER = re.compile(r"\)\s*(const)?\s*(noexcept)?\s*(->\s*[\w:<>]+)?\s*\{\s*$")
CONTROL = re.compile(r"^\s*(\}|if|for|while|switch|else|do|case|return)\b")


def function_lengths() -> list[tuple[int, str]]:
    found = []
    for path in sorted(ROOT.rglob("*")):
        if path.suffix not in {".cc", ".h", ".cu", ".cuh"}:
            continue
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if HEADER.search(line) and not CONTROL.match(line) and "[" not in line.split("(")[0]:
                depth, j = 0, i
                while j < len(lines):
                    depth += lines[j].count("{") - lines[j].count("}")
                    if depth <= 0:
                        break
                    j += 1
                found.append((j - i + 1, f"{path.relative_to(ROOT)}:{i + 1}"))
                i = j + 1
            else:
                i += 1
    return found


def test_functions_are_at_most_150_lines():
    lengths = function_lengths()
    assert len(lengths) > 50  # the scan sees the code
    too_long = [f"{where} ({n} lines)" for n, where in lengths if n > 150]
    assert not too_long, too_long
