"""The CUDA tests' helpers that need no GPU."""

from __future__ import annotations

import numpy as np
from cuda_support import output_ulp

from pasa_onnx.numerics import BFLOAT16


def test_output_ulp_is_one_unit_in_the_last_place_relative_to_the_scale():
    v = np.ones(8, dtype=np.float32)  # RMS 1
    assert output_ulp(np.full(4, 1.0, np.float16), v) == 2.0**-10
    assert output_ulp(np.full(4, 1.5, np.float16), v) == 2.0**-10
    assert output_ulp(np.full(4, 1000.0, np.float16), v) == 2.0**-1  # [512, 1024): ulp 0.5
    assert output_ulp(np.full(4, 1.0, np.float32).astype(BFLOAT16), v) == 2.0**-7
    assert output_ulp(np.zeros(4, np.float16), v) == 2.0**-24  # fp16's smallest subnormal
    # an RMS over the elements, divided by RMS(scale_ref)
    mixed = np.array([1.0, 1000.0], np.float16)
    assert np.isclose(output_ulp(mixed, 2 * v), np.sqrt((2.0**-20 + 2.0**-2) / 2) / 2)
