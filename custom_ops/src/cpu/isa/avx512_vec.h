// The AVX-512 vector interface (see kernels_impl.h), shared by the avx512 and avx512bf16
// paths. Included inside each path's namespace, after <immintrin.h>, in files compiled with
// -mavx512f -mavx512bw -mavx512vl -mavx512dq -mf16c -mfma. No include guard on purpose.

struct V {
  static constexpr int W = 16;
  static constexpr int kTileRows = 6;
  static constexpr int kTileVecs = 4;
  using T = __m512;
  using M = __mmask16;

  static T zero() { return _mm512_setzero_ps(); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  // p[0], p[stride], ..., p[(W-1)·stride]
  static T gather(const float* p, int64_t stride) {
    const __m512i idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(static_cast<int>(stride)));
    return _mm512_i32gather_ps(idx, p, 4);
  }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T set1(float x) { return _mm512_set1_ps(x); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static T sub(T a, T b) { return _mm512_sub_ps(a, b); }
  static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T div(T a, T b) { return _mm512_div_ps(a, b); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T max(T a, T b) { return _mm512_max_ps(a, b); }
  static T abs(T a) { return _mm512_abs_ps(a); }
  static M gt(T a, T b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M ge(T a, T b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
  static M eq(T a, T b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static M unord(T a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
  // ±inf or NaN (vfpclassps: QNaN 0x01, +inf 0x08, −inf 0x10, SNaN 0x80)
  static M nonfinite(T a) { return _mm512_fpclass_ps_mask(a, 0x99); }
  static M mor(M a, M b) { return static_cast<M>(a | b); }
  static M mand(M a, M b) { return static_cast<M>(a & b); }
  static M mfalse() { return 0; }
  static bool any(M m) { return m != 0; }
  static T select(M m, T a, T b) { return _mm512_mask_blend_ps(m, b, a); }
  static T round_nearest(T x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static T pow2i(T n) {
    const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
  }
  static T scale2(T p, T n) { return _mm512_scalef_ps(p, n); }
  // In-place 16x16 transpose: x[j][i] becomes x[i][j].
  // Σ a[d]·b[d] in double, rounded once to float: the products of two floats are exact in double,
  // so the fused multiply-adds round only the sums. Four accumulators of 8 lanes, a fixed tree.
  // B: float, or double holding floats' exact values (the same sums: a converted once).
  template <class B>
  static __m512d load_pd(const B* b) {
    if constexpr (std::is_same_v<B, double>) return _mm512_loadu_pd(b);
    else return _mm512_cvtps_pd(_mm256_loadu_ps(b));
  }
  template <class B>
  static float dot_f64(const float* a, const B* b, int64_t n) {
    __m512d acc[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd()};
    int64_t d = 0;
    for (; d + 32 <= n; d += 32)
      for (int j = 0; j < 4; ++j)
        acc[j] = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + d + 8 * j)), load_pd(b + d + 8 * j), acc[j]);
    for (; d + 8 <= n; d += 8) acc[0] = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + d)), load_pd(b + d), acc[0]);
    const __m512d sum = _mm512_add_pd(_mm512_add_pd(acc[0], acc[1]), _mm512_add_pd(acc[2], acc[3]));
    double total = _mm512_reduce_add_pd(sum);
    for (; d < n; ++d) total += static_cast<double>(a[d]) * static_cast<double>(b[d]);
    return static_cast<float>(total);
  }

  static void transpose_w(T* x) {
    T t[16], u[16];
    for (int i = 0; i < 8; ++i) {  // pairs of rows, 32-bit interleave within 128-bit lanes
      t[2 * i] = _mm512_unpacklo_ps(x[2 * i], x[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(x[2 * i], x[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {  // quads of rows: u[4i + k] holds column k + 4·lane
      u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
      u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xEE);
      u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int k = 0; k < 4; ++k) {  // gather the four quads' 128-bit lanes
      const T v0 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x88);
      const T v1 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xDD);
      const T w0 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x88);
      const T w1 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xDD);
      x[k] = _mm512_shuffle_f32x4(v0, w0, 0x88);
      x[k + 8] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
      x[k + 4] = _mm512_shuffle_f32x4(v1, w1, 0x88);
      x[k + 12] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
    }
  }
  static T round_half(T x) {
    return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  // bf16 round-to-nearest-even by integer arithmetic (keeps subnormals, unlike vcvtneps2bf16).
  static __m512i bf16_bits(T x) {
    const __m512i b = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
    r = _mm512_and_si512(r, _mm512_set1_epi32(static_cast<int>(0xffff0000u)));
    const __m512i quiet = _mm512_or_si512(b, _mm512_set1_epi32(0x00400000));
    return _mm512_mask_blend_epi32(unord(x), r, quiet);
  }
  static T round_bf16(T x) { return _mm512_castsi512_ps(bf16_bits(x)); }
  // round_bf16 for lanes that hold no NaN (the quieting blend left out; the same value else).
  static T round_bf16_nonnan(T x) {
    const __m512i b = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
    return _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  }
  static float reduce_add(T a) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
  }
  static float reduce_max(T a) { return _mm512_reduce_max_ps(a); }
  static T load_f16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static T load_bf16(const uint16_t* p) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  static void store_f16(uint16_t* p, T x) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static void store_bf16(uint16_t* p, T x) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(_mm512_srli_epi32(bf16_bits(x), 16)));
  }
};

