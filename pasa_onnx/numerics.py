"""Numerics references shared by tests, validation reports and benchmarks.

- :func:`attention_golden`: float64 attention with ONNX ``Attention`` semantics (the truth).
- :func:`attention_emulated`: a numpy emulation of the PasaAttention kernel's pipeline in each
  precision mode (``half``, ``paper``, ``float``), rounding where the kernel rounds
  (see ``shared/PASA.md``).
- :func:`attention_plain_half`: a plain half-precision flash-attention pipeline (no shift,
  ``Q·Kᵀ`` rounded to the half type before scaling, every stored value in the half type): the
  baseline that overflows, and what "a plain fp16 kernel would do" means in reports.

Both accept the op's inputs exactly as an ONNX ``Attention`` node receives them (3-D or 4-D,
GQA, masks, past key/value, ``nonpad_kv_seqlen``) and process queries in chunks, so keys can be
long without materialising an S x S matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

PRECISIONS = ("half", "paper", "float")
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def default_alpha(half_type: np.dtype, precision: str = "half") -> float:
    """The kernel's default shift strength. ``half`` and ``float`` recover the removed shift
    directly (exact for any alpha), so they remove the whole block mean: 1. ``paper`` keeps the
    authors' 0.9375 (fp16; alpha/n exact for n = 128) or 0.9689939 (bf16)."""
    if precision != "paper":
        return 1.0
    return 0.9689939 if np.dtype(half_type) == BFLOAT16 else 0.9375


def resolve_precision(q, precision: str | None) -> tuple[np.dtype, np.dtype, str]:
    """(input dtype, half type, precision) as the kernel defaults them: ``half`` for fp16/bf16
    inputs, ``float`` for fp32; S and P round to bfloat16 for bf16 inputs, else to float16."""
    in_dtype = np.asarray(q).dtype
    half_type = BFLOAT16 if in_dtype == BFLOAT16 else np.dtype(np.float16)
    if precision is None:
        precision = "float" if in_dtype == np.float32 else "half"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return in_dtype, half_type, precision


def round_to(x: np.ndarray, half_type: np.dtype) -> np.ndarray:
    """Round float32 values to ``half_type`` (round-to-nearest-even) and back to float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x, dtype=np.float32).astype(half_type).astype(np.float32)


def bf16_split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 values as two bfloat16 terms: ``hi`` = the upper 16 bits (truncation), ``lo`` =
    bf16(x - hi) (round-to-nearest-even). Exact for fp16 and bf16 values (lo = 0 for bf16); for
    other float32 values |x - hi - lo| <= 2^-16 |x|."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    hi = (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    with np.errstate(invalid="ignore"):
        lo = round_to(x - hi, BFLOAT16)
    return hi, lo


def split_products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` as the amx path computes it on AMX tiles: both operands split into bf16 terms
    (:func:`bf16_split`) and ``ah·bh + ah·bl + al·bh`` (al·bl dropped); every product of bf16
    values is exact, the sum is rounded to float32 once (the tiles accumulate in float32)."""
    ah, al = bf16_split(a)
    bh, bl = bf16_split(b)
    f64 = np.float64
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.matmul(ah.astype(f64), (bh.astype(f64) + bl)) + np.matmul(
            al.astype(f64), bh.astype(f64)
        )
    return out.astype(np.float32)


@dataclass
class _Problem:
    """Inputs normalised to 4-D float arrays plus the geometry of the masks."""

    q: np.ndarray  # [B,Hq,Sq,D]
    k: np.ndarray  # [B,Hkv,Skv,D] (past included)
    v: np.ndarray  # [B,Hkv,Skv,Dv]
    mask: np.ndarray | None  # bool (True = attend) or float additive, right-aligned broadcast
    scale: float
    softcap: float
    causal: bool
    left: int
    right: int
    query_offset: np.ndarray  # [B]
    valid_len: np.ndarray  # [B]
    is_3d: bool

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        b, hq, sq, _ = self.q.shape
        return b, hq, self.k.shape[1], sq, self.k.shape[2]


