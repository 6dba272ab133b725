"""Request traces: who arrives when, with how long a prompt, wanting how many tokens.

A serving system is judged on a stream of requests, not on one. The vLLM paper
(Kwon et al., SOSP 2023, section 6.1 and Figure 11) replays two datasets with
Poisson arrivals:

    ShareGPT  (chat logs)        mean input 161.31, mean output 337.99 tokens
    Alpaca    (instructions)     mean input  19.31, mean output  58.45 tokens

We have no network and ship no datasets, so this module draws synthetic
traces with those MEANS: lengths are log-normal (many short requests, a long
tail, as in the paper's histograms) whose parameter is solved so the mean
after clipping to the context length is the published one. The spread
(sigma) is our assumption, not a published number.

Everything is seeded: the same arguments give the same trace, byte for byte.

`scale` shrinks every length and the context length together (scale=1/8:
ShareGPT-like means of about 20 / 42 tokens in a 256-token context), so a
trace can run through the real model on a CPU in seconds.

`shared_prefix` puts the same system prompt of that many tokens in front of
every prompt (`num_prefixes` distinct ones, assigned at random): the traffic
that prefix caching (lesson 05) exploits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from course_lib.validate import (BadType, check_choice, check_float, check_int, check_sequence, check_type,
                                 show)

MAX_REQUESTS = 1_000_000       # no trace holds more requests than this
MAX_CONTEXT = 1 << 20          # nor a request more tokens than this


@dataclass(frozen=True)
class LengthDist:
    """Published mean lengths, plus the log-normal spreads we assume."""

    name: str
    mean_input: float
    mean_output: float
    sigma_input: float
    sigma_output: float
    source: str

    def __post_init__(self):
        for name in ("mean_input", "mean_output", "sigma_input", "sigma_output"):
            check_float(name, getattr(self, name), 0, lo_open=True)


SHAREGPT = LengthDist("ShareGPT", 161.31, 337.99, 1.0, 1.0, "Kwon et al. (vLLM), SOSP 2023, Fig. 11 (means)")
ALPACA = LengthDist("Alpaca", 19.31, 58.45, 0.6, 0.8, "Kwon et al. (vLLM), SOSP 2023, Fig. 11 (means)")
DISTS = {"sharegpt": SHAREGPT, "alpaca": ALPACA}


@dataclass(frozen=True)
class Request:
    id: int
    arrival: float                 # seconds after the trace starts
    prompt: tuple[int, ...]        # token ids (printable bytes), shared prefix first
    output_len: int                # tokens the request generates before it stops
    prefix_len: int = 0            # leading prompt tokens shared with other requests
    prefix_id: int = -1            # which system prompt (-1: none)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)

    @property
    def final_len(self) -> int:
        """Tokens the request holds K/V for when it is done: prompt + output."""
        return len(self.prompt) + self.output_len


@dataclass
class Trace:
    name: str
    requests: list[Request]
    rate: float                    # requests per second (inf: all at time 0)
    seed: int
    scale: float = 1.0
    max_len: int = 2048            # no request's final length exceeds this
    dist: LengthDist | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[Request]:
        return iter(self.requests)

    def __getitem__(self, i):
        return self.requests[i]

    @property
    def mean_input(self) -> float:
        return float(np.mean([r.prompt_len for r in self.requests])) if self.requests else 0.0

    @property
    def mean_output(self) -> float:
        return float(np.mean([r.output_len for r in self.requests])) if self.requests else 0.0

    def summary(self) -> dict:
        return {"trace": self.name, "requests": len(self), "rate (req/s)": self.rate, "scale": self.scale,
                "max_len": self.max_len, "mean input": round(self.mean_input, 2),
                "mean output": round(self.mean_output, 2),
                "duration (s)": round(self.requests[-1].arrival, 2) if self.requests else 0.0}


# ---- validation ------------------------------------------------------------------
def _check_int(value, name: str, lo: int, hi: int | None = None) -> int:
    return check_int(name, value, lo, hi)


def _check_rate(rate) -> float:
    return check_float("rate", rate, 0, lo_open=True, finite=False, note="requests per second; inf = all at once")


def _check_scale(scale) -> float:
    return check_float("scale", scale, 0, 1, lo_open=True)


# ---- the pieces ------------------------------------------------------------------
def poisson_arrivals(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) arrival times: exponential gaps of mean 1/rate (rate = inf: all at 0)."""
    if math.isinf(rate):
        return np.zeros(n)
    return np.cumsum(rng.exponential(1.0 / rate, size=n))


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def clipped_lognormal_mean(mu: float, sigma: float, lo: float, hi: float) -> float:
    """E[clip(X, lo, hi)] for X = exp(N(mu, sigma^2)), in closed form."""
    a, b = math.log(lo), math.log(hi)
    below = lo * _phi((a - mu) / sigma)
    above = hi * (1.0 - _phi((b - mu) / sigma))
    inside = math.exp(mu + sigma**2 / 2) * (_phi((b - mu - sigma**2) / sigma) - _phi((a - mu - sigma**2) / sigma))
    return below + inside + above


