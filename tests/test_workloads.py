"""Synthetic traces: seeded, published means, Poisson arrivals, scale-down, shared prefixes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from course_lib.workloads import (ALPACA, SHAREGPT, alpaca_like, clipped_lognormal_mean, make_trace,
                                  sharegpt_like, solve_mu, trace_from_lengths)


def test_same_seed_same_trace_other_seed_other_trace():
    a, b, c = sharegpt_like(50, 3.0, seed=7), sharegpt_like(50, 3.0, seed=7), sharegpt_like(50, 3.0, seed=8)
    assert a.requests == b.requests
    assert a.requests != c.requests


@pytest.mark.parametrize("make, dist", [(sharegpt_like, SHAREGPT), (alpaca_like, ALPACA)])
def test_mean_lengths_match_the_published_ones(make, dist):
    t = make(4000, 10.0, seed=1)
    # log-normal with sigma <= 1: the sample mean of 4000 is within ~6 % of the mean
    assert t.mean_input == pytest.approx(dist.mean_input, rel=0.06)
    assert t.mean_output == pytest.approx(dist.mean_output, rel=0.06)
    assert all(1 <= r.prompt_len and 1 <= r.output_len and r.final_len <= 2048 for r in t)
    # a long tail: the median is well below the mean
    assert np.median([r.output_len for r in t]) < 0.8 * t.mean_output


def test_the_clipped_mean_is_solved_exactly():
    mu = solve_mu(337.99, 1.0, 1.0, 1024.0)
    assert clipped_lognormal_mean(mu, 1.0, 1.0, 1024.0) == pytest.approx(337.99, rel=1e-9)
    # against a brute-force sample
    x = np.clip(np.exp(np.random.default_rng(0).normal(mu, 1.0, 400_000)), 1, 1024)
    assert x.mean() == pytest.approx(337.99, rel=0.01)


def test_arrivals_are_poisson():
    t = sharegpt_like(3000, rate=4.0, seed=2)
    arrivals = np.array([r.arrival for r in t])
    gaps = np.diff(np.concatenate([[0.0], arrivals]))
    assert np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(1 / 4.0, rel=0.06)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.08)       # exponential: CV = 1
    assert all(r.arrival == 0 for r in sharegpt_like(5, math.inf))


def test_scale_shrinks_lengths_and_context_together():
    full, small = sharegpt_like(3000, 5.0, seed=3), sharegpt_like(3000, 5.0, seed=3, scale=0.125)
    assert small.max_len == 256 and full.max_len == 2048
    assert small.mean_output == pytest.approx(full.mean_output * 0.125, rel=0.08)
    assert max(r.final_len for r in small) <= 256


def test_shared_prefix_puts_one_system_prompt_in_front():
    t = make_trace("sharegpt", 30, 2.0, seed=4, scale=0.25, shared_prefix=40, num_prefixes=2)
    prefixes = {r.prompt[:40] for r in t}
    assert len(prefixes) == 2 and all(r.prefix_len == 40 and r.prompt_len > 40 for r in t)
    assert {r.prefix_id for r in t} == {0, 1}
    assert all(r.final_len <= t.max_len for r in t)
    assert all(r.prefix_len == 0 for r in sharegpt_like(10, 1.0))


def test_prompts_are_printable_bytes():
    t = alpaca_like(20, 1.0, seed=5)
    assert all(32 <= tok < 127 for r in t for tok in r.prompt)


def test_hand_made_trace():
    t = trace_from_lengths([(3, 4), (10, 1)], interval=0.5)
    assert [(r.prompt_len, r.output_len, r.arrival) for r in t] == [(3, 4, 0.0), (10, 1, 0.5)]
    with pytest.raises(ValueError, match="max_len"):
        trace_from_lengths([(30, 40)], max_len=64)
    with pytest.raises(ValueError, match="output"):
        trace_from_lengths([(3, 0)])


@pytest.mark.parametrize("kwargs, name", [
    (dict(rate=0), "rate"), (dict(rate=-1.0), "rate"), (dict(n=-1), "n"), (dict(scale=0), "scale"),
    (dict(scale=1.5), "scale"), (dict(shared_prefix=5000), "shared_prefix"), (dict(dist="wiki"), "dist"),
    (dict(seed=-3), "seed"), (dict(rate=float("nan")), "rate"),
])
def test_bad_arguments_are_value_errors(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_trace(**{"n": 5, **kwargs})


def test_story_trace_prompts_are_openings_and_lengths_are_the_true_endings():
    from course_lib.stories import heldout
    from course_lib.tokenizer import SOS
    from course_lib.workloads import story_trace

    trace = story_trace(n=20, rate=4.0, seed=2, sentences=1)
    again = story_trace(n=20, rate=4.0, seed=2, sentences=1)
    assert [r.prompt for r in trace] == [r.prompt for r in again]          # seeded
    tales = heldout(20, offset=2 * 100_000)
    for r, tale in zip(trace, tales):
        assert r.prompt[0] == SOS and bytes(r.prompt[1:]).decode() == tale.opening(1)
        rest = tale.text[len(tale.opening(1)):] if len(tale.sentences) > 1 else ""
        assert r.output_len == len(rest.encode()) + 1                      # the ending's bytes, then <EOS>
        assert r.final_len <= trace.max_len
    assert len({r.output_len for r in trace}) > 5                          # lengths really vary
    assert trace.meta["room"] == trace.max_len - max(r.prompt_len for r in trace)
    with pytest.raises(ValueError, match="sentences"):
        story_trace(sentences=0)
