"""TinyLM against Hugging Face's LlamaForCausalLM with the very same weights.

transformers is a test-only dependency; the Llama model is built from a config
(no download, HF_HUB_OFFLINE=1). The logits must match to 1e-5 in fp32.
"""

import pytest
import torch

from course_lib.kv.dense import DenseKVCache
from course_lib.model import TinyLMConfig, build_model
from course_lib.padding import pad_batch

transformers = pytest.importorskip("transformers")

TOL = dict(atol=1e-5, rtol=1e-5)


def hf_twin(model):
    cfg = model.config
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False, hidden_act="silu", pad_token_id=None, bos_token_id=None, eos_token_id=None)
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected, unexpected
    assert all("rotary" in m for m in missing), missing   # only non-persistent buffers may differ
    return hf


@pytest.fixture(scope="module")
def pair():
    cfg = TinyLMConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=128)
    model = build_model(cfg, seed=3, weights="random")
    # std 0.02 weights give near-uniform logits; scale up so a mismatch would be visible
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(10)
    return model, hf_twin(model)


def test_parameter_names_and_shapes_follow_hugging_face(pair):
    model, hf = pair
    ours = {k: v.shape for k, v in model.state_dict().items()}
    theirs = {k: v.shape for k, v in hf.state_dict().items() if "rotary" not in k}
    assert ours == theirs


@torch.no_grad()
def test_padded_batch_logits_match(pair):
    model, hf = pair
    batch = pad_batch([[257, 5, 9, 13, 200, 7], [257, 42], [257, 1, 2, 3]], side="left")
    ours = model(batch.input_ids, batch.attention_mask)
    theirs = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=batch.position_ids).logits
    real = batch.attention_mask.bool()
    assert ours.abs().max() > 1e-2                      # the check is not vacuous
    assert torch.allclose(ours[real], theirs[real], **TOL)


@torch.no_grad()
def test_incremental_decoding_with_kv_cache_matches(pair):
    model, hf = pair
    batch = pad_batch([[257, 5, 9, 13], [257, 42]], side="left")
    mask = batch.attention_mask
    cache = DenseKVCache(model.config.num_hidden_layers)
    ours = model(batch.input_ids, mask, cache)
    out = hf(input_ids=batch.input_ids, attention_mask=mask, position_ids=batch.position_ids, use_cache=True)
    past = out.past_key_values
    for step in range(4):
        nxt = ours[:, -1].argmax(-1, keepdim=True)                           # (B, 1)
        assert torch.equal(nxt, out.logits[:, -1].argmax(-1, keepdim=True))
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
        pos = mask.sum(1, keepdim=True) - 1
        ours = model(nxt, mask, cache)
        out = hf(input_ids=nxt, attention_mask=mask, position_ids=pos, past_key_values=past, use_cache=True)
        past = out.past_key_values
        assert torch.allclose(ours[:, -1], out.logits[:, -1], **TOL), f"step {step}"
    assert cache.length == batch.input_ids.shape[1] + 4
