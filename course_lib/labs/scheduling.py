"""Lesson 06's traces and reports: who starves, who misses a deadline.

    two_class_trace   the starvation trace: a few low-priority requests, then a steady
                      stream of high-priority ones
    mixed_trace       a ShareGPT-like trace split into interactive (with deadlines) and batch
    deadline_trace    interactive requests with first-token deadlines among batch requests
    contention_trace  long prompts arriving while many streams decode (prefill-first vs decode-first)
    wait_time         a request's queueing delay: arrival to first admission
    class_report      per class (priority or tenant): waits, TTFT, preemptions, deadline misses
    starvation        the longest wait of a class, never-admitted requests counted to the end

Times are in the clock's unit (steps with a step clock). The requests are PriorityRequests
(engine/priority.py), so any engine can serve them and any queue policy can read them.
"""

from __future__ import annotations

from typing import Any, Sequence

from course_lib.engine.metrics import percentile
from course_lib.engine.priority import PriorityRequest, tag
from course_lib.engine.request import Request, State
from course_lib.validate import check_choice, check_float, check_has, check_int, check_sequence, check_type

MAX_TRACE = 100_000      # the most requests of one class a hand-made trace holds


def _prompt(rid: int, n: int, seed: int) -> list[int]:
    return [32 + (seed * 7919 + rid * 131 + j * 17) % 95 for j in range(n)]


def two_class_trace(n_high: int = 16, n_low: int = 4, high_every: float = 2.0, low_at: float = 0.0,
                    high_prompt: int = 6, high_output: int = 8, low_prompt: int = 6, low_output: int = 8,
                    high_priority: int = 1, first_high: float = 0.0, seed: int = 0) -> list[PriorityRequest]:
    """The starvation trace: `n_low` low-priority requests arrive at `low_at`, then a
    steady stream of `n_high` high-priority ones, one every `high_every` clock units.
    Times are in the clock's unit (steps with a step clock)."""
    for name, value, lo in (("n_high", n_high, 0), ("n_low", n_low, 0), ("high_prompt", high_prompt, 1),
                            ("high_output", high_output, 1), ("low_prompt", low_prompt, 1), ("low_output", low_output, 1)):
        check_int(name, value, lo, MAX_TRACE)
    check_int("high_priority", high_priority)
    check_int("seed", seed, 0)
    for name, value in (("high_every", high_every), ("low_at", low_at), ("first_high", first_high)):
        check_float(name, value, 0, note="clock units")
    reqs = []
    for i in range(n_low):
        reqs.append(PriorityRequest(_prompt(i, low_prompt, seed), low_output, arrival=float(low_at), rid=i,
                                    priority=0, eos_id=None, tenant="batch"))
    for j in range(n_high):
        rid = n_low + j
        reqs.append(PriorityRequest(_prompt(rid, high_prompt, seed), high_output, arrival=first_high + j * high_every,
                                    rid=rid, priority=high_priority, eos_id=None, tenant="interactive"))
    return reqs


def mixed_trace(n: int = 24, rate: float = 0.5, interactive_share: float = 0.5, deadline: float = 12.0,
                seed: int = 0, scale: float = 1 / 16, tenants: Sequence[str] = ("interactive", "batch"),
                time_scale: float = 1.0) -> list[PriorityRequest]:
    """A ShareGPT-like trace (course_lib.workloads) split into two classes at random (seeded):

    interactive  priority 1, a first-token deadline `deadline` after arrival, tenant tenants[0]
    batch        priority 0, no deadline, tenant tenants[1]

    rate: arrivals per clock unit (per step with a step clock); time_scale multiplies arrivals.
    """
    import numpy as np

    from course_lib.engine.request import requests_from_trace
    from course_lib.workloads import sharegpt_like

    check_float("interactive_share", interactive_share, 0, 1)
    check_float("deadline", deadline, 0, lo_open=True)
    tenants = check_sequence("tenants", tenants, 2, 2, what="two names (interactive, batch)")
    for i, t in enumerate(tenants):
        check_type(f"tenants[{i}]", t, str, "a tenant name (str)")
    base = requests_from_trace(sharegpt_like(n=n, rate=rate, seed=seed, scale=scale), time_scale=time_scale)
    rng = np.random.default_rng(seed + 1)
    hot = rng.random(len(base)) < interactive_share
    out = []
    for r, h in zip(base, hot):
        out.append(tag(r, priority=1 if h else 0, tenant=tenants[0] if h else tenants[1],
                       deadline=r.arrival + deadline if h else None))
    return out


