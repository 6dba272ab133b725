/* The small operations of a decoder layer, each in ONE pass over its rows: what serving engines call
   fused (custom) ops. vLLM ships the same four for every device: fused_add_rms_norm, silu_and_mul,
   rotary_embedding and reshape_and_cache.

   Why fuse at all? In eager PyTorch every line of a layer (x * rsqrt(mean(x^2) + eps) * w, a SiLU, a
   RoPE rotation) is several operations, and each operation has a fixed cost (dispatch, a new output
   tensor, a pass over memory) of a few microseconds on a CPU, whatever its size. A decode step of a
   small model multiplies a few rows by small matrices: those fixed costs, not the arithmetic, are
   most of its time. Here each op is one call that reads its inputs once and writes its outputs once.

   course_lib/fused_ops.py compiles this file once per dtype (-DSCALAR=float|double -DIS_DOUBLE=0|1;
   the flags and the cache: course_lib/kernel_build.py) and checks every shape, dtype, stride and slot
   before calling: C checks nothing. Each function has its reference in PyTorch in fused_ops.py,
   and the tests compare the two. */
#include <math.h>
#include <stdint.h>
typedef SCALAR real;
typedef double acc;                   /* sums of squares add up in float64, whatever the rows' dtype */
#if IS_DOUBLE
#define EXP exp
#else
#define EXP expf
#endif

/* RMSNorm, with the residual add before it when delta is given:
       sum = x + delta              (written to sum_out; x itself is not changed)
       out = sum / sqrt(mean(sum^2) + eps) * w
   x, delta, sum_out, out: (N, D) contiguous rows; w: (D,). delta and sum_out are NULL for a plain norm. */
void add_rms_norm(const real *x, const real *delta, const real *w, real *sum_out, real *out,
                  int64_t N, int64_t D, double eps) {
    for (int64_t i = 0; i < N; i++) {
        const real *xi = x + i * D;
        real *oi = out + i * D;
        if (delta) {                                     /* the residual stream moves on first */
            const real *di = delta + i * D;
            real *si = sum_out + i * D;
#pragma omp simd
            for (int64_t j = 0; j < D; j++) si[j] = xi[j] + di[j];
            xi = si;
        }
        acc ss = 0;
#pragma omp simd reduction(+:ss)
        for (int64_t j = 0; j < D; j++) ss += (acc)xi[j] * xi[j];
        real r = (real)(1.0 / sqrt(ss / D + eps));
#pragma omp simd
        for (int64_t j = 0; j < D; j++) oi[j] = (xi[j] * r) * w[j];
    }
}

/* SwiGLU's activation: out = silu(gate) * up, silu(g) = g / (1 + exp(-g)).
   gate_up: (N, 2 I) rows, gate the first I numbers of a row and up the last I (one matrix multiply
   made both); out: (N, I). */
void silu_mul(const real *gate_up, real *out, int64_t N, int64_t I) {
    for (int64_t i = 0; i < N; i++) {
        const real *g = gate_up + i * 2 * I, *u = g + I;
        real *o = out + i * I;
#pragma omp simd
        for (int64_t j = 0; j < I; j++) o[j] = g[j] / ((real)1 + EXP(-g[j])) * u[j];
    }
}

/* RoPE on the first R heads of every token (q's heads then k's: rotated in one call):
       out[t, h, j]        = x[t, h, j] cos[t, j] - x[t, h, j + hd/2] sin[t, j]
       out[t, h, j + hd/2] = x[t, h, j + hd/2] cos[t, j + hd/2] + x[t, h, j] sin[t, j + hd/2]
   (x * cos + rotate_half(x) * sin). x: N tokens of H heads of hd numbers, token t at x + t * x_stride
   (heads and features contiguous); cos, sin: (N, hd); out: (N, R, hd) contiguous. */
void rope(const real *x, int64_t x_stride, const real *cos_t, const real *sin_t, real *out,
          int64_t N, int64_t R, int64_t hd) {
    const int64_t half = hd / 2;
    for (int64_t t = 0; t < N; t++) {
        const real *c = cos_t + t * hd, *s = sin_t + t * hd;
        for (int64_t h = 0; h < R; h++) {
            const real *xh = x + t * x_stride + h * hd;
            real *oh = out + (t * R + h) * hd;
#pragma omp simd
            for (int64_t j = 0; j < half; j++) {
                oh[j] = xh[j] * c[j] - xh[j + half] * s[j];
                oh[j + half] = xh[j + half] * c[j + half] + xh[j] * s[j + half];
            }
        }
    }
}

/* Write N tokens' keys and values into their slots of the paged pool (reshape_and_cache):
       key_blocks   (num_blocks, nkv, hd, BS)   keys stored transposed: a block's keys of one
                                                feature lie side by side (what the kernel reads)
       value_blocks (num_blocks, nkv, BS, hd)
   token t goes to block slots[t] / bs, offset slots[t] % bs. k, v: token t's nkv heads of hd numbers
   at k + t * k_stride (v + t * v_stride), heads and features contiguous. */
void write_kv(const real *k, int64_t k_stride, const real *v, int64_t v_stride, const int64_t *slots,
              real *key_blocks, real *value_blocks, int64_t N, int64_t nkv, int64_t hd, int64_t bs) {
    for (int64_t t = 0; t < N; t++) {
        const int64_t b = slots[t] / bs, o = slots[t] % bs;
        for (int64_t g = 0; g < nkv; g++) {
            const real *kt = k + t * k_stride + g * hd, *vt = v + t * v_stride + g * hd;
            real *kd = key_blocks + ((b * nkv + g) * hd) * bs + o;          /* feature j at kd[j * bs] */
            real *vd = value_blocks + ((b * nkv + g) * bs + o) * hd;
            for (int64_t j = 0; j < hd; j++) kd[j * bs] = kt[j];
#pragma omp simd
            for (int64_t j = 0; j < hd; j++) vd[j] = vt[j];
        }
    }
}
