"""The experiments of lessons 04 and 05 (paged attention, prefix caching), as functions a
notebook calls in one line. They sit above the engine and the stores: they build both.

block_size_sweep          memory share held by token states (a replay) and decode-kernel time, per block size
run_engine                lesson 03's engine on a paged store, stepping it to record the pool after every step
compare_preemption        the same requests on a too-small pool: preemption by recompute vs by swap
sample_in_parallel        n sampled continuations of one prompt with fork + copy-on-write (real model)
parallel_sampling_savings allocation only: the memory n samples save by sharing, averaged over a trace
compare_prefix_caching    the same requests with prefix caching off and on (real model, wall time)
replay_with_pool          an allocation-only replay that records the pool's block counts at every step

Everything returns plain numbers and records; the plots (course_lib.plots.paging)
draw them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import torch

from course_lib.engine import Engine, clone_requests
from course_lib.engine.sample import sample_token
from course_lib.kv.paged import PagedKVStore, num_blocks_for
from course_lib.kv.pool_views import PoolSnapshot, pool_counts
from course_lib.kv.reference import ReferenceKVStore
from course_lib.kv.replay import replay
from course_lib.kv.step import PackedStep
from course_lib.paged_attention import decode_contenders, random_decode_problem, time_contenders
from course_lib.validate import check_float, check_has, check_int, check_ints, check_tokens


@contextmanager
def torch_threads(n: int | None):
    """Run the block with torch (and the paged kernel) on `n` threads; None: leave it.
    Wall-clock comparisons on a shared machine are much steadier on one thread."""
    check_int("threads", n, 1, 1024, none_ok=True)
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- lesson 04: block size -----------------------------------------------------------------------
def block_size_sweep(trace, capacity: int, block_sizes: Sequence[int] = (1, 4, 16, 64, 256), step_time: float = 0.05,
                     batch: int = 32, context: int = 1024, repeat: int = 5, threads: int | None = 1,
                     max_model_len: int = 2048) -> list[dict]:
    """For each block size: replay `trace` on a paged pool of `capacity` slots (rounded down to whole
    blocks) and time one decode step of the paged kernel (batch x context, TinyLM's heads) on
    `threads` threads (one by default: on a shared machine the comparison is steadier).

    returns rows: block_size, capacity, token_share and internal_share (averaged over the steps in which
                  a request waited for memory; over all steps if none did), mean_batch (same steps),
                  kernel_ms, contiguous_ms (fastest of `repeat` interleaved rounds)
    """
    block_sizes = check_ints("block_sizes", block_sizes, 1, 256, min_len=1)
    check_int("capacity", capacity, max(block_sizes), note="at least one block of the largest size")
    check_int("batch", batch, 1, 4096)
    check_int("context", context, 1, 1 << 20)
    check_int("repeat", repeat, 1, 1000)
    rows = []
    for bs in block_sizes:
        cap = capacity - capacity % bs
        res = replay(trace, PagedKVStore(1, 1, 1, capacity=cap, block_size=bs, max_model_len=max_model_len),
                     step_time=step_time, snapshot_every=None)
        busy = any(res.busy())                 # shares while a request waited for memory (else: all steps)
        shares = res.figure2(busy_only=busy)
        contenders = decode_contenders(random_decode_problem(batch, context, 4, 2, 32, bs))
        contenders.pop("paged (readable gather)")
        times = time_contenders(contenders, repeat=repeat, warmup=1, threads=threads)
        kernel = times.get("paged (fast kernel)")
        rows.append({"block_size": bs, "capacity": cap, "token_share": shares["token_states"],
                     "internal_share": shares["internal"], "mean_batch": res.mean_batch(busy_only=busy),
                     "kernel_ms": 1e3 * kernel[0] if kernel else float("nan"),
                     "contiguous_ms": 1e3 * times["contiguous SDPA"][0]})
    return rows


# ---- engine runs on a paged pool -------------------------------------------------------------------
@dataclass
class PagedRun:
    """One engine run on a paged store, with the pool recorded after every step."""

    result: object                         # EngineResult
    store: PagedKVStore
    snapshots: list[PoolSnapshot] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def outputs(self) -> dict[int, list[int]]:
        return self.result.outputs()

    def peak_blocks(self) -> int:
        return max((s.held for s in self.snapshots), default=0)

    def prefill_tokens(self) -> int:
        """Tokens run through the model that were not a decode step's single new token."""
        return sum(n for s in self.result.steps for _, n, kind in s.items if kind == "prefill")


def run_engine(model, requests, *, num_blocks: int, block_size: int = 16, prefix_caching: bool = False,
               preemption: str = "recompute", record: bool = True, threads: int | None = None,
               **engine_kwargs) -> PagedRun:
    """Fresh copies of `requests` through the engine on a new PagedKVStore (on `threads` threads)."""
    store = PagedKVStore.for_model(model, num_blocks=num_blocks, block_size=block_size, prefix_caching=prefix_caching)
    eng = Engine(model, store, preemption=preemption, **engine_kwargs)
    for r in clone_requests(requests):
        eng.submit(r)
    run = PagedRun(None, store)
    with torch_threads(threads):
        t0 = time.perf_counter()
        while eng.step() is not None:
            if record:
                run.snapshots.append(store.snapshot())
        run.wall_s = time.perf_counter() - t0
    run.result = eng.result()
    return run


def reference_outputs(model, requests, **engine_kwargs) -> dict[int, list[int]]:
    """The same requests on an unlimited exact-size store: nobody is ever preempted."""
    return Engine(model, ReferenceKVStore.for_model(model), **engine_kwargs).run(clone_requests(requests)).outputs()


def compare_preemption(model, requests, *, num_blocks: int, block_size: int = 16, threads: int | None = None,
                       **engine_kwargs) -> dict[str, dict]:
    """The same requests on the same too-small pool, preempting by recompute and by swap."""
    with torch_threads(threads):
        ref = reference_outputs(model, requests, **engine_kwargs)
    out = {}
    for mode in ("recompute", "swap"):
        run = run_engine(model, requests, num_blocks=num_blocks, block_size=block_size, preemption=mode,
                         record=False, threads=threads, **engine_kwargs)
        res = run.result
        needed = sum(len(r.prompt) + len(r.output) - 1 for r in res.requests)    # tokens that must be computed once
        computed = sum(s.num_tokens for s in res.steps)
        out[mode] = {"same tokens as the unlimited reference": res.outputs() == ref,
                     "preemptions": sum(r.num_preemptions for r in res.requests),
                     "tokens computed again": computed - needed,
                     "blocks copied to CPU and back": run.store.stats.swapped_out + run.store.stats.swapped_in,
                     "steps": len(res.steps), "wall s": run.wall_s,
                     "tokens/s (wall)": res.generated_tokens / run.wall_s if run.wall_s else 0.0}
    return out


# ---- lesson 05: parallel sampling ----------------------------------------------------------------
@torch.no_grad()
def sample_in_parallel(model, prompt: Sequence[int], n: int, new_tokens: int, block_size: int = 16,
                       temperature: float = 1.0, seed: int = 0, attention: str = "auto") -> dict:
    """Prefill `prompt` once, fork n-1 children, then sample `new_tokens` for each of the n
    sequences in packed steps (each with its own seeded generator). Returns their tokens, the
    store, the blocks their tables name vs the blocks held, and the copy-on-write copies."""
    check_has("model", model, ("forward_ctx", "config", "device"), "a TinyLM")
    check_int("n", n, 1, 64)
    prompt = check_tokens("prompt", prompt, model.config.vocab_size)
    limit = model.config.max_position_embeddings
    check_int("new_tokens", new_tokens, 1, max(1, limit - len(prompt)),
              note=f"prompt + new_tokens within the model's context of {limit}")
    check_float("temperature", temperature, 0)
    check_int("seed", seed, 0)
    check_int("block_size", block_size, 1, 256)
    total = len(prompt) + new_tokens
    store = PagedKVStore.for_model(model, num_blocks=n * num_blocks_for(total, block_size) + 1, block_size=block_size,
                                   attention=attention)
    gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]

    def step(batch):
        return PackedStep(model, store, batch, grow=True).run()             # (S, V): each sequence's last token

    store.add(0, list(prompt), total)
    last = step([(0, list(prompt))])[0]
    for c in range(1, n):
        store.fork(0, c)
    after_fork = store.sharing()
    seqs = [[sample_token(last, temperature, gens[c])] for c in range(n)]
    for _ in range(new_tokens - 1):
        rows = step([(c, [s[-1]]) for c, s in enumerate(seqs)])
        for c in range(n):
            seqs[c].append(sample_token(rows[c], temperature, gens[c]))
    step([(c, [s[-1]]) for c, s in enumerate(seqs)])                        # the last tokens' K/V, as a server keeps them
    return {"tokens": seqs, "store": store, "after_fork": after_fork, "at_end": store.sharing(),
            "cow_copies": store.stats.cow_copies}