def deadline_trace(seed: int = 0, n_interactive: int = 24, every: int = 4, deadline: float = 12.0,
                   n_batch: int = 3, batch_at: float = 6.0, batch_output: int = 10,
                   interactive_output: int = 6) -> list[PriorityRequest]:
    """Interactive requests (priority 1, a first-token deadline `deadline` steps after
    arrival, about `interactive_output` tokens) arrive about every `every` steps (jittered),
    while `n_batch` batch requests (priority 0, no deadline, `batch_output` tokens) arrive
    around `batch_at`. Times in steps (a step clock). Seeded: the same seed, the same trace."""
    import numpy as np

    for name, value, lo in (("seed", seed, 0), ("n_interactive", n_interactive, 0), ("every", every, 1),
                            ("n_batch", n_batch, 0), ("batch_output", batch_output, 1),
                            ("interactive_output", interactive_output, 2)):
        check_int(name, value, lo, None if name == "seed" else MAX_TRACE)
    check_float("deadline", deadline, 0, lo_open=True)
    check_float("batch_at", batch_at, 0)
    rng = np.random.default_rng(seed)
    items = [(float(batch_at + 4 * i + int(rng.integers(0, 3))), 0) for i in range(n_batch)]
    t = 0.0
    for _ in range(n_interactive):
        items.append((t, 1))
        t += float(rng.integers(max(1, every - 1), every + 2))
    items.sort(key=lambda x: (x[0], -x[1]))
    reqs = []
    for rid, (t, cls) in enumerate(items):
        prompt = _prompt(rid, int(rng.integers(4, 9)), seed)
        if cls == 0:
            reqs.append(PriorityRequest(prompt, batch_output, arrival=t, rid=rid, priority=0, eos_id=None,
                                        tenant="batch"))
        else:
            out = int(rng.integers(interactive_output - 1, interactive_output + 2))
            reqs.append(PriorityRequest(prompt, out, arrival=t, rid=rid, priority=1, eos_id=None,
                                        tenant="interactive", deadline=t + deadline))
    return reqs


