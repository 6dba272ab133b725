"""One way to check what a caller passes in, so every bad value gets the same one-line message.

Every public entry point of course_lib checks its arguments with these few
functions. A bad value raises at once, naming the parameter, what it must be
and what it got:

    check_int("block_size", 0, 1, 256)        ValueError: block_size: must be an integer in [1, 256]; got 0
    check_int("block_size", 2.5, 1, 256)      TypeError:  block_size: must be an integer in [1, 256]; got 2.5 (float)
    check_float("rate", float("nan"), 0, lo_open=True)
                                              ValueError: rate: must be a finite number > 0; got nan
    check_choice("policy", "x", ("static", "chunked"))
                                              ValueError: policy: must be one of static, chunked; got 'x'

Rules every check keeps:

* `bool` is not a number: `True` is rejected where an integer is wanted.
* NaN is never a number; inf only where the parameter allows it (`finite=False`).
* A value of the wrong type raises `BadType`, which is a TypeError AND a
  ValueError: `except ValueError` (the widgets' red line) catches every bad input.
* The message is one line, however long the bad value's repr is.

Each check returns the value in its plain form (an int, a float, a list of
ints), so a caller can write `n = check_int("n", n, 0)` and go on.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Iterable, Sequence

import numpy as np
import torch


class BadType(TypeError, ValueError):
    """A value of the wrong type. Also a ValueError, so one `except ValueError` catches all bad input."""


def show(value: Any, limit: int = 60) -> str:
    """A short one-line description of `value` for an error message."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} ({str(value.dtype).replace('torch.', '')})"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} ({value.dtype})"
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if isinstance(value, (bool, int, float, str)) or value is None:
        return text
    return f"{text} ({type(value).__name__})"


