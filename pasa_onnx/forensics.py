"""Overflow forensics for one attention, from the tensors its PasaAttention node received:
the largest |scale * q . k| over attended pairs (float64, chunked over queries) and whether a
plain fp16 flash-attention kernel (``numerics.attention_plain_half``: no shift, ``Q.K^T``
rounded to fp16 before scaling) gives non-finite output where the float64 attention is finite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pasa_onnx.numerics import attention_golden, attention_plain_half, error_metrics

# Score elements per chunk (float64): bounds the forensics' scratch memory to ~128 MiB.
_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class AttentionInputs:
    """The op's inputs (absent optional ones are None) and attributes, as in the graph."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    attn_mask: np.ndarray | None = None
    past_key: np.ndarray | None = None
    past_value: np.ndarray | None = None
    nonpad_kv_seqlen: np.ndarray | None = None
    scale: float | None = None
    is_causal: bool = False
    q_num_heads: int | None = None
    kv_num_heads: int | None = None
    softcap: float = 0.0
    left_window_size: int = -1
    right_window_size: int = -1
    block_kv: int = 128


@dataclass(frozen=True)
class Forensics:
    max_abs_score: float
    plain_fp16_overflows: bool
    plain_fp16_nonfinite: int  # non-finite outputs of the plain fp16 kernel, golden finite
    plain_fp16_max_abs_err: float  # plain fp16 kernel vs float64 attention (finite entries)


def _heads(t: np.ndarray, heads: int | None) -> np.ndarray:
    """[B,S,H*D] -> [B,H,S,D]; 4-D passes through."""
    if t.ndim == 4:
        return t
    if not heads:
        raise ValueError("3-D attention inputs need q_num_heads and kv_num_heads")
    b, s, hidden = t.shape
    return t.reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)


def _allowed(a: AttentionInputs, b: int, hq: int, i0: int, i1: int, sq: int, skv: int, past: int):
    """[B,Hq|1,rows,Skv] bool: pairs the attention actually attends."""
    keys = np.arange(skv)
    ok = np.ones((b, 1, i1 - i0, skv), dtype=bool)
    offset = np.full(b, past, dtype=np.int64)
    if a.nonpad_kv_seqlen is not None:
        valid = np.asarray(a.nonpad_kv_seqlen, dtype=np.int64).reshape(b)
        ok &= keys[None, None, None, :] < valid[:, None, None, None]
        offset = valid - sq
    diff = (np.arange(i0, i1)[None, :, None] + offset[:, None, None]) - keys[None, None, :]
    if a.is_causal:
        ok &= (diff >= 0)[:, None]
    if a.left_window_size >= 0:
        ok &= (diff <= a.left_window_size)[:, None]
    if a.right_window_size >= 0:
        ok &= (-diff <= a.right_window_size)[:, None]
    if a.attn_mask is not None:
        m = np.asarray(a.attn_mask)
        attend = m if m.dtype == np.bool_ else m.astype(np.float64) != -np.inf
        if attend.shape[-1] < skv:  # ONNX: a shorter mask leaves the remaining keys masked
            pad = [(0, 0)] * (attend.ndim - 1) + [(0, skv - attend.shape[-1])]
            attend = np.pad(attend, pad, constant_values=False)
        full = np.broadcast_to(attend, (b, hq, sq, skv))
        ok = ok & full[:, :, i0:i1]
    return ok


def max_abs_score(a: AttentionInputs) -> float:
    """max |scale * q . k| over attended pairs, in float64; 0 when nothing is attended."""
    q = _heads(np.asarray(a.q, dtype=np.float64), a.q_num_heads)
    k = _heads(np.asarray(a.k, dtype=np.float64), a.kv_num_heads)
    past = 0
    if a.past_key is not None:
        past = a.past_key.shape[2]
        k = np.concatenate([np.asarray(a.past_key, dtype=np.float64), k], axis=2)
    b, hq, sq, d = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    k = np.repeat(k, hq // hkv, axis=1)  # grouped-query: each kv head serves hq/hkv q heads
    scale = a.scale if a.scale is not None else 1.0 / np.sqrt(d)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, b * hq * skv))
    best = 0.0
    kt = np.swapaxes(k, 2, 3)
    for i0 in range(0, sq, chunk):
        i1 = min(i0 + chunk, sq)
        with np.errstate(over="ignore", invalid="ignore"):
            s = np.abs(scale * np.matmul(q[:, :, i0:i1], kt))
        s = np.where(_allowed(a, b, hq, i0, i1, sq, skv, past), s, 0.0)
        if np.isnan(s).any():
            return float("nan")
        best = max(best, float(s.max(initial=0.0)))
    return best


def _to_half(x: np.ndarray | None) -> np.ndarray | None:
    if x is None or not np.issubdtype(np.asarray(x).dtype, np.floating):
        return x
    with np.errstate(over="ignore"):
        return np.asarray(x).astype(np.float16)


def plain_fp16_check(a: AttentionInputs) -> tuple[int, float]:
    """Run the plain fp16 kernel (no shift) and the float64 attention on the same fp16 inputs:
    (outputs non-finite only in the plain kernel, its max abs error on finite entries)."""
    args = [
        _to_half(t)
        for t in (a.q, a.k, a.v, a.attn_mask, a.past_key, a.past_value, a.nonpad_kv_seqlen)
    ]
    attrs: dict[str, Any] = dict(
        scale=a.scale,
        is_causal=a.is_causal,
        q_num_heads=a.q_num_heads,
        kv_num_heads=a.kv_num_heads,
        softcap=a.softcap,
        left_window_size=a.left_window_size,
        right_window_size=a.right_window_size,
    )
    plain = attention_plain_half(*args, block_kv=a.block_kv, **attrs)
    golden = attention_golden(*args, **attrs)
    bad = int((~np.isfinite(plain.astype(np.float64)) & np.isfinite(golden)).sum())
    return bad, error_metrics(plain, golden).max_abs_err


def analyse(a: AttentionInputs) -> Forensics:
    score = max_abs_score(a)
    bad, err = plain_fp16_check(a)
    return Forensics(score, bad > 0, bad, err)
