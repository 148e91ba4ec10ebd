#include "kernels.h"

#define MAX_BLOCKS 4096 /* K <= 131072 */

/* Activations in 16-bit fixed point, per block of 32 (see the module docstring):
   dx = max|x_b| / 32767, xq = round(x / dx); plus the float sums sx_b of each block. */
static void quantise_x16(const float *x, int M, int K, int16_t *xq, float *dx, float *sx) {
    const int H = K / 32;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int m = 0; m < M; m++)
        for (int h = 0; h < H; h++) {
            const float *xb = x + (size_t)m * K + 32 * h;
            const __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
            const __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
            __m256 a = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0),
                                                   _mm256_andnot_ps(sign, v1)),
                                     _mm256_max_ps(_mm256_andnot_ps(sign, v2),
                                                   _mm256_andnot_ps(sign, v3)));
            __m128 a4 = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
            a4 = _mm_max_ps(a4, _mm_movehl_ps(a4, a4));
            a4 = _mm_max_ss(a4, _mm_movehdup_ps(a4));
            const float amax = _mm_cvtss_f32(a4);
            const float d = amax / 32767.0f, id = amax > 0.0f ? 32767.0f / amax : 0.0f;
            const size_t at = (size_t)m * H + h;
            dx[at] = d;
            sx[at] = hsum(_mm256_add_ps(_mm256_add_ps(v0, v1), _mm256_add_ps(v2, v3)));
            const __m256 iv = _mm256_set1_ps(id);
            /* round to nearest (MXCSR default), then pack; packs works per 128-bit lane, so
               the 64-bit quarters come out as 0 2 1 3 and permute4x64(0xD8) restores order */
            const __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, iv));
            const __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, iv));
            const __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, iv));
            const __m256i q3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, iv));
            int16_t *o = xq + (size_t)m * K + 32 * h;
            _mm256_storeu_si256((__m256i *)o,
                                _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8));
            _mm256_storeu_si256((__m256i *)(o + 16),
                                _mm256_permute4x64_epi64(_mm256_packs_epi32(q2, q3), 0xD8));
        }
}

/* The quantised activations of both weight formats' products: xq [M][K] int16, then dx and sx
   [M][K / 32] float, in one allocation (free the returned pointer). M K is a multiple of 32,
   so the floats after xq start 64-byte aligned. */
typedef struct { int16_t *xq; float *dx, *sx; } qx16;

static qx16 quant_x16(const float *x, int M, int K) {
    const size_t H = (size_t)M * (K / 32);
    int16_t *xq = (int16_t *)malloc(sizeof(int16_t) * (size_t)M * K + sizeof(float) * 2 * H);
    float *dx = (float *)(xq + (size_t)M * K);
    const qx16 a = {xq, dx, dx + H};
    quantise_x16(x, M, K, a.xq, a.dx, a.sx);
    return a;
}

/* out[b] = v[b / per] for b < G * per: one value per block of 32 columns. A generic double loop
   costs ~20 cycles a group, as much as the dot product of a short row, hence the cases. */
static inline void repeat_blocks(const float *v, int G, int per, float *out) {
    if (per == 2)
        for (int g = 0; g < G; g++) out[2 * g] = out[2 * g + 1] = v[g];
    else if (per == 4)
        for (int g = 0; g < G; g++)
            _mm_storeu_ps(out + 4 * g, _mm_set1_ps(v[g]));
    else
        for (int g = 0; g < G; g++)
            for (int j = 0; j < per; j++) out[g * per + j] = v[g];
}

/* One row's per-group float16 values, one float per block of 32 columns. */
static inline void expand_f16(const uint16_t *g, int G, int per, float *out) {
    float tmp[MAX_BLOCKS];
    float *dst = per == 1 ? out : tmp;
    int i = 0;
    for (; i + 8 <= G; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(g + i))));
    for (; i < G; i++) dst[i] = _cvtsh_ss(g[i]);
    if (per > 1) repeat_blocks(tmp, G, per, out);
}

