"""Hand-written AVX2 kernels for weight-only quantised matrix products, compiled on first use.

Why not PyTorch's own kernels: on a CPU without AVX-512 (AVX2 + FMA only), torch 2.13's
`_weight_int8pack_mm` and `_weight_int4pack_mm_for_cpu` fall back to scalar loops for float32
activations (10-20x slower than an fp32 GEMV of the same shape); with bfloat16 activations they
are vectorised but no faster than fp32 (docs/inference.md has the measurements). Decoding one
token is a matrix-vector product per layer, bound by how many weight bytes are streamed from
memory, so the win of 8- or 4-bit weights only shows with a kernel that dequantises in
registers. These are such kernels (the quantised products are about 200 of the module's 700 lines
of C; the rest are the decode step's helpers, the prefill attention and the decode program).

What each kernel computes, for activations x [M, K] (float32, row-major) and N output rows.
Columns are cut into blocks of 32. Each block of a row of x is first put in 16-bit fixed
point, dx_b = max_{k in b} |x_k| / 32767 and xq_k = round(x_k / dx_b), so the inner loop
can multiply small integers with `_mm256_madd_epi16` (16 products and 8 pair sums per
instruction, exact in int32) instead of converting every weight to float: per 64 int4 weights
about 20 instructions instead of 36, and the kernels are about twice as fast. The rounding
error is at most dx_b / 2 = max|x_b| / 65534 per activation, ~2^-16 of the block's largest
value, far below the 8- or 4-bit weight error (llama.cpp rounds activations to 8 bits).

    int8:  y[m, n] = sum_b s[n, g(b)] dx_b * sum_{k in b} q[n, k] xq[m, k]
           q int8 [N, K]; s float32 [N, K / group] (group = K: per channel; 32: GGUF Q8_0).
    int4:  y[m, n] = sum_b d[n, g(b)] dx_b * sum_{k in b} q[n, k] xq[m, k]
                   + sum_b mn[n, g(b)] * sum_{k in b} x[m, k]
           i.e. w = d q + mn with q in 0..15; d, mn float16 [N, K / group]. The second sum
           uses the float block sums of x, computed once per call. GGUF's Q4_1 is this with
           group 32; Q4_0 is d (q - 8), so mn = -8 d.

int4 packing: each row is cut into chunks of 64 columns stored as 16 uint16 lanes; nibble s
of lane j holds column 16 s + j of the chunk. One 256-bit load yields all 64 codes, and
(v >> 4 s) & 15 puts columns 16 s .. 16 s + 15 in the 16 lanes in order, ready for madd
against 16 consecutive activations, with no shuffles. (GGUF's nibble order, low nibbles =
values 0-15 of a block and high = 16-31, is repacked at load time.)

Every kernel parallelises over output rows with OpenMP. The library links the process's
libgomp (the one torch loaded), so it shares torch's thread pool instead of starting a second
one. Block sums are exact integers; across blocks the accumulation is float32. Results differ from
a dequantise-then-matmul reference by the activation rounding (relative error ~1e-5).

Built with the system C compiler (`$CC`, else `cc`) into a per-user cache
(`$GLASSFORMER_CACHE`, else `~/.cache/glassformer`), keyed by a hash of source and flags, and
loaded with ctypes. `available()` is False when the CPU lacks AVX2/FMA/F16C, the compiler is
missing or `GLASSFORMER_KERNELS=reference`; callers then use the PyTorch reference path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

C_SOURCE = r"""
#include <immintrin.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>

#define MAX_BLOCKS 4096 /* K <= 131072 */

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

/* Activations in 16-bit fixed point, per block of 32 (see the module docstring):
   dx = max|x_b| / 32767, xq = round(x / dx); plus the float sums sx_b of each block. */
static void quant_x16(const float *x, int M, int K, int16_t *xq, float *dx, float *sx) {
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
    int16_t *xq = (int16_t *)malloc(sizeof(int16_t) * (size_t)M * K);
    float *dx = (float *)malloc(sizeof(float) * (size_t)M * H * 2), *sx = dx + (size_t)M * H;
    quant_x16(x, M, K, xq, dx, sx);
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
    free(xq);
    free(dx);
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
    int16_t *xq = (int16_t *)malloc(sizeof(int16_t) * (size_t)M * K);
    float *dx = (float *)malloc(sizeof(float) * (size_t)M * H * 2), *sx = dx + (size_t)M * H;
    quant_x16(x, M, K, xq, dx, sx);
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
    free(xq);
    free(dx);
}

/* fp32 rows, for single-token decoding: y[m, n] = w[n] . x[m]. Each thread walks its rows in
   memory order, one row after the other: a single sequential stream per core, which the
   hardware prefetcher follows at 10-20% more bandwidth than four rows read side by side
   (measured on 576-wide rows: 25-30 GB/s against 18-26). Four rows share one horizontal
   reduction and one store. */
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

/* ---- decode-step helpers: the small per-token operations of a block, one call each ---- */

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

static inline float exp1(float x) {
    float v[8] = {x, 0, 0, 0, 0, 0, 0, 0};
    _mm256_storeu_ps(v, exp8(_mm256_loadu_ps(v)));
    return v[0];
}

