"""Decode attention: paged (fast kernel, readable gather) vs contiguous SDPA, from one run.

    python -m benchmarks.paged_attention            # batch 32, 1024 tokens of context, fp32, 30 rounds
    python -m benchmarks.paged_attention --quick    # the same shapes, 8 rounds
    python -m benchmarks.paged_attention --flex     # also FlexAttention with a paged BlockMask (torch.compile)

One decode step: every sequence of the batch has one new query and `context`
tokens of keys and values. The same keys and values are stored twice: as
contiguous (B, nkv, L, hd) tensors, and in a paged pool whose blocks are
scattered at random (course_lib.paged_attention.random_decode_problem). It
prints the time per step of

    contiguous SDPA          torch.nn.functional.scaled_dot_product_attention
    paged (fast kernel)      course_lib's C kernel: reads the blocks where they lie
    paged (readable gather)  copy the blocks into a contiguous tensor, then SDPA
    paged (FlexAttention)    --flex: flex_attention + a paged BlockMask, compiled

and each one's ratio to contiguous SDPA. The vLLM paper (Kwon et al., SOSP
2023, section 7.1) measured its paged kernel at 20-26 % more attention-kernel
time than a contiguous one (on a GPU). Every contender runs once per round,
round after round (interleaved), and the fastest round counts: a shared
machine's noise only ever slows a run down. The median is printed too.
All outputs are checked against contiguous SDPA (max abs difference).
"""

from __future__ import annotations

import argparse
import time

import torch

from course_lib.device import banner, get_device, seed_everything
from course_lib.paged_attention import decode_contenders, random_decode_problem, time_contenders

PAPER_OVERHEAD = (1.20, 1.26)       # vLLM paper, section 7.1: paged kernel 20-26 % slower (GPU)


def flex_contender(problem: dict):
    """FlexAttention over the same pool, in the (1, nkv, slots, hd) layout it reads, with a
    BlockMask whose kv blocks are each sequence's physical blocks. Returns (fn, compile seconds)."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    p = problem
    kb, vb, tables = p["key_blocks"], p["value_blocks"], p["block_tables"]
    nb, nkv, hd, bs = kb.shape
    B, n_blocks = tables.shape
    if int(p["context_lens"].min()) != n_blocks * bs:
        raise ValueError("context: the FlexAttention contender needs every context to fill whole blocks")
    K = kb.permute(1, 0, 3, 2).reshape(1, nkv, nb * bs, hd).contiguous()       # (1, nkv, slots, hd), once
    V = vb.transpose(0, 1).reshape(1, nkv, nb * bs, hd).contiguous()
    full_idx = torch.zeros(B, 1, 1, nb, dtype=torch.int32)
    full_idx[:, 0, 0, :n_blocks] = tables.to(torch.int32)                      # the block table, as kv blocks
    mask = BlockMask.from_kv_blocks(torch.zeros(B, 1, 1, dtype=torch.int32), torch.zeros(B, 1, 1, nb, dtype=torch.int32),
                                    torch.full((B, 1, 1), n_blocks, dtype=torch.int32), full_idx,
                                    BLOCK_SIZE=(1, bs), seq_lengths=(1, nb * bs))
    compiled = torch.compile(flex_attention, dynamic=False)
    q4 = p["q"][:, :, None, :]                                                   # (B, nh, 1, hd)
    t0 = time.perf_counter()
    compiled(q4, K, V, block_mask=mask, enable_gqa=True)
    return (lambda: compiled(q4, K, V, block_mask=mask, enable_gqa=True)[:, :, 0]), time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 rounds instead of 30")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=4, help="query heads (TinyLM: 4)")
    ap.add_argument("--kv-heads", type=int, default=2, help="key/value heads (TinyLM: 2)")
    ap.add_argument("--head-dim", type=int, default=32, help="TinyLM: 32")
    ap.add_argument("--block-size", type=int, default=16, help="vLLM's default: 16")
    ap.add_argument("--repeat", type=int, default=None, help="rounds (default 30, --quick 8)")
    ap.add_argument("--threads", default=None,
                    help="comma-separated thread counts to time, e.g. 1,2 (default: 1 and torch's count)")
    ap.add_argument("--flex", action="store_true", help="also time FlexAttention (compiles for ~10 s or more)")
    args = ap.parse_args(argv)
    default_threads = torch.get_num_threads()
    try:
        thread_counts = ([int(t) for t in str(args.threads).split(",")] if args.threads
                         else sorted({1, default_threads}))
    except ValueError:
        raise SystemExit(f"--threads: must be comma-separated integers >= 1; got {args.threads!r}") from None
    if any(t < 1 for t in thread_counts):
        raise SystemExit(f"--threads: must be comma-separated integers >= 1; got {args.threads!r}")
    seed_everything(0)
    print(banner(get_device("cpu"), torch.float32))
    repeat = args.repeat or (8 if args.quick else 30)
    p = random_decode_problem(args.batch, args.context, args.heads, args.kv_heads, args.head_dim, args.block_size)
    print(f"decode attention: batch {args.batch}, context {args.context} tokens, {args.heads} query / "
          f"{args.kv_heads} kv heads, head_dim {args.head_dim}, block size {args.block_size}, fp32, "
          f"{repeat} interleaved rounds per thread count")
    contenders = decode_contenders(p)
    if "paged (fast kernel)" not in contenders:
        print("paged (fast kernel): cannot run here (no C compiler?); skipped")
    if args.flex:
        try:
            fn, compile_s = flex_contender(p)
            contenders["paged (FlexAttention)"] = fn
            print(f"FlexAttention compiled in {compile_s:.1f} s")
        except Exception as exc:  # pragma: no cover - depends on the compiler toolchain
            print(f"FlexAttention: could not run ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
    ref = contenders["contiguous SDPA"]()
    for name, fn in contenders.items():
        err = (fn() - ref).abs().max().item()
        if err > 1e-4:
            raise SystemExit(f"{name} disagrees with contiguous SDPA: max |diff| {err:.2e}")
    report = {}
    for threads in thread_counts:
        times = time_contenders(contenders, repeat=repeat, warmup=2, threads=threads)
        base_min = times["contiguous SDPA"][0]
        base_med = times["contiguous SDPA"][len(times["contiguous SDPA"]) // 2]
        print(f"\n{threads} thread(s){'':15s}{'fastest':>10s}{'median':>10s}{'ratio (fastest)':>18s}{'ratio (median)':>17s}")
        ratios = {}
        for name, ts in times.items():
            mn, med = ts[0], ts[len(ts) // 2]
            ratios[name] = mn / base_min
            print(f"{name:26s}{1e3 * mn:8.2f} ms{1e3 * med:8.2f} ms{mn / base_min:17.2f}x{med / base_med:16.2f}x")
        report[threads] = {"times": times, "ratios": ratios}
    print(f"\nvLLM paper (section 7.1, GPU): paged kernel {PAPER_OVERHEAD[0]:.2f}-{PAPER_OVERHEAD[1]:.2f}x "
          f"the attention-kernel time of a contiguous one.")
    return report


if __name__ == "__main__":
    main()