/* out[b] = a[b] * c[b], b < H */
static inline void mul_blocks(const float *a, const float *c, float *out, int H) {
    int i = 0;
    for (; i + 8 <= H; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(c + i)));
    for (; i < H; i++) out[i] = a[i] * c[i];
}

/* sum_b scale[b] * sum_{k in b} code[k] * xq[k] for one int4 row. Chunk c (64 columns) is 16
   uint16 lanes; nibble s of lane j is column 16 s + j, so (v >> 4 s) & 15 gives 16 codes in
   column order, and madd_epi16 multiplies them by 16 activations and adds pairs into int32
   (|sum| <= 4 * 15 * 32767 per lane and block: no overflow). */
static inline float q4_dot(const uint16_t *qr, const float *scale, const int16_t *xq, int K) {
    const __m256i m4 = _mm256_set1_epi16(0xF);
    __m256 tot0 = _mm256_setzero_ps(), tot1 = _mm256_setzero_ps();
    for (int c = 0; c < K / 64; c++) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(qr + 16 * c));
        const __m256i *xc = (const __m256i *)(xq + 64 * c);
        const __m256i p0 = _mm256_madd_epi16(_mm256_and_si256(v, m4), _mm256_loadu_si256(xc));
        const __m256i p1 = _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                                             _mm256_loadu_si256(xc + 1));
        const __m256i p2 = _mm256_madd_epi16(_mm256_and_si256(_mm256_srli_epi16(v, 8), m4),
                                             _mm256_loadu_si256(xc + 2));
        const __m256i p3 = _mm256_madd_epi16(_mm256_srli_epi16(v, 12), _mm256_loadu_si256(xc + 3));
        tot0 = _mm256_fmadd_ps(_mm256_broadcast_ss(scale + 2 * c),
                               _mm256_cvtepi32_ps(_mm256_add_epi32(p0, p1)), tot0);
        tot1 = _mm256_fmadd_ps(_mm256_broadcast_ss(scale + 2 * c + 1),
                               _mm256_cvtepi32_ps(_mm256_add_epi32(p2, p3)), tot1);
    }
    return hsum(_mm256_add_ps(tot0, tot1));
}

void gf_q4_mm(const float *x, int M, int K, const uint16_t *q, const uint16_t *d,
              const uint16_t *mn, int N, int group, float *y, int nt) {
    const int H = K / 32, G = K / group, per = group / 32;
    const qx16 a = quant_x16(x, M, K);
    const int16_t *xq = a.xq;
    const float *dx = a.dx, *sx = a.sx;
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int n = 0; n < N; n++) {
        float dh[MAX_BLOCKS], mh[MAX_BLOCKS], scale[MAX_BLOCKS];
        expand_f16(d + (size_t)n * G, G, per, dh);
        expand_f16(mn + (size_t)n * G, G, per, mh);
        const uint16_t *qr = q + (size_t)n * (K / 4);
        for (int m = 0; m < M; m++) {
            mul_blocks(dh, dx + (size_t)m * H, scale, H);
            y[(size_t)m * N + n] = q4_dot(qr, scale, xq + (size_t)m * K, K)
                                   + dot(mh, sx + (size_t)m * H, H);
        }
    }
    free(a.xq);
}

/* sum_b scale[b] * sum_{k in b} q[k] * xq[k] for one int8 row (|sum| <= 4 * 127 * 32767). */
static inline float q8_dot(const int8_t *qr, const float *scale, const int16_t *xq, int K) {
    __m256 tot0 = _mm256_setzero_ps(), tot1 = _mm256_setzero_ps();
    int c = 0;
#define Q8_BLOCK(cc, tot)                                                                      \
    do {                                                                                       \
        const __m128i *qb = (const __m128i *)(qr + 32 * (cc));                                 \
        const __m256i *xb = (const __m256i *)(xq + 32 * (cc));                                 \
        const __m256i p = _mm256_add_epi32(                                                    \
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(qb)), _mm256_loadu_si256(xb)), \
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(qb + 1)),                   \
                              _mm256_loadu_si256(xb + 1)));                                    \
        tot = _mm256_fmadd_ps(_mm256_broadcast_ss(scale + (cc)), _mm256_cvtepi32_ps(p), tot);  \
    } while (0)
    for (; c + 2 <= K / 32; c += 2) {
        Q8_BLOCK(c, tot0);
        Q8_BLOCK(c + 1, tot1);
    }
    for (; c < K / 32; c++) Q8_BLOCK(c, tot0);
