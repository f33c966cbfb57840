"""Running PasaAttention on onnxruntime's CUDA execution provider in tests.

Tests marked ``cuda`` need a GPU and an onnxruntime build with ``CUDAExecutionProvider``; they
are skipped, with the reason, where either is missing. Every session here is created with CPU
fallback disabled, so a PasaAttention node that the CUDA kernel does not take fails the session
instead of silently running on the CPU kernel.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest

import pasa_onnx

CUDA_EP = "CUDAExecutionProvider"
# onnxruntime 1.30 (the lent GPU machine's) reads models up to IR version 13.
MAX_IR_VERSION = 13


@functools.lru_cache(maxsize=1)
def cuda_unavailable_reason() -> str | None:
    """None when CUDA tests can run here, else why not."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if CUDA_EP not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no {CUDA_EP} (install onnxruntime-gpu)"
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as e:  # noqa: BLE001 - any failure means no usable CUDA runtime
            return f"onnxruntime.preload_dlls() failed: {e}"
    # A provider that is compiled in may still find no device: probe with a tiny session.
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y]),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=[CUDA_EP])
    except Exception as e:  # noqa: BLE001
        return f"no usable GPU for {CUDA_EP}: {e}"
    if CUDA_EP not in sess.get_providers():
        return f"{CUDA_EP} is available but no GPU could be used"
    return None


def requires_cuda():
    """The marks of a CUDA test: ``cuda``, skipped with the reason when CUDA is unavailable."""
    reason = cuda_unavailable_reason()
    return [pytest.mark.cuda, pytest.mark.skipif(reason is not None, reason=reason or "")]


def cuda_session(model, options=None, profile: bool = False):
    """A session on the CUDA EP (CPU fallback disabled) with the PasaAttention library."""
    import onnxruntime as ort

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    model = _lowered(model)
    opts = options if options is not None else ort.SessionOptions()
    opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if profile:
        opts.enable_profiling = True
    return pasa_onnx.inference_session(model, opts, providers=[CUDA_EP])


def _lowered(model: onnx.ModelProto) -> onnx.ModelProto:
    if model.ir_version <= MAX_IR_VERSION:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.ir_version = MAX_IR_VERSION
    return out


def run_pasa_cuda(
    inputs: dict[str, np.ndarray | None], n_outputs: int = 1, threads: int = 0, **attrs
):
    """conftest.run_pasa on the CUDA EP."""
    import onnxruntime as ort
    from conftest import pasa_model

    del threads  # the CUDA kernel has no thread pool
    sess = cuda_session(pasa_model(inputs, n_outputs, **attrs), ort.SessionOptions())
    feeds = {k: v for k, v in inputs.items() if v is not None}
    out = pasa_onnx.run(sess, feeds)
    return out[0] if n_outputs == 1 else out


def run_pasa_cpu(inputs: dict[str, np.ndarray | None], n_outputs: int = 1, **attrs):
    """conftest.run_pasa on the CPU EP, with the model's IR version lowered like the CUDA runs
    (the same onnxruntime build serves both)."""
    from conftest import pasa_model

    sess = pasa_onnx.inference_session(_lowered(pasa_model(inputs, n_outputs, **attrs)))
    out = pasa_onnx.run(sess, {k: v for k, v in inputs.items() if v is not None})
    return out[0] if n_outputs == 1 else out


def output_ulp(reference: np.ndarray, scale_ref: np.ndarray) -> float:
    """One unit in the last place of ``reference``'s half type, as an RMS over its elements,
    relative to RMS(``scale_ref``) like ``error_metrics``' rel_rmse: the difference two correct
    implementations may show from rounding the same output differently."""
    from pasa_onnx.numerics import BFLOAT16

    bits = 8 if reference.dtype == BFLOAT16 else 11  # significant bits (fp16: 11)
    r = np.abs(np.asarray(reference, dtype=np.float64))
    _, e = np.frexp(r)
    smallest = -24 if bits == 11 else -133  # the type's smallest subnormal (also the ulp at 0)
    ulp = np.ldexp(1.0, np.where(r > 0, np.maximum(e - bits, smallest), smallest))
    rms_ref = float(np.sqrt(np.mean(np.asarray(scale_ref, dtype=np.float64) ** 2)))
    return float(np.sqrt(np.mean(ulp**2))) / rms_ref
