/* One decoding step of the gated delta rule (Gated DeltaNet), every head in one call.

   Per value head h of batch row b, with its key head's q, k (normalised, q scaled), its v, the
   decay alpha = exp(g) and the writing strength beta, and its state M [DK, DV]:

       r_k = M^T k ,  r_q = M^T q            one pass over M, both reads at once
       delta = beta (v - alpha r_k)
       o = alpha r_q + (q . k) delta          M_new^T q without reading M_new
       M <- alpha M + k delta^T               a second pass, while M (DK * DV floats) is in cache

   PyTorch spends a dozen calls (and a synchronisation of the threads after each) on what is,
   per head, two passes over 64 KB; here each thread takes whole heads. */
#include "kernels.h"

void gf_delta_step(const float *q, const float *k, const float *v, const float *g,
                   const float *beta, float *state, float *out, int B, int H, int HK, int DK,
                   int DV, int nt) {
    const int rep = H / HK;
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        const float *qh = q + ((long)b * HK + h / rep) * DK;
        const float *kh = k + ((long)b * HK + h / rep) * DK;
        const float *vh = v + (long)bh * DV;
        float *m = state + (long)bh * DK * DV, *o = out + (long)bh * DV;
        const float alpha = expf(g[bh]), bt = beta[bh];
        float *rk = malloc(2 * (size_t)DV * sizeof(float)), *rq = rk + DV;
        memset(rk, 0, 2 * (size_t)DV * sizeof(float));
        const int DV8 = DV / 8 * 8;
        for (int i = 0; i < DK; i++) {
            const float *row = m + (long)i * DV;
            const __m256 ki = _mm256_set1_ps(kh[i]), qi = _mm256_set1_ps(qh[i]);
            int j = 0;
            for (; j < DV8; j += 8) {
                const __m256 r = _mm256_loadu_ps(row + j);
                _mm256_storeu_ps(rk + j, _mm256_fmadd_ps(ki, r, _mm256_loadu_ps(rk + j)));
                _mm256_storeu_ps(rq + j, _mm256_fmadd_ps(qi, r, _mm256_loadu_ps(rq + j)));
            }
            for (; j < DV; j++) {
                rk[j] += kh[i] * row[j];
                rq[j] += qh[i] * row[j];
            }
        }
        const float qk = dot(qh, kh, DK);
        for (int j = 0; j < DV; j++) {
            const float delta = bt * (vh[j] - alpha * rk[j]);
            o[j] = alpha * rq[j] + qk * delta;
            rk[j] = delta; /* reused for the update */
        }
        const __m256 av = _mm256_set1_ps(alpha);
        for (int i = 0; i < DK; i++) {
            float *row = m + (long)i * DV;
            const __m256 ki = _mm256_set1_ps(kh[i]);
            int j = 0;
            for (; j < DV8; j += 8) {
                const __m256 decayed = _mm256_mul_ps(av, _mm256_loadu_ps(row + j));
                _mm256_storeu_ps(row + j, _mm256_fmadd_ps(ki, _mm256_loadu_ps(rk + j), decayed));
            }
            for (; j < DV; j++) row[j] = alpha * row[j] + kh[i] * rk[j];
        }
        free(rk);
    }
}

/* Decays fall below the smallest normal float within a chunk wherever a head forgets fast
   (log-decays of -40 a token), and every product with a denormal runs many times slower: the
   chunked kernels run with denormals flushed to zero (FTZ and DAZ in the thread's MXCSR,
   restored after), which changes nothing above 1e-38. */
#define FLUSH_DENORMALS_BEGIN const unsigned csr = _mm_getcsr(); _mm_setcsr(csr | 0x8040);
#define FLUSH_DENORMALS_END _mm_setcsr(csr);

/* dst[j] = scale src[j] exp(gam[i] - gam[j]) for j < limit, 0 for limit <= j < C (C % 8 == 0):
   row i of a chunk's key-side product with its decays D_ij, limit i + 1 for the scores (D is
   lower triangular), i for the strictly lower part of A. */
static inline void decayed_row(const float *src, const float *gam, int i, int limit, int C,
                               float scale, float *dst) {
    const __m256 gi = _mm256_set1_ps(gam[i]), s = _mm256_set1_ps(scale);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int j = 0; j < C; j += 8) {
        if (j >= limit) {
            _mm256_storeu_ps(dst + j, _mm256_setzero_ps());
            continue;
        }
        /* lanes at or past the limit are masked off by their bits, never multiplied by 0: there
           the exponent is positive and the product may overflow */
        const __m256 keep = _mm256_castsi256_ps(
            _mm256_cmpgt_epi32(_mm256_set1_epi32(limit - j), lanes));
        const __m256 d = exp8(_mm256_sub_ps(gi, _mm256_loadu_ps(gam + j)));
        const __m256 x = _mm256_mul_ps(_mm256_mul_ps(s, _mm256_loadu_ps(src + j)), d);
        _mm256_storeu_ps(dst + j, _mm256_and_ps(keep, x));
    }
}

