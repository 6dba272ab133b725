"""The machinery every lesson's checks share: plain data in, plain data out.

A check never compares inside the learner's kernel when a course is graded. Each
case is one call of the learner's function, made by `run_case`, which prints ONE
line of plain data:

    pad_sequences · left padding: [["<pad>", "The", "cat", "sat"], ["A", "quick", "brown", "fox"]]

Results become data with `encode`: numbers, strings, None, lists, dicts, and a
tensor as its dtype, shape and values. Only the values count: a float subclass
is its float, an object that says it equals everything is "an object". An
exception becomes {"__raises__": "MemoryError", ...}; changing an argument the
task did not allow becomes {"__mutated__": [...], "result": ...}.

The grader (course_lib.grade, not shipped to students) runs the same `run_case`
in a fresh kernel and compares its lines with the reference answers' lines in its
own process (course_lib.checks.judges says when two lines mean the same answer).
While you work, `check_<task>(fn)` runs the public cases and prints one verdict
line against the public expected results shipped in course_lib/checks/expected/.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

PASS, FAIL = "✅", "❌"
SEP = " · "
MAX_LINE = 2_000_000          # characters: a bigger result is reported as too large
MAX_DEPTH = 40


# ---- inputs: what a case passes to the function ---------------------------------------------------
@dataclass(frozen=True)
class Ref:
    """A course_lib object passed as an argument (a hash function, a class): 'module:name'."""

    path: str


@dataclass(frozen=True)
class Call:
    """An argument built by calling a course_lib function (big random tensors, a ServerConfig)."""

    path: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass
class Case:
    """One input of a task: a name and the arguments (the expected answer lives with the grader).
    probe/judge: for this case only, instead of the task's (see Task)."""

    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    probe: str | None = None
    judge: str | None = None


def resolve(path: str) -> Any:
    """'course_lib.module:name' -> the object (only course_lib objects can be named)."""
    module, _, name = path.partition(":")
    if not (module == "course_lib" or module.startswith("course_lib.")):
        raise ValueError(f"{path}: only course_lib objects can be named in a case")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def encode_input(x: Any) -> Any:
    """A case argument as JSON data that `decode` turns back into the same value."""
    import torch

    if isinstance(x, Ref):
        return {"__ref__": x.path}
    if isinstance(x, Call):
        return {"__call__": x.path, "args": [encode_input(a) for a in x.args],
                "kwargs": {k: encode_input(v) for k, v in x.kwargs.items()}}
    if isinstance(x, torch.Tensor):
        return {"__tensor__": [str(x.dtype).removeprefix("torch."), list(x.shape), x.tolist()]}
    if isinstance(x, tuple):
        return {"__tuple__": [encode_input(v) for v in x]}
    if isinstance(x, list):
        return [encode_input(v) for v in x]
    if isinstance(x, dict):
        if all(type(k) is str for k in x) and not any(k.startswith("__") for k in x):
            return {k: encode_input(v) for k, v in x.items()}
        return {"__dict__": [[encode_input(k), encode_input(v)] for k, v in x.items()]}
    if x is None or type(x) in (bool, int, float, str):
        return x
    raise TypeError(f"a case argument must be plain data, a tensor, Ref or Call; got {type(x).__name__}")


def decode(x: Any) -> Any:
    """The inverse of encode_input: fresh objects every call."""
    if isinstance(x, list):
        return [decode(v) for v in x]
    if isinstance(x, dict):
        if "__tuple__" in x:
            return tuple(decode(v) for v in x["__tuple__"])
        if "__dict__" in x:
            return {_hashable(decode(k)): decode(v) for k, v in x["__dict__"]}
        if "__tensor__" in x:
            import torch
            dtype, shape, values = x["__tensor__"]
            return torch.tensor(values, dtype=getattr(torch, dtype)).reshape(shape)
        if "__ref__" in x:
            return resolve(x["__ref__"])
        if "__call__" in x:
            return resolve(x["__call__"])(*decode(x["args"]), **decode(x["kwargs"]))
        return {k: decode(v) for k, v in x.items()}
    return x


def _hashable(k):
    return tuple(_hashable(v) for v in k) if isinstance(k, list) else k


