/* Paged attention for decoding, one query per row, reading keys and values where they lie in the pool.

   course_lib/paged_attention.py compiles this file once per shape, with
       -DSCALAR=float|double -DIS_DOUBLE=0|1 -DHD=<head_dim> -DBS=<block_size> -DREP=<query heads per kv head>
   so every inner loop has a length known at compile time and vectorises (the flags and the
   cache of built libraries: course_lib/kernel_build.py).

   A decode step reads every key and value of every row once and does about one multiply-add per
   number read: it is limited by memory, not arithmetic. So the kernel is built to read at the
   memory's speed and keep everything else out of the way:

     1. GQA: a work item is (row i, kv head g) and serves the REP query heads that share kv head g,
        so each key and value comes from memory once for all of them.
     2. ONE pass (online softmax): scores, their exps and the weighted sum of the values are made a
        tile of blocks at a time, with a running max m and a running sum l per query head (see
        tile_step), so a tile's keys and values are read together, once, and no row of scores is
        stored: the scratch memory does not grow with the context.
     3. Several blocks at once: the tile's TB blocks (about 128 tokens) are read side by side, keys
        and then values, so the memory has TB requests in flight instead of one (a row's blocks lie
        anywhere in the pool: the hardware cannot run ahead from one block into the next; reading
        them side by side measured ~1.3x the bandwidth of one after the other), and their scores
        are REP x TB independent sums that keep the multiply-add units busy. Where two tiles fit in
        the caches, the next tile's blocks are prefetched while one is computed (PREFETCH).
     4. Vector loops: every inner loop has a length known at compile time and `#pragma omp simd`;
        with -ffast-math the compiler calls a vector exp (glibc's libmvec: 16 floats at a time with
        AVX-512) for a tile's scores at once.
     5. Threads that help when they can (bottom of the file): work items are handed out one at a
        time; the calling thread works too, and waits only for items a helper has taken, never
        for a helper that the operating system has not run yet (on a busy machine that can take
        milliseconds; OpenMP's fork-join, used before, waited for it, and its spinning threads
        took the cores the others needed: 10x slower with 2 threads on a shared 2-core machine).
        The helpers sleep between calls, ready to be woken.

   C checks nothing: Python checks every shape, dtype, device and block id before the call
   (paged_attention._check_inputs and _check_lengths_and_block_ids). Only blocks 0 .. ceil(L / BS) - 1 of
   a row's table are read, and of its last block only the first L - (nblk - 1) * BS slots are
   used: entries and slots past them never reach the answer (they may hold anything, even NaN).

   Scratch memory: a work item needs REP * (2 HD + TILE + 2) numbers (scaled queries, accumulators,
   one tile's scores, m and l), whatever the context length. They go on the stack while that is
   small (SMALL_ON_STACK, at most 32 KiB); otherwise on the HEAP, one checked allocation per call
   (a stack array that grew with the shape would overflow a thread's stack: a segfault). Returns 0
   on success, 1 if that allocation failed (then `out` is not valid and Python falls back to the
   readable path); Python caps the scratch before calling. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
typedef SCALAR real;
#if IS_DOUBLE
#define EXP exp
#else
#define EXP expf
#endif

/* The softmax runs over TILES of TB blocks, TILE = TB * BS tokens (about TILE_TOKENS): long enough
   that its fixed costs (a max, a vector exp and a sum per query head) are spread over many tokens
   and that many blocks are read at once (step 3), short enough that the tile's scores (REP x TILE
   numbers) stay in the L1 cache from the keys' product to the values'. */
#ifndef TILE_TOKENS
#define TILE_TOKENS 128                                 /* try -DTILE_TOKENS=16 (one block) or 512 */
#endif
#define TB (BS >= TILE_TOKENS ? 1 : TILE_TOKENS / BS)   /* blocks per tile */
#define TILE (TB * BS)                                  /* tokens per tile */
/* Prefetch: while a tile is computed, the next tile's blocks are asked for (__builtin_prefetch),
   when both tiles fit in the L1/L2 caches at once: for TinyLM's heads (head_dim 32, fp32: 32 KiB a
   tile) it read ~1.1x faster with 1 thread; with head_dim 128 (128 KiB a tile) the prefetched lines
   pushed out the tile being read, and it was ~7 % slower, so it is off there. -DPREFETCH=0|1 forces it. */