/* The chunked form's sequential part (`components/gated_deltanet.chunk_gated_delta_rule`'s
   loop over chunks), every head in one call: each thread takes whole heads and carries M
   (DK * DV floats, in cache) through all N chunks, where PyTorch's loop is nine calls per chunk,
   each a parallel region the threads synchronise after. Per chunk c, with the chunk's W, U, the
   key head's Q K^T and the log-decays gamma from PyTorch:

       P  = (Q K^T) * D ,  D_ij = exp(gamma_i - gamma_j) for j <= i, 0 above
       V' = U - W M
       O  = diag(exp(gamma)) Q M + P V'
       M <- exp(gamma_C) M + K^T diag(exp(gamma_C - gamma)) V'

   Layouts (contiguous): q, k, qk [N, B, HK, C, DK | C]; w [N, B*H, C, DK]; u [N, B*H, C, DV];
   gamma [N, B, H, C]; state [B*H, DK, DV], advanced in place; out [B, N*C, H, DV]. Needs
   C % 8 == 0, DK % 4 == 0 and DV % 16 == 0 (the vectors and the 4 x 16 tiles). */

enum { TILE_SET, TILE_ADD, TILE_SUB };

/* Cm[i, j] (=, +=, -=) sum_p A[i*ars + p*acs] Bm[p*ldb + j] for the 4 x 16 tile at (0, 0); TILE_ADD
   first scales the old Cm by cs. */
static inline void tile4x16(int kk, const float *A, long ars, long acs, const float *Bm, long ldb,
                            float *Cm, long ldc, int mode, float cs) {
    __m256 c[4][2];
    const __m256 s = _mm256_set1_ps(mode == TILE_SUB ? 1.0f : cs);
    for (int r = 0; r < 4; r++)
        for (int h = 0; h < 2; h++)
            c[r][h] = mode == TILE_SET ? _mm256_setzero_ps()
                                       : _mm256_mul_ps(s, _mm256_loadu_ps(Cm + r * ldc + 8 * h));
    if (mode == TILE_SUB) {
        for (int p = 0; p < kk; p++) {
            const __m256 b0 = _mm256_loadu_ps(Bm + p * ldb), b1 = _mm256_loadu_ps(Bm + p * ldb + 8);
            for (int r = 0; r < 4; r++) {
                const __m256 a = _mm256_broadcast_ss(A + r * ars + p * acs);
                c[r][0] = _mm256_fnmadd_ps(a, b0, c[r][0]);
                c[r][1] = _mm256_fnmadd_ps(a, b1, c[r][1]);
            }
        }
    } else {
        for (int p = 0; p < kk; p++) {
            const __m256 b0 = _mm256_loadu_ps(Bm + p * ldb), b1 = _mm256_loadu_ps(Bm + p * ldb + 8);
            for (int r = 0; r < 4; r++) {
                const __m256 a = _mm256_broadcast_ss(A + r * ars + p * acs);
                c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
                c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
            }
        }
    }
    for (int r = 0; r < 4; r++)
        for (int h = 0; h < 2; h++) _mm256_storeu_ps(Cm + r * ldc + 8 * h, c[r][h]);
}

/* Cm [m, n] (=, +=, -=) A [m, kk] Bm [kk, n], A read through its strides. With `lower`, A is zero
   right of its diagonal (A[i, p] = 0 for p > i), so row tile i stops at p = i + 3. */
static void gemm_tiles(int m, int n, int kk, const float *A, long ars, long acs, const float *Bm,
                       long ldb, float *Cm, long ldc, int mode, float cs, int lower) {
    for (int i = 0; i < m; i += 4) {
        const int depth = lower && i + 4 < kk ? i + 4 : kk;
        for (int j = 0; j < n; j += 16)
            tile4x16(depth, A + i * ars, ars, acs, Bm + j, ldb, Cm + i * ldc + j, ldc, mode, cs);
    }
}

