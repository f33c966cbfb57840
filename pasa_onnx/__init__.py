"""pasa-onnx: overflow-safe half-precision attention for ONNX Runtime.

``library_path()`` locates the ``ai.pasa::PasaAttention`` custom-op library;
``session_options()`` / ``inference_session()`` register it for you.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pasa_onnx.errors import PasaError, ValidationFailed
from pasa_onnx.runtime import (
    DOMAIN,
    OP_TYPE,
    OP_VERSION,
    inference_session,
    library_path,
    session_options,
)

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
    "inference_session",
    "library_path",
    "session_options",
]
