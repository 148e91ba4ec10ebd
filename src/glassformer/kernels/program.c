#include "kernels.h"

/* ---- a whole decode step in one call ---- */

/* A decode step as a program: one record per kernel call with its arguments bound in advance
   (pointers and sizes as int64, the one float as a double). Only two calls depend on the
   position: RoPE + cache store (the rotary tables' row pos, the cache slot) and attention (pos +
   1 keys). Running the list here instead of from Python saves the ctypes and interpreter time
   of each call, ~330 calls a token for a 30-layer model (benchmarks/ab_decode.py). */

#define F32P(i) ((float *)(intptr_t)a[i])
#define I64P(i) ((const int64_t *)(intptr_t)a[i])
#define ROWS(i) (rows < 0 ? (int)a[i] : rows)

/* rows < 0: every op's own batch and the shared position `pos`; else the first `rows` rows,
   row b at position pos_rows[b] in the cache of slot[b] (the _ROWS ops) */
static void run(const gf_op *ops, int n, int pos, int rows, const int64_t *pos_rows,
                const int64_t *slot) {
    int64_t len[256];
    for (int b = 0; b < rows && b < 256; b++) len[b] = pos_rows[b] + 1;
    for (int i = 0; i < n; i++) {
        const int64_t *a = ops[i].a;
        switch (ops[i].kind) {
        case OP_RMSNORM:
            gf_rmsnorm(F32P(0), F32P(1), F32P(2), ROWS(3), (int)a[4], (float)ops[i].f);
            break;
        case OP_F32_MM:
            gf_f32_mm(F32P(0), ROWS(1), (int)a[2], F32P(3), (int)a[4], F32P(5), (int)a[6]);
            break;
        case OP_Q4_MM:
            gf_q4_mm(F32P(0), ROWS(1), (int)a[2], (const uint16_t *)(intptr_t)a[3],
                     (const uint16_t *)(intptr_t)a[4], (const uint16_t *)(intptr_t)a[5],
                     (int)a[6], (int)a[7], F32P(8), (int)a[9]);
            break;
        case OP_Q8_MM:
            gf_q8_mm(F32P(0), ROWS(1), (int)a[2], (const int8_t *)(intptr_t)a[3], F32P(4),
                     (int)a[5], (int)a[6], F32P(7), (int)a[8]);
            break;
        case OP_SILU_MUL: gf_silu_mul(F32P(0), F32P(1), ROWS(2), (int)a[3]); break;
        case OP_ADD: gf_add(F32P(0), F32P(1), ROWS(2), (int)a[3], (int)a[4]); break;
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
        case OP_ROPE_STORE_ROWS: /* a[12]: floats per row of the rotary tables */
            gf_rope_store_rows(F32P(0), rows, (int)a[1], (int)a[2], (int)a[3], (int)a[4],
                               (int)a[5], a[6] ? F32P(6) : NULL, a[7] ? F32P(7) : NULL,
                               (int)a[12], I64P(8), I64P(9), I64P(10), (int)a[11], pos_rows,
                               slot, (int)a[13]);
            break;
        case OP_ATTEND_ROWS:
            gf_attn_decode_rows(F32P(0), (int)a[1], I64P(2), I64P(3), rows, (int)a[4],
                                (int)a[5], (int)a[6], (int)a[7], len, slot, (float)ops[i].f,
                                F32P(8), (int)a[9], (int)a[10]);
            break;
        }
    }
}

void gf_run_program(const gf_op *ops, int n, int pos) { run(ops, n, pos, -1, NULL, NULL); }

/* A batched step of `rows` (<= 256) sequences of their own lengths: the program's products
   read each weight once for all rows (quant.c keeps a weight row in L1 while every activation
   row uses it), and its _ROWS ops place each row in its own cache. */
void gf_run_rows(const gf_op *ops, int n, int rows, const int64_t *pos, const int64_t *slot) {
    run(ops, n, 0, rows, pos, slot);
}
#undef F32P
#undef I64P
#undef ROWS
