"""Train TinyLM on the course's story grammar and write it as a Hugging Face model directory.

    python tools/train_tinylm.py                       # the shipped model (about 25 min on one CPU thread)
    python tools/train_tinylm.py --steps 20 --out /tmp/tiny --eval-stories 20   # a smoke run

Seeded and reproducible: the same arguments and thread count on the same
machine give the same weights, byte for byte. Stories are drawn from
course_lib.stories.TRAIN_SEEDS; evaluation uses HELDOUT_SEEDS, never trained on.

Writes into --out: the model directory (course_lib/pretrained.py), the loss
curve (loss_curve.csv and loss_curve.svg) and metrics.json (the numbers the
model card quotes).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from course_lib.model import TinyLMConfig, build_model            # noqa: E402
from course_lib.pretrained import TRAINED_DIR, save_pretrained      # noqa: E402
from course_lib.stories import TRAIN_SEEDS, story                   # noqa: E402
from course_lib.tokenizer import EOS, PAD, encode                   # noqa: E402


def story_ids(seed: int) -> list[int]:
    """<SOS> story bytes <EOS>: one training sequence."""
    return encode(story(seed).text, sos=True, eos=True)


def make_batch(seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs and targets: (B, T) each; target PAD is ignored by the loss."""
    seqs = [story_ids(s) for s in seeds]
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids[:, :-1], ids[:, 1:]                                   # (B, T-1), (B, T-1)


