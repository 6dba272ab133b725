"""A request's life inside the engine, and everything measured about it.

    WAITING --admit--> RUNNING --last token--> FINISHED
       ^                  |
       +---- preempt -----+        (KV freed: recompute later; or swapped to CPU)
    any state --can never fit--> REJECTED (with a reason; nothing is ever dropped silently)

A request knows its prompt, its output so far and how many of its tokens
already have keys/values in the KV store (`num_computed`). Everything the
scheduler needs follows from those three numbers:

    all_tokens  = prompt + output
    remaining   = len(all_tokens) - num_computed   tokens still to run through the model
                                                  before the next token can be sampled
    prefilling  while remaining > 1, or before the first token exists
    decoding    remaining == 1 and an output token exists (feed it, sample the next)

After a recompute preemption `num_computed` drops to 0 (or to the store's
prefix-cache hit) and the request "prefills" prompt + output again; after a
swap it keeps its KV in CPU memory and resumes decoding where it stopped.

Times are on the engine's clock (seconds, or steps with a step clock) and
every event also records its step index, so both views are available.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Sequence

from course_lib.tokenizer import EOS
from course_lib.validate import check_float, check_int, check_tokens


MAX_WIDTH = 64      # the most samples or beams one request may ask for


class State(str, Enum):
    """WAITING covers a preempted request too (see Request.is_preempted)."""

    WAITING = "waiting"      # arrived (or preempted), holds no KV on the device
    RUNNING = "running"      # admitted: holds a batch slot and KV memory
    FINISHED = "finished"    # stopped on <EOS> or max_new_tokens
    REJECTED = "rejected"    # can never run (too long for the model or the KV store)


class Rejection(str, Enum):
    """Why a request was REJECTED (Request.rejection); `finish_reason` says it in words.
    An engine rejects a request on its own: every other request is still served."""

    INVALID = "invalid"          # a field is not a valid value: a token outside the vocabulary, a NaN arrival, ...
    DUPLICATE = "duplicate id"   # its rid is already used by another request of the same engine
    TOO_LONG = "too long"        # prompt + max_new_tokens exceed the model's context or what the KV store can hold
    NO_MEMORY = "no memory"      # the KV store could not hold it even with nothing else running


@dataclass(eq=False)
class Request:
    """One generation request.

    prompt:          token ids (at least one)
    max_new_tokens:  stop after this many new tokens (the trace's output length)
    arrival:         when it reaches the server, on the engine's clock
    priority:        larger = more important (the default FCFS order ignores it;
                     a priority order key can use it)
    eos_id:          stop when this token is generated (None: only max_new_tokens)
    temperature:     0 = greedy; > 0 samples with this request's own seeded generator
    seed:            seed of that generator (sampling is reproducible per request,
                     whatever else shares its batches)
    n:               parallel sampling: n continuations of the prompt. The prompt is
                     prefilled once; at its first token the request forks n - 1 more
                     samples that share its KV blocks (copy-on-write). Sample i draws
                     with seed + i, so it equals Request(seed=seed + i) served alone.
    beam_width:      beam search with this many beams (1 = off; needs temperature 0
                     and a store that can fork). The request's output is the best
                     hypothesis; `beams` lists them all with their log-probabilities.
    """

    prompt: Sequence[int]
    max_new_tokens: int
    arrival: float = 0.0
    priority: int = 0
    rid: int | None = None
    eos_id: int | None = EOS
    temperature: float = 0.0
    seed: int = 0
    n: int = 1
    beam_width: int = 1

    # ---- state, owned by the scheduler and engine ---------------------------
    state: State = State.WAITING
    output: list[int] = field(default_factory=list)
    num_computed: int = 0          # tokens whose K/V sit in the store
    swapped: bool = False          # preempted with its KV moved to CPU memory
    slot: int | None = None        # batch slot while admitted (for the timeline)
    finish_reason: str | None = None   # 'eos', 'length', or why it was rejected
    rejection: Rejection | None = None  # the kind of rejection (None unless REJECTED)

    # ---- what happened when (clock time and step index) ---------------------
    admitted_time: float | None = None
    first_token_time: float | None = None
    first_token_step: int | None = None
    finish_time: float | None = None
    finish_step: int | None = None
    token_times: list[float] = field(default_factory=list)   # clock time of every output token
    token_steps: list[int] = field(default_factory=list)     # step index of every output token
    num_preemptions: int = 0
    cached_prompt_tokens: int = 0  # prefix-cache hits at (re)admission, summed

    # ---- many continuations of one prompt (engine/fork.py) --------------------
    parent_rid: int | None = None  # a sample forked from request parent_rid (None: submitted)
    sample_index: int = 0          # which of its parent's n samples (0: the request itself)
    samples: list = field(default_factory=list)   # the parent: its other samples (Requests), once forked
    beams: list = field(default_factory=list)     # beam search: (tokens, log-probability) best first
    beam_restarts: int = 0         # beam search: times a preemption made it start over
    search: object = None          # a live beam's BeamSearch (None for every other request)

    def __post_init__(self):
        self.validate()                    # a bad field fails here, naming it (an engine checks again on submit)

    def validate(self, vocab_size: int | None = None) -> None:
        """Raise a one-line ValueError/TypeError naming the first field that is not valid:
        token ids are integers (in [0, vocab_size) when it is given), max_new_tokens an
        integer >= 1, arrival and temperature finite numbers >= 0, rid an integer or None, ...
        Normalises the prompt to a list of ints. Subclasses add their own fields."""
        self.prompt = check_tokens("prompt", self.prompt, vocab_size)
        check_int("max_new_tokens", self.max_new_tokens, 1)
        check_float("arrival", self.arrival, 0)
        check_int("priority", self.priority)
        check_int("rid", self.rid, none_ok=True, note="the request's id")
        check_int("eos_id", self.eos_id, 0, None if vocab_size is None else vocab_size - 1, none_ok=True)
        check_float("temperature", self.temperature, 0, note="0 = greedy")
        check_int("seed", self.seed, 0, 2**63 - 1 - MAX_WIDTH)
        check_int("n", self.n, 1, MAX_WIDTH, note="parallel samples of the prompt")
        check_int("beam_width", self.beam_width, 1, MAX_WIDTH, note="1 = no beam search")
        if self.beam_width > 1 and self.n > 1:
            raise ValueError(f"beam_width: beam search returns its best beams; ask for n=1 with it (got n={self.n})")
        if self.beam_width > 1 and self.temperature != 0:
            raise ValueError(f"temperature: beam search is deterministic; it needs temperature=0 "
                             f"(got {self.temperature})")

    # ---- derived quantities -------------------------------------------------
    @property
    def all_tokens(self) -> list[int]:
        return self.prompt + self.output

    def next_tokens(self, n: int) -> list[int]:
        """The n tokens a step runs next: all_tokens[num_computed:num_computed + n] (without
        building all_tokens: a decode step needs only the last output token)."""
        start, P = self.num_computed, len(self.prompt)
        if start >= P:
            return self.output[start - P:start - P + n]
        return self.prompt[start:start + n] + self.output[:max(0, start + n - P)]

    @property
    def remaining(self) -> int:
        """Tokens to run through the model before the next token can be sampled."""
        return len(self.prompt) + len(self.output) - self.num_computed

    @property
    def is_decoding(self) -> bool:
        return bool(self.output) and self.remaining == 1

    @property
    def is_prefilling(self) -> bool:
        return not self.is_decoding

    @property
    def is_preempted(self) -> bool:
        """Back in the waiting queue after running (its KV freed, or swapped to CPU memory)."""
        return self.state is State.WAITING and self.num_preemptions > 0

    @property
    def max_len(self) -> int:
        """The longest this request can get: prompt + max_new_tokens tokens."""
        return len(self.prompt) + self.max_new_tokens

    def token_out(self, time: float, step: int) -> None:
        """A token of this request came out at clock `time`, in step `step` (its first: the TTFT)."""
        self.token_times.append(time)
        self.token_steps.append(step)
        if self.first_token_time is None:
            self.first_token_time, self.first_token_step = time, step

    @property
    def width(self) -> int:
        """Batch slots this request needs at admission: n samples or beam_width beams until
        they fork (at its first token); 1 after that, and for a sample or beam itself. A
        request preempted after its samples forked comes back alone; a restarted beam search
        has no output again and needs its W slots again."""
        return 1 if self.output else max(self.n, self.beam_width)

    @property
    def done(self) -> bool:
        return self.state in (State.FINISHED, State.REJECTED)

    def should_stop(self) -> str | None:
        """'eos' or 'length' once the last sampled token ends the request, else None."""
        if self.eos_id is not None and self.output and self.output[-1] == self.eos_id:
            return "eos"
        if len(self.output) >= self.max_new_tokens:
            return "length"
        return None

    # ---- copies -------------------------------------------------------------
    @classmethod
    def input_names(cls) -> list[str]:
        """The fields a request is created with (prompt, max_new_tokens, arrival, ..., and a
        subclass's own, e.g. PriorityRequest's tenant): every field but STATE_FIELDS."""
        return [f.name for f in fields(cls) if f.name not in STATE_FIELDS]

    def inputs(self) -> dict:
        """This request's inputs (see input_names), the prompt copied."""
        return {name: list(self.prompt) if name == "prompt" else getattr(self, name) for name in self.input_names()}

    def clone(self, **changes) -> "Request":
        """A fresh, unstarted copy of this request's inputs, of the same class, so that one
        trace can run under several engines; `changes` replace inputs, e.g. clone(arrival=3.0)."""
        inputs = self.inputs()
        unknown = set(changes) - set(inputs)
        if unknown:
            raise ValueError(f"changes: unknown request field(s) {sorted(unknown)}; allowed: {sorted(inputs)}")
        return type(self)(**{**inputs, **changes})

    def fork(self, rid: int, **changes) -> "Request":
        """A continuation of this request under a new id: its inputs (with `changes`), prompt,
        output so far, computed tokens, state and times; a fork of its own (n = beam_width = 1),
        with no samples or beams. Not validated again: the inputs were valid."""
        child = copy.copy(self)
        child.rid, child.n, child.beam_width, child.slot = rid, 1, 1, None
        child.prompt, child.output = list(self.prompt), list(self.output)
        child.token_times, child.token_steps = list(self.token_times), list(self.token_steps)
        child.samples, child.beams, child.search = [], [], None
        for name, value in changes.items():
            setattr(child, name, value)
        return child

    def copy_state(self, other: "Request") -> None:
        """Take `other`'s state and measurements (STATE_FIELDS), lists copied."""
        for name in STATE_FIELDS:
            value = getattr(other, name)
            setattr(self, name, list(value) if isinstance(value, list) else value)

    def __repr__(self) -> str:
        return (f"Request(rid={self.rid}, prompt={len(self.prompt)} tok, out={len(self.output)}/{self.max_new_tokens}, "
                f"state={self.state.value}, computed={self.num_computed})")


# Everything from `state` on belongs to the scheduler and engine (state and measurements), never an input.
_NAMES = [f.name for f in fields(Request)]
STATE_FIELDS: tuple[str, ...] = tuple(_NAMES[_NAMES.index("state"):])


def requests_from_trace(trace, eos_id: int | None = None, time_scale: float = 1.0) -> list[Request]:
    """Engine requests from a workload trace (course_lib.workloads: items with id, arrival,
    prompt and output_len). The output length becomes max_new_tokens; eos_id=None (the
    default) makes each request stop exactly there, as the trace says. `time_scale`
    multiplies arrivals (e.g. seconds -> steps for a step clock)."""
    check_float("time_scale", time_scale, 0)
    return [Request(list(t.prompt), int(t.output_len), arrival=float(t.arrival) * time_scale, rid=int(t.id),
                    eos_id=eos_id) for t in trace]