/* y = x / sqrt(mean(x^2) + eps) * w, rows of D (float32 statistics, as RMSNorm). */
void gf_rmsnorm(const float *x, const float *w, float *y, int M, int D, float eps) {
    for (int m = 0; m < M; m++) {
        const float *xr = x + (size_t)m * D;
        float *yr = y + (size_t)m * D;
        const float r = 1.0f / sqrtf(dot(xr, xr, D) / (float)D + eps);
        int i = 0;
        const __m256 rv = _mm256_set1_ps(r);
        for (; i + 8 <= D; i += 8)
            _mm256_storeu_ps(yr + i, _mm256_mul_ps(_mm256_loadu_ps(w + i),
                                                   _mm256_mul_ps(_mm256_loadu_ps(xr + i), rv)));
        for (; i < D; i++) yr[i] = w[i] * (xr[i] * r);
    }
}

/* One new token per row b: rotate the H query and HK key heads of qkv [B, (H + 2 HK) D] in
   place (half-split pairs (i, i + rot/2), or interleaved pairs (2i, 2i + 1)), then store the
   key and value heads in cache slot `pos` of kc, vc [B, HK, cap, D] and record the position.
   With `f16` the cache holds float16 (rounded to nearest even, as PyTorch's conversion). */
void gf_rope_store(float *qkv, int B, int H, int HK, int D, int rot, int interleaved,
                   const float *cos, const float *sin, void *kc, void *vc, int64_t *kpos,
                   int cap, int pos, int f16) {
    const int half = rot / 2, heads = H + 2 * HK;
    for (int b = 0; b < B; b++) {
        float *row = qkv + (size_t)b * heads * D;
        for (int j = 0; j < H + HK && rot > 0; j++) {
            float *x = row + (size_t)j * D;
            for (int i = 0; i < half; i++) {
                const int ia = interleaved ? 2 * i : i, ib = interleaved ? 2 * i + 1 : i + half;
                const float a = x[ia], c = x[ib];
                x[ia] = a * cos[i] - c * sin[i];
                x[ib] = c * cos[i] + a * sin[i];
            }
        }
        for (int j = 0; j < HK; j++) {
            const size_t slot = (((size_t)b * HK + j) * cap + pos) * D;
            const float *k = row + (size_t)(H + j) * D, *v = row + (size_t)(H + HK + j) * D;
            if (f16)
                for (int i = 0; i < D; i++) {
                    ((uint16_t *)kc)[slot + i] = _cvtss_sh(k[i], 0);
                    ((uint16_t *)vc)[slot + i] = _cvtss_sh(v[i], 0);
                }
            else
                for (int i = 0; i < D; i++) {
                    ((float *)kc)[slot + i] = k[i];
                    ((float *)vc)[slot + i] = v[i];
                }
        }
    }
    kpos[pos] = pos;
}

/* 8 cache entries at element i of a float32 or (f16) float16 cache */
static inline __m256 load_kv8(const void *base, size_t i, int f16) {
    return f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + i)))
               : _mm256_loadu_ps((const float *)base + i);
}

/* s[j] <- exp(s[j] - max) for j < n; returns the sum and writes the max to *mx (the softmax's
   numerators and denominator; the max is subtracted so that no exp overflows). */
static float exp_shifted(float *s, int n, float *mx) {
    float m = -INFINITY;
    for (int j = 0; j < n; j++) m = s[j] > m ? s[j] : m;
    const __m256 mv = _mm256_set1_ps(m);
    __m256 sumv = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), mv));
        _mm256_storeu_ps(s + j, e);
        sumv = _mm256_add_ps(sumv, e);
    }
    float sum = hsum(sumv);
    for (; j < n; j++) { s[j] = exp1(s[j] - m); sum += s[j]; }
    *mx = m;
    return sum;
}

/* The G query heads q[g * D ..] that share one KV head, against n cached keys: scores,
   softmax, o_g = sum_j p_gj v_j. Each block of keys is loaded once and used by all G heads
   while it is in L1, so the cache slice streams from memory once (with a loop per head, a
   slice larger than L2 would be fetched G times). o_g starts every `ostride` floats. Without
   `partial` the o_g are normalised; with it they stay unnormalised and o_g[D], o_g[D + 1] =
   (max score, sum of exp(score - max)), for a later merge with the other key splits.
   Inlined into its caller with `f16` a constant, so each cache type gets its own loops. */
