"""Numpy emulation of the CUDA kernels' pipeline (docs/numerics.md, "The CUDA pipeline").

On a GPU the products run on tensor cores, whose operands are half-precision values. In
``half`` mode the CUDA kernels (the flash kernels and the generic kernel alike), per key block:

- take the block mean over the valid keys in float32 and form ``K' = c·(K − α·mean)`` in
  float32, rounded to the half type (the MMA operand); Q and V are operands too (rounded: a
  no-op for fp16/bf16 inputs; an operand whose rounding would overflow keeps float32);
- accumulate ``S = Q·K'ᵀ`` in float32, then round S to the half type per row and 64-key tile
  (aligned to absolute key positions), except a tile where an attended ``|S|`` would overflow,
  which keeps float32;
- recover the removed shift directly, ``c·(q·α·mean)`` (one float32 dot product per row and
  block), so ``x = (S + mask) + shift`` are the scores themselves: no pseudo-average bookkeeping;
- run the online softmax with float32 m, l, O; P is rounded to the half type for P·V.

With ``score_accumulation="half"`` (the kernels' ``PASA_ONNX_CUDA_SCORE_ACCUM=half``, fp16
inputs without a mask or softcap) the score product accumulates in fp16 instead: each 16-column
k-step adds its products to the fp16 partial sum and rounds it. Where any sum of 16 packed query
rows (``R = i·G + g``, aligned at multiples of 16) in a 64-key tile is not finite, those rows'
tile takes the float32 product and the steps above.

``float`` and ``paper`` mode are the CPU kernel's pipelines (``numerics.attention_emulated``):
the generic CUDA kernel runs them with the same rounding points.

:func:`attention_emulated_gpu` takes the op's inputs exactly as ``numerics.attention_emulated``
does and returns the op's output in the input's type and layout.
"""

from __future__ import annotations

import numpy as np

from pasa_onnx.numerics import (
    BFLOAT16,
    _bias,
    _expand_kv,
    _finish,
    _key_valid,
    _normalise,
    attention_emulated,
    default_alpha,
    resolve_precision,
    round_to,
)

OVERFLOW_TILE = 64  # keys per tile of the overflow fallback (the flash kernels' tile)
HALF_ACC_ROWS = 16  # packed query rows that fall back together from fp16 accumulation (an m16 tile)
HALF_ACC_KSTEP = 16  # columns per fp16 rounding of the partial sum (one mma k-step)
SCORE_ACCUMULATIONS = ("float", "half")


def round_operand(x: np.ndarray, half_type: np.dtype) -> np.ndarray:
    """Round to ``half_type`` for a tensor-core product; values whose rounding overflows keep
    their float32 value."""
    x = np.asarray(x, dtype=np.float32)
    r = round_to(x, half_type)
    return np.where(np.isinf(r) & ~np.isinf(x), x, r).astype(np.float32)


def _half_acc_scores(qc: np.ndarray, kshift: np.ndarray) -> np.ndarray:
    """S = Q·K'ᵀ with an fp16 partial sum rounded after every 16-column k-step."""
    sh = np.zeros(qc.shape[:-1] + (kshift.shape[2],), dtype=np.float32)
    for k0 in range(0, qc.shape[-1], HALF_ACC_KSTEP):
        k1 = k0 + HALF_ACC_KSTEP
        part = np.matmul(qc[..., k0:k1], np.swapaxes(kshift[..., k0:k1], 2, 3))
        sh = round_to(sh + part, np.dtype(np.float16))
    return sh


