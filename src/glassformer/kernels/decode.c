#include "kernels.h"

/* ---- decode-step helpers: the small per-token operations of a block, one call each ---- */

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

/* The G query heads q[g * D ..] that share one KV head, against n cached keys: scores,
   softmax, o_g = sum_j p_gj v_j. Each block of keys is loaded once and used by all G heads
   while it is in L1, so the cache slice streams from memory once (with a loop per head, a
   slice larger than L2 would be fetched G times). o_g starts every `ostride` floats. Without
   `partial` the o_g are normalised; with it they stay unnormalised and o_g[D], o_g[D + 1] =
   (max score, sum of 2^(score - max)), scores in base 2, for a later merge with the other key
   splits.
   Inlined into its caller with `f16` a constant, so each cache type gets its own loops. */
static inline __attribute__((always_inline)) void attend_group(
    const float *q, int G, const void *K, const void *V, int n, int D, float scale, float *o,
    size_t ostride, int partial, int f16) {
    const size_t es = f16 ? 2 : 4; /* bytes per cache entry */
    scale *= LOG2E; /* scores in base 2 (exp2_shifted) */
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
        const float sum = exp2_shifted(sg, n, &mx);
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

/* gf_attn_decode's split count for one row of n keys: enough tasks for every thread, each
   split at least 32 keys */
static inline int row_splits(int HK, int n, int nt) {
    const int S = nt / gcd(HK, nt);
    return S > n / 32 ? (n / 32 > 1 ? n / 32 : 1) : S;
}

/* merge the S partial results of `count` heads: part[(h S + s)(D + 2)] = o, max, sum */
static void merge_splits(const float *part, int count, int S, int D, float *out) {
    for (int bh = 0; bh < count; bh++) {
        const float *p = part + (size_t)bh * S * (D + 2);
        float m = -INFINITY, denom = 0.0f;
        for (int s = 0; s < S; s++) m = p[s * (D + 2) + D] > m ? p[s * (D + 2) + D] : m;
        float *o = out + (size_t)bh * D;
        for (int i = 0; i < D; i++) o[i] = 0.0f;
        for (int s = 0; s < S; s++) {
            const float *ps = p + (size_t)s * (D + 2);
            const float c = exp2f(ps[D] - m); /* maxima in base 2 */
            denom += c * ps[D + 1];
            for (int i = 0; i < D; i++) o[i] += c * ps[i];
        }
        const float inv = 1.0f / denom;
        for (int i = 0; i < D; i++) o[i] *= inv;
    }
}

/* Single-query attention against the first L cache slots (all visible):
   o = softmax(scale q.K^T) V per query head; head i reads KV head i / (H / HK).
   q rows start every `qstride` floats (inside qkv); out [B, H * D]; requires D % 8 == 0.

   The work is cut into tasks of (row, KV head, key split), each running the G = H / HK query
   heads that share the KV head over its slice of keys (flash-decoding, Dao et al. 2023): a KV
   head's cache is read by one thread only, and with S = nt / gcd(B HK, nt) splits the task
   count is a multiple of the thread count (SmolLM2's 3 KV heads on 2 threads: 6 equal tasks;
   one head per task left threads idle). The splits' partial results are merged with
   o = sum_s 2^(m_s - m) o_s / sum_s 2^(m_s - m) l_s, m = max_s m_s (maxima in base 2). */
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
    merge_splits(part, B * H, S, D, out);
    free(part);
}

/* ---- batched decode over sequences of different lengths ----

   The rows of one batched step are independent sequences, each with its own cache (row b's
   keys and values at kt[slot[b]], vt[slot[b]], each [HK, cap, D]) and its own position pos[b]:
   a continuous-batching server advances sequences that started at different times. Per row the
   arithmetic is the single-sequence step's (B = 1) exactly, so a row's result does not depend
   on which other rows share the step. */

/* gf_rope_store for each row b at position pos[b], into the cache of slot[b]; cos and sin hold
   one row of `cs` floats per position (NULL: no rotation). */
void gf_rope_store_rows(float *qkv, int B, int H, int HK, int D, int rot, int interleaved,
                        const float *cos, const float *sin, int cs, const int64_t *kt,
                        const int64_t *vt, const int64_t *pt, int cap, const int64_t *pos,
                        const int64_t *slot, int f16) {
    for (int b = 0; b < B; b++) {
        const int p = (int)pos[b], s = (int)slot[b];
        gf_rope_store(qkv + (size_t)b * (H + 2 * HK) * D, 1, H, HK, D, rot, interleaved,
                      cos ? cos + (size_t)p * cs : NULL, sin ? sin + (size_t)p * cs : NULL,
                      (void *)(intptr_t)kt[s], (void *)(intptr_t)vt[s],
                      (int64_t *)(intptr_t)pt[s], cap, p, f16);
    }
}

/* gf_attn_decode for rows of different lengths: row b attends over the first len[b] slots of
   the cache of slot[b]. Each row is cut into the key splits a lone row of its length gets
   (row_splits), so its result equals the single-sequence step's bit for bit; the tasks (row,
   KV head, split) of all rows run in one parallel loop. */
void gf_attn_decode_rows(const float *q, int qstride, const int64_t *kt, const int64_t *vt,
                         int B, int H, int HK, int D, int cap, const int64_t *len,
                         const int64_t *slot, float scale, float *out, int nt, int f16) {
    const size_t es = f16 ? 2 : 4;
    const int G = H / HK, S = row_splits(HK, 1 << 30, nt); /* the most splits of any row */
    float *part = S > 1 ? (float *)malloc(sizeof(float) * (size_t)B * H * S * (D + 2)) : NULL;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int t = 0; t < B * HK * S; t++) {
        const int split = t % S, kv = (t / S) % HK, b = t / (S * HK);
        const int L = (int)len[b], Sb = row_splits(HK, L, nt);
        if (split >= Sb) continue;
        const int j0 = (int)((long)split * L / Sb), n = (int)((long)(split + 1) * L / Sb) - j0;
        const size_t base = ((size_t)kv * cap + j0) * D;
        const float *qg = q + (size_t)b * qstride + (size_t)kv * G * D;
        const char *kb = (const char *)(intptr_t)kt[slot[b]] + base * es;
        const char *vb = (const char *)(intptr_t)vt[slot[b]] + base * es;
        /* a row with one split writes its output directly, as the single step does */
        float *o = Sb > 1 ? part + (((size_t)b * H + (size_t)kv * G) * S + split) * (D + 2)
                          : out + ((size_t)b * H + (size_t)kv * G) * D;
        const size_t ostride = Sb > 1 ? (size_t)S * (D + 2) : (size_t)D;
        if (f16) attend_group(qg, G, kb, vb, n, D, scale, o, ostride, Sb > 1, 1);
        else attend_group(qg, G, kb, vb, n, D, scale, o, ostride, Sb > 1, 0);
    }
    if (!part) return;
    /* a row's partials sit S apart; a row with Sb < S splits merges its first Sb */
    for (int b = 0; b < B; b++) {
        const int Sb = row_splits(HK, (int)len[b], nt);
        if (Sb == 1) continue;
        for (int h = 0; h < H; h++)
            merge_splits(part + ((size_t)b * H + h) * S * (D + 2), 1, Sb, D,
                         out + ((size_t)b * H + h) * D);
    }
    free(part);
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