#ifndef PREFETCH
#define PREFETCH (TILE * HD * 2 * (IS_DOUBLE ? 8 : 4) <= 32768)
#endif
#define SMALL_ELEMS ((size_t)REP * (2 * HD + TILE + 2))
#define SMALL_ON_STACK (REP * (2 * HD + TILE + 2) <= 4096)   /* at most 32 KiB of stack */

/* ---- one tile of one work item ----------------------------------------------------------------
   The running state, per query head r (after the tiles seen so far):
       m[r]   = the largest score
       l[r]   = sum_j exp(s_j - m[r])
       acc[r] = sum_j exp(s_j - m[r]) v_j                              (HD numbers)
   A tile whose scores reach a new max m' multiplies l and acc by exp(m - m') first, so every
   term is relative to the same max (exp never overflows); after the last tile out = acc / l.
   nb: blocks in this tile (TB, or fewer in a row's last tile); used: tokens in it (nb * BS, or
   fewer when the row's last block is partly filled); first: the row's first tile. */
static inline void tile_step(const real *restrict qs,            /* (REP, HD) queries, times 1/sqrt(HD) */
                             const real *const *restrict kts,    /* nb pointers to (HD, BS) keys, transposed */
                             const real *const *restrict vbs,    /* nb pointers to (BS, HD) values */
                             const int nb, const int used, const int first,
                             real *restrict s,                   /* (REP, TILE) scratch for the scores */
                             real *restrict m, real *restrict l,  /* (REP,) each */
                             real *restrict acc) {               /* (REP, HD) */
  /* scores: s[r][j BS + t] = q_r . (token t of block j). Keys are stored (HD, BS), so for each d a
     block's BS numbers are contiguous: the vector loop runs over t; each key row serves all REP
     query heads, and the nb blocks are read side by side (step 3 above). */
  for (int i = 0; i < REP * TILE; i++) s[i] = 0;
  for (int d = 0; d < HD; d++)
    for (int j = 0; j < nb; j++)
      for (int r = 0; r < REP; r++) {
        const real qd = qs[r * HD + d], *kd = kts[j] + d * BS;
        #pragma omp simd
        for (int t = 0; t < BS; t++) s[r * TILE + j * BS + t] += qd * kd[t];
      }
  /* softmax, online: only the `used` real tokens count (the rest of a last block is ignored) */
  for (int r = 0; r < REP; r++) {
    real *sr = s + r * TILE, top = sr[0], sum = 0;
    #pragma omp simd reduction(max:top)
    for (int t = 0; t < used; t++) top = sr[t] > top ? sr[t] : top;
    if (first) {
      m[r] = top;
    } else if (top > m[r]) {                      /* a new max: rescale what was summed so far */
      const real c = EXP(m[r] - top);
      l[r] *= c;
      #pragma omp simd
      for (int d = 0; d < HD; d++) acc[r * HD + d] *= c;
      m[r] = top;
    }
    const real mr = m[r];
    #pragma omp simd reduction(+:sum)
    for (int t = 0; t < used; t++) { sr[t] = EXP(sr[t] - mr); sum += sr[t]; }     /* a vector exp */
    l[r] += sum;
  }
  /* values: acc[r] += sum_t p[r][t] v_t. Values are stored (BS, HD): the vector loop runs over d,
     each value row serves all REP query heads, and row t of every block in the tile is read before
     row t + 1 of any, so the nb blocks stream in side by side, as the keys did. Only the `used`
     tokens count: a partly filled last block's empty slots are skipped. */
  for (int t = 0; t < BS; t++)
    for (int j = 0; j < nb; j++) {
      if (j * BS + t >= used) continue;
      const real *restrict vt = vbs[j] + t * HD;                  /* token t of block j: (HD,) */
      for (int r = 0; r < REP; r++) {
        const real p = s[r * TILE + j * BS + t];
        #pragma omp simd
        for (int d = 0; d < HD; d++) acc[r * HD + d] += p * vt[d];
      }
    }
}

