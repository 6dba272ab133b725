"""What several test files share: the tiny TinyLM they run, one-thread runs, a check's verdict line.

    from helpers import one_thread, tiny_config, tiny_model, verdict   # noqa: F401 (one_thread is a fixture)
"""

from __future__ import annotations

import pytest
import torch

from course_lib.model import TinyLMConfig, build_model


def tiny_config(layers: int = 2, max_len: int = 64) -> TinyLMConfig:
    """The tests' tiny TinyLM: hidden size 32, 4 query heads sharing 2 key/value heads (GQA)."""
    return TinyLMConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=max_len)


def tiny_model(seed: int, layers: int = 2, max_len: int = 64, dtype: torch.dtype = torch.float32):
    """A tiny TinyLM with seeded random weights, float32 unless `dtype` says otherwise (pass
    torch.float64 where greedy argmax must not flip on a near-tie)."""
    return build_model(tiny_config(layers, max_len), seed=seed, dtype=dtype, weights="random")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread is faster, and immune to a busy second core. A test module
    that imports this fixture runs all its tests on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def verdict(capsys, check, fn, **kw) -> str:
    """Run a check cell (`check(fn, **kw)`) and return the one line it prints; it must print
    exactly one, and a check that returns its result must agree with the line's ✅."""
    ok = check(fn, **kw)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out                        # one verdict line, nothing else
    if ok is not None:
        assert ok == out[0].startswith("✅")
    return out[0]
