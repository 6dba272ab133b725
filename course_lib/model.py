"""TinyLM: a small Llama-style decoder, written to be read.

The same architecture as Llama (RMSNorm, rotary position embeddings, grouped-
query attention, SwiGLU MLP), small enough to run on a laptop CPU. Its
checkpoints (state_dict) use the parameter names and shapes of Hugging Face's
`LlamaForCausalLM`, so the very same weights load into both;
tests/test_model_oracle.py asserts the logits match. Inside, the model keeps
q, k, v and gate, up as stacked matrices, all transposed (Linear,
keep_stacked_apart below): fewer, faster matrix multiplies per step.

The model never decides *where* keys and values live. Each layer computes
q, k, v for the new tokens, applies RoPE, and hands them to an attention
context (`ctx.attend(layer, q, k, v)`), which stores k, v wherever its cache
keeps them and returns the attention output. A padded batch, a contiguous KV
arena and a paged block pool are just different contexts: the model is shared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.attention import padded_causal_mask, sdpa_attention
from course_lib.device import check_device
from course_lib.fused_ops import add_rms_norm, rope, silu_mul
from course_lib.tokenizer import VOCAB_SIZE
from course_lib.validate import FLOAT_DTYPES, check_dtype, check_float, check_int, check_type

if TYPE_CHECKING:                      # for type hints only: the model sits below every KV store
    from course_lib.kv.dense import DenseKVCache


@dataclass
class TinyLMConfig:
    vocab_size: int = VOCAB_SIZE          # 256 bytes + <pad> <SOS> <EOS>
    hidden_size: int = 128                # width of the residual stream (d_model)
    intermediate_size: int = 344          # SwiGLU hidden width, about 8/3 x hidden
    num_hidden_layers: int = 4            # decoder blocks
    num_attention_heads: int = 4          # query heads (nh)
    num_key_value_heads: int = 2          # key/value heads (nkv); nh/nkv queries share one KV head (GQA)
    max_position_embeddings: int = 512    # the context length: longest sequence the model accepts
    rope_theta: float = 10000.0           # RoPE base frequency
    rms_norm_eps: float = 1e-6            # RMSNorm epsilon
    initializer_range: float = 0.02       # std of the normal init of every weight matrix

    def __post_init__(self):
        for name, hi in (("vocab_size", 1 << 20), ("hidden_size", 1 << 16), ("intermediate_size", 1 << 18),
                         ("num_hidden_layers", 1024), ("num_attention_heads", 1024), ("num_key_value_heads", 1024),
                         ("max_position_embeddings", 1 << 20)):
            check_int(name, getattr(self, name), 1, hi)
        for name in ("rope_theta", "rms_norm_eps", "initializer_range"):
            check_float(name, getattr(self, name), 0, lo_open=True)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"num_attention_heads: must divide hidden_size ({self.hidden_size}); got {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_key_value_heads: must divide num_attention_heads ({self.num_attention_heads}); got {self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ValueError(f"hidden_size/num_attention_heads: head_dim must be even for RoPE; got {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def kv_bytes_per_token(self, bytes_per_element: int = 4) -> int:
        """Bytes of KV cache one token needs: 2 (K and V) x layers x kv heads x head_dim x bytes."""
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * bytes_per_element

    def to_dict(self) -> dict:
        return asdict(self)


class AttentionContext(Protocol):
    """Where a forward pass keeps and reads its keys and values."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, T, nh, hd); k, v (B, T, nkv, hd) for the NEW tokens -> (B, T, nh, hd)."""
        ...


class DirectCall:
    """Mixed into TinyLM's small building blocks (RMSNorm, RotaryEmbedding, Linear, Attention,
    MLP): calling one runs its forward straight away.

    nn.Module's own __call__ looks for hooks and other machinery on every call, a few
    microseconds each on a CPU, and a decode step of TinyLM made 36 such calls. A block with a
    hook of its own still goes through nn.Module's __call__, so its hooks run."""

    def __call__(self, *args, **kwargs):
        if self._forward_hooks or self._forward_pre_hooks:            # hooked: the full machinery
            return super().__call__(*args, **kwargs)
        return self.forward(*args, **kwargs)


