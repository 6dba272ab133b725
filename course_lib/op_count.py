"""Count the operations PyTorch runs: the fixed costs of a step, without a clock.

Every PyTorch call that touches a tensor reaches the dispatcher as one or more ATen operations
(aten.mm, aten.add, aten.view, ...), and each one costs a few microseconds on a CPU whatever its
size: dispatch, a new output tensor, one more pass over memory. A TorchDispatchMode sees every
one of them, so counting them measures that fixed cost exactly and the same way on every run
(lesson 04 counts a decode step's with and without the fused ops of course_lib/fused_ops.py):

    count, logits = count_ops(lambda: model.forward_ctx(ids, positions, ctx), modules=model.model.layers)
    count.total, count.per_module, count.by_op["aten.mm"]

What it does not see: work outside PyTorch's dispatcher, such as a C function called through
ctypes (the fused ops and the paged attention kernel; each is one call, plus the ATen operation
that makes its output tensor). The counts depend on torch's version, which decides how composite
operations break down (F.rms_norm is pow, mean, add, rsqrt and two multiplies on the CPU).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from course_lib.validate import check_callable, check_sequence, check_type


@dataclass(frozen=True)
class OpCount:
    """The ATen operations one call ran.

    total:      how many, in all
    by_op:      name ('aten.mm', 'aten.add', ...) -> how many, most frequent first
    per_module: how many ran inside each module passed to count_ops (summed over its calls), in order
    """

    total: int
    by_op: dict[str, int]
    per_module: tuple[int, ...] = ()

    def difference(self, other: "OpCount") -> dict[str, int]:
        """name -> self's count minus other's, for the operations whose counts differ (largest first)."""
        names = set(self.by_op) | set(other.by_op)
        diff = {n: self.by_op.get(n, 0) - other.by_op.get(n, 0) for n in names}
        return dict(sorted(((n, d) for n, d in diff.items() if d), key=lambda nd: (-abs(nd[1]), nd[0])))


class OpCounter(TorchDispatchMode):
    """Within `with OpCounter() as c:`, every ATen operation is counted in c.by_op (name -> calls)."""

    def __init__(self):
        super().__init__()
        self.by_op: Counter[str] = Counter()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.by_op[str(func.overloadpacket)] += 1
        self.total += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], Any], modules: Sequence[nn.Module] = ()) -> tuple[OpCount, Any]:
    """Run fn() once, counting its ATen operations -> (OpCount, what fn returned).

    modules: nn.Modules that fn calls (e.g. a model's layers); OpCount.per_module[i] counts the
             operations run inside modules[i]'s forward (hooks mark where each call starts and ends).
    """
    check_callable("fn", fn)
    modules = check_sequence("modules", modules, what="a list of nn.Modules")
    for i, m in enumerate(modules):
        check_type(f"modules[{i}]", m, nn.Module)
    counter = OpCounter()
    inside = [0] * len(modules)
    starts: list[list[int]] = [[] for _ in modules]
    hooks = []
    for i, m in enumerate(modules):
        hooks.append(m.register_forward_pre_hook(lambda mod, args, i=i: starts[i].append(counter.total)))
        hooks.append(m.register_forward_hook(
            lambda mod, args, out, i=i: inside.__setitem__(i, inside[i] + counter.total - starts[i].pop())))
    try:
        with counter:
            result = fn()
    finally:
        for h in hooks:
            h.remove()
    by_op = dict(sorted(counter.by_op.items(), key=lambda kv: (-kv[1], kv[0])))
    return OpCount(counter.total, by_op, tuple(inside)), result