def parallel_sampling_savings(trace, n: int, block_size: int = 16) -> float:
    """Allocation only: each request of `trace` prefills its prompt once and forks n samples that
    each generate the request's output length. Returns the share of KV blocks saved by sharing
    (1 - held / named by the tables), averaged over every step of every request."""
    check_int("n", n, 1, 64)
    check_int("block_size", block_size, 1, 256)
    saved, steps = 0.0, 0
    for r in trace:
        final = r.prompt_len + r.output_len
        store = PagedKVStore(1, 1, 1, num_blocks=n * num_blocks_for(final, block_size), block_size=block_size,
                             max_model_len=final)
        store.add(0, list(r.prompt), final)
        store.mark_computed(0, r.prompt_len)
        for c in range(1, n):
            store.fork(0, c)
        for t in range(r.prompt_len + 1, final + 1):
            for c in range(n):
                store.grow(c, t)
                store.mark_computed(c, t)
            sh = store.sharing()
            saved += sh["saved_blocks"] / sh["logical_blocks"]
            steps += 1
    return saved / steps if steps else 0.0


# ---- lesson 05: prefix caching -----------------------------------------------------------------
def compare_prefix_caching(model, requests, *, num_blocks: int, block_size: int = 16, rounds: int = 2,
                           threads: int | None = None, **engine_kwargs) -> dict[str, dict]:
    """The same requests with prefix caching off and on, `rounds` times each, interleaved (the
    fastest round's wall time counts). Returns a row of measurements per setting, and whether
    both settings generated the same tokens."""
    check_int("rounds", rounds, 1, 100)
    best: dict[bool, PagedRun] = {}
    for _ in range(rounds):
        for pc in (False, True):
            run = run_engine(model, requests, num_blocks=num_blocks, block_size=block_size, prefix_caching=pc,
                             threads=threads, **engine_kwargs)
            if pc not in best or run.wall_s < best[pc].wall_s:
                best[pc] = run
    rows = {}
    for pc, run in best.items():
        res = run.result
        rows["prefix caching" if pc else "no prefix caching"] = {
            "prompt tokens found cached": f"{run.store.stats.hit_rate:.0%}" if pc else "-",
            "prefill tokens computed": run.prefill_tokens(),
            "peak blocks held": run.peak_blocks(),
            "steps": len(res.steps),
            "wall s": run.wall_s,
            "tokens/s (wall)": res.generated_tokens / run.wall_s if run.wall_s else 0.0,
            "run": run,
        }
    rows["same tokens"] = best[False].outputs == best[True].outputs
    return rows


def replay_with_pool(trace, store: PagedKVStore, step_time: float = 0.05):
    """Allocation-only replay (course_lib.kv.replay) recording the pool's block counts at every
    step. Returns (ReplayResult, steps, list of PoolCounts)."""
    res = replay(trace, store, step_time=step_time, snapshot_every=1)
    steps = sorted(res.snapshots)
    return res, steps, [pool_counts(res.snapshots[s], store.block_size, store.num_blocks) for s in steps]
