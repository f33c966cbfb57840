"""Validation reports; the path's extension picks the format: ``.json`` (machines, documented in
docs/report-format.md), ``.html`` (one self-contained page), ``.md`` (a pull-request comment)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pasa_onnx.errors import PasaError

if TYPE_CHECKING:
    from pasa_onnx.results import ValidationResult

FORMATS = (".json", ".html", ".md")


def check_report_path(path: str | os.PathLike) -> None:
    """Fail before any work for a report that could not be written."""
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise PasaError(f"--report {p}: unknown report format; use one of {', '.join(FORMATS)}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise PasaError(f"--report {p}: directory {parent} does not exist")


def render(result: ValidationResult, fmt: str) -> str:
    r: Callable[[ValidationResult], str]
    if fmt == ".json":
        from pasa_onnx.reports.json_report import render as r
    elif fmt == ".html":
        from pasa_onnx.reports.html_report import render as r
    elif fmt == ".md":
        from pasa_onnx.reports.markdown_report import render as r
    else:
        raise PasaError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    return r(result)


def write_report(result: ValidationResult, path: str | os.PathLike) -> None:
    """Write atomically (temporary file + rename), so a reader never sees half a report."""
    check_report_path(path)
    p = Path(path)
    text = render(result, p.suffix.lower())
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent if str(p.parent) else ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