class RMSNorm(DirectCall, nn.Module):
    """x / rms(x) * weight, rms(x) = sqrt(mean(x^2) + eps) over the features:
    LayerNorm without the mean subtraction or bias. Computed in at least fp32,
    as Llama does; F.rms_norm is that formula in one operation."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_and_norm(x)[0]

    def add_and_norm(self, x: torch.Tensor, delta: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(x + delta), x + delta): a layer's residual add and the next norm in one pass
        (fused_ops.add_rms_norm, vLLM's fused_add_rms_norm). x, delta (..., hidden); delta None: norm(x), x."""
        if x.dtype in (torch.float32, torch.float64):          # the weight multiplies in the same precision
            return add_rms_norm(x, self.weight, self.eps, delta)
        s = x if delta is None else x + delta
        x32 = s.float()                                         # half precision: normalise in fp32
        return self.weight * F.rms_norm(x32, s.shape[-1:], eps=self.eps).to(s.dtype), s


class RotaryEmbedding(DirectCall, nn.Module):
    """Rotary position embedding: rotate each pair of q/k features by an angle
    proportional to the token's position, so q.k depends on the distance only."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))  # (hd/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T) -> cos, sin (B, T, 1, hd): one angle per position and feature pair,
        the same for every head (the 1 broadcasts over them)."""
        freqs = positions[..., None].float() * self.inv_freq        # (B, T, hd/2)
        emb = torch.cat([freqs, freqs], dim=-1)[:, :, None, :]       # (B, T, 1, hd)
        return emb.cos().to(dtype), emb.sin().to(dtype)