def solve_mu(mean: float, sigma: float, lo: float, hi: float) -> float:
    """The log-normal mu whose mean after clipping to [lo, hi] is `mean` (bisection)."""
    if not lo < mean < hi:
        raise ValueError(f"mean: must lie strictly between the clip bounds [{lo}, {hi}]; got {mean}")
    left, right = math.log(lo) - 10 * sigma, math.log(hi) + 10 * sigma
    for _ in range(200):
        mid = (left + right) / 2
        if clipped_lognormal_mean(mid, sigma, lo, hi) < mean:
            left = mid
        else:
            right = mid
    return (left + right) / 2


def sample_lengths(n: int, mean: float, sigma: float, hi: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) integer lengths in [1, hi], log-normal with the given mean after clipping."""
    if hi <= mean + 0.5:
        return np.full(n, max(1, min(hi, round(mean))), dtype=np.int64)
    mu = solve_mu(mean, sigma, 1.0, float(hi))
    x = np.exp(rng.normal(mu, sigma, size=n))
    return np.clip(np.rint(x), 1, hi).astype(np.int64)


def _random_tokens(rng: np.random.Generator, n: int) -> tuple[int, ...]:
    """n printable ASCII byte ids (so a prompt renders as text)."""
    return tuple(int(t) for t in rng.integers(32, 127, size=n))


# ---- traces ----------------------------------------------------------------------
def make_trace(dist: LengthDist | str = "sharegpt", n: int = 200, rate: float = 2.0, seed: int = 0,
               scale: float = 1.0, max_len: int = 2048, shared_prefix: int = 0, num_prefixes: int = 1) -> Trace:
    """A seeded synthetic trace: Poisson arrivals, log-normal lengths with `dist`'s means.

    n:             number of requests
    rate:          mean arrivals per second (float('inf'): all arrive at time 0)
    scale:         multiply every mean and the context length by this (0 < scale <= 1)
    max_len:       the context length before scaling; no prompt + output exceeds it
    shared_prefix: tokens of system prompt in front of every prompt (after scaling)
    num_prefixes:  how many distinct system prompts requests draw from
    """
    if isinstance(dist, str):
        dist = DISTS[check_choice("dist", dist.lower(), DISTS, what="a LengthDist")]
    check_type("dist", dist, LengthDist, f"one of {', '.join(DISTS)} or a LengthDist")
    n = _check_int(n, "n", 0, MAX_REQUESTS)
    rate, scale = _check_rate(rate), _check_scale(scale)
    seed = _check_int(seed, "seed", 0)
    max_len = _check_int(max_len, "max_len", 4, MAX_CONTEXT)
    ctx = max(4, int(round(max_len * scale)))
    shared_prefix = _check_int(shared_prefix, "shared_prefix", 0, ctx - 3)
    num_prefixes = _check_int(num_prefixes, "num_prefixes", 1, 1_000)

    rng = np.random.default_rng(seed)
    arrivals = poisson_arrivals(n, rate, rng)
    room = ctx - shared_prefix                      # what the user prompt and the output share
    cap_in, cap_out = room // 2, room - room // 2
    inputs = sample_lengths(n, dist.mean_input * scale, dist.sigma_input, cap_in, rng)
    outputs = sample_lengths(n, dist.mean_output * scale, dist.sigma_output, cap_out, rng)
    prefixes = [_random_tokens(rng, shared_prefix) for _ in range(num_prefixes)]
    which = rng.integers(0, num_prefixes, size=n)
    requests = []
    for i in range(n):
        pid = int(which[i]) if shared_prefix else -1
        prefix = prefixes[pid] if shared_prefix else ()
        requests.append(Request(i, float(arrivals[i]), prefix + _random_tokens(rng, int(inputs[i])),
                                int(outputs[i]), shared_prefix, pid))
    name = f"{dist.name}-like" + (f" (shared prefix {shared_prefix})" if shared_prefix else "")
    return Trace(name, requests, rate, seed, scale, ctx, dist,
                 {"shared_prefix": shared_prefix, "num_prefixes": num_prefixes})


def sharegpt_like(n: int = 200, rate: float = 2.0, seed: int = 0, scale: float = 1.0, **kwargs) -> Trace:
    """Chat-like traffic: ShareGPT's mean lengths (161.31 in, 337.99 out at scale 1)."""
    return make_trace(SHAREGPT, n, rate, seed, scale, **kwargs)


