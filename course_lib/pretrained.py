"""TinyLM as a Hugging Face model directory: save it, load it, offline.

The trained TinyLM ships inside the course (course_lib/weights/tinylm-stories/)
in the same layout a model on the Hugging Face hub has, so the very same folder
also opens in `transformers` without a download:

    config.json              LlamaConfig fields (architectures: LlamaForCausalLM)
    generation_config.json   which ids are <SOS>, <EOS>, <pad>
    model.safetensors        the weights, named as in LlamaForCausalLM
    tokenizer.json           the byte-level tokenizer in the `tokenizers` format
    tokenizer_config.json    tells AutoTokenizer which class and special tokens
    README.md                the model card: corpus, training command, metrics

    from transformers import AutoTokenizer, LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(TRAINED_DIR)   # tests/test_pretrained.py
    tok = AutoTokenizer.from_pretrained(TRAINED_DIR)

The course itself needs only `safetensors` to read the weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from course_lib.tokenizer import EOS, PAD, SOS, SPECIAL_NAMES

TRAINED_DIR = Path(__file__).resolve().parent / "weights" / "tinylm-stories"
WEIGHTS_FILE = "model.safetensors"


# ---- config -------------------------------------------------------------------------
def llama_config(cfg) -> dict:
    """TinyLMConfig -> the fields of a Hugging Face LlamaConfig (config.json)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "rms_norm_eps": cfg.rms_norm_eps,
        "initializer_range": cfg.initializer_range,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": SOS,
        "eos_token_id": EOS,
        "pad_token_id": PAD,
        "torch_dtype": "float32",
        "use_cache": True,
    }


def config_from_dict(d: dict):
    """config.json -> TinyLMConfig (only the fields TinyLM has)."""
    from course_lib.model import TinyLMConfig

    if d.get("architectures") != ["LlamaForCausalLM"]:
        raise ValueError(f"config.json: architectures must be ['LlamaForCausalLM']; got {d.get('architectures')!r}")
    rope = d.get("rope_parameters") or {}
    return TinyLMConfig(
        vocab_size=d["vocab_size"], hidden_size=d["hidden_size"], intermediate_size=d["intermediate_size"],
        num_hidden_layers=d["num_hidden_layers"], num_attention_heads=d["num_attention_heads"],
        num_key_value_heads=d["num_key_value_heads"], max_position_embeddings=d["max_position_embeddings"],
        rope_theta=float(rope.get("rope_theta", d.get("rope_theta", 10000.0))), rms_norm_eps=d["rms_norm_eps"],
        initializer_range=d.get("initializer_range", 0.02))


# ---- tokenizer files --------------------------------------------------------------
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (what the ByteLevel pre-tokenizer emits)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def tokenizer_json() -> dict:
    """The course's byte tokenizer in the `tokenizers` library's format.

    Token id = byte value (0..255), then <pad> <SOS> <EOS> = 256, 257, 258, as in
    course_lib.tokenizer. A BPE model with no merges over the 256 byte symbols
    does exactly that; the post-processor puts <SOS> in front, like `encode()`.
    """
    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    added = [{"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, name in sorted(SPECIAL_NAMES.items())]
    sos = SPECIAL_NAMES[SOS]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": sos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": sos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {sos: {"id": sos, "ids": [SOS], "tokens": [sos]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": []},
    }


def tokenizer_config() -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": SPECIAL_NAMES[SOS],
        "eos_token": SPECIAL_NAMES[EOS],
        "pad_token": SPECIAL_NAMES[PAD],
        "model_max_length": 512,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,     # the template post-processor already adds <SOS>
    }


def generation_config(max_length: int) -> dict:
    return {"bos_token_id": SOS, "eos_token_id": EOS, "pad_token_id": PAD, "do_sample": False,
            "max_length": max_length}


# ---- save and load ------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_pretrained(model, directory: Path) -> Path:
    """Write `model` (a TinyLM) and the tokenizer as a Hugging Face model directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    files = {
        "config.json": llama_config(cfg),
        "generation_config.json": generation_config(cfg.max_position_embeddings),
        "tokenizer.json": tokenizer_json(),
        "tokenizer_config.json": dict(tokenizer_config(), model_max_length=cfg.max_position_embeddings),
    }
    for name, content in files.items():
        (directory / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")
    return directory


def load_pretrained(directory: Path = TRAINED_DIR, device=None, dtype: torch.dtype = torch.float32):
    """Read a Hugging Face model directory into a TinyLM, in eval mode."""
    from safetensors.torch import load_file

    from course_lib.model import TinyLM

    directory = Path(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"directory: no {WEIGHTS_FILE} in {directory}; train one with tools/train_tinylm.py")
    cfg = config_from_dict(json.loads((directory / "config.json").read_text()))
    model = TinyLM(cfg)
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "rotary" not in m]:
        raise ValueError(f"{weights.name}: does not match config.json (missing {missing}, unexpected {unexpected})")
    return model.to(device=device, dtype=dtype).eval()

