"""Comparing a learner's outputs with the reference and writing the feedback.

Runs in the grader's process only. The learner's outputs arrive decoded from JSON
(:func:`normtut_autograder.child.decode`); the expected values are computed here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class Case:
    """One input: a description for the feedback, the arguments, and the seed an in-place
    initializer is called after."""

    description: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer: what it is, and a function with the answer's signature."""

    description: str
    func: Callable[..., Any]


def describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, (bool, int, float, str, list, tuple)) or value is None:
        text = repr(value)
        return text if len(text) < 200 else text[:200] + "..."
    return f"{type(value).__name__} {value!r}"


def arg_summary(args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    parts = []
    for a in args:
        if isinstance(a, Tensor):
            parts.append(f"tensor{tuple(a.shape)}")
        elif isinstance(a, nn.Module):
            parts.append(type(a).__name__)
        elif isinstance(a, list) and a and isinstance(a[0], Tensor):
            parts.append(f"[{len(a)} tensors]")
        else:
            parts.append(repr(a))
    parts += [f"{k}={v!r}" for k, v in kwargs.items()]
    return ", ".join(parts)


def _has_tensor(values: Any) -> bool:
    if isinstance(values, Tensor):
        return True
    return isinstance(values, (tuple, list)) and any(_has_tensor(v) for v in values)


def _plain(values: Any) -> Any:
    """Tuples and lists compare alike: ``(1, 2) == [1, 2]`` for grading purposes."""
    if isinstance(values, (tuple, list)):
        return [_plain(v) for v in values]
    return values


def compare(
    got: Any, expected: Any, *, name: str = "output", rtol: float = 1e-6, atol: float = 1e-8
) -> str | None:
    """``None`` when ``got`` matches ``expected``, else one sentence saying what differs.

    Tensors must have the expected shape and dtype and agree element-wise with
    ``|got - expected| <= atol + rtol * |expected|`` (NaNs in the same places); the sentence
    names the worst element. Tuples and lists are compared item by item; anything else with
    ``==``.
    """
    if isinstance(expected, Tensor):
        if not isinstance(got, Tensor):
            hint = " -- did you finish the function and return the result?" if got is None else ""
            return f"{name}: expected a tensor, got {describe(got)}{hint}"
        if got.shape != expected.shape:
            return f"{name}: expected shape {tuple(expected.shape)}, got shape {tuple(got.shape)}"
        if got.dtype != expected.dtype:
            message = f"{name}: expected dtype {expected.dtype}, got {got.dtype}"
            if got.is_floating_point() and expected.is_floating_point():
                close = _mismatch(got, expected, rtol=1e-4, atol=1e-5) is None
                if close and got.dtype in (torch.float32, torch.float16, torch.bfloat16):
                    message += (
                        f" (your values are right to {got.dtype} precision, but the question "
                        f"asks for {expected.dtype}: compute in the inputs' dtype -- a tensor "
                        "made with torch.tensor/zeros/ones/eye without dtype= is float32)"
                    )
            return message
        return _mismatch(got, expected, rtol=rtol, atol=atol, name=name)
    if isinstance(expected, (tuple, list)) and not _has_tensor(expected):
        if _plain(got) == _plain(expected):
            return None
        return f"{name}: expected {expected!r}, got {describe(got)}"
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"{name}: expected {len(expected)} values, got {describe(got)}"
        for k, (g_item, e_item) in enumerate(zip(got, expected, strict=True)):
            message = compare(g_item, e_item, name=f"{name}[{k}]", rtol=rtol, atol=atol)
            if message is not None:
                return message
        return None
    if isinstance(expected, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        ok = math.isclose(got, expected, rel_tol=rtol, abs_tol=atol)
        return None if ok else f"{name}: expected {expected!r}, got {got!r}"
    if isinstance(expected, int) and isinstance(got, bool):
        return f"{name}: expected {expected!r}, got {got!r}"
    return None if got == expected else f"{name}: expected {expected!r}, got {describe(got)}"


def _mismatch(
    got: Tensor, expected: Tensor, *, rtol: float, atol: float, name: str = "output"
) -> str | None:
    g = got.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    g_nan, e_nan = torch.isnan(g), torch.isnan(e)
    if not torch.equal(g_nan, e_nan):
        idx = tuple(torch.nonzero(g_nan != e_nan)[0].tolist())
        return f"{name}: element {idx}: expected {e[idx].item():.6g}, got {g[idx].item():.6g}"
    diff = (g - e).abs().masked_fill(e_nan, 0.0)
    excess = diff - (atol + rtol * e.abs().masked_fill(e_nan, 0.0))
    if got.numel() == 0 or excess.max().item() <= 0:
        return None
    flat = int(torch.argmax(excess))
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), g.shape))
    n_bad = int((excess > 0).sum())
    return (
        f"{name}: element {idx}: expected {e[idx].item():.8g}, got {g[idx].item():.8g} "
        f"(|difference| {diff[idx].item():.3g}; {n_bad} of {g.numel()} elements "
        f"outside rtol={rtol:g}, atol={atol:g})"
    )


def compare_outputs(
    got: Any,
    expected: Any,
    names: Sequence[str] | None,
    rtol: float,
    atol: float,
    driver: str = "call",
) -> str | None:
    """Compare one case's output; an optimizer's output is a list of steps."""
    if driver == "optimizer":
        if not isinstance(got, list):
            return f"expected one result per step, got {describe(got)}"
        for t, e in enumerate(expected, start=1):
            if t > len(got):
                return f"stopped after step {len(got)}"
            message = compare_outputs(got[t - 1], e, names, rtol, atol)
            if message is not None:
                return f"after step {t}: {message}"
        return None
    if names is not None and len(names) > 1:
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected a tuple ({', '.join(names)}), got {describe(got)}"
        for item_name, g, e in zip(names, got, expected, strict=True):
            message = compare(g, e, name=item_name, rtol=rtol, atol=atol)
            if message is not None:
                return message
        return None
    name = names[0] if names else "output"
    return compare(got, expected, name=name, rtol=rtol, atol=atol)