/* ---- one work item: the REP query heads of row i that share kv head g -----------------------
   qg, og: (REP, HD) each. They attend over the row's first L tokens, found through its block
   table. `block`: numbers in one block of the pool (nkv * HD * BS). `restrict` tells the compiler
   that no two arrays overlap, so it can keep the inner loops in vector registers. */
static void attend(const real *restrict qg, const real *restrict key_blocks, const real *restrict value_blocks,
                   const int64_t *restrict table, int64_t L, int64_t g, int64_t block,
                   real *restrict og, real *restrict small, real scale) {
#if SMALL_ON_STACK
  real qs[REP * HD], acc[REP * HD], s[REP * TILE], m[REP], l[REP];
  (void)small;
#else
  real *restrict qs = small, *restrict acc = qs + REP * HD, *restrict s = acc + REP * HD, *restrict m = s + REP * TILE,
       *restrict l = m + REP;
#endif
  const int64_t nblk = (L + BS - 1) / BS;
  if (nblk == 0) {                                /* no context: the output is zeros */
    for (int i = 0; i < REP * HD; i++) og[i] = 0;
    return;
  }
  for (int i = 0; i < REP * HD; i++) { qs[i] = qg[i] * scale; acc[i] = 0; }
  for (int r = 0; r < REP; r++) l[r] = 0, m[r] = 0;
  const real *kts[TB], *vbs[TB];                  /* the tile's blocks, where they lie in the pool */
  for (int64_t b0 = 0; b0 < nblk; b0 += TB) {
    const int nb = nblk - b0 < TB ? (int)(nblk - b0) : TB;
    for (int j = 0; j < nb; j++) {
      kts[j] = key_blocks + table[b0 + j] * block + g * HD * BS;      /* (HD, BS): keys of kv head g */
      vbs[j] = value_blocks + table[b0 + j] * block + g * BS * HD;    /* (BS, HD): its values */
    }
#if PREFETCH
    /* ask for the NEXT tile's blocks now, so they arrive while this tile is computed */
    for (int64_t b = b0 + TB; b < b0 + 2 * TB && b < nblk; b++) {
      const char *kn = (const char *)(key_blocks + table[b] * block + g * HD * BS);
      const char *vn = (const char *)(value_blocks + table[b] * block + g * BS * HD);
      for (size_t off = 0; off < sizeof(real) * HD * BS; off += 64) {
        __builtin_prefetch(kn + off, 0, 3);
        __builtin_prefetch(vn + off, 0, 3);
      }
    }
#endif
    if (nb == TB && b0 + TB < nblk)               /* a full tile, not the last: every length a constant */
      tile_step(qs, kts, vbs, TB, TILE, b0 == 0, s, m, l, acc);
    else
      tile_step(qs, kts, vbs, nb, (int)(L - b0 * BS), b0 == 0, s, m, l, acc);
  }
  for (int r = 0; r < REP; r++) {
    const real inv = 1 / l[r];                    /* l >= 1: the max term is exp(0) */
    for (int d = 0; d < HD; d++) og[r * HD + d] = acc[r * HD + d] * inv;
  }
}

/* ---- threads that help when they can (plumbing) ----------------------------------------------
   One call is a JOB of N * nkv work items. Every thread, the caller included, takes the next
   item from a shared counter until none are left. The caller then waits only until every item
   TAKEN is finished: a helper that comes late finds no work and goes back to sleep. The job's
   memory is freed by whichever thread lets go of it last, so a late helper never touches freed
   memory.

   The helpers are started on first use and then kept, asleep, for the calls that follow (each
   compiled shape keeps its own, at most nthreads - 1): starting a thread costs tens of
   microseconds, and on a busy machine a new thread waits behind every other runnable one,
   where a sleeping one that is woken runs at once. A job reaches a helper through the helper's
   own mailbox, one atomic exchange: the caller never waits for a lock that a helper holds (a
   helper the operating system pauses while holding a shared lock would stall every caller for
   milliseconds). After fork() the child has no helpers (pthread_atfork below) and starts its own.
   Built with -DUSE_THREADS=0 (no pthreads here), the caller does every item itself. */
