#include "kernels.h"

/* ---- causal self-attention, forward and backward, computing only the visible half ----

   Forward (Vaswani et al. 2017), T queries over the same T positions, query head h reading
   KV head h / (H / HK):
       s_ij = scale q_i . k_j  (j <= i),   lse_i = log sum_{j <= i} exp(s_ij)
       p_ij = exp(s_ij - lse_i),           o_i = sum_j p_ij v_j
   (computed in base 2: the scores carry a factor log2(e), the saved lse is log2 sum 2^t)
   Backward (the FlashAttention-2 recurrences, Dao 2023), given do_i = dL/do_i:
       dv_j = sum_i p_ij do_i,   dp_ij = do_i . v_j,   delta_i = do_i . o_i
       ds_ij = p_ij (dp_ij - delta_i)
       dq_i = scale sum_j ds_ij k_j,   dk_j = scale sum_i ds_ij q_i
   The backward recomputes p from the saved lse instead of keeping the T x T probabilities.

   PyTorch's CPU flash kernel takes keys in blocks of up to 512, so below 512 positions it
   computes the whole T x T score matrix and masks half of it away. Here a block of 24 queries
   works on the keys it can see only (to the next multiple of 16). Every product is the same
   register-blocked micro-kernel with 6 x 16 accumulators (the shape of an AVX2 SGEMM kernel):
   scores against K^T packed in panels of 16 keys, then P V; in the backward also dO V^T,
   dS K, and the rank-24 updates dS^T Q and P^T dO of a head's dK and dV, held in float32
   buffers until the head is done. A block's scores stay in cache between the products. */
#define PF_ROWS 6
#define PF_BLOCK 24

/* C[r][0..16) (+)= sum_{k < n} A[r ar + k ak] B[k ldb + 0..16), for the 6 rows r of C, each
   row times row_scale[r] if given. With ak = 1 A is read by rows; with ar = 1 by columns, which
   multiplies by A's transpose without forming it (the rank updates dK += dS^T Q and dV += P^T dO
   read dS and P so). */
static inline __attribute__((always_inline)) void mk_6x16(const float *A, size_t ar, size_t ak,
                                                          const float *B, size_t ldb, int n,
                                                          float *C, size_t ldc, int accumulate,
                                                          const float *row_scale) {
    __m256 c[PF_ROWS][2];
    for (int r = 0; r < PF_ROWS; r++) {
        c[r][0] = accumulate ? _mm256_loadu_ps(C + r * ldc) : _mm256_setzero_ps();
        c[r][1] = accumulate ? _mm256_loadu_ps(C + r * ldc + 8) : _mm256_setzero_ps();
    }
    for (int k = 0; k < n; k++) {
        const __m256 b0 = _mm256_loadu_ps(B + k * ldb), b1 = _mm256_loadu_ps(B + k * ldb + 8);
        for (int r = 0; r < PF_ROWS; r++) {
            const __m256 a = _mm256_broadcast_ss(A + r * ar + k * ak);
            c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
        }
    }
    for (int r = 0; r < PF_ROWS; r++) {
        if (row_scale) {
            c[r][0] = _mm256_mul_ps(c[r][0], _mm256_set1_ps(row_scale[r]));
            c[r][1] = _mm256_mul_ps(c[r][1], _mm256_set1_ps(row_scale[r]));
        }
        _mm256_storeu_ps(C + r * ldc, c[r][0]);
        _mm256_storeu_ps(C + r * ldc + 8, c[r][1]);
    }
}