class Linear(DirectCall, nn.Module):
    """y = x W^T, no bias: nn.Linear's product, with W kept transposed, `weight_t` (in, out).

    A decoding step multiplies a few rows by every matrix. For such thin products the CPU's
    BLAS (MKL) ran the plain product x @ weight_t faster than nn.Linear's x @ W^T on an
    (out, in) matrix when this was written (TinyLM's shapes, one thread: ~1.8x at 1-8 rows,
    ~1.2x at 64, ~1.1x at 256; on a GPU the two are alike).
    Checkpoints keep Hugging Face's (out, in) `weight`: state_dict() transposes it back and
    load_state_dict() transposes it in, so the same file loads into both."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_t = nn.Parameter(torch.empty(in_features, out_features))       # (in, out)
        self.register_state_dict_post_hook(self._weight_out)
        self.register_load_state_dict_pre_hook(self._weight_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight_t                                      # (..., in) -> (..., out)

    @property
    def weight(self) -> torch.Tensor:
        """W (out, in), as nn.Linear and Hugging Face hold it (a transposed view)."""
        return self.weight_t.t()

    @staticmethod
    def _weight_out(module, state, prefix, local_metadata):        # after state_dict() collected it
        state[prefix + "weight"] = state.pop(prefix + "weight_t").t().contiguous()

    @staticmethod
    def _weight_in(module, state, prefix, *_):                    # before load_state_dict() reads it
        if prefix + "weight" in state:
            state[prefix + "weight_t"] = state.pop(prefix + "weight").t()


def keep_stacked_apart(module: nn.Module, stacked: str, parts: dict[str, int]) -> None:
    """Checkpoints keep the Linear `stacked` as separate matrices: `parts` (name -> output rows, in order).

    The model multiplies by one stacked matrix (one bigger GEMM instead of several small
    ones: on a CPU or a GPU, a small model's step is made of many small operations, each
    with a fixed cost), while its checkpoints use Hugging Face's names, so the same file
    loads into both. state_dict() splits the stacked weight into its parts, and
    load_state_dict() stacks the parts back: vLLM's weight loader does the same for its
    QKVParallelLinear and MergedColumnParallelLinear."""
    def split(mod, state, prefix, local_metadata):              # after state_dict() collected the weights
        weight = state.pop(prefix + stacked + ".weight")
        for name, piece in zip(parts, weight.split(list(parts.values()))):
            state[prefix + name + ".weight"] = piece.clone()       # its own memory: a file can hold it
    def stack(mod, state, prefix, *_):                             # before load_state_dict() reads them
        names = [prefix + name + ".weight" for name in parts]
        if all(n in state for n in names):
            state[prefix + stacked + ".weight"] = torch.cat([state.pop(n) for n in names])
    module.register_state_dict_post_hook(split)
    module.register_load_state_dict_pre_hook(stack)


class Attention(DirectCall, nn.Module):
    """Grouped-query attention. q, k and v come out of one matrix multiply: qkv_proj
    stacks Llama's q_proj, k_proj and v_proj (nh + 2 nkv heads of hd rows; checkpoints
    keep them apart, see keep_stacked_apart)."""

    def __init__(self, cfg: TinyLMConfig, layer: int):
        super().__init__()
        self.layer, self.nh, self.nkv, self.hd = layer, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.qkv_proj = Linear(cfg.hidden_size, (self.nh + 2 * self.nkv) * self.hd)
        self.o_proj = Linear(self.nh * self.hd, cfg.hidden_size)
        keep_stacked_apart(self, "qkv_proj", {"q_proj": self.nh * self.hd, "k_proj": self.nkv * self.hd,
                                              "v_proj": self.nkv * self.hd})

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        B, T, _ = x.shape
        qkv = self.qkv_proj(x).view(B, T, self.nh + 2 * self.nkv, self.hd)   # (B, T, nh + 2 nkv, hd)
        qk = rope(qkv, cos, sin, heads=self.nh + self.nkv)                   # rotate q's and k's heads at once
        q, k = qk.split([self.nh, self.nkv], dim=2)                          # (B, T, nh, hd), (B, T, nkv, hd)
        v = qkv[:, :, self.nh + self.nkv:]                                   # (B, T, nkv, hd)
        out = ctx.attend(self.layer, q, k, v)                                # (B, T, nh, hd)
        return self.o_proj(out.reshape(B, T, self.nh * self.hd))


class MLP(DirectCall, nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)); gate_up_proj stacks gate_proj and up_proj
    (one matrix multiply; checkpoints keep them apart, see keep_stacked_apart)."""

    def __init__(self, cfg: TinyLMConfig):
        super().__init__()
        self.gate_up_proj = Linear(cfg.hidden_size, 2 * cfg.intermediate_size)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size)
        keep_stacked_apart(self, "gate_up_proj", {"gate_proj": cfg.intermediate_size,
                                                  "up_proj": cfg.intermediate_size})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_mul(self.gate_up_proj(x)))               # silu(gate) * up: (..., intermediate)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TinyLMConfig, layer: int):
        super().__init__()
        self.self_attn = Attention(cfg, layer)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, ctx):
        """x = x + attention(norm(x)); x = x + mlp(norm(x)), the middle add and norm fused."""
        h, x = self.post_attention_layernorm.add_and_norm(x, self.self_attn(self.input_layernorm(x), cos, sin, ctx))
        return x + self.mlp(h)


class Backbone(nn.Module):
    """Named `model` inside TinyLM, as in Hugging Face (model.embed_tokens, model.layers.N, model.norm)."""

    def __init__(self, cfg: TinyLMConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)


class PaddedContext:
    """Attention for a padded batch, optionally with a DenseKVCache.

    key_mask: (B, T_total) 1 = real token, 0 = padding, covering the cached
    tokens AND the new ones.
    """

    def __init__(self, key_mask: torch.Tensor, cache: DenseKVCache | None = None):
        self.key_mask, self.cache = key_mask, cache

    def attend(self, layer, q, k, v):
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))            # (B, heads, T, hd)
        if self.cache is not None:
            k, v = self.cache.update(layer, k, v)                     # (B, nkv, T_total, hd)
        mask = padded_causal_mask(self.key_mask, q.shape[2])         # (B, 1, T, T_total)
        return sdpa_attention(q, k, v, mask).transpose(1, 2)          # (B, T, nh, hd)