def _normalise(
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
    dtype,
) -> _Problem:
    q, k, v = (np.asarray(t).astype(dtype) for t in (q, k, v))
    is_3d = q.ndim == 3
    if is_3d:
        if not q_num_heads or not kv_num_heads:
            raise ValueError("3-D inputs need q_num_heads and kv_num_heads")

        def split(t: np.ndarray, heads: int) -> np.ndarray:
            b, s, hidden = t.shape
            return t.reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)

        q, k, v = split(q, q_num_heads), split(k, kv_num_heads), split(v, kv_num_heads)
    past_len = 0
    if past_key is not None:
        past_len = past_key.shape[2]
        k = np.concatenate([np.asarray(past_key).astype(dtype), k], axis=2)
        v = np.concatenate([np.asarray(past_value).astype(dtype), v], axis=2)
    batch, _, sq, d = q.shape
    skv = k.shape[2]
    offsets = np.full(batch, past_len, dtype=np.int64)
    valid = np.full(batch, skv, dtype=np.int64)
    if nonpad_kv_seqlen is not None:
        valid = np.asarray(nonpad_kv_seqlen, dtype=np.int64).reshape(batch)
        offsets = valid - sq
    mask = None
    if attn_mask is not None:
        m = np.asarray(attn_mask)
        mask = m.astype(bool) if m.dtype == np.bool_ else m.astype(np.float64)
    return _Problem(
        q=q,
        k=k,
        v=v,
        mask=mask,
        scale=float(scale) if scale is not None else 1.0 / np.sqrt(d),
        softcap=float(softcap or 0.0),
        causal=bool(is_causal),
        left=-1 if left_window_size is None else int(left_window_size),
        right=-1 if right_window_size is None else int(right_window_size),
        query_offset=offsets,
        valid_len=valid,
        is_3d=is_3d,
    )


def _bias(p: _Problem, i0: int, i1: int, geometry: bool = True) -> np.ndarray:
    """Additive bias [B,Hq,i1-i0,Skv] in float64: 0 or the mask value where attended, -inf where
    masked (mask, padding length, and with ``geometry`` the causal frontier and local window)."""
    b, hq, _, sq, skv = p.shape
    rows = np.arange(i0, i1)
    keys = np.arange(skv)
    allowed = np.ones((b, 1, i1 - i0, skv), dtype=bool)
    allowed &= keys[None, None, None, :] < p.valid_len[:, None, None, None]
    if geometry:
        pos = rows[None, :, None] + p.query_offset[:, None, None]  # [B,R,1]
        diff = pos - keys[None, None, :]
        if p.causal:
            allowed &= (diff >= 0)[:, None]
        if p.left >= 0:
            allowed &= (diff <= p.left)[:, None]
        if p.right >= 0:
            allowed &= (-diff <= p.right)[:, None]
    bias = np.zeros((b, hq, i1 - i0, skv), dtype=np.float64)
    if p.mask is not None:
        m = p.mask
        pad = skv - m.shape[-1]
        if pad > 0:  # ONNX: a shorter mask is padded with masked keys
            fill = False if m.dtype == np.bool_ else -np.inf
            m = np.pad(m, [(0, 0)] * (m.ndim - 1) + [(0, pad)], constant_values=fill)
        full = np.broadcast_to(m, (b, hq, sq, skv))[:, :, i0:i1]
        if m.dtype == np.bool_:
            allowed = allowed & full
        else:
            bias = bias + full
            allowed = allowed & (full != -np.inf)
    return np.where(allowed, bias, -np.inf)


def _key_valid(p: _Problem) -> np.ndarray:
    """[B,Hq,Skv]: keys before the padding length that at least one query row may attend by the
    mask. These enter the PASA block mean; all others are never read."""
    b, hq, _, sq, skv = p.shape
    valid = np.arange(skv)[None, None, :] < p.valid_len[:, None, None]
    valid = np.broadcast_to(valid, (b, hq, skv)).copy()
    if p.mask is not None:
        m = p.mask
        allowed = m if m.dtype == np.bool_ else m != -np.inf
        any_row = np.broadcast_to(allowed, (b, hq, sq, m.shape[-1])).any(axis=2)
        padded = np.zeros((b, hq, skv), dtype=bool)
        padded[:, :, : m.shape[-1]] = any_row
        valid &= padded
    return valid