static inline __attribute__((always_inline)) void attend_group(
    const float *q, int G, const void *K, const void *V, int n, int D, float scale, float *o,
    size_t ostride, int partial, int f16) {
    const size_t es = f16 ? 2 : 4; /* bytes per cache entry */
    float stack[8192];
    const size_t need = (size_t)G * n;
    float *s = need <= 8192 ? stack : (float *)malloc(sizeof(float) * need);
    /* scores, four keys at a time so that one horizontal reduction serves four dots */
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        const size_t k0 = (size_t)j * D;
        /* Software prefetch: keys 16 ahead, and this block's values into L2 for the value pass,
           so both streams are in flight at once instead of one after the other. */
        for (size_t c = 0; c < 4 * (size_t)D * es; c += 64) {
            if (j + 16 < n) _mm_prefetch((const char *)K + (k0 + 16 * D) * es + c, _MM_HINT_T0);
            _mm_prefetch((const char *)V + k0 * es + c, _MM_HINT_T1);
        }
        for (int g = 0; g < G; g++) {
            const float *qh = q + (size_t)g * D;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int i = 0; i < D; i += 8) {
                const __m256 qv = _mm256_loadu_ps(qh + i);
                a0 = _mm256_fmadd_ps(qv, load_kv8(K, k0 + i, f16), a0);
                a1 = _mm256_fmadd_ps(qv, load_kv8(K, k0 + D + i, f16), a1);
                a2 = _mm256_fmadd_ps(qv, load_kv8(K, k0 + 2 * D + i, f16), a2);
                a3 = _mm256_fmadd_ps(qv, load_kv8(K, k0 + 3 * D + i, f16), a3);
            }
            _mm_storeu_ps(s + (size_t)g * n + j,
                          _mm_mul_ps(hsum4(a0, a1, a2, a3), _mm_set1_ps(scale)));
        }
    }
    for (; j < n; j++)
        for (int g = 0; g < G; g++) {
            __m256 a = _mm256_setzero_ps();
            for (int i = 0; i < D; i += 8)
                a = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)g * D + i),
                                    load_kv8(K, (size_t)j * D + i, f16), a);
            s[(size_t)g * n + j] = hsum(a) * scale;
        }
    for (int g = 0; g < G; g++) {
        float *sg = s + (size_t)g * n, mx;
        const float sum = exp_shifted(sg, n, &mx);
        if (partial) { o[(size_t)g * ostride + D] = mx; o[(size_t)g * ostride + D + 1] = sum; }
        else { const float inv = 1.0f / sum; for (j = 0; j < n; j++) sg[j] *= inv; }
    }
    /* values: blocks of 32 keys (8 KB at D = 64) stay in L1 while every head adds them in;
       64 output dims of a head at a time live in 8 registers. */
    for (int i0 = 0; i0 < D; i0 += 64) {
        const int w = D - i0 < 64 ? D - i0 : 64, regs = w / 8;
        for (int g = 0; g < G; g++)
            for (int i = 0; i < w; i++) o[(size_t)g * ostride + i0 + i] = 0.0f;
        for (int j0 = 0; j0 < n; j0 += 32) {
            const int j1 = j0 + 32 < n ? j0 + 32 : n;
            for (int g = 0; g < G; g++) {
                float *og = o + (size_t)g * ostride + i0;
                const float *pg = s + (size_t)g * n;
                __m256 acc[8];
                for (int r = 0; r < regs; r++) acc[r] = _mm256_loadu_ps(og + 8 * r);
                for (j = j0; j < j1; j++) {
                    const __m256 pv = _mm256_set1_ps(pg[j]);
                    const size_t vr = (size_t)j * D + i0;
                    for (int r = 0; r < regs; r++)
                        acc[r] = _mm256_fmadd_ps(pv, load_kv8(V, vr + 8 * r, f16), acc[r]);
                }
                for (int r = 0; r < regs; r++) _mm256_storeu_ps(og + 8 * r, acc[r]);
            }
        }
    }
    if (s != stack) free(s);
}

static int gcd(int a, int b) { while (b) { const int t = a % b; a = b; b = t; } return a; }

/* Single-query attention against the first L cache slots (all visible):
   o = softmax(scale q.K^T) V per query head; head i reads KV head i / (H / HK).
   q rows start every `qstride` floats (inside qkv); out [B, H * D]; requires D % 8 == 0.

   The work is cut into tasks of (row, KV head, key split), each running the G = H / HK query
   heads that share the KV head over its slice of keys (flash-decoding, Dao et al. 2023): a KV
   head's cache is read by one thread only, and with S = nt / gcd(B HK, nt) splits the task
   count is a multiple of the thread count (SmolLM2's 3 KV heads on 2 threads: 6 equal tasks;
   one head per task left threads idle). The splits' partial results are merged with
   o = sum_s e^(m_s - m) o_s / sum_s e^(m_s - m) l_s, m = max_s m_s. */