#ifndef USE_THREADS
#define USE_THREADS 1
#endif
#if USE_THREADS
#include <pthread.h>
#include <stdatomic.h>
#endif

typedef struct {
  const real *q, *key_blocks, *value_blocks;
  const int64_t *block_tables, *context_lens;
  real *out;
  int64_t nh, nkv, max_blocks, items;
  real scale;
  real *scratch;                                  /* SMALL_ELEMS numbers per thread (heap case only) */
#if USE_THREADS
  atomic_llong next;                              /* the next item nobody has taken */
  atomic_llong done;                              /* items finished */
  atomic_int slots;                               /* scratch slots handed out */
  atomic_int refs;                                /* holds on the job: the caller's, and one per mailbox it is in */
  pthread_mutex_t lock;
  pthread_cond_t finished;                        /* signalled when done reaches items */
#endif
} job_t;

static void do_item(job_t *job, int64_t w, real *small) {
  const int64_t i = w / job->nkv, g = w % job->nkv;    /* item w: query row i, kv head g */
  const int64_t at = (i * job->nh + g * REP) * HD;      /* its REP query heads in q and out */
  attend(job->q + at, job->key_blocks, job->value_blocks, job->block_tables + i * job->max_blocks,
         job->context_lens[i], g, job->nkv * HD * BS, job->out + at, small, job->scale);
}

#if USE_THREADS
static void work(job_t *job) {                    /* take items until none are left */
  const int slot = atomic_fetch_add(&job->slots, 1);         /* this thread's scratch (heap case) */
  real *small = job->scratch + (size_t)slot * SMALL_ELEMS * !SMALL_ON_STACK;
  for (;;) {
    const int64_t w = atomic_fetch_add(&job->next, 1);
    if (w >= job->items) return;
    do_item(job, w, small);
    if (atomic_fetch_add(&job->done, 1) + 1 == job->items) {   /* the last item: wake the caller */
      pthread_mutex_lock(&job->lock);
      pthread_cond_signal(&job->finished);
      pthread_mutex_unlock(&job->lock);
    }
  }
}

static void let_go(job_t *job) {                  /* the last thread holding the job frees it */
  if (atomic_fetch_sub(&job->refs, 1) == 1) {
    pthread_mutex_destroy(&job->lock);
    pthread_cond_destroy(&job->finished);
    free(job);
  }
}

/* the pool: helper h sleeps until a job lands in pool[h].mailbox */
#define MAX_HELPERS 255
typedef struct {
  _Atomic(job_t *) mailbox;                       /* a job for this helper, with a hold on it (NULL: none) */
  pthread_mutex_t lock;                           /* only for sleeping on `wake` */
  pthread_cond_t wake;
} helper_t;
static helper_t pool[MAX_HELPERS];
static int helpers;                               /* helpers started in this process (under start_lock) */
static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;   /* callers only: never held by a helper */
static pthread_once_t fork_handlers = PTHREAD_ONCE_INIT;

static void *helper(void *arg) {
  helper_t *h = (helper_t *)arg;
  pthread_mutex_lock(&h->lock);
  for (;;) {
    job_t *job = atomic_exchange(&h->mailbox, NULL);
    if (job == NULL) {
      pthread_cond_wait(&h->wake, &h->lock);      /* asleep until a caller signals */
      continue;
    }
    pthread_mutex_unlock(&h->lock);
    work(job);
    let_go(job);                                  /* the hold the mailbox gave us */
    pthread_mutex_lock(&h->lock);
  }
  return NULL;
}

