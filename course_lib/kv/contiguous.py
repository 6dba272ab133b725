"""A contiguous KV arena: one preallocated tensor, one slab per request.

This is how serving systems before vLLM kept the KV cache (FasterTransformer,
Orca): at admission a request is given ONE contiguous run of token slots big
enough for every token it might ever hold, keys and values of every layer
side by side. The arena is a real tensor

    arena: (capacity, 2, num_layers, nkv, hd)      slot -> [K|V] -> layer -> head -> dim

so a slab [start, start + size) is one contiguous piece of memory, and
`kv_view` hands the model views into it: TinyLM writes and reads its keys and
values right there.

How much to reserve at admission (the vLLM paper's Orca baselines, section 6.1):

    'max'     the model's maximum length, whatever the request (Orca (Max))
    'pow2'    the prompt plus the output length rounded up to a power of two:
              over-reserving the output by at most 2x, as the paper defines it
              ("if the true output length is 25, it reserves 32 positions")
    'oracle'  exactly prompt + output, as if the output length were known (Orca (Oracle))

The final length is the `max_len` given to `add` (a replay passes the true
prompt + output length; an engine passes prompt + max_new_tokens).

Where to put the slab: first-fit, best-fit or buddy (see allocators.py).

Where the memory goes (`usage()`), in token slots that add up to capacity:

    token_states  slots holding a token's keys and values
    reserved      slots held for tokens the request will still generate
    internal      slots inside slabs that no token will ever use (over-reservation,
                  and buddy rounding)
    external      free slots in holes too small for the request that is waiting
    free          the rest of the free slots

When no hole is big enough, `add` raises KVAllocationError naming the
request, the largest free span and the total free: the "paradox of free
memory" is an allocation that fails while total free > requested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal, NamedTuple, Sequence, get_args

import torch

from course_lib.kv.allocators import Placement, make_allocator, next_pow2
from course_lib.device import check_fits
from course_lib.kv.base import KVAllocationError, KVStore, KVUsage
from course_lib.validate import check_choice, check_int, check_ints

Reservation = Literal["max", "pow2", "oracle"]
RESERVATIONS: tuple[str, ...] = get_args(Reservation)


def reservation_size(policy: str, prompt_len: int, final_len: int, max_model_len: int) -> int:
    """Token slots a request reserves under `policy`: prompt_len tokens now, final_len at the end."""
    check_choice("reservation", policy, RESERVATIONS)
    max_model_len = check_int("max_model_len", max_model_len, 1)
    final_len = check_int("max_len", final_len, 1, max_model_len)
    prompt_len = check_int("prompt_len", prompt_len, 1, final_len)
    if policy == "max":
        return max_model_len
    if policy == "pow2":
        output = final_len - prompt_len
        return min(prompt_len + (next_pow2(output) if output else 0), max_model_len)
    return final_len


@dataclass
class Slab:
    """One request's run of slots [start, start + size)."""

    start: int
    size: int          # slots taken from the arena (buddy may round up the reservation)
    reservation: int   # slots the reservation policy asked for (<= size)
    prompt_len: int    # prompt tokens at admission
    final_len: int     # tokens the request is expected to reach (max_len at add, raised by grow)
    length: int        # tokens it has room for right now (add's prompt, then grow)


class MapSegment(NamedTuple):
    """A piece of the arena in a memory map. A hole has seq_id None and zero counts."""

    start: int
    size: int
    seq_id: int | None
    token_states: int = 0
    reserved: int = 0
    internal: int = 0
    rounding: int = 0      # the part of `internal` that the allocator added (buddy)


FIGURE2_KEYS = ("token_states", "reservation", "internal", "external_and_others")


@dataclass
class ArenaUsage(KVUsage):
    """KVUsage plus `rounding`: the part of `internal` the allocator added on top of
    the reservation (buddy rounds every slab up to a power of two)."""

    rounding: int = 0

    def figure2(self) -> dict[str, float]:
        """Shares in the vLLM paper's Figure 2 categories. As the paper does (section 3:
        fragmentation "from the memory allocator like the buddy allocator" is external),
        allocator rounding counts as external & others; internal is over-reservation only."""
        c = self.capacity or 1
        return {"token_states": self.token_states / c, "reservation": self.reserved / c,
                "internal": (self.internal - self.rounding) / c,
                "external_and_others": (self.external + self.free + self.rounding) / c}