def _expand_kv(t: np.ndarray, hq: int) -> np.ndarray:
    """Query head h reads kv head h // (Hq / Hkv)."""
    return np.repeat(t, hq // t.shape[1], axis=1)


def _finish(p: _Problem, y: np.ndarray, out_dtype) -> np.ndarray:
    if p.is_3d:
        b, h, s, dv = y.shape
        y = y.transpose(0, 2, 1, 3).reshape(b, s, h * dv)
    return y.astype(out_dtype)


def attention_golden(
    q,
    k,
    v,
    attn_mask=None,
    past_key=None,
    past_value=None,
    nonpad_kv_seqlen=None,
    *,
    scale=None,
    is_causal=False,
    q_num_heads=None,
    kv_num_heads=None,
    softcap=0.0,
    left_window_size=-1,
    right_window_size=-1,
    query_chunk: int = 256,
) -> np.ndarray:
    """float64 attention with ONNX ``Attention`` semantics; masked keys are never read, a row
    with no attendable key is 0. Returns float64 in the input layout."""
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
        np.float64,
    )
    b, hq, _, sq, _ = p.shape
    kx, vx = _expand_kv(p.k, hq), _expand_kv(p.v, hq)
    out = np.zeros((b, hq, sq, p.v.shape[3]), dtype=np.float64)
    for i0 in range(0, sq, query_chunk):
        i1 = min(i0 + query_chunk, sq)
        bias = _bias(p, i0, i1)
        masked = bias == -np.inf
        with np.errstate(invalid="ignore", over="ignore"):
            s = p.scale * np.matmul(
                p.q[:, :, i0:i1], np.swapaxes(np.where(np.isfinite(kx), kx, 0), 2, 3)
            )
            if p.softcap > 0:
                s = p.softcap * np.tanh(s / p.softcap)
            s = np.where(masked, -np.inf, s + bias)
            mx = s.max(axis=-1, keepdims=True)
            e = np.where(masked, 0.0, np.exp(s - np.where(np.isfinite(mx), mx, 0.0)))
            den = e.sum(axis=-1, keepdims=True)
            prob = np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)
        out[:, :, i0:i1] = np.matmul(prob, np.where(np.isfinite(vx), vx, 0))
    return _finish(p, out, np.float64)


