"""Locating the PasaAttention custom-op library and creating onnxruntime sessions with it."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from pasa_onnx.contract import DOMAIN, OP_TYPE, OP_VERSION
from pasa_onnx.errors import PasaError

__all__ = [
    "DOMAIN",
    "OP_TYPE",
    "OP_VERSION",
    "build_info",
    "inference_session",
    "isa_info",
    "library_path",
    "run",
    "session_options",
]
_LIBRARY_NAME = "libpasa_onnx_ops.so"


def library_path() -> str:
    """Absolute path of the installed custom-op library (to pass to
    ``SessionOptions.register_custom_ops_library``).

    Search order: the environment variable ``PASA_ONNX_LIBRARY`` (e.g. a sanitizer build), the
    library next to this module (an installed package), then the installed distribution's copy
    (when ``pasa_onnx`` is imported from a source checkout, e.g. ``python -m`` in the repository).
    """
    override = os.environ.get("PASA_ONNX_LIBRARY")
    if override:
        candidates = [Path(override)]
    else:
        candidates = [Path(__file__).resolve().parent / "lib" / _LIBRARY_NAME]
        candidates += _installed_library()
    for path in candidates:
        if path.is_file():
            return str(path.resolve())
    raise PasaError(
        f"custom-op library not found at {candidates[0]}; install the package with "
        "`pip install .` (which compiles it) or set PASA_ONNX_LIBRARY to a built "
        f"{_LIBRARY_NAME}"
    )


def _installed_library() -> list[Path]:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("pasa-onnx")
    except PackageNotFoundError:
        return []
    return [
        Path(str(dist.locate_file(f)))
        for f in dist.files or []
        if f.name == _LIBRARY_NAME and f.parts[0] == "pasa_onnx"
    ]


def isa_info() -> dict[str, Any]:
    """What the library's load-time dispatch selected, as the library reports it.

    ``active``: the instruction-set path the kernel runs; ``supported``: the paths this CPU can
    run, best first (``portable`` last); ``known``: every path the library was built with;
    ``error``: non-empty when ``PASA_ONNX_ISA`` names a path that cannot run here (session
    creation then fails with that reason). The library picks its path once per process, when
    it is loaded: the best one the CPU supports, or the one ``PASA_ONNX_ISA`` names (set it
    before the first session).
    """
    return _library_json("PasaOnnxIsaInfo")


def build_info() -> dict[str, Any]:
    """What this build of the library serves, as the library reports it.

    ``execution_providers``: the onnxruntime execution providers it registers a PasaAttention
    kernel for (``CUDAExecutionProvider`` only when it was built with nvcc);
    ``cuda_architectures``: the CUDA architectures compiled in (CMake's list, comma-separated),
    empty without CUDA.
    """
    return _library_json("PasaOnnxBuildInfo")


def _library_json(symbol: str) -> dict[str, Any]:
    import ctypes

    # The same file onnxruntime loads: dlopen returns the already loaded copy, so this reports
    # what sessions in this process use.
    lib = ctypes.CDLL(library_path())
    try:
        query = getattr(lib, symbol)
    except AttributeError as exc:
        raise PasaError(
            f"{library_path()} does not export {symbol}; rebuild it (`pip install .`)"
        ) from exc
    query.restype = ctypes.c_char_p
    query.argtypes = []
    info: dict[str, Any] = json.loads(query().decode("utf-8"))
    return info


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
    providers = providers or ["CPUExecutionProvider"]
    _warn_on_missing_kernels(providers)
    return ort.InferenceSession(model, sess_options=session_options(options), providers=providers)


def _warn_on_missing_kernels(providers: list[Any]) -> None:
    # onnxruntime places a node whose op has no kernel for the first provider on a later one,
    # silently: a CUDA session with a CPU-only build runs attention on the CPU, with copies.
    served = build_info()["execution_providers"]
    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    accelerators = [n for n in names if n != "CPUExecutionProvider"]
    if accelerators and not any(n in served for n in accelerators):
        warnings.warn(
            f"{library_path()} has no PasaAttention kernel for {', '.join(accelerators)} "
            f"(it serves {', '.join(served)}): those nodes will run on the CPU, with copies "
            "around them; build the library with nvcc on the PATH (`pip install .`) for CUDA",
            UserWarning,
            stacklevel=3,
        )


def run(session: Any, feeds: dict[str, Any], output_names: list[str] | None = None) -> list[Any]:
    """``session.run`` that also takes and returns bfloat16 numpy arrays (``ml_dtypes``).

    onnxruntime's Python binding has no numpy bfloat16: such tensors cross as raw uint16 buffers.
    """
    import ctypes

    import ml_dtypes
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto

    bf16 = np.dtype(ml_dtypes.bfloat16)
    names = output_names or [o.name for o in session.get_outputs()]
    if not any(np.asarray(v).dtype == bf16 for v in feeds.values()) and not any(
        o.type == "tensor(bfloat16)" for o in session.get_outputs() if o.name in names
    ):
        return session.run(names, feeds)
    binding = session.io_binding()
    keep = []
    for name, value in feeds.items():
        arr = np.ascontiguousarray(value)
        if arr.dtype == bf16:
            ov = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                arr.view(np.uint16), TensorProto.BFLOAT16
            )
        else:
            ov = ort.OrtValue.ortvalue_from_numpy(arr)
        keep.append((arr, ov))
        binding.bind_ortvalue_input(name, ov)
    for name in names:
        binding.bind_output(name, "cpu")
    session.run_with_iobinding(binding)
    results = []
    for ov in binding.get_outputs():
        if ov.data_type() == "tensor(bfloat16)":
            shape = tuple(ov.shape())
            count = int(np.prod(shape, dtype=np.int64))
            raw = np.zeros(0, np.uint16)
            if count:
                raw = np.array((ctypes.c_uint16 * count).from_address(ov.data_ptr()), np.uint16)
            results.append(raw.reshape(shape).view(bf16))
        else:
            results.append(ov.numpy())
    return results