def loss_of(model, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy (nats) over real target tokens, and how many there were."""
    mask = (inputs != PAD).long()                                     # (B, T) 1 = real token
    logits = model(inputs, mask)                                      # (B, T, V)
    real = targets != PAD
    loss = F.cross_entropy(logits[real], targets[real])
    return loss, int(real.sum())


@torch.no_grad()
def bits_per_byte(model, seeds, batch_size: int = 32) -> float:
    """Bits per predicted token (each byte of the story and its final <EOS>), given <SOS>."""
    total_nats, total_tokens = 0.0, 0
    seeds = list(seeds)
    for i in range(0, len(seeds), batch_size):
        inputs, targets = make_batch(seeds[i: i + batch_size])
        loss, n = loss_of(model, inputs, targets)
        total_nats += loss.item() * n
        total_tokens += n
    return total_nats / total_tokens / math.log(2)


@torch.no_grad()
def continuation_metrics(model, n: int = 100, offset: int = 0) -> dict:
    """Greedy-continue `n` held-out openings: how many end on <EOS>, how many keep the hero."""
    from course_lib.generate import generate
    from course_lib.stories import heldout, hero_of
    from course_lib.tokenizer import decode

    tests = heldout(n, offset=offset)
    prompts = [encode(s.opening(1)) for s in tests]
    room = model.config.max_position_embeddings - max(len(p) for p in prompts)
    outs = generate(model, prompts, max_new_tokens=room)
    ended = sum(1 for o in outs if o and o[-1] == EOS)
    kept = sum(1 for s, o in zip(tests, outs) if hero_of(decode(o)) == s.hero)
    example = tests[0].opening(1) + decode(outs[0])
    return {"continuations": n, "eos_rate": ended / n, "hero_rate": kept / n, "example": example}


def write_card(out: Path, metrics: dict, command: str) -> None:
    """The model card (README.md): what the model is, how it was made, what it measured."""
    from course_lib.pretrained import WEIGHTS_FILE, sha256_of
    from course_lib.stories import count_distinct_stories

    size_kb = (out / WEIGHTS_FILE).stat().st_size / 1024
    rows = [("parameters", f"{metrics['parameters']:,}"),
            ("training steps x batch", f"{metrics['steps']} x {metrics['batch_size']} stories"),
            ("training time", f"{metrics['train_seconds'] / 60:.1f} min ({metrics['threads']} CPU thread(s), a busy 2-core machine)"),
            ("training bits per byte, first / last log", f"{metrics['train_bpb_first']:.3f} / {metrics['train_bpb_last']:.3f}"),
            ("held-out bits per byte", f"{metrics['heldout_bpb']:.4f}")]
    if "stage1" in metrics:
        first = metrics["stage1"]
        rows.insert(1, ("first stage (from random)", f"{first['steps']} x {first['batch_size']} stories, lr {first['lr']}, "
                        f"{first['train_seconds'] / 60:.1f} min, held-out {first['heldout_bpb']:.4f} bits per byte, "
                        f"greedy <EOS> {first['eos_rate']:.0%}"))
    if "eos_rate" in metrics:
        rows += [("greedy continuations ending on <EOS>", f"{metrics['eos_rate']:.0%} of {metrics['continuations']}"),
                 ("greedy continuations keeping the hero", f"{metrics['hero_rate']:.0%} of {metrics['continuations']}")]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    example = metrics.get("example", "")
    (out / "README.md").write_text(f"""---
license: mit
library_name: transformers
pipeline_tag: text-generation
---

# TinyLM-stories

A {metrics['parameters']:,}-parameter Llama-style model (RMSNorm, RoPE, grouped-query attention, SwiGLU) with a
byte-level tokenizer (ids 0-255 are bytes; `<pad>` 256, `<SOS>` 257, `<EOS>` 258), trained for the course
*How LLM inference servers manage memory and batch work*. It writes short stories and ends each one with
"The end." and `<EOS>`.

## Corpus

Stories from the seeded grammar in `course_lib/stories.py` (pure Python, no data files): a hero with a name and
an animal, a home, then up to 11 events drawn without repeats (finding an object, meeting a friend, using the
object in the way that fits it, the friend coming back, ...), going home, "The end.". Stories run from 2 to
15 sentences, most of them short. The grammar can write {count_distinct_stories():,} distinct
stories (counted exactly by `count_distinct_stories()`), so the model cannot learn them by heart. Training draws from seeds 0-9,999,999; evaluation from
1,000,000,000 on.

## Training

`{command}`, AdamW (lr {metrics['lr']}, cosine decay), seed {metrics['seed']}. The loss curve is in
`loss_curve.csv` and `loss_curve.svg`; the numbers below are in `metrics.json`.

| measure | value |
| --- | --- |
{table}

Bits per byte: cross-entropy, in bits, of every byte of a story and its final `<EOS>`, given `<SOS>`;
{metrics['heldout_stories']} held-out stories. Uniform guessing would score 8.

Greedy, from "{first_sentence(example)}":

> {example}

## Files

`model.safetensors` ({size_kb:.0f} KiB, float32), sha256 `{sha256_of(out / WEIGHTS_FILE)}`.

    from transformers import AutoTokenizer, LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained("course_lib/weights/tinylm-stories")
    tokenizer = AutoTokenizer.from_pretrained("course_lib/weights/tinylm-stories")

Licence: MIT, like the course.
""")


def first_sentence(example: str) -> str:
    return example.split(". ")[0] + "."


def write_svg(path: Path, steps: list[int], losses: list[float]) -> None:
    """A small line chart of bits per byte against step, as a standalone SVG."""
    W, H, pad = 480, 240, 40
    lo, hi = 0.0, max(losses)
    def x(s): return pad + (W - 2 * pad) * s / max(steps[-1], 1)
    def y(v): return H - pad - (H - 2 * pad) * (v - lo) / (hi - lo or 1)
    points = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in zip(steps, losses))
    ticks = "".join(f'<text x="{pad - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="10">{v:.1f}</text>'
                    for v in (lo, hi / 2, hi))
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">'
        f'<rect width="{W}" height="{H}" fill="white"/>'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{points}"/>'
        f'<line x1="{pad}" y1="{H - pad}" x2="{W - pad}" y2="{H - pad}" stroke="black"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{H - pad}" stroke="black"/>{ticks}'
        f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle" font-size="11">step (of {steps[-1]})</text>'
        f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle" font-size="11">'
        f'training bits per byte</text></svg>\n')


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=TRAINED_DIR, help="model directory to write")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", type=Path, default=None,
                    help="continue from this model directory instead of a random initialisation")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-stories", type=int, default=200, help="held-out stories for the final bits per byte")
    ap.add_argument("--no-card-eval", action="store_true", help="skip the greedy-continuation metrics (smoke runs)")
    args = ap.parse_args(argv)
    for name in ("steps", "batch_size", "threads", "log_every", "eval_stories"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: must be >= 1")

    from tqdm.auto import tqdm

    from course_lib.stories import HELDOUT_SEEDS

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    cfg = TinyLMConfig()
    if args.init is not None:
        from course_lib.pretrained import load_pretrained
        model = load_pretrained(args.init).train()
    else:
        model = build_model(cfg, seed=args.seed, weights="random").train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))

    def lr_at(step):                                       # linear warm-up, then cosine to 5 %
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        t = (step - args.warmup) / max(args.steps - args.warmup, 1)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))

    log_steps, log_bpb, window = [], [], []
    start = time.perf_counter()
    bar = tqdm(range(args.steps), desc="training TinyLM", unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        seeds = [rng.randrange(TRAIN_SEEDS.start, TRAIN_SEEDS.stop) for _ in range(args.batch_size)]
        inputs, targets = make_batch(seeds)
        loss, _ = loss_of(model, inputs, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window.append(loss.item() / math.log(2))
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            log_steps.append(step + 1)
            log_bpb.append(sum(window) / len(window))
            window = []
            bar.set_postfix(bpb=f"{log_bpb[-1]:.3f}")
    train_seconds = time.perf_counter() - start

    model.eval()
    heldout = range(HELDOUT_SEEDS.start, HELDOUT_SEEDS.start + args.eval_stories)
    metrics = {
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "threads": args.threads, "train_seconds": round(train_seconds, 1),
        "train_bpb_first": round(log_bpb[0], 4), "train_bpb_last": round(log_bpb[-1], 4),
        "heldout_stories": args.eval_stories, "heldout_bpb": round(bits_per_byte(model, heldout), 4),
        "parameters": model.num_parameters(),
    }
    out = save_pretrained(model, args.out)
    with open(out / "loss_curve.csv", "w") as f:
        f.write("step,train_bits_per_byte\n")
        f.writelines(f"{s},{v:.5f}\n" for s, v in zip(log_steps, log_bpb))
    write_svg(out / "loss_curve.svg", log_steps, log_bpb)
    if not args.no_card_eval:
        metrics.update(continuation_metrics(model, n=100))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_card(out, metrics, "python tools/train_tinylm.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()
