#include "kernels.h"

/* ---- softmax cross-entropy and its gradient, in place over each row of logits ----

       lse_i = log sum_v e^{z_iv},   loss_i = lse_i - z_{i, y_i},
       dL/dz_iv = e^{z_iv - lse_i} - [v == y_i]
   (rows whose label is `ignore` count nothing and get a zero gradient).

   Row i's logits lie in nb pieces of vs floats, piece b at z + b * bstride + i * vs: the layout
   of the LM head's product computed one vocabulary slice at a time ([nb, rows, vs]), which MKL
   runs faster than a single product with thousands of output columns. One row (32 KB for an 8k
   vocabulary) stays in L1/L2 through the three passes (max; exp and sum; scale), where
   PyTorch's amax, sub, exp, sum, mul and scatter each stream the whole chunk through memory. */

static inline float row_max(const float *z, long nb, long vs, long bstride) {
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    float m = -INFINITY;
    for (long b = 0; b < nb; b++) {
        const float *p = z + b * bstride;
        long j = 0;
        for (; j + 8 <= vs; j += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(p + j));
        for (; j < vs; j++) m = p[j] > m ? p[j] : m;
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, m8);
    for (int l = 0; l < 8; l++) m = lanes[l] > m ? lanes[l] : m;
    return m;
}

/* p[j] <- e^(p[j] - m) = 2^(p[j] log2(e) - m log2(e)) for j < n; returns their sum */
static inline float exp_sum(float *p, long n, float m) {
    const __m256 a = _mm256_set1_ps(LOG2E), b = _mm256_set1_ps(m * LOG2E);
    __m256 s8 = _mm256_setzero_ps();
    long j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 e = exp2_8(_mm256_fmsub_ps(a, _mm256_loadu_ps(p + j), b));
        _mm256_storeu_ps(p + j, e);
        s8 = _mm256_add_ps(s8, e);
    }
    if (j < n) s8 = _mm256_add_ps(s8, exp2_tail(p + j, (int)(n - j), a, b));
    return hsum(s8);
}

static inline void scale(float *p, long n, float c) {
    const __m256 cv = _mm256_set1_ps(c);
    long j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(p + j, _mm256_mul_ps(_mm256_loadu_ps(p + j), cv));
    for (; j < n; j++) p[j] *= c;
}

/* loss[i] <- loss_i; with grad, the logits are replaced by dL/dz (else by e^{z - max}). */
void gf_xent_rows(float *z, long rows, long nb, long vs, long bstride, const int64_t *labels,
                  int64_t ignore, int grad, float *loss, int nt) {
    #pragma omp parallel for schedule(static) num_threads(nt)
    for (long i = 0; i < rows; i++) {
        float *row = z + i * vs;
        const int64_t y = labels[i];
        const int valid = y != ignore;
        float *target = valid ? row + (y / vs) * bstride + y % vs : NULL;
        const float picked = valid ? *target : 0.0f;
        const float m = row_max(row, nb, vs, bstride);
        float sum = 0.0f;
        for (long b = 0; b < nb; b++) sum += exp_sum(row + b * bstride, vs, m);
        loss[i] = valid ? m + logf(sum) - picked : 0.0f;
        if (!grad) continue;
        const float inv = valid ? 1.0f / sum : 0.0f; /* an ignored row's gradient is zero */
        for (long b = 0; b < nb; b++) scale(row + b * bstride, vs, inv);
        if (valid) *target -= 1.0f;
    }
}
