"""Bad input on the CUDA execution provider: every shape, type and attribute error of
tests/test_bad_input.py, with the CPU kernel's messages (both kernels parse through
problem/parse.h). Checks that need the input *values* on the host (non-finite Q/K/V, +inf in an
additive mask, nonpad_kv_seqlen's range) cannot be made by a kernel that never synchronises: on
CUDA such values show in the output as NaN instead (tested here), never as a plausible number."""

from __future__ import annotations

import numpy as np
import pytest
import test_bad_input as cpu_cases
from cuda_support import requires_cuda, run_pasa_cuda
from test_bad_input import (  # noqa: F401 - collected here, run on CUDA
    _qkv,
    test_3d_needs_head_counts_and_divisible_hidden,
    test_bad_attributes,
    test_empty_sequences,
    test_k_and_v_sequence_lengths_differ,
    test_mask_that_does_not_broadcast,
    test_mismatched_head_sizes,
    test_past_key_without_past_value_and_bad_past_shape,
    test_query_heads_not_a_multiple_of_kv_heads,
    test_rank_errors,
    test_wrong_element_types,
)

pytestmark = requires_cuda()


@pytest.fixture(autouse=True)
def _on_cuda(monkeypatch):
    monkeypatch.setattr(cpu_cases, "run_pasa", run_pasa_cuda)


@pytest.mark.parametrize("name", ["Q", "K", "V"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_shows_in_the_output(name, bad):
    x = _qkv()
    x[name][0, 1, 3, 2] = bad
    y = run_pasa_cuda(x).astype(np.float32)
    hkv_head = 1 if name == "Q" else None
    if name == "Q":
        assert not np.isfinite(y[0, hkv_head, 3]).all()  # the row that read it
    else:
        assert not np.isfinite(y[0, 2:4]).all()  # the query heads of kv head 1 read key 3
    assert np.isfinite(y[0, 0 : 2 if name != "Q" else 1]).all()  # other heads are untouched


def test_plus_inf_in_additive_mask_shows_in_the_output():
    x = _qkv()
    mask = np.zeros((8, 10), dtype=np.float16)
    mask[2, 3] = np.inf
    x["attn_mask"] = mask
    y = run_pasa_cuda(x).astype(np.float32)
    assert not np.isfinite(y[:, :, 2]).any()
    assert np.isfinite(np.delete(y, 2, axis=2)).all()


def test_nonpad_out_of_range_gives_nan_for_that_batch():
    x = _qkv(b=2)
    x["nonpad_kv_seqlen"] = np.array([10, 11], dtype=np.int64)
    y = run_pasa_cuda(x).astype(np.float32)
    assert np.isfinite(y[0]).all()
    assert np.isnan(y[1]).all()


def test_head_size_beyond_the_cuda_kernel_is_a_clear_error():
    x = _qkv(d=520, dv=16)
    with pytest.raises(
        Exception, match=r"PasaAttention node 'attn0': head sizes D=520, Dv=16 .*at most 512"
    ):
        run_pasa_cuda(x)


def test_block_kv_beyond_the_cuda_kernel_is_a_clear_error_at_session_creation():
    with pytest.raises(
        Exception, match=r"attribute block_kv=2048 is not supported by the CUDA kernel"
    ):
        run_pasa_cuda(_qkv(), block_kv=2048)