void gf_attn_decode(const float *q, int qstride, const void *kc, const void *vc, int B, int H,
                    int HK, int D, int cap, int L, float scale, float *out, int nt, int f16) {
    const size_t es = f16 ? 2 : 4;
    const int G = H / HK;
    int S = nt / gcd(B * HK, nt);
    if (S > L / 32) S = L / 32 > 1 ? L / 32 : 1; /* at least 32 keys a split */
    float *part = S > 1 ? (float *)malloc(sizeof(float) * (size_t)B * H * S * (D + 2)) : NULL;
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int t = 0; t < B * HK * S; t++) {
        const int split = t % S, kv = (t / S) % HK, b = t / (S * HK);
        /* split s holds keys [s L / S, (s + 1) L / S): at least 32 of them, since S <= L / 32 */
        const int j0 = (int)((long)split * L / S), n = (int)((long)(split + 1) * L / S) - j0;
        const size_t base = (((size_t)b * HK + kv) * cap + j0) * D;
        const float *qg = q + (size_t)b * qstride + (size_t)kv * G * D;
        const char *kb = (const char *)kc + base * es, *vb = (const char *)vc + base * es;
        /* head h's partial for split s: part[((b H + h) S + s) (D + 2)], o, m, l */
        float *o = part ? part + (((size_t)b * H + (size_t)kv * G) * S + split) * (D + 2)
                        : out + ((size_t)b * H + (size_t)kv * G) * D;
        const size_t ostride = part ? (size_t)S * (D + 2) : (size_t)D;
        if (f16) attend_group(qg, G, kb, vb, n, D, scale, o, ostride, part != NULL, 1);
        else attend_group(qg, G, kb, vb, n, D, scale, o, ostride, part != NULL, 0);
    }
    if (!part) return;
    for (int bh = 0; bh < B * H; bh++) {
        const float *p = part + (size_t)bh * S * (D + 2);
        float m = -INFINITY, denom = 0.0f;
        for (int s = 0; s < S; s++) m = p[s * (D + 2) + D] > m ? p[s * (D + 2) + D] : m;
        float *o = out + (size_t)bh * D;
        for (int i = 0; i < D; i++) o[i] = 0.0f;
        for (int s = 0; s < S; s++) {
            const float *ps = p + (size_t)s * (D + 2);
            const float c = expf(ps[D] - m);
            denom += c * ps[D + 1];
            for (int i = 0; i < D; i++) o[i] += c * ps[i];
        }
        const float inv = 1.0f / denom;
        for (int i = 0; i < D; i++) o[i] *= inv;
    }
    free(part);
}

/* ---- prefill attention: causal, computing only the visible half ---- */

/* Causal self-attention of T queries over the same T positions (a prefill into an empty cache):
   o_i = sum_{j <= i} softmax_j(scale q_i . k_j) v_j, query head h reading KV head h / (H / HK).
   PyTorch's CPU flash kernel takes keys in blocks of up to 512, so below 512 positions it
   computes the whole T x T score matrix and masks half of it away. Here a block of 24 queries
   computes scores for the keys it can see only (to the next multiple of 16), as two
   register-blocked products with 6 x 16 accumulators (the shape of an AVX2 SGEMM micro-kernel):
   S = (scale Q_blk) K^T against K^T packed in panels of 16 keys, then O = P V, normalised by
   each row's sum at the end. The scores of a block stay in cache between the two products. */
#define PF_ROWS 6
#define PF_BLOCK 24

/* panel p of kt holds keys 16 p .. 16 p + 15 as [D][16], zero past T */
static void pack_keys(const float *k, long skt, int T, int D, float *kt) {
    for (int p = 0; p < (T + 15) / 16; p++)
        for (int d = 0; d < D; d++)
            for (int jj = 0; jj < 16; jj++) {
                const int j = 16 * p + jj;
                kt[((size_t)p * D + d) * 16 + jj] = j < T ? k[(size_t)j * skt + d] : 0.0f;
            }
}

