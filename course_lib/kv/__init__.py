"""Where keys and values live.

base.py          the contract every store keeps (add, grow, step_context, free), the default
                 per-sequence step context, KVAllocationError and the paradox of free memory
dense.py         the simplest cache: one (B, nkv, T, hd) tensor per layer, grown by torch.cat
reference.py     one exact-size tensor per sequence: the oracle the other stores are tested against
allocators.py    first-fit, best-fit and buddy placement over one arena (lesson 02)
contiguous.py    a real preallocated arena, one slab per request, Max/Pow2/Oracle reservation (lesson 02)
paged.py         a block pool with block tables, reference counts, copy-on-write, swapping (lesson 04)
pool_views.py    what plots read about a pool: memory-map segments, snapshots, block counts
prefix_cache.py  full blocks cached under a chained hash, verified, evicted LRU (lesson 05)
contexts.py      attention contexts that work over any store: padded steps, batched decodes
step.py          one packed model step over any store (grow, prepare, run, commit)
decoding.py      greedy decoding with and without a cache, timed (lesson 02)
replay.py        a trace through any store, allocation only or with the real model (lesson 02)
sizing.py        KV bytes per token and what fits in a GPU, beside published figures
(lessons 04 and 05's experiments, which build engines on these stores, are in course_lib/labs/)
"""

from course_lib.kv.dense import DenseKVCache

__all__ = ["DenseKVCache"]
