"""Constant masks the op expresses without a tensor: an all-zero (all-True) mask is dropped and a
causal one becomes ``is_causal=1`` — only when that is provably the same computation."""

from __future__ import annotations

import numpy as np

from ._values import const_array
from .match import AttentionMatch

# An additive mask value this negative gives exp(s + m - max) == 0 exactly in float32 for any
# finite score, so it masks the key just as -inf does (finfo(float32).min is -3.4e38).
_MASKED_BELOW = -1e30


def _kind(mask: np.ndarray) -> str:
    """'none', 'causal' or 'tensor' for one constant mask (bool: True attends)."""
    if mask.dtype == np.bool_:
        allowed = mask
    else:
        m = mask.astype(np.float64)
        if not ((m == 0.0) | (m <= _MASKED_BELOW)).all():  # a real bias, not just on/off
            return "tensor"
        allowed = m == 0.0
    if allowed.all():
        return "none"
    if mask.ndim < 2 or mask.shape[-1] != mask.shape[-2] or mask.shape[-1] < 2:
        return "tensor"
    if any(d != 1 for d in mask.shape[:-2]):  # the same for every batch and head
        return "tensor"
    s = mask.shape[-1]
    causal = np.tril(np.ones((s, s), dtype=bool))
    return "causal" if np.array_equal(allowed.reshape(s, s), causal) else "tensor"


def simplify(m: AttentionMatch) -> None:
    """Drop or turn into ``is_causal`` the constant masks of ``m`` (in place)."""
    if len(m.masks) != 1 or m.past_key is not None or m.nonpad_kv_seqlen is not None:
        return
    arr = const_array(m.masks[0])
    if arr is None:
        return
    kind = _kind(arr)
    if kind == "none":
        m.masks = []
        m.family += "+nomask"
    elif kind == "causal":
        m.masks = []
        m.is_causal = True
        m.family += "+causal"
