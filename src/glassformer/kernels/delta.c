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