static void fork_prepare(void) { pthread_mutex_lock(&start_lock); }
static void fork_parent(void) { pthread_mutex_unlock(&start_lock); }
static void fork_child(void) {                    /* only the forking thread lives on in the child */
  helpers = 0;                                    /* (the slots are set up afresh as helpers start) */
  pthread_mutex_unlock(&start_lock);
}
static void add_fork_handlers(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

/* Hand `job` to nthreads - 1 helpers (starting those the pool lacks); returns how many got it. */
static int offer(job_t *job, int nthreads) {
  pthread_once(&fork_handlers, add_fork_handlers);
  const int want = nthreads - 1 < MAX_HELPERS ? nthreads - 1 : MAX_HELPERS;
  pthread_mutex_lock(&start_lock);
  while (helpers < want) {
    helper_t *h = &pool[helpers];
    atomic_init(&h->mailbox, NULL);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->wake, NULL);
    pthread_t tid;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);   /* nobody joins a helper */
    const int failed = pthread_create(&tid, &attr, helper, h);
    pthread_attr_destroy(&attr);
    if (failed) break;                            /* fewer helpers: the same answer */
    helpers++;
  }
  const int n = want < helpers ? want : helpers;
  pthread_mutex_unlock(&start_lock);
  for (int i = 0; i < n; i++) {
    helper_t *h = &pool[i];
    atomic_fetch_add(&job->refs, 1);              /* the mailbox's hold */
    job_t *old = atomic_exchange(&h->mailbox, job);
    if (old != NULL) let_go(old);                 /* a job its helper never picked up (another caller's) */
    if (pthread_mutex_trylock(&h->lock) == 0) {   /* asleep (or about to be): wake it */
      pthread_cond_signal(&h->wake);
      pthread_mutex_unlock(&h->lock);
    }                                             /* busy: it looks in its mailbox when it is done. (In
                                                     the instant between its look and its sleep it misses
                                                     this call; the caller then does more itself.) */
  }
  return n;
}

static void withdraw(job_t *job, int n) {         /* take the job back from mailboxes nobody emptied */
  for (int i = 0; i < n; i++) {
    job_t *expected = job;
    if (atomic_compare_exchange_strong(&pool[i].mailbox, &expected, NULL)) let_go(job);
  }
}
#endif

int paged_attention(const real *q,                /* (N, nh, HD)                */
                    const real *key_blocks,       /* (num_blocks, nkv, HD, BS)  */
                    const real *value_blocks,     /* (num_blocks, nkv, BS, HD)  */
                    const int64_t *block_tables,  /* (N, max_blocks)            */
                    const int64_t *context_lens,  /* (N,)                       */
                    real *out,                    /* (N, nh, HD)                */
                    int64_t N, int64_t nh, int64_t nkv, int64_t max_blocks, int64_t max_len,
                    double scale, int nthreads) {
  (void)max_len;                                  /* one pass needs no row of scores */
  if (nthreads < 1) nthreads = 1;
  /* the job and every thread's scratch: one checked allocation */
  const size_t scratch = SMALL_ON_STACK ? 0 : sizeof(real) * SMALL_ELEMS * (size_t)nthreads;
  job_t *job = (job_t *)malloc(sizeof(job_t) + scratch);
  if (job == NULL) return 1;
  job->q = q, job->key_blocks = key_blocks, job->value_blocks = value_blocks;
  job->block_tables = block_tables, job->context_lens = context_lens, job->out = out;
  job->nh = nh, job->nkv = nkv, job->max_blocks = max_blocks, job->items = N * nkv, job->scale = (real)scale;
  job->scratch = (real *)(job + 1);
#if USE_THREADS
  atomic_init(&job->next, 0);
  atomic_init(&job->done, 0);
  atomic_init(&job->slots, 0);
  atomic_init(&job->refs, 1);                     /* the caller's hold */
  pthread_mutex_init(&job->lock, NULL);
  pthread_cond_init(&job->finished, NULL);
  const int offered = nthreads > 1 ? offer(job, nthreads) : 0;
  work(job);                                      /* the caller works too */
  pthread_mutex_lock(&job->lock);                 /* then waits for the items helpers took */
  while (atomic_load(&job->done) < job->items) pthread_cond_wait(&job->finished, &job->lock);
  pthread_mutex_unlock(&job->lock);
  withdraw(job, offered);
  let_go(job);
#else
  for (int64_t w = 0; w < job->items; w++) do_item(job, w, job->scratch);
  free(job);
#endif
  return 0;
}
