import pytest
import torch
from hypothesis import given, settings, strategies as st

from course_lib.generate import generate
from course_lib.kv.reference import ReferenceKVStore
from course_lib.model import TinyLMConfig, build_model


def test_config_validation_names_the_parameter():
    with pytest.raises(ValueError, match="num_key_value_heads"):
        TinyLMConfig(num_attention_heads=4, num_key_value_heads=3)
    with pytest.raises(ValueError, match="hidden_size"):
        TinyLMConfig(hidden_size=0)


def test_kv_bytes_per_token():
    cfg = TinyLMConfig()
    assert cfg.kv_bytes_per_token(4) == 2 * 4 * 2 * 32 * 4


def test_bad_ids_and_positions(model64):
    with pytest.raises(ValueError, match="input_ids"):
        model64(torch.tensor([[1, 999]]))
    with pytest.raises(ValueError, match="positions"):
        model64(torch.zeros(1, 200, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        model64(torch.tensor([[1, 2]]), torch.ones(1, 3))


def test_seeded_build_is_reproducible_and_does_not_touch_global_rng():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(TinyLMConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1), seed=5, weights="random")
    after = torch.rand(1)
    b = build_model(TinyLMConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1), seed=5, weights="random")
    assert torch.equal(before, after)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


@settings(max_examples=12, deadline=None)
@given(prompts=st.lists(st.lists(st.integers(0, 255), min_size=1, max_size=12), min_size=1, max_size=4),
       max_new=st.integers(1, 8))
def test_padded_batch_generation_equals_each_prompt_alone(model64, prompts, max_new):
    """Greedy decoding of a left-padded batch == decoding each prompt alone, token for token.
    (float64 weights, so a rounding-level near-tie cannot flip an argmax.)"""
    together = generate(model64, prompts, max_new, eos_id=None)
    alone = [generate(model64, [p], max_new, eos_id=None)[0] for p in prompts]
    assert together == alone
    assert all(len(t) == max_new for t in together)


def test_generation_stops_at_eos(model64):
    out = generate(model64, [[1, 2, 3]], 6, eos_id=None)
    first = out[0][2]
    stopped = generate(model64, [[1, 2, 3]], 6, eos_id=first)[0]
    assert stopped == out[0][: out[0].index(first) + 1]
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model64, [[1]], -1)
    with pytest.raises(ValueError, match=r"prompts\[0\]"):
        generate(model64, [[1] * 100], 50)


@torch.no_grad()
def test_packed_step_through_reference_store_equals_padded_forward(model64):
    """The engine's path (packed tokens + a KV store) gives the padded path's logits."""
    prompts = [[257, 4, 5, 6, 7], [257, 9]]
    store = ReferenceKVStore.for_model(model64)
    for i, p in enumerate(prompts):
        assert store.add(i, p, 32) == 0
    ctx = store.step_context([(0, 5), (1, 2)])
    logits = model64.forward_ctx(torch.tensor([prompts[0] + prompts[1]]), ctx.positions(), ctx)
    ctx.commit()
    for i, p in enumerate(prompts):
        alone = model64(torch.tensor([p]))
        start = 0 if i == 0 else 5
        assert torch.allclose(logits[0, start:start + len(p)], alone[0], atol=1e-10)
    assert store.num_cached(0) == 5 and store.num_cached(1) == 2


def test_keep_gives_the_same_logits_for_the_rows_kept(model64):
    """forward_ctx(..., keep=rows): the final norm and lm_head run on those tokens alone, with
    the very logits a full forward gives them."""
    ids = torch.tensor([[257, 5, 9, 13, 200, 7]])
    full = model64(ids)                                                     # (1, 6, V)
    from course_lib.model import PaddedContext
    kept = model64.forward_ctx(ids, torch.arange(6)[None], PaddedContext(torch.ones(1, 6, dtype=torch.long)),
                               keep=torch.tensor([1, 5]))                  # (1, 2, V)
    assert kept.shape == (1, 2, full.shape[-1])
    torch.testing.assert_close(kept[0], full[0, [1, 5]])


def test_checkpoints_keep_hugging_faces_separate_matrices(model64):
    """qkv_proj and gate_up_proj are single matrices in the model, but state_dict() gives
    q_proj, k_proj, v_proj, gate_proj, up_proj (Hugging Face's names) and loads them back."""
    state = model64.state_dict()
    names = {k.split(".", 3)[-1] for k in state if k.startswith("model.layers.0.")}
    assert names == {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                     "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                     "mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight"}
    attn = model64.model.layers[0].self_attn
    q_rows = attn.nh * attn.hd
    assert torch.equal(state["model.layers.0.self_attn.q_proj.weight"], attn.qkv_proj.weight[:q_rows])
    fresh = build_model(model64.config, seed=2, weights="random", dtype=torch.float64)
    assert not torch.equal(fresh.model.layers[0].self_attn.qkv_proj.weight, attn.qkv_proj.weight)
    fresh.load_state_dict(state)                                           # strict: every name matched
    assert torch.equal(fresh.model.layers[0].self_attn.qkv_proj.weight, attn.qkv_proj.weight)
    assert torch.equal(fresh.model.layers[1].mlp.gate_up_proj.weight, model64.model.layers[1].mlp.gate_up_proj.weight)


def test_building_blocks_are_called_straight_to_forward_and_the_layers_keep_their_hooks():
    from course_lib.model import DirectCall, Linear
    from helpers import tiny_config
    model = build_model(tiny_config(), seed=0, weights="random")
    lin = model.model.layers[0].mlp.down_proj
    assert isinstance(lin, DirectCall) and isinstance(lin, Linear)
    x = torch.randn(3, lin.in_features)
    assert torch.equal(lin(x), lin.forward(x))
    full = []                                   # building blocks that went through nn.Module's __call__
    real = torch.nn.Module._call_impl
    torch.nn.Module._call_impl = lambda self, *a, **k: full.append(type(self).__name__) or real(self, *a, **k)
    try:
        model(torch.tensor([[40, 41, 42]]))
        assert not {"RMSNorm", "RotaryEmbedding", "Linear", "Attention", "MLP"} & set(full)   # no hook: direct
        assert "DecoderLayer" in full
        calls = []
        hooks = [model.model.layers[0].register_forward_hook(lambda *a: calls.append("layer")),
                 model.model.layers[0].mlp.register_forward_hook(lambda *a: calls.append("mlp"))]
        try:
            model(torch.tensor([[40, 41, 42]]))
        finally:
            for h in hooks:
                h.remove()
    finally:
        torch.nn.Module._call_impl = real
    assert calls == ["mlp", "layer"]          # a hooked building block still runs its hooks
