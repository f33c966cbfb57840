"""ONNX's Attention conformance cases (tests/test_conformance.py) on the CUDA execution
provider: as shipped and cast to fp16, bf16 and fp32, every node placed on CUDA."""

from __future__ import annotations

import pytest
import test_conformance as cpu_cases
from cuda_support import cuda_session, requires_cuda
from test_conformance import CASES, test_as_shipped, test_cast_to_each_type  # noqa: F401

import pasa_onnx

pytestmark = requires_cuda()


def _run_on_cuda(model, feeds):
    return pasa_onnx.run(cuda_session(cpu_cases._retarget(model)), feeds)


@pytest.fixture(autouse=True)
def _on_cuda(monkeypatch):
    monkeypatch.setattr(cpu_cases, "_run_pasa", _run_on_cuda)


def test_cuda_case_count():
    assert len(CASES) >= 75