def attention_emulated(
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
    scale_after_scores: bool = False,
    pv_bfloat16: bool = False,
    amx_products: bool = False,
) -> np.ndarray:
    """Numpy emulation of the PasaAttention kernel (same steps, same rounding points).

    ``scale_after_scores`` (emulation only) multiplies the rounded ``Q·Kᵀ`` by the scale instead
    of folding the scale into the shifted keys, as plain flash-attention kernels do.

    ``pv_bfloat16`` (emulation only, an experiment) rounds P and V to bfloat16 before the P·V
    product, as an AVX512-BF16 ``vdpbf16ps`` kernel would: exact for bf16 inputs (P and V are
    bf16 already), a precision loss for fp16 inputs (see docs/benchmarks.md).

    ``precision`` defaults as the kernel does: ``half`` for fp16/bf16 inputs, ``float`` for
    fp32. The result has the input's element type and layout.

    ``amx_products`` computes ``Q·K'ᵀ`` and ``P·V`` as the amx path does in ``half`` and ``paper``
    mode for fp16/bf16 inputs (:func:`split_products`); ``float`` mode keeps float32 products.
    """
    in_dtype, half_type, precision = resolve_precision(q, precision)
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
        0.0 if p.softcap > 0 else (default_alpha(half_type, precision) if alpha is None else alpha)
    )
    beta = f32(alpha / (f32(1.0) - alpha)) if alpha < 1 else f32(np.inf)
    c = f32(p.scale)
    paper, rounds = precision == "paper", precision != "float"

    def rnd(x):
        return round_to(x, half_type)

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
            qc = p.q[:, :, i0:i1]
            bias = _bias(p, i0, i1)
            m = np.full((b, hq, rows), ninf, dtype=f32)
            l_ = np.zeros((b, hq, rows), dtype=f32)
            abar = np.zeros((b, hq, rows), dtype=f32)
            nblk = np.zeros((b, hq, rows), dtype=f32)
            o = np.zeros((b, hq, rows, dv), dtype=f32)
            for r0 in range(0, skv, block_kv):
                r1 = min(r0 + block_kv, skv)
                valid = key_valid[:, :, r0:r1]  # [B,H,n]
                count = valid.sum(axis=-1).astype(f32)  # [B,H]
                if not count.any():
                    continue
                inv_count = np.where(count > 0, f32(1.0) / np.maximum(count, 1), 0).astype(f32)
                kb = np.where(valid[..., None], kx[:, :, r0:r1], f32(0))
                kbar = alpha * (kb.sum(axis=2, dtype=f32) * inv_count[..., None])
                kshift = (
                    (kb - kbar[:, :, None, :])
                    if scale_after_scores
                    else c * (kb - kbar[:, :, None, :])
                )
                if paper:
                    kshift = rnd(kshift)
                if amx_products and rounds:
                    s = split_products(qc, np.swapaxes(kshift, 2, 3))
                    if not paper and half_type == np.float16:  # rows that overflow: fp32 products
                        big = (np.abs(s) >= f32(65520)).any(axis=-1, keepdims=True)
                        s = np.where(big, np.matmul(qc, np.swapaxes(kshift, 2, 3)), s)
                else:
                    s = np.matmul(qc, np.swapaxes(kshift, 2, 3))  # [B,H,R,n] fp32 accumulation
                if scale_after_scores:
                    s = rnd(s) * c if rounds else s * c
                if p.softcap > 0:
                    s = f32(p.softcap) * np.tanh(s / f32(p.softcap))
                add = np.where(valid[:, :, None, :], bias[..., r0:r1], -np.inf).astype(f32)
                attended = add != ninf
                part = attended.any(axis=-1) & (count[..., None] > 0)
                vmask = valid[:, :, None, :]
                if paper:
                    s = np.where(vmask, rnd(s), 0)
                    mu = rnd(s.sum(axis=-1, dtype=f32) * inv_count[..., None])
                else:
                    s = np.where(vmask, s, 0)
                    mu = s.sum(axis=-1, dtype=f32) * inv_count[..., None]
                    if rounds:
                        overflow = (np.isinf(rnd(s)) & attended).any(axis=-1, keepdims=True)
                        s = np.where(overflow, s, rnd(s))
                if paper:  # the authors' recovery: the shift is beta times the residual mean
                    shift = mu
                else:  # the removed shift itself, c·q·(α·mean(K)), exact to fp32 for any α
                    qk = np.matmul(qc.astype(np.float64), kbar[..., None].astype(np.float64))[
                        ..., 0
                    ]
                    shift = c * qk.astype(f32)
                nb = nblk + part
                abar_new = np.where(part, abar + (shift - abar) / np.maximum(nb, 1), abar).astype(
                    f32
                )
                if paper:
                    abar_new = rnd(abar_new)
                gain = beta if paper else f32(1.0)
                off_cur = gain * (shift - abar_new)
                off_old = gain * (abar - abar_new)
                if paper:
                    off_cur, off_old = rnd(off_cur), rnd(off_old)
                x = (s + add) + off_cur[..., None]
                if paper:
                    x = rnd(x)
                x = np.where(attended, x, ninf)
                mx = x.max(axis=-1)
                m_old = np.where(m == ninf, ninf, m + off_old)
                if paper:
                    m_old = rnd(m_old)
                m_new = np.maximum(m_old, mx)
                upd = part & (m_new != ninf)
                corr = np.where(m_old == ninf, f32(0), np.exp(m_old - m_new)).astype(f32)
                if paper:
                    corr = rnd(corr)
                prob = np.where(attended, np.exp(x - m_new[..., None]), f32(0)).astype(f32)
                if rounds:
                    prob = rnd(prob)
                psum = prob.sum(axis=-1, dtype=f32)
                vb = np.where(valid[..., None], vx[:, :, r0:r1], f32(0))
                if amx_products and rounds:
                    pv = split_products(prob, vb)
                elif pv_bfloat16:
                    pv = np.matmul(round_to(prob, BFLOAT16), round_to(vb, BFLOAT16))
                else:
                    pv = np.matmul(prob, vb)
                if paper:
                    l_new = rnd(rnd(l_ * corr) + rnd(psum))
                    o_new = rnd(rnd(o * corr[..., None]) + rnd(pv))
                else:
                    l_new = l_ * corr + psum
                    o_new = o * corr[..., None] + pv
                l_ = np.where(upd, l_new, l_)
                o = np.where(upd[..., None], o_new, o)
                m = np.where(upd, m_new, m)
                abar = np.where(part, abar_new, abar)
                nblk = nb
            # l == 0: nothing attended, so 0; a NaN or inf l (overflow) must show, not become 0
            safe_l = np.where(l_ != 0, l_, 1)[..., None]
            out[:, :, i0:i1] = np.where(l_[..., None] != 0, o / safe_l, 0)
    return _finish(p, out, in_dtype)


