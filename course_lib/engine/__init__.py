"""A small serving engine that runs TinyLM for real, one iteration at a time.

request.py    a request's life: waiting, running, preempted, finished (or rejected)
scheduler.py  queues, batch slots, KV reservation and preemption, and the policies:
              static, prefill-first (Orca-style), decode-first, chunked prefill (Sarathi-style)
queues.py     queue policies, who goes first: fcfs, priority, EDF, SJF, ageing, fair share
engine.py     the step loop: schedule -> build the batch -> run the model -> sample -> finish
clock.py      how long a step took: measured, counted in steps, or a deterministic cost model
sample.py     the sampler: greedy, or seeded per request
metrics.py    TTFT, TPOT, end-to-end latency, throughput, occupancy, padding, reorganisation cost
priority.py   requests with tenants and deadlines, priority preemption, starvation traces (lesson 06)
disagg.py     prefill and decode on two engines with a KV hand-over between them (lesson 06)
slo.py        latency percentiles, time between tokens, goodput (lessons 06 and 07)

    from course_lib.engine import Engine, Request
    result = Engine(model, policy="chunked", max_running=8, max_tokens_per_step=64).run(requests)
    result.summary()
"""

from course_lib.engine.clock import CostModelClock, MeasuredClock, StepClock
from course_lib.engine.engine import Engine, clone_requests, serve
from course_lib.engine.metrics import EngineResult, StepRecord, max_gap, table, ttft_tpot
from course_lib.engine.queues import QUEUES, QueuePolicy, fcfs, highest_priority_first
from course_lib.engine.request import Rejection, Request, State, requests_from_trace
from course_lib.engine.sample import Sampler
from course_lib.engine.scheduler import (POLICIES, ChunkedPrefill, DecodeFirst, FunctionPolicy, Limits, Plan, Policy,
                                         PrefillFirst, Scheduler, StaticBatching, make_policy, prefill_share)

__all__ = [
    "Engine", "Request", "State", "Rejection", "requests_from_trace", "Scheduler", "Limits", "Plan", "Policy", "StaticBatching",
    "PrefillFirst", "DecodeFirst", "ChunkedPrefill", "FunctionPolicy", "POLICIES", "make_policy", "prefill_share",
    "fcfs", "highest_priority_first", "QueuePolicy", "QUEUES", "EngineResult", "StepRecord", "ttft_tpot", "max_gap", "table", "Sampler",
    "MeasuredClock", "StepClock", "CostModelClock", "clone_requests",
    "serve",
]