# ---- results: what the function returned, as plain data --------------------------------------------
def encode(x: Any, depth: int = 0) -> Any:
    """A result as plain JSON data, read with the builtin types' own methods (never the object's)."""
    import torch

    if depth > MAX_DEPTH:
        return {"__object__": "nested too deep"}
    if x is None or type(x) is bool:
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        return int.__index__(x)
    if isinstance(x, float):
        return float(float.__repr__(x))
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, torch.Tensor):
        with torch._C.DisableTorchFunction():
            t = torch.Tensor.detach(x).cpu()
            return {"__tensor__": [str(t.dtype).removeprefix("torch."), list(t.shape), torch.Tensor.tolist(t)]}
    if isinstance(x, (list, tuple)):
        items = list.__iter__(x) if isinstance(x, list) else tuple.__iter__(x)
        return [encode(v, depth + 1) for v in items]
    if isinstance(x, dict):
        pairs = [(encode(k, depth + 1), encode(v, depth + 1)) for k, v in dict.items(x)]
        if all(type(k) is str and not k.startswith("__") for k, _ in pairs):
            return dict(pairs)
        return {"__dict__": sorted(([k, v] for k, v in pairs), key=lambda kv: dumps(kv[0]))}
    if type(x).__module__ == "numpy" and hasattr(x, "item") and getattr(x, "shape", None) == ():
        return encode(x.item(), depth)
    return {"__object__": type(x).__name__}


def dumps(data: Any) -> str:
    """One line of JSON, keys sorted: equal data, equal text."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, allow_nan=True)


def raised(exc: BaseException) -> dict:
    """An exception as data: the nearest builtin class (a subclass of MemoryError is a MemoryError)."""
    name = next((c.__name__ for c in type(exc).__mro__ if c.__module__ == "builtins"), "Exception")
    return {"__raises__": name, "message": " ".join(str(exc).split())[:200]}


def strip_messages(data: Any) -> Any:
    """Data without exception messages (they are for the reader; only the type counts)."""
    if isinstance(data, list):
        return [strip_messages(v) for v in data]
    if isinstance(data, dict):
        return {k: strip_messages(v) for k, v in data.items() if not (k == "message" and "__raises__" in data)}
    return data


# ---- probes: how a task calls the function -----------------------------------------------------------
def _quietly(fn: Callable, *args, **kwargs):
    """Call fn with its prints kept out of the case's line."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def probe_call(fn: Callable, args_data: list, kwargs_data: dict) -> Any:
    """fn on fresh copies of the arguments; its result, or what it raised, and whether it changed them."""
    args, kwargs = decode(args_data), decode(kwargs_data)
    before = [_snapshot(a) for a in args]
    try:
        out = encode(_quietly(fn, *args, **kwargs))
    except Exception as exc:          # a learner's bug is a result, not a traceback
        out = raised(exc)
    changed = [i for i, (a, b) in enumerate(zip(args, before)) if b is not None and _snapshot(a) != b]
    return {"__mutated__": changed, "result": out} if changed else out


def probe_inplace(fn: Callable, args_data: list, kwargs_data: dict) -> Any:
    """For a task that must change its arguments: what it returned (or raised) and the arguments after."""
    args, kwargs = decode(args_data), decode(kwargs_data)
    try:
        out = {"returned": encode(_quietly(fn, *args, **kwargs))}
    except Exception as exc:
        out = raised(exc)
    out["after"] = [encode(a) for a in args]
    return out


def _snapshot(arg: Any) -> Any:
    """The argument as data, to see whether the call changed it (None: not data, e.g. a function)."""
    try:
        return encode_input(arg)
    except TypeError:
        return None


PROBES = {"call": probe_call, "inplace": probe_inplace}


def probe(name: str) -> Callable:
    return PROBES[name] if name in PROBES else resolve(name)


def prefix(task: str, case: str) -> str:
    """What every line of a case starts with."""
    return f"{task}{SEP}{case}: "


def line(task: str, case: str, data: Any) -> str:
    text = dumps(data)
    if len(text) > MAX_LINE:
        text = dumps({"__object__": f"a result of {len(text):,} characters (too large)"})
    return prefix(task, case) + text


def run_case(probe_name: str, task: str, fn: Any, case: str, args_json: str) -> None:
    """The grader's routine in the kernel: call `fn` on one case and print its result as one line."""
    if not callable(fn):
        data = {"__object__": f"not a function but a {type(fn).__name__}"}
    else:
        spec = json.loads(args_json)
        data = probe(probe_name)(fn, spec["args"], spec.get("kwargs", {}))
    print(line(task, case, data))