/* s[r][0..16) = qb[r] . panel columns, for 6 rows of qb (row stride D) */
static inline void scores_6x16(const float *qb, int D, const float *panel, float *s, size_t ss) {
    __m256 c[PF_ROWS][2];
    for (int r = 0; r < PF_ROWS; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
    for (int d = 0; d < D; d++) {
        const __m256 b0 = _mm256_loadu_ps(panel + d * 16), b1 = _mm256_loadu_ps(panel + d * 16 + 8);
        for (int r = 0; r < PF_ROWS; r++) {
            const __m256 a = _mm256_broadcast_ss(qb + (size_t)r * D + d);
            c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
        }
    }
    for (int r = 0; r < PF_ROWS; r++) {
        _mm256_storeu_ps(s + r * ss, c[r][0]);
        _mm256_storeu_ps(s + r * ss + 8, c[r][1]);
    }
}

/* o[r][0..16) = sum_{j < n} p[r][j] v[j][0..16), for 6 rows of p (row stride ss) */
static inline void pv_6x16(const float *p, size_t ss, const float *v, long svt, int n, float *o,
                           int so) {
    __m256 c[PF_ROWS][2];
    for (int r = 0; r < PF_ROWS; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
    for (int j = 0; j < n; j++) {
        const float *vr = v + (size_t)j * svt;
        const __m256 b0 = _mm256_loadu_ps(vr), b1 = _mm256_loadu_ps(vr + 8);
        for (int r = 0; r < PF_ROWS; r++) {
            const __m256 a = _mm256_broadcast_ss(p + r * ss + j);
            c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
        }
    }
    for (int r = 0; r < PF_ROWS; r++) {
        _mm256_storeu_ps(o + r * so, c[r][0]);
        _mm256_storeu_ps(o + r * so + 8, c[r][1]);
    }
}

/* q [B, H, T, D], k, v [B, HK, T, D] given by element strides (b, head, t; d contiguous);
   out [B, T, H * D] contiguous, the layout the output projection reads. D % 16 == 0. */
void gf_attn_prefill(const float *q, long sqb, long sqh, long sqt, const float *k, long skb,
                     long skh, long skt, const float *v, long svb, long svh, long svt, int B,
                     int H, int HK, int T, int D, float scale, float *out, int nt) {
    const int G = H / HK, P = (T + 15) / 16, TP = 16 * P, NB = (T + PF_BLOCK - 1) / PF_BLOCK;
    float *kt = (float *)malloc(sizeof(float) * (size_t)B * HK * TP * D);
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int bk = 0; bk < B * HK; bk++)
        pack_keys(k + (size_t)(bk / HK) * skb + (size_t)(bk % HK) * skh, skt, T, D,
                  kt + (size_t)bk * TP * D);
    /* tasks (row, head, query block), the last blocks (the most keys) handed out first */
    #pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int task = 0; task < B * H * NB; task++) {
        const int blk = NB - 1 - task % NB, h = (task / NB) % H, b = task / (NB * H);
        const int i0 = blk * PF_BLOCK, rows = T - i0 < PF_BLOCK ? T - i0 : PF_BLOCK;
        const float *kth = kt + ((size_t)b * HK + h / G) * TP * D;
        const float *vh = v + (size_t)b * svb + (size_t)(h / G) * svh;
        float *qb = (float *)malloc(sizeof(float) * ((size_t)PF_BLOCK * (D + TP) + PF_ROWS * D));
        float *s = qb + (size_t)PF_BLOCK * D, *o = s + (size_t)PF_BLOCK * TP;
        for (int r = 0; r < PF_BLOCK; r++)
            for (int d = 0; d < D; d++)
                qb[(size_t)r * D + d] =
                    r < rows ? scale * q[b * sqb + h * sqh + (i0 + r) * sqt + d] : 0.0f;
        for (int r0 = 0; r0 < rows; r0 += PF_ROWS) {
            /* keys 0 .. n - 1 are visible to some row of this group; panels cover them */
            const int n = i0 + r0 + PF_ROWS < T ? i0 + r0 + PF_ROWS : T, panels = (n + 15) / 16;
            float *sg = s + (size_t)r0 * TP;
            for (int p = 0; p < panels; p++)
                scores_6x16(qb + (size_t)r0 * D, D, kth + (size_t)p * D * 16, sg + 16 * p, TP);
            float inv[PF_ROWS];
            for (int r = 0; r < PF_ROWS; r++) {
                float *sr = sg + (size_t)r * TP;
                const int seen = r0 + r < rows ? i0 + r0 + r + 1 : 0; /* keys 0 .. i */
                float mx;
                const float sum = exp_shifted(sr, seen, &mx);
                for (int j = seen; j < 16 * panels; j++) sr[j] = 0.0f; /* masked: weight 0 */
                inv[r] = seen ? 1.0f / sum : 0.0f;
            }
            for (int c = 0; c < D; c += 16) pv_6x16(sg, TP, vh + c, svt, n, o + c, D);
            for (int r = 0; r < PF_ROWS && r0 + r < rows; r++) {
                float *dst = out + (((size_t)b * T + i0 + r0 + r) * H + h) * D;
                for (int d = 0; d < D; d++) dst[d] = o[(size_t)r * D + d] * inv[r];
            }
        }
        free(qb);
    }
    free(kt);
}

/* out = silu(g) * u = g / (1 + exp(-g)) * u, for gu = [g | u] rows of 2F. */
void gf_silu_mul(const float *gu, float *out, int M, int F) {
    for (int m = 0; m < M; m++) {
        const float *g = gu + (size_t)m * 2 * F, *u = g + F;
        float *o = out + (size_t)m * F;
        int i = 0;
        const __m256 one = _mm256_set1_ps(1.0f);
        for (; i + 8 <= F; i += 8) {
            const __m256 gv = _mm256_loadu_ps(g + i);
            const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
            _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)),
                                                  _mm256_loadu_ps(u + i)));
        }
        for (; i < F; i++) o[i] = g[i] / (1.0f + exp1(-g[i])) * u[i];
    }
}

/* y[m] += x[m * stride], rows of N: a residual add (stride N) or a bias (stride 0). */
void gf_add(float *y, const float *x, int M, int N, int stride) {
    for (int m = 0; m < M; m++) {
        float *yr = y + (size_t)m * N;
        const float *xr = x + (size_t)m * stride;
        int i = 0;
        for (; i + 8 <= N; i += 8)
            _mm256_storeu_ps(yr + i, _mm256_add_ps(_mm256_loadu_ps(yr + i),
                                                   _mm256_loadu_ps(xr + i)));
        for (; i < N; i++) yr[i] += xr[i];
    }
}

/* ---- a whole decode step in one call ---- */

/* A decode step as a program: one record per kernel call with its arguments bound in advance
   (pointers and sizes as int64, the one float as a double). Only two calls depend on the
   position: RoPE + cache store (the rotary tables' row pos, the cache slot) and attention (pos +
   1 keys). Running the list here instead of from Python saves ~2 us of ctypes and interpreter
   time per call, ~330 calls a token for a 30-layer model. */
enum { OP_RMSNORM, OP_F32_MM, OP_Q4_MM, OP_Q8_MM, OP_SILU_MUL, OP_ADD, OP_ROPE_STORE, OP_ATTEND };
typedef struct { int64_t kind; int64_t a[15]; double f; } gf_op;

