"""Static vs continuous batching, and Hugging Face generate(), on one trace and one set of weights.

    python -m benchmarks.engine_throughput            # 128 requests, 16 slots (about a minute on a CPU)
    python -m benchmarks.engine_throughput --quick    # 40 requests, 8 slots

One run, one ShareGPT-like trace (course_lib.workloads, lengths scaled down
for a CPU; all requests arrive at time 0 unless --rate is given), one TinyLM.
Every request stops at its own output length from the trace. It prints the
generated tokens per second of:

    static (padded)      course_lib engine, request-level batches, padded steps:
                         finished rows keep being computed until the batch ends
    static (packed)      the same batches, but finished rows drop out of the step
    continuous           course_lib engine, iteration-level (prefill-first, Orca-style)
    continuous chunked   iteration-level with chunked prefill (Sarathi-style)
    HF generate          transformers.LlamaForCausalLM.generate() with padded static
                         batches of the same size, on the SAME weights (built from a
                         LlamaConfig, no download)

then the ratios. Throughput = tokens the trace asked for / time from the first
arrival to the last finish. The batch size (slots) is the same everywhere.
With --repeat N every contender runs N times, interleaved, and its fastest
run counts (a shared machine's noise only ever slows a run down).
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from course_lib.device import banner, get_device, seed_everything, synchronize  # noqa: E402
from course_lib.engine import Engine, requests_from_trace  # noqa: E402
from course_lib.model import TinyLMConfig, build_model  # noqa: E402
from course_lib.padding import pad_batch  # noqa: E402


def make_trace(n: int, seed: int, rate: float, scale: float):
    """A ShareGPT-like trace: course_lib.workloads when it is there, else a small seeded stand-in."""
    try:
        from course_lib.workloads import sharegpt_like
        return list(sharegpt_like(n=n, rate=rate, seed=seed, scale=scale)), "course_lib.workloads.sharegpt_like"
    except ImportError:  # pragma: no cover - the workloads module ships with the course
        import random
        from types import SimpleNamespace
        rng = random.Random(seed)
        t, out = 0.0, []
        for i in range(n):
            p = max(1, min(128, int(rng.lognormvariate(math.log(161.31 * scale) - 0.5, 1.0))))
            o = max(1, min(128, int(rng.lognormvariate(math.log(337.99 * scale) - 0.5, 1.0))))
            out.append(SimpleNamespace(id=i, arrival=t, prompt=[rng.randrange(32, 127) for _ in range(p)], output_len=o))
            t += 0.0 if math.isinf(rate) else rng.expovariate(rate)
        return out, "a seeded log-normal stand-in (ShareGPT means x scale)"


def hf_twin(model):
    """transformers' LlamaForCausalLM holding TinyLM's very weights (no download)."""
    import transformers
    cfg = model.config
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, hidden_act="silu", pad_token_id=256, bos_token_id=None,
        eos_token_id=None)
    hf = transformers.LlamaForCausalLM(hf_cfg)
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any("rotary" not in m for m in missing):
        raise RuntimeError(f"weights do not line up: missing {missing}, unexpected {unexpected}")
    return hf.to(device=model.device, dtype=model.dtype).eval()


@torch.no_grad()
def run_hf(hf, trace, batch_size: int, device) -> tuple[float, dict[int, list[int]]]:
    """Padded static batches in arrival order; each runs until its longest request is done.
    Returns (seconds from the first arrival to the last finish, the tokens each request asked for)."""
    outputs, clock = {}, 0.0
    reqs = sorted(trace, key=lambda r: (r.arrival, r.id))
    for i in range(0, len(reqs), batch_size):
        batch = reqs[i:i + batch_size]
        clock = max(clock, max(r.arrival for r in batch))       # a static batch waits for its last member
        longest = max(r.output_len for r in batch)
        padded = pad_batch([list(r.prompt) for r in batch], side="left", device=device)
        synchronize(device)
        t0 = time.perf_counter()
        out = hf.generate(input_ids=padded.input_ids, attention_mask=padded.attention_mask, do_sample=False,
                          max_new_tokens=longest, min_new_tokens=longest, pad_token_id=256, eos_token_id=None)
        synchronize(device)
        clock += time.perf_counter() - t0
        new = out[:, padded.input_ids.shape[1]:]                                    # (B, longest)
        for b, r in enumerate(batch):
            outputs[r.id] = new[b, :r.output_len].tolist()
    return clock - min(r.arrival for r in reqs), outputs


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 requests and 8 slots instead of 128 and 16")
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--slots", type=int, default=None, help="batch slots (max_running, and HF's batch size)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per contender; the fastest counts")
    ap.add_argument("--budget", type=int, default=256, help="max tokens per step (continuous)")
    ap.add_argument("--chunk-budget", type=int, default=64, help="max tokens per step (chunked prefill)")
    ap.add_argument("--rate", type=float, default=math.inf, help="arrivals per second (default: all at once)")
    ap.add_argument("--scale", type=float, default=1 / 8, help="ShareGPT lengths x this (default 1/8)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (tiny matrices: 1 is fastest)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-hf", action="store_true", help="skip transformers generate()")
    args = ap.parse_args(argv)
    n = args.requests or (40 if args.quick else 128)
    args.slots = args.slots or (8 if args.quick else 16)
    if min(n, args.slots, args.repeat, args.threads) < 1:
        raise SystemExit("--requests, --slots, --repeat, --threads: must be integers >= 1")
    device = get_device()
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    print(banner(device))
    model = build_model(TinyLMConfig(), seed=args.seed, device=device)
    trace, source = make_trace(n, args.seed, args.rate, args.scale)
    asked = sum(r.output_len for r in trace)
    mean_in = sum(len(r.prompt) for r in trace) / n
    mean_out = asked / n
    print(f"trace: {n} requests from {source}; mean prompt {mean_in:.1f}, mean output {mean_out:.1f} tokens "
          f"(ShareGPT x {args.scale:g}); arrivals {'all at 0' if math.isinf(args.rate) else f'{args.rate:g}/s'}")
    print(f"model: TinyLM {model.num_parameters() / 1e6:.2f} M parameters, fp32; {args.slots} slots; "
          f"{torch.get_num_threads()} CPU thread(s); fastest of {args.repeat} run(s) each")

    # warm up kernels once so no contender pays for first-call costs
    Engine(model, policy="chunked", clock="measured").run(requests_from_trace(trace[:2]))

    runs = {
        "static (padded)": dict(policy="static", step_mode="padded", max_tokens_per_step=4096),
        "static (packed)": dict(policy="static", step_mode="packed", max_tokens_per_step=4096),
        "continuous": dict(policy="prefill-first", step_mode="packed", max_tokens_per_step=args.budget),
        "continuous chunked": dict(policy="chunked", step_mode="packed", max_tokens_per_step=args.chunk_budget),
    }
    results, outputs = {}, {}
    hf = None if args.no_hf else hf_twin(model)
    if hf is not None:
        hf.generate(input_ids=torch.tensor([[257, 65]], device=device), max_new_tokens=2, pad_token_id=256)  # warm-up
    for rep in range(args.repeat):
        for name, kw in runs.items():
            res = Engine(model, max_running=args.slots, clock="measured", **kw).run(requests_from_trace(trace),
                                                                                   progress=True)
            assert len(res.finished) == n, f"{name}: {len(res.finished)} of {n} requests finished"
            row = (res.generated_tokens, res.makespan, len(res.steps), res.summary()["occupancy"])
            if name not in results or row[1] < results[name][1]:
                results[name] = row
            outputs[name] = res.outputs()
        if hf is not None:
            seconds, hf_out = run_hf(hf, trace, args.slots, device)
            name = "HF generate (padded static)"
            if name not in results or seconds < results[name][1]:
                results[name] = (asked, seconds, None, None)
    ref = outputs["continuous"]
    same = all(o == ref for o in outputs.values())
    if hf is not None:
        agree = sum(hf_out[rid] == ref[rid] for rid in ref)
    print()
    print(f"{'engine':30s} {'tokens':>7s} {'seconds':>8s} {'tokens/s':>9s} {'steps':>6s} {'occupancy':>9s}")
    tps = {}
    for name, (tokens, seconds, steps, occ) in results.items():
        tps[name] = tokens / seconds
        print(f"{name:30s} {tokens:7d} {seconds:8.2f} {tps[name]:9.1f} {steps if steps else '':>6} "
              f"{'' if occ is None else f'{occ:.0%}':>9s}")
    print()
    print(f"continuous / static (padded):         {tps['continuous'] / tps['static (padded)']:.2f}x")
    print(f"continuous / static (packed):         {tps['continuous'] / tps['static (packed)']:.2f}x")
    print(f"continuous chunked / static (padded): {tps['continuous chunked'] / tps['static (padded)']:.2f}x")
    steps = {name: row[2] for name, row in results.items() if row[2]}
    print(f"model steps, static / continuous:     {steps['static (packed)'] / steps['continuous']:.2f}x "
          f"(the throughput ratio if a step cost the same whatever its batch, as decode steps nearly do on a GPU)")
    if hf is not None:
        hf_tps = tps["HF generate (padded static)"]
        print(f"continuous / HF generate:             {tps['continuous'] / hf_tps:.2f}x")
        print(f"static (padded) / HF generate:        {tps['static (padded)'] / hf_tps:.2f}x")
        print(f"HF generate gave the engine's tokens for {agree}/{n} requests (same weights, greedy, fp32)")
    print(f"every engine run gave the same tokens: {same}")
    print("published: Orca 36.9x throughput at the same latency over FasterTransformer (GPT-3 175B, OSDI 2022)")
    return tps


if __name__ == "__main__":
    main()
