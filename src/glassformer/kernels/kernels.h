/* Shared by the kernel files: SIMD helpers (horizontal sums, dot products, exp) and the
   exported functions, so that any file can call any other (the decode program calls them all).
   AVX2 + FMA + F16C; built into one shared library by glassformer/kernels/__init__.py. */
#pragma once
#include <immintrin.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

/* Lanes of w . x over the first K8 = K - K % 8 columns, four accumulators so that the FMAs do
   not wait on each other (one accumulator would tie a core to one FMA per 4-cycle latency,
   below the memory stream). */
static inline __m256 dot_lanes(const float *w, const float *x, int K8) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int k = 0;
    for (; k + 32 <= K8; k += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 8), _mm256_loadu_ps(x + k + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 16), _mm256_loadu_ps(x + k + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 24), _mm256_loadu_ps(x + k + 24), a3);
    }
    for (; k < K8; k += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a0);
    return _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
}

static inline float dot(const float *a, const float *b, int n) {
    const int n8 = n / 8 * 8;
    float s = hsum(dot_lanes(a, b, n8));
    for (int i = n8; i < n; i++) s += a[i] * b[i];
    return s;
}

/* exp(x) for 8 floats: Cephes' range reduction x = n ln2 + r and a degree-5 polynomial for
   e^r (max relative error ~2e-7); inputs are clamped to [-88.38, 88.38]. */
static inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
    x = _mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f));
    __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f),
                                                _mm256_set1_ps(0.5f)));
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx),
                                                   _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* 2^t for 8 floats t <= 0: a softmax's shifted scores in base 2 (scores pre-multiplied by
   log2(e), so that e^(s - max) = 2^(t - tmax)). t = n + f with |f| <= 1/2; 2^f by a degree-5
   minimax polynomial with p(0) = 1 (relative error 1.6e-7 in float32; the rounding of t adds
   6e-8 |t|, as one ulp of the score would), 2^n by the exponent bits. Six fewer
   operations than exp8 (no range reduction by ln 2, no upper clamp); t below -126 gives
   2^-126 (~1e-38) instead of a denormal; NaN stays NaN. */
static inline __m256 exp2_8(__m256 t) {
    t = _mm256_max_ps(_mm256_set1_ps(-126.0f), t); /* this operand order passes NaN through */
    const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 f = _mm256_sub_ps(t, n);
    __m256 p = _mm256_set1_ps(1.3264739002387012e-3f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.671512908826223e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550733704857047e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022242081034054e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931469776275082e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f)); /* 2^0 = 1 exactly: the row maximum's term */
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
                                                         _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* lanes 0 .. r - 1 set (0 < r < 8): the last, partial vector of a row, loaded and stored with
   _mm256_maskload_ps / _mm256_maskstore_ps instead of one exp per element */
static inline __m256i tail_mask(int r) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* x[0 .. r) <- 2^(a x[0 .. r) - b) (0 < r < 8), returned as a vector with zeros past r */
static inline __m256 exp2_tail(float *x, int r, __m256 a, __m256 b) {
    const __m256i mask = tail_mask(r);
    const __m256 e = _mm256_and_ps(exp2_8(_mm256_fmsub_ps(a, _mm256_maskload_ps(x, mask), b)),
                                   _mm256_castsi256_ps(mask));
    _mm256_maskstore_ps(x, mask, e);
    return e;
}

static inline float exp1(float x) {
    float v[8] = {x, 0, 0, 0, 0, 0, 0, 0};
    _mm256_storeu_ps(v, exp8(_mm256_loadu_ps(v)));
    return v[0];
}

/* 8 cache entries at element i of a float32 or (f16) float16 cache */
static inline __m256 load_kv8(const void *base, size_t i, int f16) {
    return f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + i)))
               : _mm256_loadu_ps((const float *)base + i);
}

/* Every softmax in these kernels takes its scores in base 2, t = s log2(e), so that
   e^(s - max s) = 2^(t - max t) (the scale of the scores absorbs the log2(e)). */
#define LOG2E 1.4426950408889634f

/* t[j] <- 2^(t[j] - max) for j < n; returns the sum and writes the max to *mx (the softmax's
   numerators and denominator; the max is subtracted so that nothing overflows). */
