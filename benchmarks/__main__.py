"""Run the course's benchmarks side by side: one command, one table.

    python -m benchmarks                      # every benchmark, full sizes (make bench)
    python -m benchmarks --quick              # reduced sizes, a few minutes on 2 cores (make bench-quick)
    python -m benchmarks decode_attention memory --quick
    python -m benchmarks --list

Writes into --out (default results/, which git ignores):

    benchmarks.md     the Markdown table: targets, every benchmark's figures, every ratio
    benchmarks.html   the charts (plotly.js embedded from the installed package: offline)
    benchmarks.json   every number, with the machine, dtype, versions and sizes

and prints the Markdown table. Progress goes to stderr (a tqdm bar).
Each benchmark records where it ran beside its figures; the targets of
issue 8 are reported (met or missed, and why), never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks import common  # noqa: E402

# run order: cheap and memory-only first, the model-serving runs last
BENCHMARKS = ("memory", "sharing", "decode_attention", "prefill_attention", "engine", "peer", "scaling")


def load(name: str):
    import importlib
    return importlib.import_module(f"benchmarks.{name}")


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", metavar="name", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    ap.add_argument("--quick", action="store_true", help="reduced sizes (a smoke run: a few minutes on 2 CPU cores)")
    ap.add_argument("--out", default="results", help="folder for benchmarks.md/.html/.json (default: results)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's own choice, e.g. from OMP_NUM_THREADS)")
    ap.add_argument("--engine-threads", type=int, default=1,
                    help="torch threads while TinyLM serves (engine, scaling); 0: the process setting (default 1: "
                         "the tiny model's matmuls run fastest and steadiest on one thread)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"name: must be among {', '.join(BENCHMARKS)}; got {', '.join(unknown)}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads: must be an integer >= 1; got {args.threads}")
    if args.engine_threads < 0:
        ap.error(f"--engine-threads: must be an integer >= 0; got {args.engine_threads}")
    return args


def main(argv=None) -> list[common.BenchResult]:
    args = parse(argv)
    if args.list:
        for name in BENCHMARKS:
            print(f"{name:18s} {load(name).TITLE}")
        return []
    if args.threads:
        torch.set_num_threads(args.threads)
    from benchmarks import engine
    engine.ENGINE_THREADS = args.engine_threads or None
    names = args.names or list(BENCHMARKS)
    modules = [load(n) for n in names]
    command = "python -m benchmarks" + "".join(f" {n}" for n in args.names) + (" --quick" if args.quick else "")
    os.makedirs(args.out, exist_ok=True)

    from tqdm.auto import tqdm
    total = sum(m.units(args.quick) for m in modules)
    bar = common.NullProgress() if args.no_progress else tqdm(total=total, desc="benchmarks", unit="step",
                                                              file=sys.stderr, dynamic_ncols=True)
    results, t0 = [], time.perf_counter()
    try:
        for m in modules:
            bar.set_postfix_str(m.NAME)
            results.append(m.run(quick=args.quick, progress=bar))
    finally:
        if hasattr(bar, "close"):
            bar.close()
    wall = time.perf_counter() - t0

    text = common.render_markdown(results, command, args.quick) + f"\n*Total: {wall:.1f} s.*\n"
    md_path = os.path.join(args.out, "benchmarks.md")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(text)
    common.write_html(results, os.path.join(args.out, "benchmarks.html"), text)
    common.write_json(results, os.path.join(args.out, "benchmarks.json"),
                      {"command": command, "quick": args.quick, "seconds": wall})
    print(text)
    print(f"wrote {md_path}, benchmarks.html and benchmarks.json in {args.out}/ ({wall:.1f} s)", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