#undef Q8_BLOCK
    return hsum(_mm256_add_ps(tot0, tot1));
}

void gf_q8_mm(const float *x, int M, int K, const int8_t *q, const float *s, int N, int group,
              float *y, int nt) {
    const int H = K / 32, G = K / group, per = group / 32;
    const qx16 a = quant_x16(x, M, K);
    const int16_t *xq = a.xq;
    const float *dx = a.dx;
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int n = 0; n < N; n++) {
        float sh[MAX_BLOCKS], scale[MAX_BLOCKS];
        const float *sr = s + (size_t)n * G;
        if (per > 1) repeat_blocks(sr, G, per, sh);
        const float *sb = per > 1 ? sh : sr;
        const int8_t *qr = q + (size_t)n * K;
        for (int m = 0; m < M; m++) {
            mul_blocks(sb, dx + (size_t)m * H, scale, H);
            y[(size_t)m * N + n] = q8_dot(qr, scale, xq + (size_t)m * K, K);
        }
    }
    free(a.xq);
}

/* fp32 rows, for single-token decoding: y[m, n] = w[n] . x[m]. Each thread walks its rows in
   memory order, one row after the other: a single sequential stream per core, which the
   hardware prefetcher follows at more bandwidth than four rows read side by side
   (benchmarks/quant_kernels.py). Four rows share one horizontal reduction and one store. */
void gf_f32_mm(const float *x, int M, int K, const float *w, int N, float *y, int nt) {
    const int N4 = N / 4 * 4, K8 = K / 8 * 8;
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int n = 0; n < N4; n += 4) {
        const float *w0 = w + (size_t)n * K;
        for (int m = 0; m < M; m++) {
            const float *xr = x + (size_t)m * K;
            const __m256 d0 = dot_lanes(w0, xr, K8), d1 = dot_lanes(w0 + K, xr, K8);
            const __m256 d2 = dot_lanes(w0 + 2 * K, xr, K8), d3 = dot_lanes(w0 + 3 * K, xr, K8);
            float r[4];
            _mm_storeu_ps(r, hsum4(d0, d1, d2, d3));
            for (int j = 0; j < 4; j++)
                for (int k = K8; k < K; k++) r[j] += w0[(size_t)j * K + k] * xr[k];
            for (int j = 0; j < 4; j++) y[(size_t)m * N + n + j] = r[j];
        }
    }
    for (int n = N4; n < N; n++)
        for (int m = 0; m < M; m++)
            y[(size_t)m * N + n] = dot(w + (size_t)n * K, x + (size_t)m * K, K);
}

/* Dequantisation (for prefill, where a float32 GEMM then does the arithmetic). Multiply, then
   add, rounding after each (-ffp-contract=off): the GGUF reference decoder's operations. */
void gf_q4_dequant(const uint16_t *q, const uint16_t *d, const uint16_t *mn, int N, int K,
                   int group, float *out, int nt) {
    const int G = K / group;
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int n = 0; n < N; n++) {
        const uint16_t *qr = q + (size_t)n * (K / 4);
        float *o = out + (size_t)n * K;
        for (int c = 0; c < K / 64; c++)
            for (int s = 0; s < 4; s++)
                for (int j = 0; j < 16; j++) {
                    const int k = 64 * c + 16 * s + j;
                    const size_t at = (size_t)n * G + k / group;
                    const float code = (float)((qr[16 * c + j] >> (4 * s)) & 15u);
                    o[k] = _cvtsh_ss(d[at]) * code + _cvtsh_ss(mn[at]);
                }
    }
}

void gf_q8_dequant(const int8_t *q, const float *s, int N, int K, int group, float *out,
                   int nt) {
    const int G = K / group;
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            out[(size_t)n * K + k] = s[(size_t)n * G + k / group] * (float)q[(size_t)n * K + k];
}
