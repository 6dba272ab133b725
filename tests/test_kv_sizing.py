"""KV bytes per token: the paper's OPT-13B example, GQA models, and TinyLM's real arena."""

from __future__ import annotations

import pytest
import torch

from course_lib.kv.contiguous import ContiguousKVStore
from course_lib.kv.sizing import (GIB, KIB, PUBLISHED, format_bytes, kv_bytes_per_token, shape_from_config,
                                  tinylm_shape)
from course_lib.model import TinyLMConfig, build_model


def test_opt13b_needs_800kb_per_token_and_1_6gb_per_2048_tokens():
    opt = PUBLISHED["OPT-13B"]
    assert opt.bytes_per_token == 2 * 5120 * 40 * 2 == 800 * KIB
    assert opt.bytes_for(2048) / GIB == pytest.approx(1.5625)          # the paper's "1.6 GB"
    assert format_bytes(opt.bytes_per_token) == "800 KB"


def test_from_a_hugging_face_style_config():
    opt = {"num_hidden_layers": 40, "hidden_size": 5120, "num_attention_heads": 40, "torch_dtype": "float16"}
    assert shape_from_config(opt).bytes_per_token == 819_200          # no num_key_value_heads: MHA
    llama3 = {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
              "num_key_value_heads": 8, "torch_dtype": "bfloat16"}
    assert shape_from_config(llama3).bytes_per_token == 128 * KIB    # GQA: a quarter of Llama-2-7B
    assert PUBLISHED["Llama-2-7B"].bytes_per_token == 4 * 128 * KIB
    assert shape_from_config({**llama3, "torch_dtype": "float32"}).bytes_per_token == 256 * KIB


def test_tinylm_formula_matches_the_bytes_the_arena_really_takes():
    cfg = TinyLMConfig()
    model = build_model(cfg, weights="random")
    store = ContiguousKVStore.for_model(model, capacity=100)
    real = store.arena.numel() * store.arena.element_size() // store.capacity
    assert tinylm_shape(cfg).bytes_per_token == real == store.bytes_per_token == cfg.kv_bytes_per_token(4)
    half = ContiguousKVStore(2, 2, 8, dtype=torch.float16, capacity=10)
    assert half.bytes_per_token == kv_bytes_per_token(2, 2, 8, 2)


def test_tokens_in_a_budget():
    assert PUBLISHED["OPT-13B"].tokens_in(12 * GIB) == 15728
    with pytest.raises(ValueError, match="budget_bytes"):
        PUBLISHED["OPT-13B"].tokens_in(-1)


@pytest.mark.parametrize("args, name", [((0, 1, 1, 2), "num_layers"), ((1, 1.5, 1, 2), "num_kv_heads"),
                                        ((1, 1, 1, 0), "bytes_per_element"), ((1, 1, True, 2), "head_dim")])
def test_bad_input_is_a_value_error(args, name):
    with pytest.raises(ValueError, match=name):
        kv_bytes_per_token(*args)


def test_bad_configs_are_value_errors():
    with pytest.raises(ValueError, match="hidden_size"):
        shape_from_config({"num_hidden_layers": 2, "num_attention_heads": 2})
    with pytest.raises(ValueError, match="torch_dtype"):
        shape_from_config({"num_hidden_layers": 2, "hidden_size": 8, "num_attention_heads": 2, "torch_dtype": "int3"})
    with pytest.raises(ValueError, match="tokens"):
        PUBLISHED["OPT-13B"].bytes_for(-2)
