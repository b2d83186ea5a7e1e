"""Checkers for autograded exercises: a learner's function against normtut's reference.

Each ``check_*`` function runs the learner's function on a fixed set of inputs, runs
normtut's reference on fresh copies of the same inputs, and returns quietly when every
output agrees within tolerance. Otherwise it raises :class:`GradingError` -- an
``AssertionError``, so otter-grader and pytest count it as a failed test -- whose message
says *which input* (a description and the shapes), *which output*, *which element*, the
expected and the obtained value. When the learner's result matches a known mistake (the
unbiased variance in batch norm, ``eps`` inside the square root in Adam, a Cayley map with
the wrong sign, ...), the message names the mistake.

Inputs are rebuilt for every call, so a learner's function that modifies its arguments in
place cannot change what the reference sees. Nothing in normtut imports this module; it is
for the assignments in ``assignments/`` and for instructors writing new questions with
:func:`check_function`::

    >>> import torch
    >>> from normtut.grading import Case, check_function
    >>> cases = [Case("a 3x2 matrix", lambda: (torch.arange(6.0).reshape(3, 2),))]
    >>> check_function(lambda x: 2 * x, lambda x: x + x, cases, name="double")
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from normtut import init as nt_init
from normtut import normalization as nt_norm
from normtut import optim as nt_optim
from normtut import parametrizations as nt_param
from normtut import params as nt_params

__all__ = [
    "GradingError",
    "Case",
    "Mistake",
    "compare",
    "check_function",
    "check_count_parameters",
    "check_fan_in_and_fan_out",
    "check_xavier_uniform",
    "check_kaiming_normal",
    "check_tied_parameters",
    "check_batch_norm_train",
    "check_running_stats",
    "check_batch_norm_eval",
    "check_batch_norm_backward",
    "check_weight_norm",
    "check_power_iteration",
    "check_spectral_normalize",
    "check_cayley_map",
    "check_matrix_exp_map",
    "check_sgd_momentum_step",
    "check_adagrad_step",
    "check_rmsprop_step",
    "check_adam_step",
    "check_adamw_step",
]


class GradingError(AssertionError):
    """A learner's result differs from the reference; the message says where and how."""


@dataclass(frozen=True)
class Case:
    """One test input: a description for the feedback and a function that builds the
    positional arguments afresh (so in-place changes by one call cannot leak into the next).
    """

    description: str
    make_args: Callable[[], tuple[Any, ...]]
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer: a description and a function with the reference's signature."""

    description: str
    func: Callable[..., Any]


# --- comparing values ----------------------------------------------------------------------


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, (bool, int, float, str, list, tuple)) or value is None:
        return repr(value)
    return f"{type(value).__name__} {value!r}"