/* the 8 x 8 block at x (row stride sx) times mul, transposed into out (row stride so) */
static inline void transpose8(const float *x, size_t sx, __m256 mul, float *out, size_t so) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_mul_ps(_mm256_loadu_ps(x + i * sx), mul);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(out + i * so, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(out + (i + 4) * so, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
}

/* panel p of xt holds rows 16 p .. 16 p + 15 of x (row stride sx) times mul as [D][16], zero
   past T: whole 8 x 8 blocks by register transposes, the last rows (T % 8) one by one. */
static void pack_panels(const float *x, long sx, int T, int D, float mul, float *xt) {
    const int P = (T + 15) / 16, T8 = T / 8 * 8;
    for (int j = 0; j < T8; j += 8)
        for (int d = 0; d < D; d += 8)
            transpose8(x + (size_t)j * sx + d, sx, _mm256_set1_ps(mul),
                       xt + (size_t)(j / 16) * D * 16 + (size_t)d * 16 + j % 16, 16);
    for (int j = T8; j < 16 * P; j++) {
        float *col = xt + (size_t)(j / 16) * D * 16 + j % 16;
        for (int d = 0; d < D; d++)
            col[(size_t)d * 16] = j < T ? mul * x[(size_t)j * sx + d] : 0.0f;
    }
}

/* rows i0 .. i0 + rows - 1 of x (row stride sx), times mul, into out [cap][D], zero past rows */
static void load_block(const float *x, long sx, int i0, int rows, int D, float mul, float *out,
                       int cap) {
    for (int r = 0; r < cap; r++)
        for (int d = 0; d < D; d++)
            out[(size_t)r * D + d] = r < rows ? mul * x[(size_t)(i0 + r) * sx + d] : 0.0f;
}

/* keys visible to some row of the 6-row group r0 of a block at i0 with `rows` rows */
static inline int group_keys(int i0, int r0, int rows) {
    return i0 + (r0 + PF_ROWS < rows ? r0 + PF_ROWS : rows);
}

/* s[R][TP] = qb kt^T for the key panels each 6-row group can see (R = PF_BLOCK rows) */
static void block_scores(const float *qb, const float *kt, int D, int i0, int rows, float *s,
                         int TP) {
    for (int r0 = 0; r0 < rows; r0 += PF_ROWS)
        for (int p = 0; p < (group_keys(i0, r0, rows) + 15) / 16; p++)
            mk_6x16(qb + (size_t)r0 * D, D, 1, kt + (size_t)p * D * 16, 16, D,
                    s + (size_t)r0 * TP + 16 * p, TP, 0, NULL);
}

/* q [B, H, T, D], k, v [B, HK, T, D] given by element strides (b, head, t; d contiguous);
   out [B, T, H * D] contiguous, the layout the output projection reads; lse [B, H, T] or NULL
   (inference needs no backward). D % 16 == 0. */
void gf_attn_prefill(const float *q, long sqb, long sqh, long sqt, const float *k, long skb,
                     long skh, long skt, const float *v, long svb, long svh, long svt, int B,
                     int H, int HK, int T, int D, float scale, float *out, float *lse, int nt) {
    const int G = H / HK, P = (T + 15) / 16, TP = 16 * P, NB = (T + PF_BLOCK - 1) / PF_BLOCK;
    /* per (row, KV head): K^T in panels, and V's rows packed together (a head's rows are
       strided through the projection's output, one TLB page apart at large widths) */
    float *kt = (float *)malloc(sizeof(float) * (size_t)B * HK * 2 * TP * D);
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (int bk = 0; bk < B * HK; bk++) {
        float *kth = kt + (size_t)bk * 2 * TP * D;
        pack_panels(k + (size_t)(bk / HK) * skb + (size_t)(bk % HK) * skh, skt, T, D, 1.0f, kth);
        load_block(v + (size_t)(bk / HK) * svb + (size_t)(bk % HK) * svh, svt, 0, T, D, 1.0f,
                   kth + (size_t)TP * D, T);
    }
    /* tasks (row, head, query block), the last blocks (the most keys) handed out first */
    #pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int task = 0; task < B * H * NB; task++) {
        const int blk = NB - 1 - task % NB, h = (task / NB) % H, b = task / (NB * H);
        const int i0 = blk * PF_BLOCK, rows = T - i0 < PF_BLOCK ? T - i0 : PF_BLOCK;
        const float *kth = kt + ((size_t)b * HK + h / G) * 2 * TP * D;
        const float *vh = kth + (size_t)TP * D;
        /* q block, its scores, and one 6-row group of output for a partial last group */
        float *qb = (float *)malloc(sizeof(float) * ((size_t)PF_BLOCK * (D + TP) + PF_ROWS * D));
        float *s = qb + (size_t)PF_BLOCK * D, *o = s + (size_t)PF_BLOCK * TP;
        load_block(q + b * sqb + h * sqh, sqt, i0, rows, D, scale * LOG2E, qb, PF_BLOCK);
        block_scores(qb, kth, D, i0, rows, s, TP); /* in base 2 */
        float inv[PF_BLOCK];
        for (int r = 0; r < PF_BLOCK; r++) {
            float *sr = s + (size_t)r * TP;
            const int seen = r < rows ? i0 + r + 1 : 0; /* keys 0 .. i */
            float mx;
            const float sum = exp2_shifted(sr, seen, &mx);
            /* masked keys get weight 0, as far as P V reads (the keys the block can see) */
            for (int j = seen; j < i0 + rows; j++) sr[j] = 0.0f;
            inv[r] = seen ? 1.0f / sum : 0.0f;
            if (lse && seen) lse[((size_t)b * H + h) * T + i0 + r] = mx + log2f(sum);
        }
        /* o = P V / sum, straight into out's rows (a last, partial group of 6 rows goes
           through a buffer: the rows after it belong to another task) */
        for (int r0 = 0; r0 < rows; r0 += PF_ROWS) {
            float *dst = out + (((size_t)b * T + i0 + r0) * H + h) * D;
            const int whole = r0 + PF_ROWS <= rows;
            for (int c = 0; c < D; c += 16)
                mk_6x16(s + (size_t)r0 * TP, TP, 1, vh + c, D, group_keys(i0, r0, rows),
                        whole ? dst + c : o + c, whole ? (size_t)H * D : (size_t)D, 0, inv + r0);
            for (int r = 0; !whole && r0 + r < rows; r++)
                memcpy(dst + (size_t)r * H * D, o + (size_t)r * D, sizeof(float) * D);
        }
        free(qb);
    }
    free(kt);
}