void gf_delta_chunks(const float *q, const float *k, const float *w, const float *u,
                     const float *qk, const float *gamma, float *state, float *out, int N, int B,
                     int H, int HK, int C, int DK, int DV, int nt) {
    const int rep = H / HK;
    const long ldo = (long)H * DV; /* out's row stride: one token */
    #pragma omp parallel num_threads(nt)
    {
    FLUSH_DENORMALS_BEGIN
    #pragma omp for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H, hk = h / rep;
        float *m = state + (long)bh * DK * DV;
        float *vn = malloc((2 * (size_t)C * DV + (size_t)C * C) * sizeof(float));
        float *vs = vn + (size_t)C * DV, *p = vs + (size_t)C * DV;
        for (int c = 0; c < N; c++) {
            const long mat = (long)c * B * H + bh; /* this head's matrix in [N, B*H, ...] */
            const long kmat = ((long)c * B + b) * HK + hk;
            const float *qc = q + kmat * C * DK, *kc = k + kmat * C * DK;
            const float *gc = gamma + mat * C;
            float *oc = out + ((long)b * N * C + (long)c * C) * ldo + (long)h * DV;
            for (int i = 0; i < C; i++) decayed_row(qk + (kmat * C + i) * C, gc, i, i + 1, C, 1.0f, p + i * C);
            /* V' = U - W M */
            memcpy(vn, u + mat * C * DV, (size_t)C * DV * sizeof(float));
            gemm_tiles(C, DV, DK, w + mat * C * DK, DK, 1, m, DV, vn, DV, TILE_SUB, 1.0f, 0);
            /* O = diag(exp(gamma)) Q M + P V' */
            gemm_tiles(C, DV, DK, qc, DK, 1, m, DV, oc, ldo, TILE_SET, 1.0f, 0);
            for (int i = 0; i < C; i++) {
                const __m256 e = _mm256_set1_ps(expf(gc[i]));
                for (int j = 0; j < DV; j += 8)
                    _mm256_storeu_ps(oc + i * ldo + j, _mm256_mul_ps(e, _mm256_loadu_ps(oc + i * ldo + j)));
            }
            gemm_tiles(C, DV, C, p, C, 1, vn, DV, oc, ldo, TILE_ADD, 1.0f, 1);
            /* M <- exp(gamma_C) M + K^T diag(exp(gamma_C - gamma)) V' */
            const float last = gc[C - 1];
            for (int i = 0; i < C; i++) {
                const __m256 e = _mm256_set1_ps(expf(last - gc[i]));
                for (int j = 0; j < DV; j += 8)
                    _mm256_storeu_ps(vs + i * DV + j, _mm256_mul_ps(e, _mm256_loadu_ps(vn + i * DV + j)));
            }
            gemm_tiles(DK, DV, C, kc, 1, DK, vs, DV, m, DV, TILE_ADD, expf(last), 0);
        }
        free(vn);
    }
    FLUSH_DENORMALS_END
    }
}

/* The UT transform's triangular solve, for the chunks of every head at once: t = (I + L)^-1
   diag(beta) with L = strictly_lower(diag(beta) K K^T * D), by forward substitution, row
   i = beta_i e_i - sum_{j < i} L_ij row j (row j is zero right of column j, so each update
   runs over the 8-wide blocks up to column j only); and te = t diag(exp(gamma)), W's left
   factor. kk [count / H * HK, C, C] (K K^T per key head), gamma, beta [count, C]; t, te
   [count, C, C] with count = N * B * H; contiguous; C % 8 == 0 and C <= 256. LAPACK's
   batched solve takes a call per matrix. */
void gf_delta_solve(const float *kk, const float *gamma, const float *beta, float *t, float *te,
                    long count, int H, int HK, int C, int nt) {
    const int rep = H / HK;
    #pragma omp parallel num_threads(nt)
    {
    FLUSH_DENORMALS_BEGIN
    #pragma omp for schedule(static)
    for (long mat = 0; mat < count; mat++) {
        const float *km = kk + ((mat / H) * HK + (mat % H) / rep) * C * C;
        const float *gm = gamma + mat * C, *bm = beta + mat * C;
        float *tm = t + mat * C * C, *em = te + mat * C * C;
        float l[256], eg[256];
        for (int j = 0; j < C; j += 8) _mm256_storeu_ps(eg + j, exp8(_mm256_loadu_ps(gm + j)));
        memset(tm, 0, (size_t)C * C * sizeof(float));
        for (int i = 0; i < C; i++) {
            float *ti = tm + (long)i * C;
            decayed_row(km + (long)i * C, gm, i, i, C, bm[i], l);
            for (int j = 0; j < i; j++) {
                const __m256 lij = _mm256_set1_ps(l[j]);
                const float *tj = tm + (long)j * C;
                for (int col = 0; col <= j; col += 8)
                    _mm256_storeu_ps(ti + col, _mm256_fnmadd_ps(lij, _mm256_loadu_ps(tj + col),
                                                                _mm256_loadu_ps(ti + col)));
            }
            ti[i] = bm[i];
            for (int col = 0; col < C; col += 8)
                _mm256_storeu_ps(em + (long)i * C + col,
                                 _mm256_mul_ps(_mm256_loadu_ps(ti + col), _mm256_loadu_ps(eg + col)));
        }
    }
    FLUSH_DENORMALS_END
    }
}