def _arg_summary(args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    parts = []
    for a in args:
        if isinstance(a, Tensor):
            parts.append(f"tensor{tuple(a.shape)}")
        elif isinstance(a, nn.Module):
            parts.append(type(a).__name__)
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

    Tensors are compared element-wise with ``|got - expected| <= atol + rtol * |expected|``
    (NaNs must sit in the same places); the sentence names the worst element. Tuples and
    lists are compared item by item; anything else with ``==``.
    """
    if isinstance(expected, Tensor):
        if not isinstance(got, Tensor):
            hint = " -- did you finish the function and return the result?" if got is None else ""
            return f"{name}: expected a tensor, got {_describe(got)}{hint}"
        if got.shape != expected.shape:
            return f"{name}: expected shape {tuple(expected.shape)}, got shape {tuple(got.shape)}"
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
    if isinstance(expected, (tuple, list)) and not _has_tensor(expected):
        return (
            None
            if _plain(got) == _plain(expected)
            else (f"{name}: expected {expected!r}, got {_describe(got)}")
        )
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"{name}: expected {len(expected)} values, got {_describe(got)}"
        for k, (g_item, e_item) in enumerate(zip(got, expected, strict=True)):
            message = compare(g_item, e_item, name=f"{name}[{k}]", rtol=rtol, atol=atol)
            if message is not None:
                return message
        return None
    if isinstance(expected, float) and isinstance(got, (int, float)):
        ok = math.isclose(got, expected, rel_tol=rtol, abs_tol=atol)
        return None if ok else f"{name}: expected {expected!r}, got {got!r}"
    return None if got == expected else f"{name}: expected {expected!r}, got {_describe(got)}"


def check_function(
    func: Callable[..., Any],
    reference: Callable[..., Any],
    cases: Sequence[Case],
    *,
    name: str | None = None,
    output_names: Sequence[str] | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    mistakes: Sequence[Mistake] = (),
) -> None:
    """Raise :class:`GradingError` unless ``func`` agrees with ``reference`` on every case.

    ``output_names`` names the items of a tuple result (``("dx", "dgamma", "dbeta")``) in
    the feedback. When ``func`` fails on a case and one of ``mistakes`` reproduces its
    result on that case, the feedback says which known mistake it looks like.
    """
    label = name or getattr(func, "__name__", "your function")
    for k, case in enumerate(cases, start=1):
        where = f"{label} on input #{k} ({case.description}; arguments: "
        where += _arg_summary(case.make_args(), case.kwargs) + ")"
        expected = reference(*case.make_args(), **case.kwargs)
        try:
            got = func(*case.make_args(), **case.kwargs)
        except Exception as exc:  # the learner's code raised: report it, do not crash
            raise GradingError(f"{where} raised {type(exc).__name__}: {exc}") from None
        message = _compare_outputs(got, expected, output_names, rtol, atol)
        if message is None:
            continue
        feedback = f"{where}: {message}."
        for mistake in mistakes:
            wrong = mistake.func(*case.make_args(), **case.kwargs)
            if _compare_outputs(got, wrong, output_names, rtol, atol) is None:
                feedback += f" Your result matches a known mistake: {mistake.description}."
                break
        raise GradingError(feedback)


def _compare_outputs(
    got: Any, expected: Any, names: Sequence[str] | None, rtol: float, atol: float
) -> str | None:
    if names is not None and len(names) > 1:
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"expected a tuple ({', '.join(names)}), got {_describe(got)}"
        for item_name, g, e in zip(names, got, expected, strict=True):
            message = compare(g, e, name=item_name, rtol=rtol, atol=atol)
            if message is not None:
                return message
        return None
    name = names[0] if names else "output"
    return compare(got, expected, name=name, rtol=rtol, atol=atol)


def _seeded(
    seed: int, *shapes: tuple[int, ...], dtype: torch.dtype = torch.float64
) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]


# --- Part I: parameters and initialization ------------------------------------------------


def _tied_mlp() -> nn.Module:
    torch.manual_seed(0)
    emb = nn.Embedding(20, 8)
    out = nn.Linear(8, 20)
    out.weight = emb.weight
    return nn.ModuleDict({"emb": emb, "hidden": nn.Linear(8, 8), "out": out})


def _count_cases() -> list[Case]:
    return [
        Case(
            "an MLP 784-256-10",
            lambda: (nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)),),
        ),
        Case("LeNet with batch norm", lambda: (nt_norm.lenet(nn.BatchNorm2d, nn.BatchNorm1d),)),
        Case("an embedding tied to the output layer", lambda: (_tied_mlp(),)),
    ]


def check_count_parameters(func: Callable[[nn.Module], int]) -> None:
    """``func(model) -> int``: learnable scalars, a tied parameter counted once."""

    def counted_twice(model: nn.Module) -> int:
        return sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))

    check_function(
        func,
        nt_params.count_parameters,
        _count_cases(),
        mistakes=[Mistake("tied parameters counted once per module that uses them", counted_twice)],
    )


def _fan_cases() -> list[Case]:
    shapes = [(256, 784), (6, 1, 5, 5), (16, 6, 5, 5), (8, 4, 3), (2, 3, 3, 3, 3)]
    return [Case(f"a weight of shape {s}", lambda s=s: (torch.empty(s),)) for s in shapes]


def check_fan_in_and_fan_out(func: Callable[[Tensor], tuple[int, int]]) -> None:
    """``func(weight) -> (fan_in, fan_out)`` as ``torch.nn.init`` defines them."""

    def no_receptive_field(t: Tensor) -> tuple[int, int]:
        return t.shape[1], t.shape[0]

    check_function(
        func,
        nt_init.fan_in_and_fan_out,
        _fan_cases(),
        output_names=("fan_in", "fan_out"),
        mistakes=[Mistake("the receptive field (kernel size) is left out", no_receptive_field)],
    )


def _seeded_init(init: Callable[..., Any], seed: int = 0) -> Callable[..., Tensor]:
    """Run an in-place initializer right after ``torch.manual_seed(seed)``; return the tensor."""

    def run(tensor: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        torch.manual_seed(seed)
        result = init(tensor, *args, **kwargs)
        return tensor if result is None else result

    return run


def check_xavier_uniform(func: Callable[..., Any]) -> None:
    """``func(tensor, gain=1.0)`` fills ``tensor`` in place from U(-a, a) as Glorot & Bengio."""

    def sum_not_mean(tensor: Tensor, gain: float = 1.0) -> Tensor:
        fan_in, fan_out = nt_init.fan_in_and_fan_out(tensor)
        bound = gain * math.sqrt(3.0 / (fan_in + fan_out))
        with torch.no_grad():
            return tensor.uniform_(-bound, bound)

    cases = [
        Case("a 256x784 weight, gain 1", lambda: (torch.empty(256, 784),)),
        Case("a conv weight 16x6x5x5, gain 5/3", lambda: (torch.empty(16, 6, 5, 5), 5 / 3)),
    ]
    check_function(
        _seeded_init(func),
        _seeded_init(nt_init.xavier_uniform_),
        cases,
        name=getattr(func, "__name__", "xavier_uniform_"),
        rtol=1e-6,
        atol=1e-7,
        mistakes=[
            Mistake(
                "the bound uses 3/(fan_in + fan_out) instead of 6/(fan_in + fan_out)",
                _seeded_init(sum_not_mean),
            )
        ],
    )


def check_kaiming_normal(func: Callable[..., Any]) -> None:
    """``func(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu")`` as He et al."""

    def wrong_fan(
        tensor: Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
    ) -> Tensor:
        other = "fan_out" if mode == "fan_in" else "fan_in"
        return nt_init.kaiming_normal_(tensor, a=a, mode=other, nonlinearity=nonlinearity)

    cases = [
        Case("a 256x784 weight, ReLU", lambda: (torch.empty(256, 784),), {"nonlinearity": "relu"}),
        Case(
            "a 10x256 weight, mode='fan_out', ReLU",
            lambda: (torch.empty(10, 256),),
            {"mode": "fan_out", "nonlinearity": "relu"},
        ),
        Case(
            "a conv weight 16x6x5x5, leaky ReLU a=0.1",
            lambda: (torch.empty(16, 6, 5, 5),),
            {"a": 0.1},
        ),
    ]
    check_function(
        _seeded_init(func),
        _seeded_init(nt_init.kaiming_normal_),
        cases,
        name=getattr(func, "__name__", "kaiming_normal_"),
        atol=1e-7,
        mistakes=[Mistake("the fan of the other mode is used", _seeded_init(wrong_fan))],
    )


def check_tied_parameters(func: Callable[[nn.Module], list[list[str]]]) -> None:
    """``func(model) -> [[name, name, ...], ...]``: groups of names bound to one Parameter."""

    def equal_values(model: nn.Module) -> list[list[str]]:
        groups: dict[tuple[Any, ...], list[str]] = {}
        for n, p in model.named_parameters(remove_duplicate=False):
            groups.setdefault((p.shape, tuple(p.detach().flatten()[:8].tolist())), []).append(n)
        return [names for names in groups.values() if len(names) > 1]

    def copied() -> tuple[nn.Module]:
        a, b = nn.Linear(4, 4), nn.Linear(4, 4)
        b.weight = nn.Parameter(a.weight.detach().clone())
        return (nn.Sequential(a, b),)

    def shared_layer() -> tuple[nn.Module]:
        layer = nn.Linear(4, 4)
        return (nn.Sequential(layer, nn.ReLU(), layer, nn.Linear(4, 2)),)

    cases = [
        Case("an embedding tied to the output layer", lambda: (_tied_mlp(),)),
        Case("one Linear layer used twice", shared_layer),
        Case("equal values in two separate Parameters (not tied)", copied),
    ]
    check_function(
        func,
        nt_params.tied_parameters,
        cases,
        mistakes=[
            Mistake(
                "parameters with equal values are treated as tied; only identity "
                "(`a is b`) ties parameters",
                equal_values,
            )
        ],
    )


# --- Part II: batch normalization -----------------------------------------------------------


def _bn_inputs(seed: int, shape: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    (x,) = _seeded(seed, shape)
    channels = shape[1]
    gen = torch.Generator().manual_seed(seed + 1)
    gamma = 1 + 0.5 * torch.randn(channels, generator=gen, dtype=torch.float64)
    beta = 0.5 * torch.randn(channels, generator=gen, dtype=torch.float64)
    return 3 * x + 1, gamma, beta


def _bn_shapes() -> list[tuple[int, ...]]:
    return [(8, 3), (4, 3, 5, 5), (2, 6, 4, 4)]


def check_batch_norm_train(func: Callable[..., Tensor]) -> None:
    """``func(x, gamma, beta, eps=1e-5) -> y``: batch norm with this batch's statistics."""

    def reference(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
        return nt_norm.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)

    def unbiased(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, keepdim=True, unbiased=True)
        return (x - mean) / torch.sqrt(var + eps) * gamma.view(shape) + beta.view(shape)

    def per_example(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
        dims = list(range(1, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + eps) * gamma.view(shape) + beta.view(shape)

    cases = [
        Case(f"x of shape {s}, eps {eps:g}", lambda s=s, k=k: _bn_inputs(k, s), {"eps": eps})
        for k, (s, eps) in enumerate(zip(_bn_shapes(), (1e-5, 1e-5, 1e-3), strict=True))
    ]
    check_function(
        func,
        reference,
        cases,
        mistakes=[
            Mistake(
                "the unbiased variance (dividing by m - 1) is used to normalize; batch "
                "norm normalizes with the biased variance (dividing by m)",
                unbiased,
            ),
            Mistake(
                "the statistics are taken per example (layer norm) instead of per "
                "channel over the batch",
                per_example,
            ),
        ],
    )


def _stats_case(seed: int, shape: tuple[int, ...], momentum: float) -> Case:
    def make() -> tuple[Tensor, Tensor, Tensor, float]:
        x, _, _ = _bn_inputs(seed, shape)
        running_mean = torch.linspace(-1, 1, shape[1], dtype=torch.float64)
        running_var = torch.linspace(0.5, 2, shape[1], dtype=torch.float64)
        return x, running_mean, running_var, momentum

    return Case(f"x of shape {shape}, momentum {momentum}", make)


def check_running_stats(func: Callable[..., tuple[Tensor, Tensor]]) -> None:
    """``func(x, running_mean, running_var, momentum) -> (new_mean, new_var)``."""

    def reference(x: Tensor, mean: Tensor, var: Tensor, momentum: float) -> tuple[Tensor, Tensor]:
        mean, var = mean.clone(), var.clone()
        nt_norm.batch_norm(x, mean, var, training=True, momentum=momentum)
        return mean, var

    def biased(x: Tensor, mean: Tensor, var: Tensor, momentum: float) -> tuple[Tensor, Tensor]:
        dims = [0] + list(range(2, x.dim()))
        return (
            (1 - momentum) * mean + momentum * x.mean(dims),
            (1 - momentum) * var + momentum * x.var(dims, unbiased=False),
        )

    def keras(x: Tensor, mean: Tensor, var: Tensor, momentum: float) -> tuple[Tensor, Tensor]:
        dims = [0] + list(range(2, x.dim()))
        return (
            momentum * mean + (1 - momentum) * x.mean(dims),
            momentum * var + (1 - momentum) * x.var(dims, unbiased=True),
        )

    cases = [
        _stats_case(k, s, m)
        for k, (s, m) in enumerate(zip(_bn_shapes(), (0.1, 0.1, 0.3), strict=True))
    ]
    check_function(
        func,
        reference,
        cases,
        output_names=("running_mean", "running_var"),
        mistakes=[
            Mistake(
                "running_var is updated with the biased variance; PyTorch stores the "
                "unbiased one (dividing by m - 1)",
                biased,
            ),
            Mistake(
                "momentum weights the old value (the Keras convention); in PyTorch it "
                "weights the new batch",
                keras,
            ),
        ],
    )


def check_batch_norm_eval(func: Callable[..., Tensor]) -> None:
    """``func(x, running_mean, running_var, gamma, beta, eps=1e-5) -> y`` in eval mode."""

    def make(seed: int, shape: tuple[int, ...]) -> tuple[Tensor, ...]:
        x, gamma, beta = _bn_inputs(seed, shape)
        running_mean = torch.linspace(-1, 1, shape[1], dtype=torch.float64)
        running_var = torch.linspace(0.5, 2, shape[1], dtype=torch.float64)
        return x, running_mean, running_var, gamma, beta

    def reference(
        x: Tensor, mean: Tensor, var: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5
    ) -> Tensor:
        return nt_norm.batch_norm(x, mean, var, gamma, beta, training=False, eps=eps)

    def batch_stats(
        x: Tensor, mean: Tensor, var: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5
    ) -> Tensor:
        return nt_norm.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)

    cases = [
        Case(f"x of shape {s}", lambda s=s, k=k: make(k, s)) for k, s in enumerate(_bn_shapes())
    ]
    check_function(
        func,
        reference,
        cases,
        mistakes=[
            Mistake(
                "the batch's statistics are used in eval mode instead of the running estimates",
                batch_stats,
            )
        ],
    )


def check_batch_norm_backward(func: Callable[..., tuple[Tensor, Tensor, Tensor]]) -> None:
    """``func(dy, x, gamma, eps=1e-5) -> (dx, dgamma, dbeta)`` for an ``(N, C)`` input."""

    def reference(dy: Tensor, x: Tensor, gamma: Tensor, eps: float = 1e-5):
        x = x.clone().requires_grad_()
        gamma = gamma.clone().requires_grad_()
        beta = torch.zeros_like(gamma, requires_grad=True)
        y = nt_norm.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)
        return torch.autograd.grad(y, (x, gamma, beta), dy)

    def constant_stats(dy: Tensor, x: Tensor, gamma: Tensor, eps: float = 1e-5):
        dx, dgamma, dbeta = reference(dy, x, gamma, eps)
        var = x.var(0, unbiased=False)
        return dy * gamma / torch.sqrt(var + eps), dgamma, dbeta

    def make(seed: int, shape: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        x, gamma, _ = _bn_inputs(seed, shape)
        (dy,) = _seeded(seed + 7, shape)
        return dy, x, gamma

    cases = [
        Case(f"x and dy of shape {s}", lambda s=s, k=k: make(k, s))
        for k, s in enumerate([(8, 3), (32, 5), (2, 4)])
    ]
    check_function(
        func,
        reference,
        cases,
        output_names=("dx", "dgamma", "dbeta"),
        rtol=1e-6,
        atol=1e-9,
        mistakes=[
            Mistake(
                "dx treats the batch mean and variance as constants; they depend on x too",
                constant_stats,
            )
        ],
    )


# --- Part II: weight, spectral and orthogonal normalization -----------------------------------


def check_weight_norm(func: Callable[..., Tensor]) -> None:
    """``func(g, v, dim) -> w = g * v / ||v||`` with the norm over all dims except ``dim``."""

    def reference(g: Tensor, v: Tensor, dim: int | None) -> Tensor:
        return nt_param.WeightNorm(dim)(g, v)

    def norm_over_dim(g: Tensor, v: Tensor, dim: int | None) -> Tensor:
        if dim is None or dim == -1:
            return g * v / v.norm()
        return g * v / v.norm(dim=dim, keepdim=True)

    def make(seed: int, shape: tuple[int, ...], dim: int | None) -> tuple[Any, ...]:
        (w,) = _seeded(seed, shape)
        g, v = nt_param.WeightNorm(dim).right_inverse(w)
        return 1.5 * g, 2 * v, dim

    specs = [((6, 4), 0), ((6, 4), 1), ((8, 3, 3, 3), 0), ((5, 7), None)]
    cases = [
        Case(f"v of shape {s}, dim={d}", lambda s=s, d=d, k=k: make(k, s, d))
        for k, (s, d) in enumerate(specs)
    ]
    check_function(
        func,
        reference,
        cases,
        mistakes=[
            Mistake(
                "the norm is taken along `dim`; weight norm takes it over every "
                "dimension except `dim`",
                norm_over_dim,
            )
        ],
    )


def _power_case(seed: int, shape: tuple[int, int], n: int) -> Case:
    def make() -> tuple[Tensor, Tensor, Tensor, int]:
        w, u, v = _seeded(seed, shape, (shape[0],), (shape[1],))
        return w, u / u.norm(), v / v.norm(), n

    return Case(f"W of shape {shape}, {n} iteration(s)", make)


def check_power_iteration(func: Callable[..., tuple[Tensor, Tensor]]) -> None:
    """``func(W, u, v, n_iterations) -> (u, v)`` as ``torch``'s spectral norm computes it."""

    def reference(w: Tensor, u: Tensor, v: Tensor, n: int) -> tuple[Tensor, Tensor]:
        return nt_param.power_iteration(w, u, v, n_power_iterations=n)

    def v_first(w: Tensor, u: Tensor, v: Tensor, n: int) -> tuple[Tensor, Tensor]:
        for _ in range(n):
            v = torch.nn.functional.normalize(w.mT @ u, dim=0, eps=1e-12)
            u = torch.nn.functional.normalize(w @ v, dim=0, eps=1e-12)
        return u, v

    cases = [_power_case(0, (5, 3), 1), _power_case(1, (4, 6), 3), _power_case(2, (8, 8), 10)]
    check_function(
        func,
        reference,
        cases,
        output_names=("u", "v"),
        mistakes=[
            Mistake(
                "v is updated before u; PyTorch's iteration updates u = normalize(Wv) "
                "first, then v = normalize(Wᵀu) from the new u",
                v_first,
            )
        ],
    )


def check_spectral_normalize(func: Callable[..., Tensor]) -> None:
    """``func(W, u, v) -> W / sigma`` with ``sigma = uᵀ W v`` (no power iteration inside)."""

    def reference(w: Tensor, u: Tensor, v: Tensor) -> Tensor:
        return w / nt_param.spectral_norm_estimate(w, u, v)

    def frobenius(w: Tensor, u: Tensor, v: Tensor) -> Tensor:
        return w / torch.linalg.matrix_norm(w)

    def make(seed: int, shape: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        w, u, v = _seeded(seed, shape, (shape[0],), (shape[1],))
        u, v = nt_param.power_iteration(w, u / u.norm(), v / v.norm(), n_power_iterations=5)
        return w, u, v

    cases = [
        Case(f"W of shape {s}", lambda s=s, k=k: make(k, s))
        for k, s in enumerate([(5, 3), (4, 6), (8, 8)])
    ]
    check_function(
        func,
        reference,
        cases,
        mistakes=[Mistake("W is divided by its Frobenius norm, not by sigma = uᵀWv", frobenius)],
    )


def _square_cases() -> list[Case]:
    shapes = [(3, 3), (6, 6), (2, 4, 4)]
    return [
        Case(f"X of shape {s}", lambda s=s, k=k: (0.5 * _seeded(k, s)[0],))
        for k, s in enumerate(shapes)
    ]


def _skew(x: Tensor) -> Tensor:
    a = x.tril()
    return a - a.mH


def check_cayley_map(func: Callable[[Tensor], Tensor]) -> None:
    """``func(X) -> Q = (I - A/2)^{-1} (I + A/2)`` with ``A`` the skew part of ``tril(X)``."""

    def wrong_sign(x: Tensor) -> Tensor:
        a = _skew(x)
        eye = torch.eye(a.shape[-1], dtype=a.dtype).expand_as(a)
        return torch.linalg.solve(eye + a / 2, eye - a / 2)

    check_function(
        func,
        nt_param.cayley_map,
        _square_cases(),
        mistakes=[
            Mistake(
                "the signs are swapped: (I + A/2)^{-1}(I - A/2) is the transpose "
                "of the Cayley map (it is orthogonal too, but it is exp(-A), not "
                "exp(A), to second order)",
                wrong_sign,
            )
        ],
    )


def check_matrix_exp_map(func: Callable[[Tensor], Tensor]) -> None:
    """``func(X) -> Q = exp(A)`` with ``A = tril(X) - tril(X)ᵀ``."""

    def whole_matrix(x: Tensor) -> Tensor:
        return torch.linalg.matrix_exp(x - x.mT)

    check_function(
        func,
        nt_param.matrix_exp_map,
        _square_cases(),
        mistakes=[
            Mistake(
                "A is built from the whole of X (X - Xᵀ) instead of its lower triangle",
                whole_matrix,
            )
        ],
    )


# --- Part III: optimizers -------------------------------------------------------------------

#: The state each learner's step function receives and returns, in order.
_STATE = {
    "SGD": ("momentum_buffer",),
    "Adagrad": ("sum",),
    "RMSprop": ("square_avg",),
    "Adam": ("exp_avg", "exp_avg_sq"),
    "AdamW": ("exp_avg", "exp_avg_sq"),
}


def _grads(seed: int, shape: tuple[int, ...], steps: int, scale: float) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(steps)]


def _reference_run(kind: str, hyper: dict[str, Any]) -> Callable[..., list[tuple[Tensor, ...]]]:
    """Run normtut.optim's ``kind`` over a list of gradients; return (param, *state) per step."""

    def run(param: Tensor, grads: list[Tensor]) -> list[tuple[Tensor, ...]]:
        p = param.clone().requires_grad_()
        optimizer = getattr(nt_optim, kind)([p], **hyper)
        out = []
        for g in grads:
            p.grad = g.clone()
            optimizer.step()
            state = optimizer.state[p]
            out.append((p.detach().clone(), *(state[s].clone() for s in _STATE[kind])))
        return out

    return run


def _learner_run(
    kind: str, step: Callable[..., Any], hyper: dict[str, Any], initial: Callable[[Tensor], Any]
) -> Callable[..., list[tuple[Tensor, ...]]]:
    """Call the learner's one-step function repeatedly, feeding its returned state back."""

    def run(param: Tensor, grads: list[Tensor]) -> list[Any]:
        p = param.clone()
        state = initial(p)
        out = []
        for t, g in enumerate(grads, start=1):
            result = step(p, g.clone(), *state, t, **hyper)
            if not isinstance(result, tuple) or len(result) != 1 + len(_STATE[kind]):
                out.append(result)
                return out
            p, *state = result
            out.append(result)
        return out

    return run


def _check_optimizer(
    kind: str,
    func: Callable[..., Any],
    specs: Sequence[tuple[str, dict[str, Any], float]],
    initial: Callable[[Tensor], Any],
    mistakes: Sequence[tuple[str, Callable[..., Any]]],
) -> None:
    """Compare ``func`` step by step with normtut.optim.``kind``.

    ``specs``: (description, hyperparameters -- passed to the learner's function and to the
    optimizer alike -- and the gradients' scale). Each case runs 5 steps on a 3x4 float64
    parameter.
    """
    names = ("param", *_STATE[kind])
    for k, (description, hyper, scale) in enumerate(specs, start=1):
        (param,) = _seeded(100 + k, (3, 4))
        grads = _grads(k, (3, 4), 5, scale)
        expected = _reference_run(kind, hyper)(param, grads)
        label = getattr(func, "__name__", "your function")
        try:
            got = _learner_run(kind, func, hyper, initial)(param, grads)
        except Exception as exc:  # the learner's code raised: report it, do not crash
            raise GradingError(
                f"{label} on input #{k} ({description}) raised {type(exc).__name__}: {exc}"
            ) from None
        for t, (e, g) in enumerate(zip(expected, got, strict=False), start=1):
            message = _compare_outputs(g, e, names, 1e-9, 1e-12)
            if message is None:
                continue
            feedback = f"{label} on input #{k} ({description}; {hyper}), after step {t}: {message}."
            for what, wrong_step in mistakes:
                wrong = _learner_run(kind, wrong_step, hyper, initial)(param, grads)
                if (
                    len(wrong) >= t
                    and _compare_outputs(g, wrong[t - 1], names, 1e-9, 1e-12) is None
                ):
                    feedback += f" Your result matches a known mistake: {what}."
                    break
            raise GradingError(feedback)
        if len(got) != len(expected):
            raise GradingError(f"{label} on input #{k}: stopped after {len(got)} steps")


def _zeros(n: int) -> Callable[[Tensor], list[Tensor]]:
    return lambda p: [torch.zeros_like(p) for _ in range(n)]


def check_sgd_momentum_step(func: Callable[..., Any]) -> None:
    """``func(param, grad, momentum_buffer, step, lr, momentum) -> (param, momentum_buffer)``.

    ``momentum_buffer`` is ``None`` before the first step (PyTorch sets it to the first
    gradient); ``step`` counts from 1.
    """

    def ema(p, g, buf, step, lr, momentum):
        buf = (1 - momentum) * g if buf is None else momentum * buf + (1 - momentum) * g
        return p - lr * buf, buf

    def no_momentum(p, g, buf, step, lr, momentum):
        return p - lr * g, g.clone()

    specs = [
        ("gradients of size ~1", {"lr": 0.1, "momentum": 0.9}, 1.0),
        ("momentum 0.5", {"lr": 0.05, "momentum": 0.5}, 2.0),
    ]
    _check_optimizer(
        "SGD",
        func,
        specs,
        lambda p: [None],
        [
            ("the exponential-average convention v = μv + (1 - μ)g; PyTorch uses v = μv + g", ema),
            ("the momentum buffer is not used in the update", no_momentum),
        ],
    )


def check_adagrad_step(func: Callable[..., Any]) -> None:
    """``func(param, grad, state_sum, step, lr, lr_decay, eps) -> (param, state_sum)``."""

    def eps_inside(p, g, s, step, lr, lr_decay, eps):
        clr = lr / (1 + (step - 1) * lr_decay)
        s = s + g * g
        return p - clr * g / torch.sqrt(s + eps), s

    def no_decay(p, g, s, step, lr, lr_decay, eps):
        s = s + g * g
        return p - lr * g / (torch.sqrt(s) + eps), s

    specs = [
        (
            "plain",
            {"lr": 0.1, "lr_decay": 0.0, "eps": 1e-10},
            1.0,
        ),
        (
            "small gradients, large eps, lr decay",
            {"lr": 0.1, "lr_decay": 0.1, "eps": 1e-2},
            1e-2,
        ),
    ]
    _check_optimizer(
        "Adagrad",
        func,
        specs,
        _zeros(1),
        [
            ("eps is added inside the square root; PyTorch adds it to sqrt(sum)", eps_inside),
            ("lr_decay is ignored; the step size is lr / (1 + (t - 1) lr_decay)", no_decay),
        ],
    )


def check_rmsprop_step(func: Callable[..., Any]) -> None:
    """``func(param, grad, square_avg, step, lr, alpha, eps) -> (param, square_avg)``."""

    def swapped(p, g, v, step, lr, alpha, eps):
        v = (1 - alpha) * v + alpha * g * g
        return p - lr * g / (torch.sqrt(v) + eps), v

    def eps_inside(p, g, v, step, lr, alpha, eps):
        v = alpha * v + (1 - alpha) * g * g
        return p - lr * g / torch.sqrt(v + eps), v

    specs = [
        (
            "plain",
            {"lr": 0.01, "alpha": 0.99, "eps": 1e-8},
            1.0,
        ),
        (
            "small gradients, large eps",
            {"lr": 0.01, "alpha": 0.9, "eps": 1e-2},
            1e-2,
        ),
    ]
    _check_optimizer(
        "RMSprop",
        func,
        specs,
        _zeros(1),
        [
            ("alpha weights the new squared gradient; it weights the old average", swapped),
            (
                "eps is added inside the square root; PyTorch adds it to sqrt(square_avg)",
                eps_inside,
            ),
        ],
    )


def _adam_mistakes(decoupled: bool) -> list[tuple[str, Callable[..., Any]]]:
    def step(
        p,
        g,
        m,
        v,
        t,
        lr,
        betas,
        eps,
        weight_decay=0.0,
        *,
        inside=False,
        correct=True,
        decay_in_grad=False,
    ):
        beta1, beta2 = betas
        if decay_in_grad:
            g = g + weight_decay * p
        elif decoupled:
            p = p * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t) if correct else m
        v_hat = v / (1 - beta2**t) if correct else v
        denom = torch.sqrt(v_hat + eps) if inside else torch.sqrt(v_hat) + eps
        return p - lr * m_hat / denom, m, v

    mistakes = [
        (
            "eps is added inside the square root: sqrt(v̂ + eps) instead of sqrt(v̂) + eps",
            lambda *a, **k: step(*a, inside=True, **k),
        ),
        (
            "no bias correction: m and v are used instead of m̂ = m/(1 - β₁ᵗ), v̂ = v/(1 - β₂ᵗ)",
            lambda *a, **k: step(*a, correct=False, **k),
        ),
    ]
    if decoupled:
        mistakes.append(
            (
                "weight decay is added to the gradient (Adam's L2) instead of shrinking the "
                "parameter directly: AdamW multiplies p by (1 - lr·λ)",
                lambda *a, **k: step(*a, decay_in_grad=True, **k),
            )
        )
    return mistakes


def check_adam_step(func: Callable[..., Any]) -> None:
    """``func(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps) -> (param, exp_avg,
    exp_avg_sq)``; ``step`` counts from 1, the averages start at zero."""
    specs = [
        (
            "gradients of size ~1",
            {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8},
            1.0,
        ),
        (
            "small gradients, large eps",
            {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-3},
            1e-3,
        ),
    ]
    _check_optimizer("Adam", func, specs, _zeros(2), _adam_mistakes(decoupled=False))


def check_adamw_step(func: Callable[..., Any]) -> None:
    """``func(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay) ->
    (param, exp_avg, exp_avg_sq)`` with decoupled weight decay."""
    hyper = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1}
    small = {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-3, "weight_decay": 0.5}
    specs = [
        ("gradients of size ~1", hyper, 1.0),
        ("small gradients, strong decay", small, 1e-3),
    ]
    _check_optimizer("AdamW", func, specs, _zeros(2), _adam_mistakes(decoupled=True))