/* acc[n6][D] += x[R][n6]^T y[R][D], n6 = n rounded up to 6: a rank-R update of a head's dK or
   dV from a block of R = PF_BLOCK query rows starting at i0. Key j only meets rows i >= j, so
   keys inside the block skip the rows above them. x's columns from n to TP are zero; those past
   TP (when n6 > TP) run into the next row, and only feed accumulator rows >= TP >= T, which are
   never written out. */
static void rank_update(const float *x, int TP, const float *y, int i0, int n, int D,
                        float *acc) {
    for (int j0 = 0; j0 < n; j0 += PF_ROWS) {
        const int r0 = j0 > i0 ? j0 - i0 : 0; /* rows before r0 see none of keys j0 .. j0 + 5 */
        for (int c = 0; c < D; c += 16)
            mk_6x16(x + (size_t)r0 * TP + j0, 1, TP, y + (size_t)r0 * D + c, D, PF_BLOCK - r0,
                    acc + (size_t)j0 * D + c, D, 1, NULL);
    }
}

/* Gradients of gf_attn_prefill. q, k, v as there; o, dout [B, T, H * D] contiguous (the
   forward's output and its gradient); lse [B, H, T] from the forward. Writes dq [B, T, H, D]
   and dk, dv [B, T, HK, D], contiguous (the layout of the projections' outputs). One task per
   (row, KV head): its G query heads all add into the same dK, dV. */