#define F32P(i) ((float *)(intptr_t)a[i])
void gf_run_program(const gf_op *ops, int n, int pos) {
    for (int i = 0; i < n; i++) {
        const int64_t *a = ops[i].a;
        switch (ops[i].kind) {
        case OP_RMSNORM:
            gf_rmsnorm(F32P(0), F32P(1), F32P(2), (int)a[3], (int)a[4], (float)ops[i].f);
            break;
        case OP_F32_MM:
            gf_f32_mm(F32P(0), (int)a[1], (int)a[2], F32P(3), (int)a[4], F32P(5), (int)a[6]);
            break;
        case OP_Q4_MM:
            gf_q4_mm(F32P(0), (int)a[1], (int)a[2], (const uint16_t *)(intptr_t)a[3],
                     (const uint16_t *)(intptr_t)a[4], (const uint16_t *)(intptr_t)a[5],
                     (int)a[6], (int)a[7], F32P(8), (int)a[9]);
            break;
        case OP_Q8_MM:
            gf_q8_mm(F32P(0), (int)a[1], (int)a[2], (const int8_t *)(intptr_t)a[3], F32P(4),
                     (int)a[5], (int)a[6], F32P(7), (int)a[8]);
            break;
        case OP_SILU_MUL: gf_silu_mul(F32P(0), F32P(1), (int)a[2], (int)a[3]); break;
        case OP_ADD: gf_add(F32P(0), F32P(1), (int)a[2], (int)a[3], (int)a[4]); break;
        case OP_ROPE_STORE: { /* a[13]: floats per row of the rotary tables */
            const float *cos = a[7] ? F32P(7) + (size_t)pos * a[13] : NULL;
            const float *sin = a[8] ? F32P(8) + (size_t)pos * a[13] : NULL;
            gf_rope_store(F32P(0), (int)a[1], (int)a[2], (int)a[3], (int)a[4], (int)a[5],
                          (int)a[6], cos, sin, (void *)(intptr_t)a[9], (void *)(intptr_t)a[10],
                          (int64_t *)(intptr_t)a[11], (int)a[12], pos, (int)a[14]);
            break;
        }
        case OP_ATTEND:
            gf_attn_decode(F32P(0), (int)a[1], (const void *)(intptr_t)a[2],
                           (const void *)(intptr_t)a[3], (int)a[4], (int)a[5], (int)a[6],
                           (int)a[7], (int)a[8], pos + 1, (float)ops[i].f, F32P(9), (int)a[10],
                           (int)a[11]);
            break;
        }
    }
}
#undef F32P

void gf_q8_dequant(const int8_t *q, const float *s, int N, int K, int group, float *out,
                   int nt) {
    const int G = K / group;
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            out[(size_t)n * K + k] = s[(size_t)n * G + k / group] * (float)q[(size_t)n * K + k];
}
"""

CFLAGS = (
    "-O3", "-fno-math-errno", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off", "-fopenmp",
    "-shared", "-fPIC",
)  # fmt: skip
LIBS = ("-lm",)
MAX_K = 131072  # MAX_BLOCKS * 32 in the C source


def _cache_dir() -> Path:
    root = os.environ.get("GLASSFORMER_CACHE")
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "glassformer"


def _cpu_ok() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    # torch reports the best ISA its own kernels were dispatched to; AVX2 implies FMA and F16C
    # on every CPU that ships it.
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


class _Lib:
    """ctypes bindings; argument types declared once so each call converts plain ints."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        p, i = ctypes.c_void_p, ctypes.c_int
        lib.gf_q4_mm.argtypes = [p, i, i, p, p, p, i, i, p, i]
        lib.gf_q8_mm.argtypes = [p, i, i, p, p, i, i, p, i]
        lib.gf_f32_mm.argtypes = [p, i, i, p, i, p, i]
        lib.gf_q4_dequant.argtypes = [p, p, p, i, i, i, p, i]
        lib.gf_q8_dequant.argtypes = [p, p, i, i, i, p, i]
        f = ctypes.c_float
        lib.gf_rmsnorm.argtypes = [p, p, p, i, i, f]
        lib.gf_rope_store.argtypes = [p, i, i, i, i, i, i, p, p, p, p, p, i, i, i]
        lib.gf_attn_decode.argtypes = [p, i, p, p, i, i, i, i, i, i, f, p, i, i]
        n = ctypes.c_long
        lib.gf_attn_prefill.argtypes = [p, n, n, n, p, n, n, n, p, n, n, n, i, i, i, i, i, f, p, i]
        lib.gf_run_program.argtypes = [p, i, i]
        lib.gf_silu_mul.argtypes = [p, p, i, i]
        lib.gf_add.argtypes = [p, p, i, i, i]
        self.rmsnorm, self.rope_store = lib.gf_rmsnorm, lib.gf_rope_store
        self.attn_decode, self.silu_mul = lib.gf_attn_decode, lib.gf_silu_mul
        self.attn_prefill, self.run_program = lib.gf_attn_prefill, lib.gf_run_program
        self.add = lib.gf_add
        for fn in (
            lib.gf_q4_mm, lib.gf_q8_mm, lib.gf_f32_mm, lib.gf_q4_dequant, lib.gf_q8_dequant,
            lib.gf_rmsnorm, lib.gf_rope_store, lib.gf_attn_decode, lib.gf_attn_prefill,
            lib.gf_silu_mul, lib.gf_add, lib.gf_run_program,
        ):  # fmt: skip
            fn.restype = None
        self.q4_mm, self.q8_mm, self.f32_mm = lib.gf_q4_mm, lib.gf_q8_mm, lib.gf_f32_mm
        self.q4_dequant, self.q8_dequant = lib.gf_q4_dequant, lib.gf_q8_dequant
        self.path = path