def alpaca_like(n: int = 200, rate: float = 2.0, seed: int = 0, scale: float = 1.0, **kwargs) -> Trace:
    """Instruction-like traffic: Alpaca's mean lengths (19.31 in, 58.45 out at scale 1)."""
    return make_trace(ALPACA, n, rate, seed, scale, **kwargs)


def trace_from_lengths(lengths: Sequence[tuple[int, int]], interval: float = 0.0, seed: int = 0,
                       max_len: int | None = None) -> Trace:
    """A hand-made trace: (prompt_len, output_len) pairs arriving `interval` seconds apart."""
    interval = check_float("interval", interval, 0, note="seconds")
    rng = np.random.default_rng(_check_int(seed, "seed", 0))
    check_int("max_len", max_len, 1, none_ok=True)
    requests = []
    for i, pair in enumerate(check_sequence("lengths", lengths, max_len=MAX_REQUESTS,
                                            what="a list of (prompt_len, output_len) pairs")):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise BadType(f"lengths[{i}]: must be a (prompt_len, output_len) pair; got {show(pair)}")
        p, o = pair
        p = _check_int(p, f"lengths[{i}] prompt", 1, MAX_CONTEXT)
        o = _check_int(o, f"lengths[{i}] output", 1, MAX_CONTEXT)
        requests.append(Request(i, i * float(interval), _random_tokens(rng, p), o))
    longest = max((r.final_len for r in requests), default=1)
    if max_len is not None and longest > max_len:
        raise ValueError(f"max_len: must be >= every prompt + output of `lengths` ({longest}); got {max_len}")
    rate = 1.0 / interval if interval > 0 else math.inf
    return Trace("hand-made", requests, rate, seed, 1.0, max_len or longest)


def story_trace(n: int = 32, rate: float = 2.0, seed: int = 0, sentences: int = 1,
                max_len: int = 512) -> Trace:
    """Requests whose prompts are story openings, for the trained TinyLM to continue.

    Each prompt is <SOS> plus the first `sentences` sentences of a held-out story
    (course_lib.stories). `output_len` is the length that story's own ending
    really has, in tokens (its remaining bytes and <EOS>):

      * serve it with eos_id=None and every request runs exactly that long, as
        serving benchmarks replay a trace;
      * serve it with eos_id=EOS (`requests_from_trace(trace, eos_id=EOS)`) and
        the MODEL decides: each request stops on its own <EOS>, which the server
        learns only when it happens. Give it room with `max_new_tokens` larger
        than the trace's length (see `Trace.meta["room"]`).
    """
    from course_lib.stories import heldout
    from course_lib.tokenizer import SOS

    n = _check_int(n, "n", 1, 100_000)
    rate = _check_rate(rate)
    seed = _check_int(seed, "seed", 0, 10**9)
    sentences = _check_int(sentences, "sentences", 1, 3)
    max_len = _check_int(max_len, "max_len", 64)
    rng = np.random.default_rng(seed)
    arrivals = poisson_arrivals(n, rate, rng)
    requests = []
    for i, s in enumerate(heldout(n, offset=seed * 100_000)):
        opening = s.opening(sentences)
        prompt = (SOS,) + tuple(opening.encode("utf-8"))
        rest = s.text[len(opening):].encode("utf-8") if len(s.sentences) > sentences else b""
        output = len(rest) + 1                                  # its bytes, then <EOS>
        if len(prompt) + output > max_len:
            output = max_len - len(prompt)
        requests.append(Request(i, float(arrivals[i]), prompt, max(1, output)))
    room = max_len - max(len(r.prompt) for r in requests)
    return Trace("stories", requests, rate, seed, 1.0, max_len, None, {"sentences": sentences, "room": room})
