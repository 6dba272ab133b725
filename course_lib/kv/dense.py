"""The simplest KV cache: one padded tensor per layer, grown by concatenation.

This is what `model.generate()` in most libraries does for a static batch.
Every sequence of the batch shares one time axis, so a short sequence
carries padding for as long as the longest one runs.
"""

from __future__ import annotations

import torch

from course_lib.validate import check_int


class DenseKVCache:
    """Per-layer keys and values of a padded batch.

    keys[l], values[l]: (B, nkv, T_cached, hd)
    """

    def __init__(self, num_layers: int):
        check_int("num_layers", num_layers, 1, 4096)
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    @property
    def length(self) -> int:
        """Tokens cached so far (padding included)."""
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's k, v (B, nkv, T_new, hd); return everything cached (B, nkv, T, hd)."""
        if self.keys[layer] is None:
            self.keys[layer], self.values[layer] = k, v
        else:
            self.keys[layer] = torch.cat([self.keys[layer], k], dim=2)
            self.values[layer] = torch.cat([self.values[layer], v], dim=2)
        return self.keys[layer], self.values[layer]

    def nbytes(self) -> int:
        """Bytes held by the cache (keys + values, all layers)."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values if t is not None)
