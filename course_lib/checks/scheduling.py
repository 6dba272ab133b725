"""Exercise 06 (scheduling policies and disaggregation): the tasks, their public cases, the check cells'
functions, and the probes and judges of the two tasks that run the engine.

A queue policy is judged by running it: the learner's kernel runs the real engine
with the policy (course_lib.engine.priority.PriorityEngine, a step clock) and
prints every key the policy returned, in order: plain data. The judge replays
the same trace through the engine in the grader's process, answering each of the
engine's questions with the logged key; if the engine asks something the log does
not answer (the kernel's engine was changed), the policy fails. The goals are then
measured on the grader's run.
"""

from __future__ import annotations

from functools import lru_cache

from course_lib.checks.core import Case, Task, dumps, encode, practice, raised

LESSON = "06_scheduling_and_disaggregation"
STARVATION = dict(n_high=30, n_low=3, high_every=2.5, low_at=4, high_output=10, low_output=10)
ENGINE = dict(policy="decode-first", max_running=4, max_tokens_per_step=32, clock="steps")
AGEING_RATE = 0.1
DEADLINE_ENGINE = dict(policy="chunked", max_running=2, max_tokens_per_step=32, clock="steps", preempt=True)
BATCH_WAIT = 25.0          # steps: a batch request's first token must come within this long
PUBLIC_SEEDS = (0, 3, 5, 7)
GOALS_MET = "all goals met"


@lru_cache(maxsize=1)
def _model():
    """The lessons' TinyLM. Schedules do not depend on its numbers: every request runs to its
    max_new_tokens, so the verdicts are exact."""
    from course_lib.model import build_model
    return build_model()


# ---- running a policy, and replaying it --------------------------------------------------------------------
def _plain_key(data):
    if isinstance(data, list):
        return tuple(_plain_key(v) for v in data)
    if data is None or type(data) in (bool, int, float):
        return data
    raise TypeError(f"a queue key must be a number or a tuple of numbers; got {dumps(data)[:60]}")


def recording(fn):
    """(key(req, now) that calls fn and logs [rid, now, key], the log)."""
    from course_lib.engine.queues import as_key
    key, log = as_key(fn), []

    def logged(req, now):
        data = encode(key(req, now))
        log.append([req.rid, now, data])
        return _plain_key(data)
    return logged, log


class Mismatch(Exception):
    pass


def replaying(log):
    """A key that answers the engine's questions from a log, in order; Mismatch on anything else."""
    it = iter(log)

    def key(req, now):
        entry = next(it, None)
        if not (isinstance(entry, list) and len(entry) == 3 and entry[0] == req.rid and entry[1] == now):
            raise Mismatch(f"asked for request {req.rid} at {now:g}, the log says {dumps(entry)[:60]}")
        return _plain_key(entry[2])
    return key


def _run(kind: str, key, seed: int):
    from course_lib.engine.priority import PriorityEngine, clone_tagged
    from course_lib.labs.scheduling import deadline_trace, two_class_trace
    if kind == "ageing":
        return PriorityEngine(_model(), queue=key, **ENGINE).run(clone_tagged(two_class_trace(**STARVATION)))
    return PriorityEngine(_model(), queue=key, **DEADLINE_ENGINE).run(clone_tagged(deadline_trace(seed)))


def probe_policy(kind: str, fn, seed: int):
    policy = (lambda req, now: -fn(req.priority, req.arrival, now, AGEING_RATE)) if kind == "ageing" else fn
    logged, log = recording(policy)
    try:
        _run(kind, logged, seed)
    except Exception as exc:
        return raised(exc)
    return {"keys": log}


def probe_ageing_engine(fn, args_data, kwargs_data):
    """aged_priority as the engine's queue order on the starvation trace: the keys it gave."""
    return probe_policy("ageing", fn, 0)


def probe_deadline(fn, args_data, kwargs_data):
    """deadline_policy as the engine's queue order on deadline_trace(seed): the keys it gave."""
    return probe_policy("deadline", fn, args_data[0])


def replay(kind: str, got, seed: int):
    """(the grader's run with the logged keys, None) or (None, why the log is not an answer)."""
    if not (isinstance(got, dict) and isinstance(got.get("keys"), list)):
        return None, dumps(got)
    try:
        res = _run(kind, replaying(got["keys"]), seed)
    except Mismatch as exc:
        return None, f"the keys do not answer the engine's questions: {exc} (was the engine changed?)"
    except Exception as exc:
        return None, f"the keys could not order the queue: {type(exc).__name__}: {exc}"
    return res, None


def judge_ageing_engine(got, want, args) -> str:
    """The longest queueing delay of a low-priority request in the grader's replay (steps)."""
    from course_lib.labs.scheduling import starvation
    res, why = replay("ageing", got, 0)
    text = why if res is None else dumps(float(starvation(res, priority=0)))
    return text


