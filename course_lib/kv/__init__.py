"""Where keys and values live.

dense.py       the simplest cache: one (B, nkv, T, hd) tensor per layer, grown by torch.cat
(later lessons add a contiguous arena with reservation policies, and a paged block pool)
"""

from course_lib.kv.dense import DenseKVCache

__all__ = ["DenseKVCache"]
