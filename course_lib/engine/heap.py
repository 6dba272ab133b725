"""Keep the garbage collector's long pauses out of the serving loop.

CPython frees almost every object by reference counting, the moment its last reference
goes. A second collector finds reference cycles; it runs in generations, and its pass
over the oldest generation walks EVERY tracked object in the process. In a process that
holds PyTorch, a model and a notebook's state, that is some 10^5 to 10^6 objects, and one
pass took 0.13 s on the course's 2-core machine in the middle of an engine run (measured
with gc.callbacks when this was written; 0.22 s with transformers loaded as well): one
step, and every token it sampled, came out that much late (a time-between-tokens outlier
that has nothing to do with the schedule). Almost all of those objects were alive before
the run started and will outlive it; the pass finds nothing to free among them.

`gc.freeze()` moves every object tracked now into a permanent generation the collector no
longer walks; objects made afterwards are still collected as usual (this is not
`gc.disable()`). vLLM's engine core freezes its heap once start-up is done, and SGLang
does after its warm-up. The course engine freezes at the start of `Engine.run` and
unfreezes at its end (`frozen_heap`), so nothing outside a run is changed and nothing
frozen is kept for good.

    with frozen_heap():          # nested uses are fine: only the outermost one unfreezes
        ...
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

_depth = 0      # how many frozen_heap() blocks are open (only the outermost freezes and unfreezes)
_owned = False  # whether the outermost block froze the heap (False: it was frozen already, by someone else)


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Within the block, the objects alive when it began are out of the cyclic collector's sight.
    A heap that is frozen already (the caller ran gc.freeze() itself) is left as it is, and is
    not unfrozen at the end."""
    global _depth, _owned
    if _depth == 0:
        _owned = gc.get_freeze_count() == 0
        if _owned:
            gc.freeze()
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _owned:
            gc.unfreeze()
