/* Paged attention, one query per row, reading keys and values where they lie in the pool.

   course_lib/paged_attention.py compiles this file once per shape, with
       -DSCALAR=float|double -DIS_DOUBLE=0|1 -DHD=<head_dim> -DBS=<block_size> -DREP=<query heads per kv head>
   so every inner loop has a length known at compile time and vectorises.

   C checks nothing: Python checks every shape, dtype, device and block id before the call
   (paged_attention._check_inputs and _check_block_ids). Only blocks 0 .. ceil(L / BS) - 1 of
   a row's table are read; entries past them are never touched.

   Scratch memory: each thread needs REP * (max_len + BS) scores plus a few small arrays, so
   the sizes grow with the shape. The scores live on the HEAP, allocated once per thread and
   checked (a stack array that size would overflow the thread's stack: a segfault); the small
   arrays go on the stack only while they are under a fixed bound (SMALL_ON_STACK below).
   Returns 0 on success, 1 if a thread's allocation failed (then `out` is not valid and
   Python falls back to the readable path); Python caps the scratch before calling. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
typedef SCALAR real;
#if IS_DOUBLE
#define EXP exp
#else
#define EXP expf
#endif

/* The small per-item arrays (scaled queries, accumulators, one block's scores: REP * (2 HD + BS + 1)
   numbers) go on the stack when they are small, where the compiler keeps them in registers, and in
   the heap scratch otherwise: a stack array that grew with the shape would overflow the stack. */
#define SMALL_ELEMS ((size_t)REP * (2 * HD + BS + 1))
#define SMALL_ON_STACK (REP * (2 * HD + BS + 1) <= 4096)      /* at most 32 KiB of stack */

/* One work item: the REP query heads of row i that share kv head g (qg, og: (REP, HD) each)
   attend over the row's first L tokens, found through its block table. `restrict` tells the
   compiler that no two arrays overlap, so it can keep the inner loops in vector registers. */
static void attend(const real *restrict qg, const real *restrict key_blocks, const real *restrict value_blocks,
                   const int64_t *restrict table, int64_t L, int64_t g, int64_t block, int64_t width,
                   real *restrict og, real *restrict scores, real *restrict small, double scale) {
#if SMALL_ON_STACK
  real qs[REP * HD], acc[REP * HD], s[REP * BS], inv[REP];
  (void)small;
#else
  real *restrict qs = small, *restrict acc = qs + REP * HD, *restrict s = acc + REP * HD, *restrict inv = s + REP * BS;
#endif
  const int64_t nblk = (L + BS - 1) / BS;
  for (int r = 0; r < REP; r++)
    for (int d = 0; d < HD; d++) qs[r * HD + d] = qg[r * HD + d] * (real)scale;

  /* 1. scores[r][j] = q_r . k_j / sqrt(HD), a block at a time, straight from the pool.
        Keys are stored (HD, BS) in a block: the inner loop runs over its BS tokens. */
  for (int64_t b = 0; b < nblk; b++) {
    const real *kt = key_blocks + table[b] * block + g * HD * BS;      /* (HD, BS) */
    for (int r = 0; r < REP; r++)
      for (int t = 0; t < BS; t++) s[r * BS + t] = 0;
    for (int d = 0; d < HD; d++)
      for (int r = 0; r < REP; r++) {
        const real qd = qs[r * HD + d];
        #pragma omp simd
        for (int t = 0; t < BS; t++) s[r * BS + t] += qd * kt[d * BS + t];
      }
    for (int r = 0; r < REP; r++)
      for (int t = 0; t < BS; t++) scores[r * width + b * BS + t] = s[r * BS + t];
  }
  /* 2. softmax over the L real positions (the rest of the last block is ignored) */
  for (int r = 0; r < REP; r++) {
    real *sr = scores + r * width, m = L > 0 ? sr[0] : 0, total = 0;
    for (int64_t j = 1; j < L; j++) m = sr[j] > m ? sr[j] : m;
    #pragma omp simd reduction(+:total)
    for (int64_t j = 0; j < L; j++) { sr[j] = EXP(sr[j] - m); total += sr[j]; }
    inv[r] = L > 0 ? 1 / total : 0;
  }
  /* 3. out_r = sum_j p[r][j] v_j, a block at a time. Values are stored (BS, HD). */
  for (int r = 0; r < REP; r++)
    for (int d = 0; d < HD; d++) acc[r * HD + d] = 0;
  for (int64_t b = 0; b < nblk; b++) {
    const real *vb = value_blocks + table[b] * block + g * BS * HD;   /* (BS, HD) */
    const int64_t used = b == nblk - 1 ? L - b * BS : BS;
    for (int64_t t = 0; t < used; t++)
      for (int r = 0; r < REP; r++) {
        const real p = scores[r * width + b * BS + t];
        #pragma omp simd
        for (int d = 0; d < HD; d++) acc[r * HD + d] += p * vb[t * HD + d];
      }
  }
  for (int r = 0; r < REP; r++)
    for (int d = 0; d < HD; d++) og[r * HD + d] = acc[r * HD + d] * inv[r];
}

int paged_attention(const real *q,                /* (N, nh, HD)                */
                    const real *key_blocks,       /* (num_blocks, nkv, HD, BS)  */
                    const real *value_blocks,     /* (num_blocks, nkv, BS, HD)  */
                    const int64_t *block_tables,  /* (N, max_blocks)            */
                    const int64_t *context_lens,  /* (N,)                       */
                    real *out,                    /* (N, nh, HD)                */
                    int64_t N, int64_t nh, int64_t nkv, int64_t max_blocks, int64_t max_len,
                    double scale, int nthreads) {
  const int64_t block = nkv * HD * BS;            /* elements of one block (keys or values) */
  const int64_t width = max_len + BS;             /* a row of scores, padded to whole blocks */
  int failed = 0;
  #pragma omp parallel num_threads(nthreads)
  {
    /* This thread's scratch, one checked allocation: (REP, width) softmax numerators, then room
       for the small arrays (used only when they are too large for the stack). */
    real *scratch = (real *)malloc(sizeof(real) * ((size_t)REP * width + SMALL_ELEMS));
    if (scratch == NULL) {
      #pragma omp atomic write
      failed = 1;
    }
    #pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < N * nkv; w++) {       /* one work item: query row i, kv head g */
      if (scratch == NULL) continue;              /* the loop must still run to its end */
      const int64_t i = w / nkv, g = w % nkv;
      attend(q + (i * nh + g * REP) * HD, key_blocks, value_blocks, block_tables + i * max_blocks,
             context_lens[i], g, block, width, out + (i * nh + g * REP) * HD, scratch, scratch + (size_t)REP * width,
             scale);
    }
    free(scratch);
  }
  return failed;
}
