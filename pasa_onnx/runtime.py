"""Locating the PasaAttention custom-op library and creating onnxruntime sessions with it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pasa_onnx.errors import PasaError

DOMAIN = "ai.pasa"
OP_TYPE = "PasaAttention"
OP_VERSION = 1
_LIBRARY_NAME = "libpasa_onnx_ops.so"


def library_path() -> str:
    """Absolute path of the installed custom-op library (to pass to
    ``SessionOptions.register_custom_ops_library``).

    The environment variable ``PASA_ONNX_LIBRARY`` overrides it (e.g. a sanitizer build).
    """
    override = os.environ.get("PASA_ONNX_LIBRARY")
    path = Path(override) if override else Path(__file__).resolve().parent / "lib" / _LIBRARY_NAME
    if not path.is_file():
        raise PasaError(
            f"custom-op library not found at {path}; install the package with `pip install .` "
            "(which compiles it) or set PASA_ONNX_LIBRARY to a built libpasa_onnx_ops.so"
        )
    return str(path.resolve())


def session_options(options: Any = None) -> Any:
    """Return ``onnxruntime.SessionOptions`` with the PasaAttention library registered.

    Registering twice on one ``SessionOptions`` fails in onnxruntime, so pass a fresh one.
    """
    import onnxruntime as ort

    opts = options if options is not None else ort.SessionOptions()
    opts.register_custom_ops_library(library_path())
    return opts


def inference_session(
    model: Any,
    options: Any = None,
    providers: list[str] | None = None,
) -> Any:
    """Create an ``onnxruntime.InferenceSession`` that can run PasaAttention nodes.

    ``model`` is a path, serialized bytes or an ``onnx.ModelProto``.
    """
    import onnxruntime as ort

    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = os.fspath(model)
    return ort.InferenceSession(
        model,
        sess_options=session_options(options),
        providers=providers or ["CPUExecutionProvider"],
    )