def contention_trace(seed: int = 0, n_streams: int = 14, n_docs: int = 4, stream_prompt: tuple[int, int] = (8, 24),
                     stream_output: int = 64, doc_prompt: int = 116, doc_output: int = 6, streams_within: float = 0.15,
                     first_doc: float = 0.3, doc_every: float = 0.25) -> list[PriorityRequest]:
    """Long prompts arriving while many streams decode: where prefill-first and decode-first differ.

    `n_streams` chat requests (tenant 'chat': prompts of `stream_prompt` tokens, inclusive, about
    `stream_output` +- 8 tokens out) arrive within the first `streams_within` clock units; then
    `n_docs` documents (tenant 'document': prompts of `doc_prompt` +- 8 tokens, `doc_output` out)
    arrive at `first_doc`, `first_doc + doc_every`, ... while the streams still run. With a token
    budget a little above `doc_prompt`, a step cannot hold a document's whole prompt AND every
    stream's next token: prefill-first skips some streams, decode-first holds the document back
    (lesson 06 serves it with 16 slots and 128 tokens per step).
    Times in the clock's unit (seconds with the cost-model clock). Seeded: same seed, same trace."""
    import numpy as np

    for name, value, lo in (("seed", seed, 0), ("n_streams", n_streams, 0), ("n_docs", n_docs, 0),
                            ("stream_output", stream_output, 9), ("doc_prompt", doc_prompt, 9),
                            ("doc_output", doc_output, 1)):
        check_int(name, value, lo, None if name == "seed" else MAX_TRACE)
    lo_p, hi_p = check_sequence("stream_prompt", stream_prompt, 2, 2, what="(shortest, longest) prompt tokens")
    check_int("stream_prompt[0]", lo_p, 1, MAX_TRACE)
    check_int("stream_prompt[1]", hi_p, lo_p, MAX_TRACE)
    for name, value in (("streams_within", streams_within), ("first_doc", first_doc), ("doc_every", doc_every)):
        check_float(name, value, 0, note="clock units")
    rng = np.random.default_rng(seed)
    items = [(float(rng.uniform(0, streams_within)), "chat", int(rng.integers(lo_p, hi_p + 1)),
              int(rng.integers(stream_output - 8, stream_output + 9))) for _ in range(n_streams)]
    items += [(first_doc + k * doc_every, "document", int(rng.integers(doc_prompt - 8, doc_prompt + 9)), doc_output)
              for k in range(n_docs)]
    items.sort(key=lambda x: (x[0], x[1]))
    return [PriorityRequest(_prompt(rid, n, seed), out, arrival=t, rid=rid, eos_id=None, tenant=kind)
            for rid, (t, kind, n, out) in enumerate(items)]


def wait_time(req: Request) -> float | None:
    """Queueing delay: arrival to first admission (None if never admitted)."""
    return None if req.admitted_time is None else req.admitted_time - req.arrival


def class_report(result, by: str = "priority") -> list[dict]:
    """Per class of requests (grouped by `by`: 'priority' or 'tenant'): how many,
    how many finished, mean/p90/max of queueing delay and TTFT, preemptions, deadline misses."""
    check_has("result", result, ("requests", "steps"), "an EngineResult")
    check_choice("by", by, ("priority", "tenant"))
    groups: dict[Any, list[Request]] = {}
    for r in result.requests:
        groups.setdefault(getattr(r, by, None), []).append(r)
    rows = []
    for cls in sorted(groups, key=lambda c: (-c) if by == "priority" else str(c)):
        reqs = groups[cls]
        waits = [w for w in map(wait_time, reqs) if w is not None]
        ttfts = [r.first_token_time - r.arrival for r in reqs if r.first_token_time is not None]
        deadlines = [r for r in reqs if getattr(r, "deadline", None) is not None]
        missed = sum(1 for r in deadlines if r.first_token_time is None or r.first_token_time > r.deadline)
        rows.append({by: cls, "requests": len(reqs), "finished": sum(r.state is State.FINISHED for r in reqs),
                     "wait_mean": sum(waits) / len(waits) if waits else float("nan"),
                     "wait_max": max(waits, default=float("nan")),
                     "ttft_mean": sum(ttfts) / len(ttfts) if ttfts else float("nan"),
                     "ttft_p90": percentile(ttfts, 90), "ttft_max": max(ttfts, default=float("nan")),
                     "preempted": sum(r.num_preemptions for r in reqs),
                     "deadline_missed": f"{missed}/{len(deadlines)}" if deadlines else "-"})
    return rows


def starvation(result, priority: int | None = None) -> float:
    """The longest queueing delay (arrival to first admission) among requests of `priority`
    (None: all); never-admitted requests count up to the end of the run."""
    check_has("result", result, ("requests", "steps"), "an EngineResult")
    check_int("priority", priority, none_ok=True)
    end = result.steps[-1].end if result.steps else 0.0
    waits = []
    for r in result.requests:
        if priority is not None and r.priority != priority:
            continue
        waits.append(wait_time(r) if r.admitted_time is not None else end - r.arrival)
    return max(waits, default=0.0)


__all__ = ["two_class_trace", "mixed_trace", "deadline_trace", "contention_trace", "wait_time", "class_report",
           "starvation"]
