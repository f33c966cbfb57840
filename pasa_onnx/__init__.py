"""pasa-onnx: overflow-safe half-precision attention for ONNX Runtime.

``library_path()`` locates the ``ai.pasa::PasaAttention`` custom-op library;
``session_options()`` / ``inference_session()`` register it for you.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import PackageNotFoundError, version

from pasa_onnx.errors import PasaError, ValidationFailed
from pasa_onnx.runtime import (
    DOMAIN,
    OP_TYPE,
    OP_VERSION,
    build_info,
    inference_session,
    library_path,
    run,
    session_options,
)
from pasa_onnx.schema import register_schema

# An editable install (scikit-build-core's redirect) lists the parent of every mapped source
# folder as a location of this package: passes/ -> the repository root, which would make
# pasa_onnx.tests and friends importable. Keep only this package's own folders, as in the wheel.
__path__[:] = [p for p in __path__ if os.path.basename(os.path.normpath(p)) == "pasa_onnx"]

register_schema()

# Submodules loaded on first use (they import onnxscript and friends).
_LAZY = {"rewrite": "pasa_onnx.rewriting", "validate": "pasa_onnx.validation"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pasa_onnx' has no attribute {name!r}")


try:
    __version__ = version("pasa-onnx")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "DOMAIN",
    "OP_TYPE",
    "OP_VERSION",
    "PasaError",
    "ValidationFailed",
    "__version__",
    "build_info",
    "inference_session",
    "library_path",
    "rewrite",
    "run",
    "validate",
    "session_options",
]