def fail(name: str, must: str, value: Any, wrong_type: bool = False):
    """Raise the standard error: `name: must be <must>; got <value>`."""
    cls = BadType if wrong_type else ValueError
    raise cls(f"{name}: must be {must}; got {show(value)}")


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _range(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {_num(lo)}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {_num(hi)}"
    return ""


def is_int(value: Any) -> bool:
    """An integer that is not a bool: int, numpy integer, or a 0-d integer tensor."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        return False
    if isinstance(value, torch.Tensor) and (value.ndim != 0 or value.is_floating_point()):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def is_number(value: Any) -> bool:
    """A real number that is not a bool (int, float, numpy scalar); NaN and inf included."""
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None, *,
              none_ok: bool = False, note: str = "") -> int | None:
    """`value` as an int in [lo, hi] (either bound may be None), or raise naming `name`."""
    if type(value) is int and (lo is None or value >= lo) and (hi is None or value <= hi):
        return value                    # the common case, checked without building the message
    if value is None and none_ok:
        return None
    must = f"an integer{_range(lo, hi)}" + (" or None" if none_ok else "") + (f" ({note})" if note else "")
    if not is_int(value):
        fail(name, must, value, wrong_type=True)
    n = operator.index(value)
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        fail(name, must, n)
    return n


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
                lo_open: bool = False, hi_open: bool = False, finite: bool = True,
                none_ok: bool = False, note: str = "") -> float | None:
    """`value` as a float within the bounds (open or closed), or raise naming `name`.

    NaN is always rejected; inf too unless `finite=False`."""
    if value is None and none_ok:
        return None
    must = ("a finite number" if finite else "a number") + _range(lo, hi, lo_open, hi_open)
    must += (" or None" if none_ok else "") + (f" ({note})" if note else "")
    if not is_number(value):
        fail(name, must, value, wrong_type=True)
    x = float(value)
    if math.isnan(x) or (finite and math.isinf(x)):
        fail(name, must, value)
    if lo is not None and (x < lo or (lo_open and x == lo)):
        fail(name, must, value)
    if hi is not None and (x > hi or (hi_open and x == hi)):
        fail(name, must, value)
    return x


def check_bool(name: str, value: Any) -> bool:
    """`value` as a bool (True/False only: not 0, 1 or 'yes')."""
    if not isinstance(value, (bool, np.bool_)):
        fail(name, "True or False", value, wrong_type=True)
    return bool(value)


def check_choice(name: str, value: Any, choices: Iterable, what: str = "") -> Any:
    """`value` if it is one of `choices` (a dict's keys count), else raise listing them.

    what: extra alternatives for the message, e.g. 'a Policy' -> 'one of a, b or a Policy'."""
    choices = list(choices)
    ok = any(isinstance(value, bool) == isinstance(c, bool) and _equal(value, c) for c in choices)
    if not ok:
        listed = ", ".join(str(c) for c in choices)
        fail(name, f"one of {listed}" + (f" or {what}" if what else ""), value,
             wrong_type=bool(choices) and all(isinstance(c, str) for c in choices) and not isinstance(value, str))
    return value


def _equal(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:                       # e.g. a tensor compared with a string
        return False


def check_type(name: str, value: Any, types: type | tuple[type, ...], what: str | None = None,
               none_ok: bool = False) -> Any:
    """`value` if it is an instance of `types` (or None with none_ok), else a BadType naming `name`."""
    if value is None and none_ok:
        return None
    if not isinstance(value, types):
        if what is None:
            kinds = types if isinstance(types, tuple) else (types,)
            what = "a " + " or a ".join(t.__name__ for t in kinds)
        fail(name, what + (" or None" if none_ok else ""), value, wrong_type=True)
    return value


def check_callable(name: str, value: Any, what: str = "a callable", none_ok: bool = False) -> Any:
    if value is None and none_ok:
        return None
    if not callable(value):
        fail(name, what + (" or None" if none_ok else ""), value, wrong_type=True)
    return value


def check_sequence(name: str, value: Any, min_len: int = 0, max_len: int | None = None,
                   what: str = "a list") -> list:
    """`value` as a list (any sequence but a string), with min_len <= len <= max_len."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__") or not hasattr(value, "__iter__"):
        fail(name, what, value, wrong_type=True)
    items = list(value)
    if len(items) < min_len or (max_len is not None and len(items) > max_len):
        size = f"at least {min_len}" if max_len is None else f"{min_len} to {max_len}"
        raise ValueError(f"{name}: must hold {size} item(s); got {len(items)}")
    return items


def check_iterable(name: str, value: Any, what: str = "a list") -> Any:
    """`value` if it can be iterated (a list, a tuple, a generator), but is not a string or a dict."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        fail(name, what, value, wrong_type=True)
    return value


def check_mapping(name: str, value: Any, what: str = "a dict", min_len: int = 0) -> dict:
    """`value` if it is a mapping (dict-like) of at least `min_len` items."""
    if not (hasattr(value, "keys") and hasattr(value, "__getitem__") and hasattr(value, "items")):
        fail(name, what, value, wrong_type=True)
    if len(value) < min_len:
        raise ValueError(f"{name}: must hold at least {min_len} item(s); got {len(value)}")
    return value


def check_ints(name: str, values: Any, lo: int | None = None, hi: int | None = None,
               min_len: int = 0, max_len: int | None = None) -> list[int]:
    """A sequence of integers, each in [lo, hi]: returned as a list of ints.
    The message names the bad item: `lengths[2]: must be an integer >= 1; got 0`."""
    if isinstance(values, torch.Tensor):
        values = values.tolist() if values.ndim == 1 and not values.is_floating_point() else [values]
    items = check_sequence(name, values, min_len, max_len, what="a list of integers")
    if all(type(v) is int for v in items) and (not items or ((lo is None or min(items) >= lo)
                                                             and (hi is None or max(items) <= hi))):
        return list(items)              # the common case: plain ints in range, no message built per item
    return [check_int(f"{name}[{i}]", v, lo, hi) for i, v in enumerate(items)]


def check_tokens(name: str, tokens: Any, vocab_size: int | None = None, min_len: int = 1) -> list[int]:
    """Token ids: a sequence of at least `min_len` integers in [0, vocab_size - 1]."""
    hi = None if vocab_size is None else vocab_size - 1
    if isinstance(tokens, torch.Tensor) and (tokens.ndim != 1 or tokens.is_floating_point()):
        fail(name, "a 1-d sequence of integer token ids", tokens, wrong_type=True)
    return check_ints(name, tokens, 0, hi, min_len=min_len)


def check_tensor(name: str, value: Any, ndim: int | None = None, dtype: torch.dtype | Sequence | None = None,
                 floating: bool = False, shape: Sequence[int | None] | None = None) -> torch.Tensor:
    """A torch.Tensor with the given number of dims, dtype(s) and shape (None in shape: any size)."""
    if not isinstance(value, torch.Tensor):
        fail(name, "a torch.Tensor", value, wrong_type=True)
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name}: must have {ndim} dimension(s); got shape {tuple(value.shape)}")
    if shape is not None and (len(shape) != value.ndim
                              or any(s is not None and s != n for s, n in zip(shape, value.shape))):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: must have shape {want}; got {tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise BadType(f"{name}: must be a floating-point tensor; got {str(value.dtype).replace('torch.', '')}")
    if dtype is not None:
        allowed = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if value.dtype not in allowed:
            names = ", ".join(str(d).replace("torch.", "") for d in allowed)
            raise BadType(f"{name}: dtype must be {names}; got {str(value.dtype).replace('torch.', '')}")
    return value


def check_dtype(name: str, value: Any, allowed: Sequence[torch.dtype]) -> torch.dtype:
    """A torch dtype from `allowed` (e.g. the floating-point ones a KV cache can hold)."""
    if not isinstance(value, torch.dtype):
        fail(name, "a torch dtype (" + ", ".join(str(d).replace("torch.", "") for d in allowed) + ")", value,
             wrong_type=True)
    if value not in allowed:
        fail(name, "one of " + ", ".join(str(d).replace("torch.", "") for d in allowed), value)
    return value


def check_has(name: str, value: Any, attrs: Sequence[str], what: str) -> Any:
    """`value` if it has every attribute in `attrs` (duck typing: a result, a model, a snapshot)."""
    if value is None or any(not hasattr(value, a) for a in attrs):
        fail(name, what, value, wrong_type=True)
    return value


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

__all__ = ["BadType", "show", "fail", "is_int", "is_number", "check_int", "check_float", "check_bool", "check_choice",
           "check_type", "check_callable", "check_sequence", "check_iterable", "check_mapping", "check_ints", "check_tokens",
           "check_tensor", "check_dtype", "check_has", "FLOAT_DTYPES"]
