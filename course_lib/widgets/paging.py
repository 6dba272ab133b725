"""Panels for lessons 04 and 05.

paging_panel    choose sequence lengths, the block size and the pool size; the sequences
                grow token by token, interleaved (as decoding does), and the panel draws
                their block tables and the pool, with the waste of the last blocks
sharing_panel   choose a shared-prefix length, the number of requests and their own tokens;
                the requests arrive one after another on a prefix-caching pool: the
                panel draws which blocks they share and what that saves

Both run the paged store allocation-only (no model), so they answer at once.
"""

from __future__ import annotations

import ipywidgets as W

from course_lib.kv.base import KVAllocationError
from course_lib.kv.paged import PagedKVStore, num_blocks_for
from course_lib.plots.paging import block_table_map
from course_lib.widgets import Panel, check_int, parse_int_list

BLOCK_SIZES = (1, 2, 4, 8, 16, 32, 64)
MAX_SEQS = 8
MAX_LEN = 512
POOL_RANGE = (1, 256)


def _n(count: int, noun: str) -> str:
    """'1 block', '3 blocks'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def grow_interleaved(lengths, block_size: int, num_blocks: int) -> tuple[PagedKVStore, str | None]:
    """Sequences arrive together and grow one token each per step, round robin; a sequence
    that cannot get a block is left short. Returns the store and the first refusal (or None)."""
    store = PagedKVStore(1, 1, 1, num_blocks=num_blocks, block_size=block_size, max_model_len=MAX_LEN)
    refusal, alive = None, []
    for i in range(len(lengths)):
        try:
            store.add(i, [0], lengths[i])
            store.mark_computed(i, 1)
            alive.append(i)
        except KVAllocationError:
            refusal = refusal or f"sequence {i} could not start"
    for t in range(2, max(lengths, default=0) + 1):
        for i in list(alive):
            if t > lengths[i]:
                continue
            try:
                store.grow(i, t)
                store.mark_computed(i, t)
            except KVAllocationError:
                refusal = refusal or f"sequence {i} stopped at {t - 1} of {lengths[i]} tokens"
                alive.remove(i)
    return store, refusal


def paging_report(lengths_text: str, block_size, num_blocks, max_len: int = MAX_LEN):
    """Validate the panel's values and build the store. Returns (status, figure)."""
    lengths = parse_int_list(lengths_text, "lengths", 1, max_len, max_items=MAX_SEQS)
    bs = check_int(block_size, "block size", 1, max(BLOCK_SIZES))
    nb = check_int(num_blocks, "pool blocks", *POOL_RANGE)
    store, refusal = grow_interleaved(lengths, bs, nb)
    u = store.usage()
    held = u.token_states + u.internal
    per_seq = ", ".join(f"seq {i}: {store.num_cached(i)} tokens in {_n(len(store.block_table(i)), 'block')} "
                        f"({_n(len(store.block_table(i)) * bs - store.num_cached(i), 'slot')} empty)" for i in store.seqs)
    status = (f"{per_seq}. Held: {held} slots, {u.token_states} hold a token state "
              f"({u.token_states / held:.1%}); internal fragmentation {u.internal} slots, under one block per "
              f"sequence. A contiguous arena reserving the maximum ({max_len}) per sequence would need "
              f"{max_len * len(lengths)} slots for the same requests.") if held else "No block is held."
    if refusal:
        raise ValueError(f"pool blocks: {nb} blocks of {bs} slots cannot hold these lengths ({refusal}); "
                         f"they need {sum(num_blocks_for(n, bs) for n in lengths)}")
    fig = block_table_map(store.snapshot(), title=f"Block tables and the pool (block size {bs})")
    return status, fig


def paging_panel() -> Panel:
    """Lesson 04's panel: lengths and block size -> block tables, the pool, the waste."""
    controls = {
        "lengths_text": W.Text(value="37, 5, 120, 64", description="lengths", continuous_update=False,
                               tooltip=f"up to {MAX_SEQS} sequence lengths, each 1..{MAX_LEN}"),
        "block_size": W.Dropdown(options=list(BLOCK_SIZES), value=16, description="block size"),
        "num_blocks": W.IntText(value=24, description="pool blocks"),
    }
    return Panel(controls, lambda **v: paging_report(**v), columns=3).show()


def sharing_report(prefix_len, n_requests, own_len, block_size):
    """Requests = one shared prefix + their own tokens, arriving one after another on a pool
    with prefix caching. Returns (status, figure)."""
    p = check_int(prefix_len, "shared prefix", 0, 256)
    n = check_int(n_requests, "requests", 1, MAX_SEQS)
    own = check_int(own_len, "own tokens", 1, 128)
    bs = check_int(block_size, "block size", 1, max(BLOCK_SIZES))
    prefix = [1000 + t for t in range(p)]
    need_alone = n * num_blocks_for(p + own, bs)
    store = PagedKVStore(1, 1, 1, num_blocks=min(POOL_RANGE[1], max(need_alone, 1)), block_size=bs,
                         max_model_len=p + own, prefix_caching=True)
    if need_alone > POOL_RANGE[1]:
        raise ValueError(f"requests: {n} requests of {p + own} tokens need {need_alone} blocks of {bs} without "
                         f"sharing; the map draws at most {POOL_RANGE[1]}: fewer requests or a bigger block size")
    hits = []
    for i in range(n):
        tokens = prefix + [2000 + 100 * i + t for t in range(own)]
        hits.append(store.add(i, tokens, len(tokens)))
        store.mark_computed(i, len(tokens))                  # its prefill ran: full blocks enter the cache
    sh = store.sharing()
    computed = sum(p + own - h for h in hits)
    partial = (f", not its last partial block ({p % bs} tokens), which each request computes and holds itself"
               if p % bs else "")
    status = (f"Cached tokens found at admission: {hits}. The first request computes everything; the others "
              f"reuse the prefix's {p // bs} full block(s){partial}. Blocks held: "
              f"{sh['physical_blocks']} instead of {sh['logical_blocks']} without sharing "
              f"({sh['saved_blocks'] / max(sh['logical_blocks'], 1):.0%} saved); prefill tokens computed: "
              f"{computed} of {n * (p + own)}.")
    fig = block_table_map(store.snapshot(), title="Shared prefix blocks (red outline: held by several requests)")
    return status, fig


def sharing_panel() -> Panel:
    """Lesson 05's panel: a shared prefix, n requests -> which blocks they share."""
    controls = {
        "prefix_len": W.IntSlider(value=40, min=0, max=256, description="shared prefix", continuous_update=False),
        "n_requests": W.IntSlider(value=4, min=1, max=MAX_SEQS, description="requests", continuous_update=False),
        "own_len": W.IntSlider(value=10, min=1, max=128, description="own tokens", continuous_update=False),
        "block_size": W.Dropdown(options=list(BLOCK_SIZES), value=8, description="block size"),
    }
    return Panel(controls, lambda **v: sharing_report(**v), columns=2).show()