static inline float exp2_shifted(float *t, int n, float *mx) {
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    int k = 0;
    for (; k + 8 <= n; k += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(t + k));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    float m = _mm_cvtss_f32(m4);
    for (; k < n; k++) m = t[k] > m ? t[k] : m;
    const __m256 mv = _mm256_set1_ps(m), one = _mm256_set1_ps(1.0f);
    __m256 sumv = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 e = exp2_8(_mm256_sub_ps(_mm256_loadu_ps(t + j), mv));
        _mm256_storeu_ps(t + j, e);
        sumv = _mm256_add_ps(sumv, e);
    }
    if (j < n) sumv = _mm256_add_ps(sumv, exp2_tail(t + j, n - j, one, mv));
    *mx = m;
    return hsum(sumv);
}

/* Decode-step program records (program.c). */
enum { OP_RMSNORM, OP_F32_MM, OP_Q4_MM, OP_Q8_MM, OP_SILU_MUL, OP_ADD, OP_ROPE_STORE, OP_ATTEND,
       OP_ROPE_STORE_ROWS, OP_ATTEND_ROWS };
typedef struct { int64_t kind; int64_t a[15]; double f; } gf_op;

/* quant.c */
void gf_q4_mm(const float *x, int M, int K, const uint16_t *q, const uint16_t *d,
              const uint16_t *mn, int N, int group, float *y, int nt);
void gf_q8_mm(const float *x, int M, int K, const int8_t *q, const float *s, int N, int group,
              float *y, int nt);
void gf_f32_mm(const float *x, int M, int K, const float *w, int N, float *y, int nt);
void gf_q4_dequant(const uint16_t *q, const uint16_t *d, const uint16_t *mn, int N, int K,
                   int group, float *out, int nt);
void gf_q8_dequant(const int8_t *q, const float *s, int N, int K, int group, float *out, int nt);
/* decode.c */
void gf_rmsnorm(const float *x, const float *w, float *y, int M, int D, float eps);
void gf_rope_store(float *qkv, int B, int H, int HK, int D, int rot, int interleaved,
                   const float *cos, const float *sin, void *kc, void *vc, int64_t *kpos, int cap,
                   int pos, int f16);
void gf_attn_decode(const float *q, int qstride, const void *kc, const void *vc, int B, int H,
                    int HK, int D, int cap, int L, float scale, float *out, int nt, int f16);
void gf_rope_store_rows(float *qkv, int B, int H, int HK, int D, int rot, int interleaved,
                        const float *cos, const float *sin, int cs, const int64_t *kt,
                        const int64_t *vt, const int64_t *pt, int cap, const int64_t *pos,
                        const int64_t *slot, int f16);
void gf_attn_decode_rows(const float *q, int qstride, const int64_t *kt, const int64_t *vt,
                         int B, int H, int HK, int D, int cap, const int64_t *len,
                         const int64_t *slot, float scale, float *out, int nt, int f16);
void gf_silu_mul(const float *gu, float *out, int M, int F);
void gf_add(float *y, const float *x, int M, int N, int stride);
/* program.c */
void gf_run_program(const gf_op *ops, int n, int pos);
void gf_run_rows(const gf_op *ops, int n, int rows, const int64_t *pos, const int64_t *slot);
/* attention.c */
void gf_attn_prefill(const float *q, long sqb, long sqh, long sqt, const float *k, long skb,
                     long skh, long skt, const float *v, long svb, long svh, long svt, int B,
                     int H, int HK, int T, int D, float scale, float *out, float *lse, int nt);
void gf_attn_backward(const float *q, long sqb, long sqh, long sqt, const float *k, long skb,
                      long skh, long skt, const float *v, long svb, long svh, long svt,
                      const float *o, const float *dout, const float *lse, int B, int H, int HK,
                      int T, int D, float scale, float *dq, float *dk, float *dv, int nt);
/* activations.c */
void gf_gelu_tanh(const float *x, float *y, long n, int nt);
void gf_gelu_tanh_backward(const float *x, const float *dy, float *dx, long n, int nt);
/* delta.c */
void gf_delta_step(const float *q, const float *k, const float *v, const float *g,
                   const float *beta, float *state, float *out, int B, int H, int HK, int DK,
                   int DV, int nt);
void gf_delta_chunks(const float *q, const float *k, const float *w, const float *u,
                     const float *qk, const float *gamma, float *state, float *out, int N, int B,
                     int H, int HK, int C, int DK, int DV, int nt);
void gf_delta_solve(const float *kk, const float *gamma, const float *beta, float *t, float *te,
                    long count, int H, int HK, int C, int nt);
/* xent.c */
void gf_xent_rows(float *z, long rows, long nb, long vs, long bstride, const int64_t *labels,
                  int64_t ignore, int grad, float *loss, int nt);