def _half_acc_fallback(bad: np.ndarray, i0: int, group: int) -> np.ndarray:
    """Per key of ``bad`` [B, Hq, rows, keys] (non-finite fp16 sums; block-aligned keys): whether
    its 16-packed-row group's 64-key tile falls back to float32 accumulation."""
    b, hq, rows, nkeys = bad.shape
    ntiles = -(-nkeys // OVERFLOW_TILE)
    pad = ntiles * OVERFLOW_TILE - nkeys
    padded = np.pad(bad, [(0, 0)] * 3 + [(0, pad)])
    tiles = padded.reshape(b, hq, rows, ntiles, OVERFLOW_TILE).any(axis=-1)
    hkv = hq // group
    # packed rows R = i·G + g of each kv head, in order of R, then OR-ed per group of 16
    packed = tiles.reshape(b, hkv, group, rows, ntiles).transpose(0, 1, 3, 2, 4)
    packed = packed.reshape(b, hkv, rows * group, ntiles)
    grp = (i0 * group + np.arange(rows * group)) // HALF_ACC_ROWS
    starts = np.flatnonzero(np.diff(grp, prepend=grp[0] - 1))
    per_group = np.logical_or.reduceat(packed, starts, axis=2)
    back = np.repeat(per_group, np.diff(np.append(starts, rows * group)), axis=2)
    back = back.reshape(b, hkv, rows, group, ntiles).transpose(0, 1, 3, 2, 4)
    back = back.reshape(b, hq, rows, ntiles)
    return np.repeat(back, OVERFLOW_TILE, axis=-1)[..., :nkeys]


def attention_emulated_gpu(
    q,
    k,
    v,
    attn_mask=None,
    past_key=None,
    past_value=None,
    nonpad_kv_seqlen=None,
    *,
    precision: str | None = None,
    alpha: float | None = None,
    block_kv: int = 128,
    scale=None,
    is_causal=False,
    q_num_heads=None,
    kv_num_heads=None,
    softcap=0.0,
    left_window_size=-1,
    right_window_size=-1,
    query_chunk: int = 256,
    score_accumulation: str = "float",
) -> np.ndarray:
    """The CUDA kernels' result, step by step (same rounding points; float32 sums in numpy's
    order, so agreement is to rounding, not bit for bit). ``score_accumulation="half"``: the
    fp16-accumulator score product (fp16 inputs in ``half`` precision, no mask, no softcap)."""
    in_dtype, half_type, precision = resolve_precision(q, precision)
    if score_accumulation not in SCORE_ACCUMULATIONS:
        raise ValueError(
            f"score_accumulation is {score_accumulation!r}; expected one of {SCORE_ACCUMULATIONS}"
        )
    half_acc = score_accumulation == "half"
    if half_acc and (
        np.dtype(in_dtype) != np.float16
        or precision != "half"
        or attn_mask is not None
        or softcap > 0
    ):
        raise ValueError(
            "score_accumulation='half' applies to float16 inputs in precision 'half' without "
            "attn_mask or softcap (the kernels accumulate in float32 otherwise)"
        )
    attrs = dict(
        scale=scale,
        is_causal=is_causal,
        q_num_heads=q_num_heads,
        kv_num_heads=kv_num_heads,
        softcap=softcap,
        left_window_size=left_window_size,
        right_window_size=right_window_size,
        query_chunk=query_chunk,
    )
    if precision != "half":
        return attention_emulated(
            q,
            k,
            v,
            attn_mask,
            past_key,
            past_value,
            nonpad_kv_seqlen,
            precision=precision,
            alpha=alpha,
            block_kv=block_kv,
            **attrs,
        )
    p = _normalise(
        q,
        k,
        v,
        attn_mask,
        past_key,
        past_value,
        nonpad_kv_seqlen,
        scale,
        is_causal,
        q_num_heads,
        kv_num_heads,
        softcap,
        left_window_size,
        right_window_size,
        np.float32,
    )
    f32 = np.float32
    alpha = f32(
        0.0 if p.softcap > 0 else (default_alpha(half_type, "half") if alpha is None else alpha)
    )
    c = f32(p.scale)
    overflow_at = f32(65520.0) if half_type != BFLOAT16 else np.uint32(0x7F7F8000).view(np.float32)

    def op(x):
        return round_operand(x, half_type)

    b, hq, _, sq, skv = p.shape
    dv = p.v.shape[3]
    key_valid = _key_valid(p)
    kx, vx = _expand_kv(p.k, hq), _expand_kv(p.v, hq)
    out = np.zeros((b, hq, sq, dv), dtype=np.float32)
    ninf = f32(-np.inf)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for i0 in range(0, sq, query_chunk):
            i1 = min(i0 + query_chunk, sq)
            rows = i1 - i0
            qc = op(p.q[:, :, i0:i1])
            bias = _bias(p, i0, i1)
            m = np.full((b, hq, rows), ninf, dtype=f32)
            l_ = np.zeros((b, hq, rows), dtype=f32)
            o = np.zeros((b, hq, rows, dv), dtype=f32)
            for r0 in range(0, skv, block_kv):
                r1 = min(r0 + block_kv, skv)
                valid = key_valid[:, :, r0:r1]
                count = valid.sum(axis=-1).astype(f32)
                if not count.any():
                    continue
                inv_count = np.where(count > 0, f32(1.0) / np.maximum(count, 1), 0).astype(f32)
                kb = np.where(valid[..., None], kx[:, :, r0:r1], f32(0))
                kbar = alpha * (kb.sum(axis=2, dtype=f32) * inv_count[..., None])
                # K' in float32, then rounded to the half type for the tensor cores.
                kshift = np.where(valid[..., None], op(c * (kb - kbar[:, :, None, :])), f32(0))
                s = np.matmul(qc, np.swapaxes(kshift, 2, 3))  # float32 accumulation
                if half_acc:
                    sh = _half_acc_scores(qc, kshift)
                    fallback = _half_acc_fallback(~np.isfinite(sh), i0, hq // p.k.shape[1])
                    s = np.where(fallback, s, sh)
                if p.softcap > 0:
                    s = f32(p.softcap) * np.tanh(s / f32(p.softcap))
                add = np.where(valid[:, :, None, :], bias[..., r0:r1], -np.inf).astype(f32)
                attended = add != ninf
                part = attended.any(axis=-1) & (count[..., None] > 0)
                # S rounded per row and 64-key tile, unless an attended score there overflows.
                tile = np.arange(r0, r1) // OVERFLOW_TILE
                big = attended & ~(np.abs(s) < overflow_at)
                ovf = np.zeros_like(attended)
                for t in np.unique(tile):
                    cols = tile == t
                    ovf[..., cols] = big[..., cols].any(axis=-1, keepdims=True)
                s = np.where(ovf, s, round_to(s, half_type))
                shift = c * np.matmul(qc, kbar[..., None])[..., 0]  # [B,H,R]: c·(q·α·mean)
                x = np.where(attended, (s + add) + shift[..., None], ninf).astype(f32)
                mx = x.max(axis=-1)
                m_new = np.maximum(m, mx)
                upd = part & (m_new != ninf)
                corr = np.where(m == ninf, f32(0), np.exp(m - m_new)).astype(f32)
                prob = np.where(attended, np.exp(x - m_new[..., None]), f32(0)).astype(f32)
                prob = round_to(prob, half_type)  # P: the operand of the P·V product
                psum = prob.sum(axis=-1, dtype=f32)
                vb = np.where(valid[..., None], op(vx[:, :, r0:r1]), f32(0))
                pv = np.matmul(prob, vb)
                l_ = np.where(upd, l_ * corr + psum, l_)
                o = np.where(upd[..., None], o * corr[..., None] + pv, o)
                m = np.where(upd, m_new, m)
            safe_l = np.where(l_ != 0, l_, 1)[..., None]
            out[:, :, i0:i1] = np.where(l_[..., None] != 0, o / safe_l, 0)
    return _finish(p, out, in_dtype)
