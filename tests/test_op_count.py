"""course_lib/op_count.py: counting ATen operations (lesson 04's fused-ops section rests on these counts)."""

import pytest
import torch
from torch import nn

from course_lib import fused_ops
from course_lib.kv.decoding import run_packed
from course_lib.kv.paged import PagedKVStore
from course_lib.kv.step import PackedStep
from course_lib.op_count import OpCount, count_ops


def test_counts_each_aten_operation_once_and_returns_the_result():
    x = torch.ones(3)
    count, out = count_ops(lambda: (x + 1) * 2)
    assert count == OpCount(2, {"aten.add": 1, "aten.mul": 1}, ())
    assert torch.equal(out, torch.full((3,), 4.0))
    again, _ = count_ops(lambda: (x + 1) * 2)
    assert again == count                                           # deterministic: no clock involved


def test_per_module_counts_sum_over_calls_and_nest():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.ReLU()

        def forward(self, x):
            return self.inner(self.inner(x)) + 1                     # inner runs twice, then an add

    m, x = Twice(), torch.ones(2)
    count, _ = count_ops(lambda: m(x), modules=[m, m.inner])
    assert count.per_module == (3, 2) and count.by_op == {"aten.relu": 2, "aten.add": 1}
    assert count_ops(lambda: x * 2, modules=[m])[0].per_module == (0,)   # never called: 0


def test_difference_lists_only_the_operations_that_differ():
    a = OpCount(5, {"aten.mul": 3, "aten.add": 1, "aten.mm": 1})
    b = OpCount(3, {"aten.mm": 1, "aten.empty_like": 2})
    assert a.difference(b) == {"aten.mul": 3, "aten.empty_like": -2, "aten.add": 1}


def test_hooks_are_removed_even_when_fn_raises():
    m = nn.ReLU()
    with pytest.raises(ZeroDivisionError):
        count_ops(lambda: (m(torch.ones(1)), 1 / 0), modules=[m])
    assert not m._forward_hooks and not m._forward_pre_hooks


@pytest.mark.parametrize("kwargs, name", [(dict(fn=3), "fn"), (dict(fn=lambda: 0, modules=5), "modules"),
                                          (dict(fn=lambda: 0, modules=[nn.ReLU(), "x"]), "modules[1]")])
def test_bad_arguments_are_refused_by_name(kwargs, name):
    with pytest.raises((ValueError, TypeError)) as info:
        count_ops(**kwargs)
    assert str(info.value).startswith(name + ":") and "\n" not in str(info.value)


def test_fused_c_runs_only_for_float_cpu_tensors():
    assert not fused_ops.c_runs("cpu", torch.int64)
    with pytest.raises(ValueError, match="^device"):
        fused_ops.c_runs("tpu")


def test_a_fused_decode_step_runs_fewer_operations_per_layer_and_the_same_logits(model64):
    """What lesson 04 shows on the trained TinyLM, on a small random one in float64."""
    store = PagedKVStore.for_model(model64, num_blocks=32, block_size=4)
    prompts = [[65 + i] * (3 + 2 * i) for i in range(4)]
    _, tokens = run_packed(model64, store, prompts, steps=2)
    batch = [(i, [t[-1]]) for i, t in enumerate(tokens)]            # one new token per sequence

    def decode_step():
        step = PackedStep(model64, store, batch, grow=True)          # not committed: the step can run again
        with torch.no_grad():
            return model64.forward_ctx(step.ids, step.positions, step.ctx)[0]   # (4, V)

    counts, logits = {}, {}
    for impl in ("auto", "torch"):
        with fused_ops.use(impl):
            counts[impl], logits[impl] = count_ops(decode_step, modules=model64.model.layers)
    assert len(counts["auto"].per_module) == model64.config.num_hidden_layers
    assert torch.allclose(logits["auto"], logits["torch"], atol=1e-10)
    if fused_ops.c_runs("cpu", torch.float64):
        assert all(f < r for f, r in zip(counts["auto"].per_module, counts["torch"].per_module))
        assert counts["torch"].by_op.get("aten.rsqrt", 0) > counts["auto"].by_op.get("aten.rsqrt", 0) == 0
    else:
        assert counts["auto"] == counts["torch"]
