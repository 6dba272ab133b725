import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from course_lib.model import TinyLMConfig, build_model


@pytest.fixture(scope="session")
def small_cfg() -> TinyLMConfig:
    """A TinyLM small enough for fast tests, with GQA (4 query heads share 2 KV heads)."""
    return TinyLMConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


@pytest.fixture(scope="session")
def model64(small_cfg):
    """float64 weights: greedy argmax cannot flip on a rounding-level near-tie."""
    return build_model(small_cfg, seed=1, dtype=torch.float64, weights="random")


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where a test that touches tensors puts them: COURSE_DEVICE (cpu, cuda, mps) if set, else the
    best device here (course_lib.device.get_device: cuda > mps > cpu). `make test` on a laptop runs
    on the CPU; `make gpu-check` sets COURSE_DEVICE=cuda, so the same tests run on the GPU."""
    from course_lib.device import get_device
    return get_device()