class Op(ctypes.Structure):
    """One kernel call of a decode program (`gf_run_program`): kind, int64 arguments (pointers,
    sizes) and one float argument."""

    _fields_ = [("kind", ctypes.c_int64), ("a", ctypes.c_int64 * 15), ("f", ctypes.c_double)]


# Op kinds, in the order of the C enum.
OP_RMSNORM, OP_F32_MM, OP_Q4_MM, OP_Q8_MM, OP_SILU_MUL, OP_ADD, OP_ROPE_STORE, OP_ATTEND = range(8)


def _build() -> Path:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set $CC)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join((C_SOURCE, *CFLAGS, *LIBS, version)).encode()).hexdigest()[:16]
    target = _cache_dir() / f"glassformer_kernels_{key}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "kernels.c"
        src.write_text(C_SOURCE)
        out = Path(tmp) / target.name
        proc = subprocess.run(
            [cc, *CFLAGS, str(src), "-o", str(out), *LIBS], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"compiling the kernels failed:\n{proc.stderr[-2000:]}")
        os.replace(out, target)  # atomic: a concurrent process sees all of the file or none
    return target


# Loaded once per process. A plain dict rather than functools.lru_cache: torch.compile traces
# through these functions and reads a module-level dict as a constant, while it warns about
# (and re-traces) an lru_cache wrapper.
_LOADED: dict[str, object] = {}


def library() -> _Lib | None:
    """The compiled kernels, or None where they cannot be used (see module docstring)."""
    if "lib" not in _LOADED:
        _LOADED["lib"] = _load_library()
    return _LOADED["lib"]  # type: ignore[return-value]