class TinyLM(nn.Module):
    def __init__(self, cfg: TinyLMConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or TinyLMConfig()
        self.model = Backbone(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size)
        self.apply(self._init)

    def _init(self, module):
        if isinstance(module, Linear):
            nn.init.normal_(module.weight_t, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)

    def forward_ctx(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: AttentionContext,
                    keep: torch.Tensor | None = None) -> torch.Tensor:
        """The core forward pass. input_ids, positions: (B, T) -> logits (B, T, vocab).

        A packed batch is B = 1 with every sequence's new tokens side by side;
        `ctx` knows which tokens belong to which sequence. keep: (K,) token indices
        whose logits are wanted (a packed step samples only each sequence's last token);
        then the logits are (B, K, vocab) and the final norm and lm_head run on those
        tokens alone (vLLM and Hugging Face's logits_to_keep do the same).
        """
        self._check_ids(input_ids, positions)
        x = self.model.embed_tokens(input_ids)                       # (B, T, hidden)
        cos, sin = self.model.rotary_emb(positions, x.dtype)         # (B, T, 1, hd)
        for layer in self.model.layers:
            x = layer(x, cos, sin, ctx)
        if keep is not None:
            x = x[:, keep.to(x.device)]                              # (B, K, hidden)
        return self.lm_head(self.model.norm(x))                      # (B, T or K, vocab)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: DenseKVCache | None = None) -> torch.Tensor:
        """Padded-batch forward, Hugging Face style.

        input_ids:      (B, T) the new tokens
        attention_mask: (B, T_cached + T) 1 = real token, 0 = padding (None = no padding)
        cache:          DenseKVCache holding T_cached tokens, updated in place
        Position ids count only real tokens, so left padding does not shift them.
        """
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(B, past + T, dtype=torch.long, device=input_ids.device)
        if attention_mask.shape != (B, past + T):
            raise ValueError(f"attention_mask: must have shape (B, cached + new) = {(B, past + T)}; got {tuple(attention_mask.shape)}")
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]   # (B, T)
        return self.forward_ctx(input_ids, positions, PaddedContext(attention_mask, cache))

    def _check_ids(self, input_ids, positions):
        V, P = self.config.vocab_size, self.config.max_position_embeddings
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= V):
            raise ValueError(f"input_ids: every id must be in [0, {V - 1}]")
        if positions.numel() and positions.max() >= P:
            raise ValueError(f"positions: must be < max_position_embeddings ({P}); got {int(positions.max())}")

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


WEIGHTS = ("trained", "random")


def build_model(cfg: TinyLMConfig | None = None, seed: int = 0, device=None, dtype=torch.float32,
                weights: str = "trained") -> TinyLM:
    """A TinyLM on `device` in `dtype`, in eval mode.

    weights="trained" (the default): the model trained on the course's story
        grammar (course_lib/weights/tinylm-stories, written by
        tools/train_tinylm.py); `cfg`, if given, must be its config.
    weights="random": seeded random initialisation of `cfg` (any size), for
        experiments such as the benchmarks' larger shapes. Its text is noise.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights: must be one of {', '.join(map(repr, WEIGHTS))}; got {weights!r}")
    device = None if device is None else check_device(device)     # a missing GPU: a ValueError naming `device`
    check_dtype("dtype", dtype, FLOAT_DTYPES)
    check_type("cfg", cfg, TinyLMConfig, none_ok=True)
    check_int("seed", seed, 0)
    if weights == "trained":
        from course_lib.pretrained import load_pretrained

        model = load_pretrained(device=device, dtype=dtype)
        if cfg is not None and cfg != model.config:
            raise ValueError("cfg: the trained weights are for TinyLMConfig() "
                             f"{model.config.to_dict()}; pass weights='random' for another config")
        return model
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = TinyLM(cfg)
    torch.random.set_rng_state(gen_state)
    return model.to(device=device, dtype=dtype).eval()