def describe(fn: Any) -> None:
    """Print what `fn` refers to (the grader flags a call to course_lib's own answer; not graded)."""
    refs = set()
    code = getattr(fn, "__code__", None)
    glb = getattr(fn, "__globals__", {})
    module = getattr(fn, "__module__", None)
    if isinstance(module, str) and module.startswith("course_lib"):
        refs.add(f"{module}:{getattr(fn, '__qualname__', '?')}")
    stack = [code] if code is not None else []
    while stack:
        c = stack.pop()
        for name in c.co_names:
            obj = glb.get(name)
            mod = getattr(obj, "__module__", None) if obj is not None else None
            if isinstance(mod, str) and mod.startswith("course_lib") and callable(obj):
                refs.add(f"{mod}:{getattr(obj, '__qualname__', name)}")
            elif type(obj).__name__ == "module" and getattr(obj, "__name__", "").startswith("course_lib"):
                refs.update(f"{obj.__name__}:{n}" for n in c.co_names if hasattr(obj, n))
        stack.extend(k for k in c.co_consts if hasattr(k, "co_names"))
    print(dumps(sorted(refs)))


# ---- practice: one verdict line while you work ----------------------------------------------------------
@dataclass
class Task:
    """A graded task: how its function is called (probe), how answers compare (judge), its public cases.
    goal: the text every right answer's judge gives (a goal such as 'all targets met', not one answer)."""

    name: str
    public: list[Case]
    probe: str = "call"
    judge: str = "exact"
    goal: str | None = None


def judge_of(name: str) -> Callable:
    from course_lib.checks import judges
    return judges.JUDGES[name] if name in judges.JUDGES else resolve(name)


def expected_file(lesson: str):
    from pathlib import Path
    return Path(__file__).with_name("expected") / f"{lesson}.json"


def practice(lesson: str, task: Task, fn: Any) -> None:
    """Run the public cases of `task` on `fn` here and print one verdict line."""
    path = expected_file(lesson)
    if not path.is_file():
        print(f"{FAIL} {task.name}: no public expected results in {path.name} (run `make exercises`)")
        return
    expected = json.loads(path.read_text(encoding="utf-8")).get(task.name, {})
    for case in task.public:
        judge = judge_of(case.judge or task.judge)
        args = {"args": encode_input(tuple(case.args))["__tuple__"], "kwargs": encode_input(dict(case.kwargs))}
        if not callable(fn):
            print(f"{FAIL} {task.name}: expected a function, got {type(fn).__name__}")
            return
        got = probe(case.probe or task.probe)(fn, args["args"], args["kwargs"])
        if isinstance(got, dict) and got.get("__raises__") == "NotImplementedError":
            print(f"{FAIL} {task.name}: not implemented yet (replace `raise NotImplementedError()` with your code)")
            return
        want = expected.get(case.name)
        shown = judge(got, want, decode(args["args"])) if want is not None else dumps(got)
        if shown != want:
            print(f"{FAIL} {task.name}: case {case.name!r}: {explain(shown, want)}")
            return
    print(f"{PASS} {task.name}: all {len(task.public)} cases pass")


def explain(shown: str, want: str | None, limit: int = 240) -> str:
    """Why a case failed, in words: what was raised, which argument changed, or expected vs got."""
    try:
        data = json.loads(shown)
    except (TypeError, ValueError):
        data = None
    if isinstance(data, dict) and data.get("__raises__") == "NotImplementedError":
        return "not implemented yet"
    if isinstance(data, dict) and "__raises__" in data and not (want and '"__raises__"' in want):
        return short(f"raised {data['__raises__']}: {data.get('message', '')}".rstrip(": "), limit) + (
            f" (expected {short(want, limit // 2)})" if want else "")
    if isinstance(data, dict) and "__mutated__" in data:
        which = ", ".join(str(i + 1) for i in data["__mutated__"])
        return f"changed argument {which} (the caller's data; the task says not to)"
    return f"expected {short(want, limit)}, got {short(shown, limit)}"


def short(text: Any, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_finite_number(x: Any) -> bool:
    return type(x) in (int, float) and math.isfinite(x)


