"""engine/heap.py: the heap is frozen while the engine runs, and only then."""

from __future__ import annotations

import gc
import weakref

import pytest

from course_lib.engine import Engine, Request
from course_lib.engine.disagg import DisaggregatedServer
from course_lib.engine.heap import frozen_heap
from course_lib.model import build_model
from helpers import one_thread, tiny_config  # noqa: F401 (an autouse fixture)


@pytest.fixture(scope="module")
def model():
    return build_model(tiny_config(), seed=1, weights="random")


def requests(n=4):
    return [Request([40 + i, 41, 42], 3, rid=i) for i in range(n)]


def test_frozen_heap_freezes_what_is_alive_and_unfreezes_at_the_outermost_exit():
    # (frozen objects that die leave the count, so it is compared with margins, not exactly)
    before = gc.get_freeze_count()
    with frozen_heap():
        frozen = gc.get_freeze_count()
        assert frozen > before
        fresh = [[] for _ in range(10_000)]             # tracked objects made after the outer freeze
        with frozen_heap():
            assert gc.get_freeze_count() < frozen + len(fresh)    # the inner block froze nothing more
        assert gc.get_freeze_count() > frozen // 2       # the inner exit leaves the heap frozen
    assert gc.get_freeze_count() == before
    del fresh


def test_the_oldest_generation_is_nearly_empty_while_frozen():
    gc.collect()
    oldest = len(gc.get_objects(generation=2))
    with frozen_heap():
        assert len(gc.get_objects(generation=2)) < oldest / 10     # what a full pass would walk
    assert len(gc.get_objects(generation=2)) >= oldest * 0.9


def test_cycles_made_while_frozen_are_still_collected():
    class Node:
        pass
    with frozen_heap():
        a, b = Node(), Node()
        a.other, b.other = b, a                        # a cycle: reference counting cannot free it
        probe = weakref.ref(a)
        del a, b
        gc.collect()
        assert probe() is None


def test_an_engine_run_steps_with_the_heap_frozen_and_restores_it(model):
    seen = []

    class Watched(Engine):
        def step(self):
            seen.append(gc.get_freeze_count())
            return super().step()

    before = gc.get_freeze_count()
    res = Watched(model, max_running=2).run(requests())
    assert len(res.finished) == 4 and seen and min(seen) > before
    assert gc.get_freeze_count() == before


def test_a_run_that_raises_still_unfreezes(model):
    class Broken(Engine):
        def step(self):
            raise RuntimeError("boom")

    before = gc.get_freeze_count()
    with pytest.raises(RuntimeError, match="boom"):
        Broken(model).run(requests(1))
    assert gc.get_freeze_count() == before


def test_the_disaggregated_server_runs_frozen_too(model, monkeypatch):
    seen = []
    real = Engine.step
    monkeypatch.setattr(Engine, "step", lambda self: seen.append(gc.get_freeze_count()) or real(self))
    before = gc.get_freeze_count()
    res = DisaggregatedServer(model).run(requests(2))
    assert len([r for r in res.requests if r.finish_reason]) == 2 and seen and min(seen) > before
    assert gc.get_freeze_count() == before


def test_a_heap_the_caller_froze_is_left_frozen():
    gc.freeze()
    try:
        mine = gc.get_freeze_count()
        fresh = [[] for _ in range(10_000)]             # made after the caller's freeze
        with frozen_heap():
            assert gc.get_freeze_count() < mine + len(fresh)     # not frozen again
        assert gc.get_freeze_count() > mine // 2        # not unfrozen behind the caller's back
        del fresh
    finally:
        gc.unfreeze()