def goal_report(res) -> str:
    """'all goals met', or what an engine run on a deadline trace missed."""
    from course_lib.engine.request import State
    inter = [r for r in res.requests if r.priority == 1]
    batch = [r for r in res.requests if r.priority == 0]
    missed = [r.rid for r in inter if r.first_token_time is None or r.first_token_time > r.deadline + 1e-9]
    slow = [(r.rid, r.first_token_time - r.arrival if r.first_token_time is not None else float("inf"))
            for r in batch if r.first_token_time is None or r.first_token_time - r.arrival > BATCH_WAIT + 1e-9]
    unfinished = [r.rid for r in res.requests if r.state is not State.FINISHED]
    problems = []
    if missed:
        problems.append(f"{len(missed)} interactive deadline(s) missed (requests {missed[:4]})")
    if slow:
        worst = max(slow, key=lambda x: x[1])
        problems.append(f"{len(slow)} batch request(s) waited over {BATCH_WAIT:g} steps "
                        f"(request {worst[0]}: {worst[1]:g})")
    if unfinished:
        problems.append(f"requests {unfinished[:4]} did not finish")
    return "; ".join(problems) if problems else GOALS_MET


def judge_deadline(got, want, args) -> str:
    res, why = replay("deadline", got, args[0])
    return why if res is None else goal_report(res)


def try_policy(key, seed: int) -> str:
    """What `key` misses on deadline_trace(seed), run here (the exercise's ungraded cell uses it)."""
    return goal_report(_run("deadline", key, seed))


# ---- the tasks -------------------------------------------------------------------------------------------------
TINY = {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "torch_dtype": "float32"}
MHA16 = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "torch_dtype": "float16"}
HEADDIM = {"num_hidden_layers": 3, "hidden_size": 96, "num_attention_heads": 6, "num_key_value_heads": 3,
           "head_dim": 8, "torch_dtype": "bfloat16"}
OPT13B = {"num_hidden_layers": 40, "hidden_size": 5120, "num_attention_heads": 40, "torch_dtype": "float16"}

TASKS = {t.name: t for t in [
    Task("slo_met", [Case(name, (reqs, ttft, tbt)) for name, reqs, ttft, tbt in [
        ("all fast", [(0.0, [0.1, 0.15, 0.2]), (1.0, [1.2, 1.25])], 0.5, 0.1),
        ("one slow first token", [(0.0, [0.9, 0.95]), (0.0, [0.2, 0.25])], 0.5, 0.1),
        ("a stall mid-stream fails even if the mean gap is fine", [(0.0, [0.1, 0.12, 0.14, 0.5, 0.52, 0.54])],
         0.5, 0.1),
        ("exactly on both targets counts as met", [(1.0, [1.5, 1.625, 1.75])], 0.5, 0.125),
        ("one token: only TTFT matters", [(0.0, [0.3])], 0.5, 0.1),
        ("no token at all: missed", [(0.0, [])], 0.5, 0.1),
        ("nobody", [], 0.5, 0.1),
        ("steps as the unit", [(0, [3, 4, 5]), (2, [9, 10]), (4, [6, 8, 9])], 5, 1),
    ]]),
    Task("aged_priority", [Case(name, args) for name, args in [
        ("just arrived", (1, 5.0, 5.0, 0.1)),
        ("waited 10 steps at rate 0.1", (1, 5.0, 15.0, 0.1)),
        ("rate 0: strict priority", (2, 0.0, 100.0, 0.0)),
        ("low priority that waited long", (0, 0.0, 40.0, 0.1)),
        ("fractional times", (3, 1.5, 2.25, 2.0)),
        ("a big rate", (0, 10.0, 11.0, 5.0)),
    ]] + [Case("the starvation trace, as the engine's queue order (longest low-priority wait, steps)", (),
               probe="course_lib.checks.scheduling:probe_ageing_engine",
               judge="course_lib.checks.scheduling:judge_ageing_engine")], judge="close"),
    Task("deadline_policy", [Case(f"deadline trace, seed {s}", (s,)) for s in PUBLIC_SEEDS],
         probe="course_lib.checks.scheduling:probe_deadline", judge="course_lib.checks.scheduling:judge_deadline",
         goal=GOALS_MET),
    Task("handover_bytes", [Case(name, (dict(cfg), n, bs)) for name, cfg, n, bs in [
        ("TinyLM, 10-token prompt, blocks of 4", TINY, 10, 4),
        ("a prompt that fills its blocks exactly", TINY, 32, 16),
        ("one token more", TINY, 33, 16),
        ("a one-token prompt", TINY, 1, 16),
        ("plain multi-head attention in fp16", MHA16, 20, 8),
        ("head_dim given, bf16", HEADDIM, 7, 4),
        ("tokens, not blocks (block_size None)", TINY, 10, None),
        ("OPT-13B, ShareGPT's mean prompt (161), blocks of 16", OPT13B, 161, 16),
    ]]),
]}


def check_slo_met(fn) -> None:
    """fn(requests, ttft_target, tbt_target) -> how many requests met both targets.
    requests: [(arrival, [time of each token])]."""
    practice(LESSON, TASKS["slo_met"], fn)


def check_aged_priority(fn) -> None:
    """fn(priority, arrival, now, rate) -> the effective priority (larger runs first)."""
    practice(LESSON, TASKS["aged_priority"], fn)


def check_deadline_policy(fn) -> None:
    """fn(req, now) (or fn(req)) -> a sort key, smaller first: every interactive request's first token by its
    deadline, every batch request's first token within BATCH_WAIT steps."""
    practice(LESSON, TASKS["deadline_policy"], fn)


def check_handover_bytes(fn) -> None:
    """fn(config, prompt_len, block_size) -> bytes of K/V sent to the decode engine."""
    practice(LESSON, TASKS["handover_bytes"], fn)