def _load_library() -> _Lib | None:
    choice = os.environ.get("GLASSFORMER_KERNELS", "native").lower()
    if choice == "reference" or not _cpu_ok():
        return None
    try:
        return _Lib(_build())
    except (RuntimeError, OSError) as err:
        warnings.warn(
            f"glassformer: native int8/int4 kernels unavailable ({err}); using the slower "
            "PyTorch reference path",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def available() -> bool:
    return library() is not None


def threads() -> int:
    return torch.get_num_threads()


def q4_mm(
    x: torch.Tensor, q: torch.Tensor, d: torch.Tensor, mn: torch.Tensor, group: int
) -> torch.Tensor:
    """x [M, K] float32 contiguous -> [M, N]; q [N, K / 4] int16; d, mn [N, K / group] f16."""
    lib = library()
    assert lib is not None
    m, k = x.shape
    n = q.shape[0]
    y = torch.empty(m, n, dtype=torch.float32)
    lib.q4_mm(
        x.data_ptr(),
        m,
        k,
        q.data_ptr(),
        d.data_ptr(),
        mn.data_ptr(),
        n,
        group,
        y.data_ptr(),
        threads(),
    )
    return y


def q8_mm(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor, group: int) -> torch.Tensor:
    """x [M, K] float32 contiguous -> [M, N]; q [N, K] int8; s [N, K / group] float32."""
    lib = library()
    assert lib is not None
    m, k = x.shape
    n = q.shape[0]
    y = torch.empty(m, n, dtype=torch.float32)
    lib.q8_mm(x.data_ptr(), m, k, q.data_ptr(), s.data_ptr(), n, group, y.data_ptr(), threads())
    return y


def f32_mm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [M, K] @ w[N, K]^T for small M, both float32 contiguous."""
    lib = library()
    assert lib is not None
    m, k = x.shape
    n = w.shape[0]
    y = torch.empty(m, n, dtype=torch.float32)
    lib.f32_mm(x.data_ptr(), m, k, w.data_ptr(), n, y.data_ptr(), threads())
    return y


def q4_dequant(q: torch.Tensor, d: torch.Tensor, mn: torch.Tensor, group: int) -> torch.Tensor:
    lib = library()
    assert lib is not None
    n, k = q.shape[0], q.shape[1] * 4
    out = torch.empty(n, k, dtype=torch.float32)
    lib.q4_dequant(
        q.data_ptr(), d.data_ptr(), mn.data_ptr(), n, k, group, out.data_ptr(), threads()
    )
    return out


def q8_dequant(q: torch.Tensor, s: torch.Tensor, group: int) -> torch.Tensor:
    lib = library()
    assert lib is not None
    n, k = q.shape
    out = torch.empty(n, k, dtype=torch.float32)
    lib.q8_dequant(q.data_ptr(), s.data_ptr(), n, k, group, out.data_ptr(), threads())
    return out


def custom_ops() -> object:
    """The kernels as torch custom ops (`torch.ops.glassformer.*`), so that a `torch.compile`d
    decode step keeps them inside one graph instead of breaking the graph at each ctypes call.
    Eager code calls the plain functions above: the dispatcher adds microseconds per call."""
    if "ops" not in _LOADED:
        _register_ops()
        _LOADED["ops"] = torch.ops.glassformer
    return _LOADED["ops"]


def _register_ops() -> None:
    @torch.library.custom_op("glassformer::q4_mm", mutates_args=())
    def q4_mm_op(
        x: torch.Tensor, q: torch.Tensor, d: torch.Tensor, mn: torch.Tensor, group: int
    ) -> torch.Tensor:
        return q4_mm(x.contiguous(), q, d, mn, group)

    @q4_mm_op.register_fake
    def _(x: torch.Tensor, q: torch.Tensor, d: torch.Tensor, mn: torch.Tensor, group: int):
        return x.new_empty(x.shape[0], q.shape[0])

    @torch.library.custom_op("glassformer::q8_mm", mutates_args=())
    def q8_mm_op(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor, group: int) -> torch.Tensor:
        return q8_mm(x.contiguous(), q, s, group)

    @q8_mm_op.register_fake
    def _(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor, group: int):
        return x.new_empty(x.shape[0], q.shape[0])


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., D] float32 contiguous; weight [D] float32 contiguous."""
    lib = library()
    assert lib is not None
    d = x.shape[-1]
    y = torch.empty_like(x)
    lib.rmsnorm(x.data_ptr(), weight.data_ptr(), y.data_ptr(), x.numel() // d, d, eps)
    return y


def rope_store(
    qkv: torch.Tensor,
    n_heads: int,
    n_kv_heads: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    interleaved: bool,
    keys: torch.Tensor,
    values: torch.Tensor,
    key_positions: torch.Tensor,
    pos: int,
) -> None:
    """qkv [B, heads * D] contiguous (one token per row), rotated in place; its key and value
    heads written to cache slot `pos` of keys, values [B, HK, cap, D] (contiguous)."""
    lib = library()
    assert lib is not None
    b, _, cap, d = keys.shape
    if cos.numel() and (cos.shape[-1] * 2 > d or cos.dim() != 2 or cos.shape[0] != 1):
        raise ValueError(f"rope_store: cos/sin must be [1, <= head_dim / 2], got {cos.shape}")
    lib.rope_store(
        qkv.data_ptr(), b, n_heads, n_kv_heads, d, 2 * cos.shape[-1], int(interleaved),
        cos.data_ptr(), sin.data_ptr(), keys.data_ptr(), values.data_ptr(),
        key_positions.data_ptr(), cap, pos, cache_f16(keys),
    )  # fmt: skip


def attn_decode(
    qkv: torch.Tensor,
    n_heads: int,
    keys: torch.Tensor,
    values: torch.Tensor,
    length: int,
    scale: float,
) -> torch.Tensor:
    """Queries = the first n_heads heads of each row of qkv [B, row]; -> [B, n_heads * D]."""
    lib = library()
    assert lib is not None
    b, hk, cap, d = keys.shape
    out = torch.empty(b, n_heads * d, dtype=torch.float32)
    lib.attn_decode(
        qkv.data_ptr(), qkv.shape[-1], keys.data_ptr(), values.data_ptr(), b, n_heads, hk, d,
        cap, length, scale, out.data_ptr(), threads(), cache_f16(keys),
    )  # fmt: skip
    return out


# The KV cache layouts the decode kernels read (and `gf_rope_store` writes).
CACHE_DTYPES = (torch.float32, torch.float16)


def cache_f16(cache: torch.Tensor) -> int:
    """The kernels' `f16` flag for a cache tensor: 1 for float16, 0 for float32."""
    if cache.dtype not in CACHE_DTYPES:
        raise ValueError(f"KV cache dtype must be float16 or float32, got {cache.dtype}")
    return int(cache.dtype == torch.float16)


def attn_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of q [B, H, T, D] over k, v [B, HK, T, D] (float32, any strides with the
    last dimension contiguous; D % 16 == 0; HK divides H) -> [B, T, H * D] contiguous."""
    lib = library()
    assert lib is not None
    b, h, t, d = q.shape
    hk = k.shape[1]
    if d % 16 or h % hk or any(x.stride(-1) != 1 for x in (q, k, v)):
        raise ValueError(f"attn_prefill: need D % 16 == 0, HK | H, unit last stride; got {d}")
    out = torch.empty(b, t, h * d, dtype=torch.float32)
    lib.attn_prefill(
        q.data_ptr(), *q.stride()[:3], k.data_ptr(), *k.stride()[:3], v.data_ptr(),
        *v.stride()[:3], b, h, hk, t, d, scale, out.data_ptr(), threads(),
    )  # fmt: skip
    return out


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """[..., 2F] contiguous -> silu(gate) * up [..., F]."""
    lib = library()
    assert lib is not None
    f = gate_up.shape[-1] // 2
    out = gate_up.new_empty(*gate_up.shape[:-1], f)
    lib.silu_mul(gate_up.data_ptr(), out.data_ptr(), gate_up.numel() // (2 * f), f)
    return out
