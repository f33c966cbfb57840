"""build_info(): which execution providers the library serves, and the warning when a session
asks for an accelerator this build has no PasaAttention kernel for."""

from __future__ import annotations

import contextlib
import re
import warnings

import numpy as np
import pytest
from conftest import pasa_model

import pasa_onnx
from pasa_onnx import runtime


def test_build_info_lists_the_providers_and_cuda_architectures():
    info = pasa_onnx.build_info()
    providers = info["execution_providers"]
    assert providers[0] == "CPUExecutionProvider"
    assert set(providers) <= {"CPUExecutionProvider", "CUDAExecutionProvider"}
    archs = info["cuda_architectures"]
    # architectures exactly when the CUDA kernel is built in, e.g.
    # "80-real,90-real,90-virtual,90a-real" (90a: the Hopper kernel)
    assert bool(archs) == ("CUDAExecutionProvider" in providers)
    assert all(re.fullmatch(r"\d+a?-(real|virtual)", a) for a in archs.split(",") if archs)


def _model():
    q = np.zeros((1, 1, 4, 8), np.float16)
    return pasa_model({"Q": q, "K": q, "V": q})


def test_a_cuda_session_with_a_cpu_only_build_warns(monkeypatch):
    monkeypatch.setattr(
        runtime,
        "build_info",
        lambda: {"execution_providers": ["CPUExecutionProvider"], "cuda_architectures": ""},
    )
    # onnxruntime without CUDA may refuse the provider; the warning comes first
    with (
        pytest.warns(UserWarning, match="no PasaAttention kernel for CUDAExecutionProvider"),
        contextlib.suppress(Exception),
    ):
        pasa_onnx.inference_session(_model(), providers=["CUDAExecutionProvider"])


def test_no_warning_when_the_build_serves_the_providers(monkeypatch):
    monkeypatch.setattr(
        runtime,
        "build_info",
        lambda: {
            "execution_providers": ["CPUExecutionProvider", "CUDAExecutionProvider"],
            "cuda_architectures": "90-real",
        },
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*no PasaAttention kernel.*")
        try:
            pasa_onnx.inference_session(
                _model(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime without CUDA may refuse it
            assert "no PasaAttention kernel" not in str(exc)
    pasa_onnx.inference_session(_model())  # CPU only: nothing to warn about
