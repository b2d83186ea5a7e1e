"""Every autograded question: its inputs, reference, known mistakes, rules and time limit.

Runs in the grader's process only. Inputs are drawn at grading time from a seed chosen then
(so replaying the grader at home gives nothing to copy); the reference is normtut's, whose
results equal PyTorch's. ``QUESTIONS[assignment][question]`` is what the supervisor grades.

Adding a question: write a :class:`Question` here (the function's name, how to draw inputs,
the reference, the known mistakes, the rules), give the master notebook a ``# BEGIN QUESTION``
block with the same name whose hidden test is the standard stub, and add a wrong answer and a
cheat for it in ``tests/test_assignments.py``.
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

from .checks import Case, Mistake

Draw = Callable[[torch.Generator], list[Case]]


@dataclass(frozen=True)
class Rule:
    """What a question forbids. ``attrs``: a regular expression for attribute names (torch
    modules, ``torch.Tensor``, ``torch._C``) replaced by tripwires in the student's process and
    looked for by the static check; ``ops``: ATen operator names refused at dispatch;
    ``modules``: torch modules whose every callable is replaced; ``autograd``: the call runs
    under ``no_grad`` and any result that requires grad breaks the rule; ``static``: more
    names the static check looks for."""

    name: str
    attrs: str = ""
    ops: str = ""
    modules: tuple[str, ...] = ()
    autograd: bool = False
    static: str = ""  # more names for the static check only

    def to_job(self) -> dict[str, Any]:
        return {"name": self.name, "attrs": self.attrs, "ops": self.ops, "modules": self.modules}


@dataclass(frozen=True)
class Question:
    function: str
    draw: Draw
    reference: Callable[..., Any]
    mistakes: Sequence[Mistake] = ()
    output_names: Sequence[str] | None = None
    rtol: float = 1e-6
    atol: float = 1e-8
    driver: str = "call"  # "call", "init" (seeded in-place initializer), "optimizer"
    rules: Sequence[Rule] = ()
    time_limit: float = 20.0
    expected: Callable[[Case], Any] | None = field(default=None)  # default: run the reference


def _randn(gen: torch.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    return scale * torch.randn(shape, generator=gen, dtype=torch.float64)


def _pick(gen: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (), generator=gen))


# --- rules --------------------------------------------------------------------------------

_NORMS = (
    r"batch_norm|batchnorm|BatchNorm[123]d|_BatchNorm|_NormBase|SyncBatchNorm|"
    r"LazyBatchNorm[123]d|native_batch_norm|native_batch_norm_backward|"
    r"_native_batch_norm_legit(_no_training|_functional)?|_batch_norm_impl_index(_backward)?|"
    r"_batch_norm_with_update(_functional)?|_batch_norm_no_update|cudnn_batch_norm(_backward)?|"
    r"miopen_batch_norm(_backward)?|batch_norm_(elemt|stats|update_stats|gather_stats|"
    r"gather_stats_with_counts|backward_elemt|backward_reduce)|instance_norm|instancenorm|"
    r"InstanceNorm[123]d|_InstanceNorm|layer_norm|LayerNorm|native_layer_norm|group_norm|"
    r"GroupNorm|native_group_norm|rms_norm|RMSNorm|_fused_rms_norm|local_response_norm|"
    r"LocalResponseNorm|normalization"
)
BATCH_NORM_BUILTIN = Rule(
    "implement batch norm yourself: no built-in normalization (F.batch_norm, "
    "torch.batch_norm, nn.BatchNorm*, layer/group/instance norm)",
    attrs=rf"^({_NORMS})$",
    ops=r"batch_norm|layer_norm|group_norm|instance_norm|rms_norm",
)
AUTOGRAD = Rule(
    "derive the backward by hand: no autograd (backward, torch.autograd.grad, torch.func)",
    attrs=r"^(backward|grad|vjp|jvp|jacrev|jacfwd|hessian|jacobian|vhp|hvp|functional_call|"
    r"requires_grad_)$",
    ops=r"_backward$",
    autograd=True,
)
INIT_BUILTIN = Rule(
    "write the initializer yourself: no torch.nn.init initializers or fan helpers",
    attrs=r"^(xavier_uniform_?|xavier_normal_?|kaiming_uniform_?|kaiming_normal_?|"
    r"_calculate_fan_in_and_fan_out|_calculate_correct_fan|trunc_normal_|_no_grad_\w+)$",
)
WEIGHT_NORM_BUILTIN = Rule(
    "write weight norm yourself: no torch weight_norm, _weight_norm or norm_except_dim",
    attrs=r"^(weight_norm|WeightNorm|_WeightNorm|_weight_norm\w*|norm_except_dim|"
    r"parametrizations|parametrize)$",
    ops=r"_weight_norm|norm_except_dim",
)
SPECTRAL_BUILTIN = Rule(
    "write the power iteration yourself: no torch spectral_norm",
    attrs=r"^(spectral_norm|SpectralNorm|_SpectralNorm|SpectralNorm\w+|parametrizations|"
    r"parametrize)$",
)
NO_INVERSE = Rule(
    "no explicit inverse in the Cayley map: use torch.linalg.solve (no torch.linalg.inv, "
    "torch.inverse, pinv, matrix_power, orthogonal parametrization)",
    attrs=r"^(inv|inv_ex|inverse|pinv|pinverse|tensorinv|cholesky_inverse|matrix_power|"
    r"orthogonal|_Orthogonal|_OrthMaps|parametrizations|parametrize)$",
    ops=r"linalg_inv|^inverse|pinv|cholesky_inverse|tensorinv|matrix_power",
)
NO_ORTHOGONAL = Rule(
    "write the map yourself: no torch orthogonal parametrization",
    attrs=r"^(orthogonal|_Orthogonal|_OrthMaps|parametrizations|parametrize)$",
)
OPTIM_BUILTIN = Rule(
    "write the step yourself: no torch.optim optimizer or functional step",
    attrs=r"^(_fused_adam_?|_fused_adamw_?|_fused_sgd_?|_fused_adagrad_?)$",
    ops=r"_fused_(adam|adamw|sgd|adagrad)",
    modules=("torch.optim",),
    static=r"^(optim|Optimizer|SGD|Adam|AdamW|Adagrad|RMSprop|sgd|adam|adamw|adagrad|rmsprop)$",
)


# --- assignment 1: parameters and initialization --------------------------------------------


def _lenet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.BatchNorm2d(6),
        nn.Sigmoid(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.BatchNorm2d(16),
        nn.Sigmoid(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.BatchNorm1d(120),
        nn.Sigmoid(),
        nn.Linear(120, 10),
    )


def _tied_mlp(vocab: int, width: int) -> nn.Module:
    emb = nn.Embedding(vocab, width)
    out = nn.Linear(width, vocab)
    out.weight = emb.weight
    return nn.ModuleDict({"emb": emb, "hidden": nn.Linear(width, width), "out": out})


def _count_cases(gen: torch.Generator) -> list[Case]:
    hidden = _pick(gen, 16, 300)
    vocab, width = _pick(gen, 10, 40), _pick(gen, 4, 16)
    return [
        Case(
            f"an MLP 784-{hidden}-10",
            (nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10)),),
        ),
        Case("LeNet with batch norm", (_lenet(),)),
        Case(
            f"an embedding ({vocab}x{width}) tied to the output layer", (_tied_mlp(vocab, width),)
        ),
    ]


def _counted_twice(model: nn.Module) -> int:
    return sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))


def _fan_cases(gen: torch.Generator) -> list[Case]:
    shapes = [
        (_pick(gen, 2, 300), _pick(gen, 2, 800)),
        (_pick(gen, 2, 16), 1, 5, 5),
        (_pick(gen, 2, 32), _pick(gen, 2, 16), 3, 3),
        (8, _pick(gen, 2, 8), _pick(gen, 2, 7)),
        (2, 3, 3, 3, _pick(gen, 2, 4)),
    ]
    return [Case(f"a weight of shape {s}", (torch.empty(s),)) for s in shapes]


def _xavier_cases(gen: torch.Generator) -> list[Case]:
    seed = _pick(gen, 0, 2**31)
    out, inp = _pick(gen, 10, 300), _pick(gen, 10, 800)
    return [
        Case(f"a {out}x{inp} weight, gain 1", (torch.empty(out, inp),), seed=seed),
        Case("a conv weight 16x6x5x5, gain 5/3", (torch.empty(16, 6, 5, 5), 5 / 3), seed=seed + 1),
    ]


def _xavier_sum(tensor: Tensor, gain: float = 1.0) -> Tensor:
    fan_in, fan_out = nt_init.fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(3.0 / (fan_in + fan_out))
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


def _kaiming_cases(gen: torch.Generator) -> list[Case]:
    seed = _pick(gen, 0, 2**31)
    out, inp = _pick(gen, 10, 300), _pick(gen, 10, 800)
    return [
        Case(
            f"a {out}x{inp} weight, ReLU", (torch.empty(out, inp),), {"nonlinearity": "relu"}, seed
        ),
        Case(
            "a 10x256 weight, mode='fan_out', ReLU",
            (torch.empty(10, 256),),
            {"mode": "fan_out", "nonlinearity": "relu"},
            seed + 1,
        ),
        Case(
            "a conv weight 16x6x5x5, leaky ReLU a=0.1",
            (torch.empty(16, 6, 5, 5),),
            {"a": 0.1},
            seed + 2,
        ),
    ]


def _kaiming_wrong_fan(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    other = "fan_out" if mode == "fan_in" else "fan_in"
    return nt_init.kaiming_normal_(tensor, a=a, mode=other, nonlinearity=nonlinearity)


def _tied_cases(gen: torch.Generator) -> list[Case]:
    width = _pick(gen, 3, 8)
    a, b = nn.Linear(width, width), nn.Linear(width, width)
    b.weight = nn.Parameter(a.weight.detach().clone())
    layer = nn.Linear(width, width)
    return [
        Case("an embedding tied to the output layer", (_tied_mlp(_pick(gen, 10, 30), width),)),
        Case(
            "one Linear layer used twice",
            (nn.Sequential(layer, nn.ReLU(), layer, nn.Linear(width, 2)),),
        ),
        Case("equal values in two separate Parameters (not tied)", (nn.Sequential(a, b),)),
    ]


def _tied_equal_values(model: nn.Module) -> list[list[str]]:
    groups: dict[tuple[Any, ...], list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault((p.shape, tuple(p.detach().flatten()[:8].tolist())), []).append(n)
    return [group for group in groups.values() if len(group) > 1]


PARAMETERS = {
    "q1_count": Question(
        "count_parameters",
        _count_cases,
        nt_params.count_parameters,
        [Mistake("tied parameters counted once per module that uses them", _counted_twice)],
    ),
    "q2_fans": Question(
        "fan_in_and_fan_out",
        _fan_cases,
        nt_init.fan_in_and_fan_out,
        [
            Mistake(
                "the receptive field (kernel size) is left out", lambda t: (t.shape[1], t.shape[0])
            )
        ],
        output_names=("fan_in", "fan_out"),
        rules=[INIT_BUILTIN],
    ),
    "q3_xavier": Question(
        "xavier_uniform_",
        _xavier_cases,
        nt_init.xavier_uniform_,
        [
            Mistake(
                "the bound uses 3/(fan_in + fan_out) instead of 6/(fan_in + fan_out)", _xavier_sum
            )
        ],
        atol=1e-7,
        driver="init",
        rules=[INIT_BUILTIN],
    ),
    "q4_kaiming": Question(
        "kaiming_normal_",
        _kaiming_cases,
        nt_init.kaiming_normal_,
        [Mistake("the fan of the other mode is used", _kaiming_wrong_fan)],
        atol=1e-7,
        driver="init",
        rules=[INIT_BUILTIN],
    ),
    "q5_tied": Question(
        "tied_parameters",
        _tied_cases,
        nt_params.tied_parameters,
        [
            Mistake(
                "parameters with equal values are treated as tied; only identity (`a is b`) "
                "ties parameters",
                _tied_equal_values,
            )
        ],
    ),
}


# --- assignment 2: batch normalization ------------------------------------------------------


def _bn_shapes(gen: torch.Generator) -> list[tuple[int, ...]]:
    return [
        (_pick(gen, 4, 16), _pick(gen, 2, 6)),
        (_pick(gen, 2, 6), 3, _pick(gen, 3, 6), _pick(gen, 3, 6)),
        (2, _pick(gen, 4, 8), 4, 4),
    ]


def _bn_inputs(gen: torch.Generator, shape: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    channels = shape[1]
    x = 3 * torch.randn(shape, generator=gen, dtype=torch.float64) + 1
    return x, 1 + _randn(gen, channels, scale=0.5), _randn(gen, channels, scale=0.5)


def _bn_train_cases(gen: torch.Generator) -> list[Case]:
    return [
        Case(f"x of shape {s}, eps {eps:g}", _bn_inputs(gen, s), {"eps": eps})
        for s, eps in zip(_bn_shapes(gen), (1e-5, 1e-5, 1e-3), strict=True)
    ]


def _bn_train(x, gamma, beta, eps=1e-5):
    return nt_norm.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)


def _bn_with(x, gamma, beta, eps, dims, unbiased):
    shape = [1, -1] + [1] * (x.dim() - 2)
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=unbiased)
    return (x - mean) / torch.sqrt(var + eps) * gamma.view(shape) + beta.view(shape)


def _running(x: Tensor) -> tuple[Tensor, Tensor]:
    c = x.shape[1]
    return (
        torch.linspace(-1, 1, c, dtype=torch.float64),
        torch.linspace(0.5, 2, c, dtype=torch.float64),
    )


def _stats_cases(gen: torch.Generator) -> list[Case]:
    cases = []
    for s, m in zip(_bn_shapes(gen), (0.1, 0.1, 0.3), strict=True):
        x, _, _ = _bn_inputs(gen, s)
        cases.append(Case(f"x of shape {s}, momentum {m}", (x, *_running(x), m)))
    return cases


def _stats_reference(x, mean, var, momentum):
    mean, var = mean.clone(), var.clone()
    nt_norm.batch_norm(x, mean, var, training=True, momentum=momentum)
    return mean, var


def _stats_biased(x, mean, var, momentum):
    dims = [0, *range(2, x.dim())]
    return (
        (1 - momentum) * mean + momentum * x.mean(dims),
        (1 - momentum) * var + momentum * x.var(dims, unbiased=False),
    )


def _stats_keras(x, mean, var, momentum):
    dims = [0, *range(2, x.dim())]
    return (
        momentum * mean + (1 - momentum) * x.mean(dims),
        momentum * var + (1 - momentum) * x.var(dims, unbiased=True),
    )


def _eval_cases(gen: torch.Generator) -> list[Case]:
    cases = []
    for s in _bn_shapes(gen):
        x, gamma, beta = _bn_inputs(gen, s)
        cases.append(Case(f"x of shape {s}", (x, *_running(x), gamma, beta)))
    return cases


def _bn_eval(x, mean, var, gamma, beta, eps=1e-5):
    return nt_norm.batch_norm(x, mean, var, gamma, beta, training=False, eps=eps)


def _backward_cases(gen: torch.Generator) -> list[Case]:
    cases = []
    for s in [(_pick(gen, 4, 12), 3), (32, _pick(gen, 2, 6)), (2, 4)]:
        x, gamma, _ = _bn_inputs(gen, s)
        cases.append(Case(f"x and dy of shape {s}", (_randn(gen, *s), x, gamma)))
    return cases


def _bn_backward(dy, x, gamma, eps=1e-5):
    with torch.enable_grad():
        x = x.clone().requires_grad_()
        gamma = gamma.clone().requires_grad_()
        beta = torch.zeros_like(gamma, requires_grad=True)
        y = nt_norm.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)
        return tuple(g.detach() for g in torch.autograd.grad(y, (x, gamma, beta), dy))


def _bn_backward_constant_stats(dy, x, gamma, eps=1e-5):
    _, dgamma, dbeta = _bn_backward(dy, x, gamma, eps)
    var = x.var(0, unbiased=False)
    return dy * gamma / torch.sqrt(var + eps), dgamma, dbeta


BATCH_NORM = {
    "q1_forward": Question(
        "batch_norm_train",
        _bn_train_cases,
        _bn_train,
        [
            Mistake(
                "the unbiased variance (dividing by m - 1) is used to normalize; batch norm "
                "normalizes with the biased variance (dividing by m)",
                lambda x, g, b, eps=1e-5: _bn_with(x, g, b, eps, [0, *range(2, x.dim())], True),
            ),
            Mistake(
                "the statistics are taken per example (layer norm) instead of per channel "
                "over the batch",
                lambda x, g, b, eps=1e-5: _bn_with(x, g, b, eps, list(range(1, x.dim())), False),
            ),
        ],
        rules=[BATCH_NORM_BUILTIN],
    ),
    "q2_running_stats": Question(
        "update_running_stats",
        _stats_cases,
        _stats_reference,
        [
            Mistake(
                "running_var is updated with the biased variance; PyTorch stores the unbiased "
                "one (dividing by m - 1)",
                _stats_biased,
            ),
            Mistake(
                "momentum weights the old value (the Keras convention); in PyTorch it weights "
                "the new batch",
                _stats_keras,
            ),
        ],
        output_names=("running_mean", "running_var"),
        rules=[BATCH_NORM_BUILTIN],
    ),
    "q3_eval": Question(
        "batch_norm_eval",
        _eval_cases,
        _bn_eval,
        [
            Mistake(
                "the batch's statistics are used in eval mode instead of the running estimates",
                lambda x, m, v, g, b, eps=1e-5: _bn_train(x, g, b, eps),
            )
        ],
        rules=[BATCH_NORM_BUILTIN],
    ),
    "q4_backward": Question(
        "batch_norm_backward",
        _backward_cases,
        _bn_backward,
        [
            Mistake(
                "dx treats the batch mean and variance as constants; they depend on x too",
                _bn_backward_constant_stats,
            )
        ],
        output_names=("dx", "dgamma", "dbeta"),
        atol=1e-9,
        rules=[BATCH_NORM_BUILTIN, AUTOGRAD],
    ),
}


# --- assignment 3: weight, spectral and orthogonal normalization ------------------------------


def _weight_norm_cases(gen: torch.Generator) -> list[Case]:
    cases = []
    rows = _pick(gen, 3, 8)
    for shape, dim in [((rows, 4), 0), ((6, rows), 1), ((8, 3, 3, 3), 0), ((5, rows), None)]:
        w = _randn(gen, *shape)
        g, v = nt_param.WeightNorm(dim).right_inverse(w)
        cases.append(Case(f"v of shape {shape}, dim={dim}", (1.5 * g, 2 * v, dim)))
    return cases


def _weight_norm_over_dim(g, v, dim):
    if dim is None or dim == -1:
        return g * v / v.norm()
    return g * v / v.norm(dim=dim, keepdim=True)


def _unit(v: Tensor) -> Tensor:
    return v / v.norm()


def _power_cases(gen: torch.Generator) -> list[Case]:
    cases = []
    for shape, n in [((5, _pick(gen, 2, 6)), 1), ((4, 6), _pick(gen, 2, 4)), ((8, 8), 10)]:
        w = _randn(gen, *shape)
        u, v = _unit(_randn(gen, shape[0])), _unit(_randn(gen, shape[1]))
        cases.append(Case(f"W of shape {shape}, {n} iteration(s)", (w, u, v, n)))
    return cases


def _power_v_first(w, u, v, n):
    for _ in range(n):
        v = torch.nn.functional.normalize(w.mT @ u, dim=0, eps=1e-12)
        u = torch.nn.functional.normalize(w @ v, dim=0, eps=1e-12)
    return u, v


def _spectral_cases(gen: torch.Generator) -> list[Case]:
    cases = []
    for shape in [(5, _pick(gen, 2, 6)), (4, 6), (8, 8)]:
        w = _randn(gen, *shape)
        u, v = _unit(_randn(gen, shape[0])), _unit(_randn(gen, shape[1]))
        u, v = nt_param.power_iteration(w, u, v, n_power_iterations=5)
        cases.append(Case(f"W of shape {shape}", (w, u, v)))
    return cases


def _square_cases(gen: torch.Generator) -> list[Case]:
    shapes = [(3, 3), (_pick(gen, 4, 7),) * 2, (2, 4, 4)]
    return [Case(f"X of shape {s}", (_randn(gen, *s, scale=0.5),)) for s in shapes]


def _cayley_wrong_sign(x):
    a = x.tril() - x.tril().mH
    eye = torch.eye(a.shape[-1], dtype=a.dtype).expand_as(a)
    return torch.linalg.solve(eye + a / 2, eye - a / 2)


PARAMETRIZATIONS = {
    "q1_weight_norm": Question(
        "weight_norm",
        _weight_norm_cases,
        lambda g, v, dim: nt_param.WeightNorm(dim)(g, v),
        [
            Mistake(
                "the norm is taken along `dim`; weight norm takes it over every dimension "
                "except `dim`",
                _weight_norm_over_dim,
            )
        ],
        rules=[WEIGHT_NORM_BUILTIN],
    ),
    "q2_power_iteration": Question(
        "power_iteration",
        _power_cases,
        lambda w, u, v, n: nt_param.power_iteration(w, u, v, n_power_iterations=n),
        [
            Mistake(
                "v is updated before u; PyTorch's iteration updates u = normalize(Wv) first, "
                "then v = normalize(Wᵀu) from the new u",
                _power_v_first,
            )
        ],
        output_names=("u", "v"),
        rules=[SPECTRAL_BUILTIN],
    ),
    "q3_spectral_normalize": Question(
        "spectral_normalize",
        _spectral_cases,
        lambda w, u, v: w / nt_param.spectral_norm_estimate(w, u, v),
        [
            Mistake(
                "W is divided by its Frobenius norm, not by sigma = uᵀWv",
                lambda w, u, v: w / torch.linalg.matrix_norm(w),
            )
        ],
        rules=[SPECTRAL_BUILTIN],
    ),
    "q4_cayley": Question(
        "cayley_map",
        _square_cases,
        nt_param.cayley_map,
        [
            Mistake(
                "the signs are swapped: (I + A/2)^{-1}(I - A/2) is the transpose of the Cayley "
                "map (it is orthogonal too, but it is exp(-A), not exp(A), to second order)",
                _cayley_wrong_sign,
            )
        ],
        rules=[NO_INVERSE],
    ),
    "q5_matrix_exp": Question(
        "matrix_exp_map",
        _square_cases,
        nt_param.matrix_exp_map,
        [
            Mistake(
                "A is built from the whole of X (X - Xᵀ) instead of its lower triangle",
                lambda x: torch.linalg.matrix_exp(x - x.mT),
            )
        ],
        rules=[NO_ORTHOGONAL],
    ),
}


# --- assignment 4: optimizers ----------------------------------------------------------------

#: The state each learner's step function receives and returns, in order.
_STATE = {
    "SGD": ("momentum_buffer",),
    "Adagrad": ("sum",),
    "RMSprop": ("square_avg",),
    "Adam": ("exp_avg", "exp_avg_sq"),
    "AdamW": ("exp_avg", "exp_avg_sq"),
}


def _optimizer_cases(
    specs: Sequence[tuple[str, dict[str, Any], float]], initial: Callable[[Tensor], list[Any]]
) -> Draw:
    def draw(gen: torch.Generator) -> list[Case]:
        cases = []
        for description, hyper, scale in specs:
            param = _randn(gen, 3, 4)
            grads = [_randn(gen, 3, 4, scale=scale) for _ in range(5)]
            cases.append(Case(f"{description}; {hyper}", (param, grads, hyper, initial(param))))
        return cases

    return draw


def _optimizer_reference(kind: str) -> Callable[[Case], list[tuple[Tensor, ...]]]:
    """Run normtut.optim's ``kind`` over a case's gradients: (param, *state) per step."""

    def expected(case: Case) -> list[tuple[Tensor, ...]]:
        param, grads, hyper, _ = case.args
        p = param.clone().requires_grad_()
        optimizer = getattr(nt_optim, kind)([p], **hyper)
        out = []
        for g in grads:
            p.grad = g.clone()
            optimizer.step()
            state = optimizer.state[p]
            out.append((p.detach().clone(), *(state[s].clone() for s in _STATE[kind])))
        return out

    return expected


def _zeros(n: int) -> Callable[[Tensor], list[Tensor]]:
    return lambda p: [torch.zeros_like(p) for _ in range(n)]


def _sgd_ema(p, g, buf, step, lr, momentum):
    buf = (1 - momentum) * g if buf is None else momentum * buf + (1 - momentum) * g
    return p - lr * buf, buf


def _adagrad_eps_inside(p, g, s, step, lr, lr_decay, eps):
    clr = lr / (1 + (step - 1) * lr_decay)
    s = s + g * g
    return p - clr * g / torch.sqrt(s + eps), s


def _adagrad_no_decay(p, g, s, step, lr, lr_decay, eps):
    s = s + g * g
    return p - lr * g / (torch.sqrt(s) + eps), s


def _rmsprop_swapped(p, g, v, step, lr, alpha, eps):
    v = (1 - alpha) * v + alpha * g * g
    return p - lr * g / (torch.sqrt(v) + eps), v


def _rmsprop_eps_inside(p, g, v, step, lr, alpha, eps):
    v = alpha * v + (1 - alpha) * g * g
    return p - lr * g / torch.sqrt(v + eps), v


def _adam_variant(decoupled: bool, *, inside=False, correct=True, decay_in_grad=False):
    def step(p, g, m, v, t, lr, betas, eps, weight_decay=0.0):
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

    return step


def _adam_mistakes(decoupled: bool) -> list[Mistake]:
    mistakes = [
        Mistake(
            "eps is added inside the square root: sqrt(v̂ + eps) instead of sqrt(v̂) + eps",
            _adam_variant(decoupled, inside=True),
        ),
        Mistake(
            "no bias correction: m and v are used instead of m̂ = m/(1 - β₁ᵗ), v̂ = v/(1 - β₂ᵗ)",
            _adam_variant(decoupled, correct=False),
        ),
    ]
    if decoupled:
        mistakes.append(
            Mistake(
                "weight decay is added to the gradient (Adam's L2) instead of shrinking the "
                "parameter directly: AdamW multiplies p by (1 - lr·λ)",
                _adam_variant(decoupled, decay_in_grad=True),
            )
        )
    return mistakes


def _optimizer(kind, function, specs, initial, mistakes) -> Question:
    return Question(
        function,
        _optimizer_cases(specs, initial),
        reference=lambda *a, **k: None,
        mistakes=mistakes,
        output_names=("param", *_STATE[kind]),
        rtol=1e-9,
        atol=1e-12,
        driver="optimizer",
        rules=[OPTIM_BUILTIN],
        expected=_optimizer_reference(kind),
    )


OPTIMIZERS = {
    "q1_sgd_momentum": _optimizer(
        "SGD",
        "sgd_momentum_step",
        [
            ("gradients of size ~1", {"lr": 0.1, "momentum": 0.9}, 1.0),
            ("momentum 0.5", {"lr": 0.05, "momentum": 0.5}, 2.0),
        ],
        lambda p: [None],
        [
            Mistake(
                "the exponential-average convention v = μv + (1 - μ)g; PyTorch uses v = μv + g",
                _sgd_ema,
            ),
            Mistake(
                "the momentum buffer is not used in the update",
                lambda p, g, b, s, lr, momentum: (p - lr * g, g.clone()),
            ),
        ],
    ),
    "q2_adagrad": _optimizer(
        "Adagrad",
        "adagrad_step",
        [
            ("plain", {"lr": 0.1, "lr_decay": 0.0, "eps": 1e-10}, 1.0),
            (
                "small gradients, large eps, lr decay",
                {"lr": 0.1, "lr_decay": 0.1, "eps": 1e-2},
                1e-2,
            ),
        ],
        _zeros(1),
        [
            Mistake(
                "eps is added inside the square root; PyTorch adds it to sqrt(sum)",
                _adagrad_eps_inside,
            ),
            Mistake(
                "lr_decay is ignored; the step size is lr / (1 + (t - 1) lr_decay)",
                _adagrad_no_decay,
            ),
        ],
    ),
    "q3_rmsprop": _optimizer(
        "RMSprop",
        "rmsprop_step",
        [
            ("plain", {"lr": 0.01, "alpha": 0.99, "eps": 1e-8}, 1.0),
            ("small gradients, large eps", {"lr": 0.01, "alpha": 0.9, "eps": 1e-2}, 1e-2),
        ],
        _zeros(1),
        [
            Mistake(
                "alpha weights the new squared gradient; it weights the old average",
                _rmsprop_swapped,
            ),
            Mistake(
                "eps is added inside the square root; PyTorch adds it to sqrt(square_avg)",
                _rmsprop_eps_inside,
            ),
        ],
    ),
    "q4_adam": _optimizer(
        "Adam",
        "adam_step",
        [
            ("gradients of size ~1", {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}, 1.0),
            ("small gradients, large eps", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-3}, 1e-3),
        ],
        _zeros(2),
        _adam_mistakes(decoupled=False),
    ),
    "q5_adamw": _optimizer(
        "AdamW",
        "adamw_step",
        [
            (
                "gradients of size ~1",
                {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1},
                1.0,
            ),
            (
                "small gradients, strong decay",
                {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-3, "weight_decay": 0.5},
                1e-3,
            ),
        ],
        _zeros(2),
        _adam_mistakes(decoupled=True),
    ),
}

QUESTIONS: dict[str, dict[str, Question]] = {
    "parameters": PARAMETERS,
    "batch_norm": BATCH_NORM,
    "parametrizations": PARAMETRIZATIONS,
    "optimizers": OPTIMIZERS,
}