void gf_attn_backward(const float *q, long sqb, long sqh, long sqt, const float *k, long skb,
                      long skh, long skt, const float *v, long svb, long svh, long svt,
                      const float *o, const float *dout, const float *lse, int B, int H, int HK,
                      int T, int D, float scale, float *dq, float *dk, float *dv, int nt) {
    const int G = H / HK, P = (T + 15) / 16, TP = 16 * P, NB = (T + PF_BLOCK - 1) / PF_BLOCK;
    const int TP6 = TP + PF_ROWS;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int task = 0; task < B * HK; task++) {
        const int b = task / HK, hk = task % HK;
        const float *kh = k + (size_t)b * skb + (size_t)hk * skh;
        const float *vh = v + (size_t)b * svb + (size_t)hk * svh;
        const size_t panels = (size_t)TP * D, blk = (size_t)PF_BLOCK * D;
        const size_t sq = (size_t)PF_BLOCK * TP;
        float *kt = (float *)malloc(sizeof(float) * (3 * panels + 2 * (size_t)TP6 * D + 3 * blk +
                                                     2 * sq + PF_ROWS));
        float *vt = kt + panels, *kc = vt + panels, *dk_acc = kc + panels;
        float *dv_acc = dk_acc + (size_t)TP6 * D, *qb = dv_acc + (size_t)TP6 * D;
        float *dob = qb + blk, *dqb = dob + blk, *s = dqb + blk, *dp = s + sq;
        pack_panels(kh, skt, T, D, LOG2E, kt); /* scores in base 2, as the forward's lse */
        pack_panels(vh, svt, T, D, 1.0f, vt);
        load_block(kh, skt, 0, T, D, scale, kc, T); /* scale K: dS (scale K) is then dq */
        memset(dk_acc, 0, sizeof(float) * 2 * (size_t)TP6 * D);
        for (int g = 0; g < G; g++) {
            const int h = hk * G + g;
            const float *lh = lse + ((size_t)b * H + h) * T;
            for (int bi = 0; bi < NB; bi++) {
                const int i0 = bi * PF_BLOCK, rows = T - i0 < PF_BLOCK ? T - i0 : PF_BLOCK;
                const int n = i0 + rows;
                /* rank_update reads columns up to n rounded up to 6 */
                const int zero_to = n + PF_ROWS < TP ? n + PF_ROWS : TP;
                load_block(q + b * sqb + h * sqh, sqt, i0, rows, D, scale, qb, PF_BLOCK);
                load_block(dout + ((size_t)b * T * H + h) * D, (long)H * D, i0, rows, D, 1.0f,
                           dob, PF_BLOCK);
                float delta[PF_BLOCK]; /* delta_i = do_i . o_i */
                for (int r = 0; r < rows; r++)
                    delta[r] = dot(dob + (size_t)r * D, o + (((size_t)b * T + i0 + r) * H + h) * D,
                                   D);
                block_scores(qb, kt, D, i0, rows, s, TP);  /* log2(e) scale q . k */
                block_scores(dob, vt, D, i0, rows, dp, TP); /* do . v */
                for (int r = 0; r < PF_BLOCK; r++) {
                    float *sr = s + (size_t)r * TP, *dpr = dp + (size_t)r * TP;
                    const int seen = r < rows ? i0 + r + 1 : 0;
                    int j = 0;
                    if (seen) {
                        const float dl = delta[r], li = lh[i0 + r];
                        const __m256 dv8 = _mm256_set1_ps(dl), l = _mm256_set1_ps(li);
                        for (; j + 8 <= seen; j += 8) {
                            const __m256 p = exp2_8(_mm256_sub_ps(_mm256_loadu_ps(sr + j), l));
                            _mm256_storeu_ps(sr + j, p);
                            _mm256_storeu_ps(dpr + j, _mm256_mul_ps(p, _mm256_sub_ps(
                                                        _mm256_loadu_ps(dpr + j), dv8)));
                        }
                        if (j < seen) { /* the row's last, partial vector */
                            const __m256i mask = tail_mask(seen - j);
                            const __m256 p = exp2_tail(sr + j, seen - j, _mm256_set1_ps(1.0f), l);
                            _mm256_maskstore_ps(dpr + j, mask, _mm256_mul_ps(p, _mm256_sub_ps(
                                                    _mm256_maskload_ps(dpr + j, mask), dv8)));
                            j = seen;
                        }
                    }
                    /* masked: p = ds = 0, as far as dS K and the rank updates read */
                    for (; j < zero_to; j++) sr[j] = dpr[j] = 0.0f;
                }
                /* dq = dS (scale K), straight into dq's rows (a last, partial group of 6 rows
                   goes through a buffer) */
                for (int r0 = 0; r0 < rows; r0 += PF_ROWS) {
                    float *dst = dq + (((size_t)b * T + i0 + r0) * H + h) * D;
                    const int whole = r0 + PF_ROWS <= rows;
                    for (int c = 0; c < D; c += 16)
                        mk_6x16(dp + (size_t)r0 * TP, TP, 1, kc + c, D, group_keys(i0, r0, rows),
                                whole ? dst + c : dqb + c, whole ? (size_t)H * D : (size_t)D, 0,
                                NULL);
                    for (int r = 0; !whole && r0 + r < rows; r++)
                        memcpy(dst + (size_t)r * H * D, dqb + (size_t)r * D, sizeof(float) * D);
                }
                /* dv += P^T dO, dk += dS^T (scale Q) */
                rank_update(s, TP, dob, i0, n, D, dv_acc);
                rank_update(dp, TP, qb, i0, n, D, dk_acc);
            }
        }
        for (int j = 0; j < T; j++) {
            memcpy(dk + (((size_t)b * T + j) * HK + hk) * D, dk_acc + (size_t)j * D,
                   sizeof(float) * D);
            memcpy(dv + (((size_t)b * T + j) * HK + hk) * D, dv_acc + (size_t)j * D,
                   sizeof(float) * D);
        }
        free(kt);
    }
}
