"""How big the KV cache gets: bytes per token from a model's configuration.

Every layer keeps, for every token it has seen, one key vector and one value
vector per key/value head. So one token costs

    bytes per token = 2 (K and V) x layers x kv_heads x head_dim x bytes per element

and a request of L tokens costs L times that, for as long as it runs. With
grouped-query attention (GQA) several query heads share one K/V head, which is
why Llama-3-8B needs a quarter of Llama-2-7B's cache per token.

The vLLM paper (Kwon et al., SOSP 2023, section 3) works the OPT-13B example:
2 x 5120 (hidden) x 40 (layers) x 2 bytes (fp16) = 800 KB per token, so one
2048-token request needs 1.6 GB. `PUBLISHED` reproduces it from the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from course_lib.validate import check_float, check_int, check_sequence, check_type

# Bytes per element of the dtypes a KV cache is kept in.
DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2,
               "float8": 1, "fp8": 1, "int8": 1}

KIB, MIB, GIB = 1024, 1024**2, 1024**3


@dataclass(frozen=True)
class KVShape:
    """The four numbers that fix a model's KV-cache size per token."""

    name: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    bytes_per_element: int = 2
    max_len: int = 2048          # the model's context length (its "maximum sequence length")
    source: str = ""

    def __post_init__(self):
        check_type("name", self.name, str, "a model name (str)")
        for field in ("num_layers", "num_kv_heads", "head_dim", "bytes_per_element", "max_len"):
            check_int(field, getattr(self, field), 1)

    @property
    def bytes_per_token(self) -> int:
        return kv_bytes_per_token(self.num_layers, self.num_kv_heads, self.head_dim, self.bytes_per_element)

    def bytes_for(self, tokens: int) -> int:
        """KV bytes of one request holding `tokens` tokens."""
        return check_int("tokens", tokens, 0) * self.bytes_per_token

    def tokens_in(self, budget_bytes: int | float) -> int:
        """How many token slots fit in `budget_bytes` of memory."""
        budget = check_float("budget_bytes", budget_bytes, 0)
        return int(budget // self.bytes_per_token)


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, bytes_per_element: int = 2) -> int:
    """2 (K and V) x layers x kv_heads x head_dim x bytes per element."""
    for name, value in (("num_layers", num_layers), ("num_kv_heads", num_kv_heads),
                        ("head_dim", head_dim), ("bytes_per_element", bytes_per_element)):
        check_int(name, value, 1)
    return 2 * num_layers * num_kv_heads * head_dim * bytes_per_element


def shape_from_config(config: Any, name: str = "model", bytes_per_element: int | None = None) -> KVShape:
    """A KVShape from a TinyLMConfig, a Hugging Face config object, or a dict with HF keys.

    Keys read: num_hidden_layers, hidden_size, num_attention_heads,
    num_key_value_heads (absent = num_attention_heads: plain multi-head attention),
    head_dim (absent = hidden_size / num_attention_heads), torch_dtype,
    max_position_embeddings.
    """
    get = (lambda k, d=None: config.get(k, d)) if isinstance(config, Mapping) else (lambda k, d=None: getattr(config, k, d))
    check_type("name", name, str, "a model name (str)")
    check_int("bytes_per_element", bytes_per_element, 1, none_ok=True)
    layers, hidden, heads = get("num_hidden_layers"), get("hidden_size"), get("num_attention_heads")
    for key, value in (("num_hidden_layers", layers), ("hidden_size", hidden), ("num_attention_heads", heads)):
        if value is None:
            raise ValueError(f"config: needs '{key}'")
        check_int(f"config.{key}", value, 1)
    kv_heads = get("num_key_value_heads") or heads
    head_dim = get("head_dim") or hidden // heads
    if bytes_per_element is None:
        dtype = str(get("torch_dtype") or get("dtype") or "float16").replace("torch.", "")
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"config.torch_dtype: must be one of {', '.join(sorted(DTYPE_BYTES))}; got {dtype!r}")
        bytes_per_element = DTYPE_BYTES[dtype]
    return KVShape(name, layers, kv_heads, head_dim, bytes_per_element, get("max_position_embeddings") or 2048)


def format_bytes(n: float) -> str:
    """1024-based units, as the vLLM paper uses them (800 KB = 800 x 1024 bytes)."""
    check_float("n", n, finite=False)
    for unit, size in (("GB", GIB), ("MB", MIB), ("KB", KIB)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


# Published configurations (fp16 caches, as served). Layer / head counts are
# from each model's released config.json; OPT-13B is the vLLM paper's example.
PUBLISHED = {
    "OPT-13B": KVShape("OPT-13B", 40, 40, 128, 2, 2048, "Zhang et al. 2022; vLLM paper section 3: 800 KB/token"),
    "Llama-2-7B": KVShape("Llama-2-7B", 32, 32, 128, 2, 4096, "Touvron et al. 2023, config.json"),
    "Llama-2-70B": KVShape("Llama-2-70B", 80, 8, 128, 2, 4096, "Touvron et al. 2023 (GQA, 8 KV heads)"),
    "Llama-3-8B": KVShape("Llama-3-8B", 32, 8, 128, 2, 8192, "Meta 2024 (GQA, 8 KV heads)"),
    "Mistral-7B": KVShape("Mistral-7B", 32, 8, 128, 2, 8192, "Jiang et al. 2023 (GQA, 8 KV heads)"),
    "GPT-3 175B": KVShape("GPT-3 175B", 96, 96, 128, 2, 2048, "Brown et al. 2020"),
}

# The vLLM paper's figures for OPT-13B, quoted for comparison.
PAPER_OPT13B_KB_PER_TOKEN = 800
PAPER_OPT13B_GB_PER_2048 = 1.6


def tinylm_shape(config=None, bytes_per_element: int = 4) -> KVShape:
    """The course model's KVShape (fp32 by default, as the course runs it)."""
    from course_lib.model import TinyLMConfig

    cfg = config or TinyLMConfig()
    return KVShape("TinyLM", cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim,
                   bytes_per_element, cfg.max_position_embeddings, "course_lib.model.TinyLMConfig")


def sizing_table(shapes=None, tokens: int = 2048) -> list[dict]:
    """Rows for a table: bytes per token and bytes for a `tokens`-token request."""
    check_int("tokens", tokens, 0)
    shapes = check_sequence("shapes", shapes, what="a list of KVShapes") if shapes is not None else \
        [tinylm_shape(), *PUBLISHED.values()]
    for i, s in enumerate(shapes):
        check_type(f"shapes[{i}]", s, KVShape)
    return [{"model": s.name, "layers": s.num_layers, "kv_heads": s.num_kv_heads, "head_dim": s.head_dim,
             "bytes/elem": s.bytes_per_element, "KV per token": format_bytes(s.bytes_per_token),
             f"KV for {tokens} tokens": format_bytes(s.bytes_for(tokens))} for s in shapes]