def attention_plain_half(
    q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, **attrs
) -> np.ndarray:
    """A plain half-precision flash-attention pipeline (FlashAttention-style, no PASA shift):
    ``S = round(Q·Kᵀ)·scale`` with every stored value (scores, m, l, O) rounded to the input's
    half type (fp16 for fp32 inputs). Overflows where ``Q·Kᵀ`` exceeds the half type's range."""
    q = np.asarray(q)
    if q.dtype == np.float32:
        q, k, v = (np.asarray(t).astype(np.float16) for t in (q, k, v))
    return attention_emulated(
        q,
        k,
        v,
        attn_mask,
        past_key,
        past_value,
        nonpad_kv_seqlen,
        precision="paper",
        alpha=0.0,
        scale_after_scores=True,
        **attrs,
    )


def attention_plain_fp32(q, k, v) -> np.ndarray:
    """Plain attention (4-D, no mask) with float32 scores, softmax and accumulation on the given
    inputs: the accuracy a float32 attention kernel reaches on them."""
    q, k, v = (np.asarray(t, dtype=np.float32) for t in (q, k, v))
    k, v = _expand_kv(k, q.shape[1]), _expand_kv(v, q.shape[1])
    s = (q @ np.swapaxes(k, 2, 3)) * np.float32(1 / np.sqrt(q.shape[-1]))
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def shared_bias_inputs(
    dtype, low: float, high: float, seq: int = 512, dim: int = 64, seed: int = 0
):
    """Q, K, V [1, 2, seq, dim] whose keys share a large part: a bias drawn from U(low, high) per
    dimension plus unit noise (issue #15's D11 and O1 cases)."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((1, 2, seq, dim)).astype(dtype)
    k = (rng.uniform(low, high, size=dim) + rng.standard_normal((1, 2, seq, dim))).astype(dtype)
    v = rng.standard_normal((1, 2, seq, dim)).astype(dtype)
    return q, k, v


def paper_random_inputs(
    dist: str,
    mean: float,
    amplitude: float,
    *,
    q_heads: int = 14,
    kv_heads: int = 2,
    seq: int = 1407,
    dim: int = 128,
    seed: int = 0,
    dtype=np.float16,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q, K, V [1,H,S,D] of the PASA paper's random benchmark: ``uniform`` draws
    ``(rand - 0.5) * 2 * amplitude + mean``; ``normal`` draws ``normal(mean, 1) +
    normal(0, amplitude) * Bernoulli(0.001)``."""
    if dist not in ("uniform", "normal"):
        raise ValueError(f"dist must be 'uniform' or 'normal', got {dist!r}")
    rng = np.random.default_rng(seed)

    def one(heads: int) -> np.ndarray:
        shape = (1, heads, seq, dim)
        if dist == "uniform":
            x = (rng.random(shape) - 0.5) * 2 * amplitude + mean
        else:
            spikes = rng.normal(0, amplitude, shape) * (rng.random(shape) < 0.001)
            x = rng.normal(mean, 1, shape) + spikes
        return x.astype(dtype)

    return one(q_heads), one(kv_heads), one(kv_heads)


@dataclass(frozen=True)
class ErrorMetrics:
    """Accuracy of ``actual`` against a float64 ``reference``."""

    max_abs_err: float
    rmse: float
    rel_rmse: float  # rmse / rms(scale_ref)
    cosine: float
    nonfinite: int


def error_metrics(actual, reference, scale_ref=None) -> ErrorMetrics:
    """RMSE, relative RMSE (divided by the RMS of ``scale_ref``, by default the reference;
    PASA's paper divides by RMS(V)), max abs error, cosine similarity and the count of
    non-finite values in ``actual``. Non-finite entries are left out of the error sums."""
    a = np.asarray(actual, dtype=np.float64).ravel()
    r = np.asarray(reference, dtype=np.float64).ravel()
    finite = np.isfinite(a) & np.isfinite(r)
    nonfinite = int((~np.isfinite(a)).sum())
    diff = a[finite] - r[finite]
    rmse = float(np.sqrt(np.mean(diff**2))) if diff.size else 0.0
    sref = r[finite] if scale_ref is None else np.asarray(scale_ref, dtype=np.float64).ravel()
    rms = float(np.sqrt(np.mean(sref**2))) if sref.size else 0.0
    na, nr = np.linalg.norm(a[finite]), np.linalg.norm(r[finite])
    cosine = float(a[finite] @ r[finite] / (na * nr)) if na > 0 and nr > 0 else float(na == nr)
    return ErrorMetrics(
        max_abs_err=float(np.abs(diff).max()) if diff.size else 0.0,
        rmse=rmse,
        rel_rmse=rmse / rms if rms > 0 else (0.0 if rmse == 0 else float("inf")),
        cosine=cosine,
        nonfinite=nonfinite,
    )