def split_usage(capacity: int, slabs: Iterable[tuple[int, ...]], holes: Iterable[int],
                too_small: int = 0) -> ArenaUsage:
    """The waste accounting, as a pure function.

    slabs:     (slab size, tokens written, final length[, reservation]) per request;
               the reservation (what the policy asked for) defaults to the slab size
    holes:     size of every free hole (for buddy: every free block)
    too_small: a hole smaller than this cannot take the waiting request
               (0: nobody is waiting, so no free slot is wasted)
    """
    tokens = reserved = internal = rounding = 0
    for size, written, final, *rest in slabs:
        asked = rest[0] if rest else size
        written = min(written, size)
        will_use = max(min(final, size), written)      # slots some token of this request will occupy
        tokens += written
        reserved += will_use - written
        internal += size - will_use
        rounding += size - max(asked, will_use)
    external = sum(h for h in holes if h < too_small)
    return ArenaUsage(capacity=capacity, token_states=tokens, reserved=reserved, internal=internal,
                      external=external, rounding=rounding)


class ContiguousKVStore(KVStore):
    """One arena tensor; one contiguous slab per sequence.

    capacity:      token slots in the arena
    max_model_len: the longest sequence the model serves ('max' reserves this);
                   default: the largest slab the empty arena holds
    reservation:   'max' | 'pow2' | 'oracle'
    placement:     'first-fit' | 'best-fit' | 'buddy'
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype = torch.float32,
                 device=None, capacity: int = 4096, max_model_len: int | None = None,
                 reservation: Reservation = "oracle", placement: Placement = "first-fit", min_block: int = 1):
        super().__init__(num_layers, num_kv_heads, head_dim, dtype, device)
        capacity = check_int("capacity", capacity, 1)
        check_choice("reservation", reservation, RESERVATIONS)
        check_fits("capacity", capacity, capacity * 2 * num_layers * num_kv_heads * head_dim * self._itemsize(),
                   self.device, "the arena")
        if check_int("min_block", min_block, 1, capacity, note="a power of two") & (min_block - 1):
            raise ValueError(f"min_block: must be a power of two >= 1; got {min_block}")
        self.allocator = make_allocator(capacity, placement, min_block)
        biggest = max(size for _, size in self.allocator.free_blocks())   # the largest slab the empty arena holds
        max_model_len = check_int("max_model_len", biggest if max_model_len is None else max_model_len, 1)
        if self.allocator.slab_size(max_model_len) > biggest:
            raise ValueError(f"max_model_len: a slab for {max_model_len} tokens must fit in the empty arena "
                             f"({capacity} slots, {placement}); got {max_model_len}")
        self.capacity, self.max_model_len = capacity, max_model_len
        self.reservation, self.placement = reservation, placement
        # The arena: "device memory" for the KV cache of every request.
        self.arena = torch.zeros(capacity, 2, num_layers, num_kv_heads, head_dim, dtype=self.dtype,
                                 device=self.device)                     # (C, 2, layers, nkv, hd)
        self.slabs: dict[int, Slab] = {}
        self.swapped: dict[int, tuple[torch.Tensor, Slab]] = {}      # seq_id -> (CPU copy, slab record)
        self.blocked = 0          # slots the last refused allocation asked for (0 after a success)
        self.moves = 0            # slabs relocated because they outgrew their reservation

    @classmethod
    def for_model(cls, model, **kwargs) -> "ContiguousKVStore":
        """A store shaped for `model`; max_model_len defaults to the model's context length
        (or the largest slab the arena can hold, if that is smaller)."""
        store = super().for_model(model, **kwargs)
        if kwargs.get("max_model_len") is None:
            store.max_model_len = min(store.max_model_len, model.config.max_position_embeddings)
        return store

    # ---- sizes ---------------------------------------------------------------
    @property
    def bytes_per_token(self) -> int:
        """Arena bytes of one token slot (keys + values of every layer)."""
        return self.arena[0].numel() * self.arena.element_size()

    def reserve_for(self, prompt_len: int, max_len: int) -> int:
        """Slots the reservation policy asks for: a prompt of prompt_len, final length max_len."""
        return reservation_size(self.reservation, prompt_len, max_len, self.max_model_len)

    def slab_size_for(self, prompt_len: int, max_len: int) -> int:
        """Slots the arena gives that request (the reservation, rounded up by buddy)."""
        return self.allocator.slab_size(self.reserve_for(prompt_len, max_len))

    def holes(self) -> list[tuple[int, int]]:
        """Free (start, size) spans in address order (buddy: free blocks)."""
        return self.allocator.free_blocks()

    def total_free(self) -> int:
        return sum(size for _, size in self.holes())

    def largest_free(self) -> int:
        return max((size for _, size in self.holes()), default=0)

    # ---- the engine's verbs ----------------------------------------------------
    def _check_new(self, seq_id, tokens, max_len) -> None:
        if seq_id is not None:
            self._check_seq("seq_id", seq_id)
        if seq_id in self.slabs or seq_id in self.swapped:
            raise ValueError(f"seq_id: {seq_id} is already in the store")
        check_int("max_len", max_len, 1, self.max_model_len)
        n = len(check_ints("tokens", tokens, 0))
        if not 1 <= n <= max_len:
            raise ValueError(f"tokens: the prompt must hold between 1 and max_len ({max_len}) tokens; got {n}")

    def can_add(self, tokens: Sequence[int], max_len: int) -> bool:
        self._check_new(None, tokens, max_len)
        return self.largest_free() >= self.slab_size_for(len(tokens), max_len)

    def _refuse(self, size: int, what: str) -> KVAllocationError:
        self.blocked = size
        return KVAllocationError(size, self.largest_free(), self.total_free(), detail=what)

    def add(self, seq_id: int, tokens: Sequence[int], max_len: int) -> int:
        """Reserve one slab for the whole life of the sequence; 0 tokens are cached yet."""
        self._check_seq("seq_id", seq_id)
        self._check_new(seq_id, tokens, max_len)
        asked = self.reserve_for(len(tokens), max_len)
        size = self.allocator.slab_size(asked)
        start = self.allocator.alloc(size)
        if start is None:
            raise self._refuse(size, f"{self.reservation} reservation of {asked} slots for a {len(tokens)}-token "
                                     f"prompt of final length {max_len}, {self.placement} placement")
        self.blocked = 0
        self.slabs[seq_id] = Slab(start, size, asked, len(tokens), max_len, len(tokens))
        self.cached[seq_id] = 0
        return 0

    def grow(self, seq_id: int, length: int) -> None:
        """Room for `length` tokens. Inside the reservation this is free; past it the slab
        grows in place if the next hole allows, else moves (a copy) to a bigger hole."""
        slab = self._slab(seq_id)
        check_int("length", length, 1, self.max_model_len)
        if length <= slab.size:
            slab.length = max(slab.length, length)
            slab.final_len = max(slab.final_len, length)
            return
        asked = self.reserve_for(min(slab.prompt_len, length), length)
        new_size = max(self.allocator.slab_size(asked), length)
        if self.allocator.extend(slab.start, slab.size, new_size - slab.size):
            slab.size, slab.reservation = new_size, asked
        else:
            start = self.allocator.alloc(new_size)
            if start is None:
                raise self._refuse(new_size, f"sequence {seq_id} outgrew its slab of {slab.size} slots")
            n = self.num_cached(seq_id)
            self.arena[start:start + n] = self.arena[slab.start:slab.start + n]    # (n, 2, layers, nkv, hd)
            self.allocator.free(slab.start, slab.size)
            slab.start, slab.size, slab.reservation = start, new_size, asked
            self.moves += 1
        slab.length, slab.final_len = length, max(slab.final_len, length)

    def free(self, seq_id: int) -> None:
        """Give the slab back; the allocator merges it with neighbouring holes. Freeing an id
        that is not here (twice, or never added) raises ValueError."""
        if seq_id not in self.slabs and seq_id not in self.swapped:
            raise self._unknown(seq_id)
        slab = self.slabs.pop(seq_id, None)
        if slab is not None:
            self.allocator.free(slab.start, slab.size)
        self.swapped.pop(seq_id, None)
        self.cached.pop(seq_id, None)

    def kv_view(self, layer: int, seq_id: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views (not copies) of the slab: K and V of `layer` for the first `length` tokens,
        each (length, nkv, hd). Writing into them writes into the arena."""
        slab = self._slab(seq_id)
        check_int("layer", layer, 0, self.num_layers - 1)
        check_int("length", length, 0)
        if not 0 <= length <= slab.size:
            raise ValueError(f"length: sequence {seq_id} has a slab of {slab.size} slots; asked for {length}")
        rows = self.arena[slab.start:slab.start + length]                       # (length, 2, layers, nkv, hd)
        return rows[:, 0, layer], rows[:, 1, layer]                              # 2 x (length, nkv, hd)

    def _slab(self, seq_id: int) -> Slab:
        if seq_id not in self.slabs:
            where = "swapped out" if seq_id in self.swapped else "not in the store"
            raise ValueError(f"seq_id: {seq_id} is {where}")
        return self.slabs[seq_id]

    # ---- optional verbs: preemption by swapping -------------------------------
    def swap_out(self, seq_id: int) -> None:
        """Copy the sequence's cached K/V to CPU memory and free its slab."""
        slab = self._slab(seq_id)
        n = self.num_cached(seq_id)
        copy = self.arena[slab.start:slab.start + n].to("cpu", copy=True)      # (n, 2, layers, nkv, hd)
        self.allocator.free(slab.start, slab.size)
        del self.slabs[seq_id]
        self.swapped[seq_id] = (copy, slab)

    def swap_in(self, seq_id: int) -> None:
        """Reserve a slab again and copy the K/V back (it may land at another address)."""
        if seq_id not in self.swapped:
            raise ValueError(f"seq_id: {seq_id} is not swapped out")
        copy, old = self.swapped[seq_id]
        start = self.allocator.alloc(old.size)
        if start is None:
            raise self._refuse(old.size, f"swapping sequence {seq_id} back in")
        self.blocked = 0
        self.arena[start:start + copy.shape[0]] = copy.to(self.device)
        del self.swapped[seq_id]
        old.start = start
        self.slabs[seq_id] = old

    def fork(self, parent_id: int, child_id: int) -> None:
        raise NotImplementedError("a contiguous slab cannot be shared: fork needs a paged store (lesson 05)")

    # ---- accounting -------------------------------------------------------------
    def usage(self, request: int | None = None) -> ArenaUsage:
        """Split the capacity (token slots). `request`: slots wanted by a waiting request;
        default: the last refused allocation, if nothing was admitted since."""
        want = self.blocked if request is None else request
        too_small = self.allocator.slab_size(want) if want else 0
        slabs = [(s.size, self.num_cached(i), s.final_len, s.reservation) for i, s in self.slabs.items()]
        return split_usage(self.capacity, slabs, [size for _, size in self.holes()], too_small)

    def memory_map(self) -> list[MapSegment]:
        """Every slab and hole in address order; together they tile [0, capacity)."""
        segs = [MapSegment(start, size, None) for start, size in self.holes()]
        for seq_id, s in self.slabs.items():
            u = split_usage(s.size, [(s.size, self.num_cached(seq_id), s.final_len, s.reservation)], [])
            segs.append(MapSegment(s.start, s.size, seq_id, u.token_states, u.reserved, u.internal, u.rounding))
        return sorted(segs)

    def __repr__(self) -> str:
        return (f"ContiguousKVStore(capacity={self.capacity} slots, {self.reservation} reservation, "
                f"{self.placement}, {len(self.slabs)} slabs, {self.total_free()} free, "
                f"largest hole {self.largest_free()})")
