"""Tests for normtut.optim: every optimizer against its torch.optim twin, bitwise.

The trajectories of 50 steps (both paths, float32 and float64, every option combination) must
equal torch's default for-loop implementation exactly, as must the state; state dicts move
between the twins both ways; schedulers, parameter groups, closures and errors behave alike.
"""

from __future__ import annotations

import copy
import doctest
import functools
import inspect
import io
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.optim import lr_scheduler

from normtut import optim as nopt

NAMES = ["SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "RAdam"]
# torch's foreach path of these computes the step in another order than its for-loop (the two
# differ in the last bits): our foreach is compared with torch's foreach, bitwise
TORCH_FOREACH_ORDER = {"RAdam"}
DTYPES = [torch.float32, torch.float64]
STEPS = 50


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster (and on a busy machine far faster) than
    several spinning OpenMP threads. Both twins run with the same setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def twin(name: str) -> tuple[type, type]:
    return getattr(nopt, name), getattr(torch.optim, name)


def _product(**options) -> list[dict]:
    keys = list(options)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*options.values())]


# every combination of the boolean / zero-nonzero options, with a learning rate that moves
CONFIGS = {
    "SGD": [
        dict(lr=0.05, **c)
        for c in _product(
            momentum=[0, 0.9],
            dampening=[0, 0.1],
            nesterov=[False, True],
            weight_decay=[0, 0.01],
            maximize=[False, True],
        )  # fmt: skip
        if not (c["nesterov"] and (c["momentum"] == 0 or c["dampening"] != 0))
    ],
    "Adagrad": [
        dict(lr=0.1, **c)
        for c in _product(
            lr_decay=[0, 0.01],
            weight_decay=[0, 0.01],
            initial_accumulator_value=[0, 0.1],
            maximize=[False, True],
        )  # fmt: skip
    ],
    "Adadelta": [
        dict(lr=1.0, **c)
        for c in _product(rho=[0.9, 0.5], weight_decay=[0, 0.01], maximize=[False, True])
    ],
    "RMSprop": [
        dict(lr=0.01, **c)
        for c in _product(
            centered=[False, True],
            momentum=[0, 0.9],
            weight_decay=[0, 0.01],
            maximize=[False, True],
        )  # fmt: skip
    ],
    "Adam": [
        dict(lr=0.01, **c)
        for c in _product(amsgrad=[False, True], weight_decay=[0, 0.01], maximize=[False, True])
    ],
    "AdamW": [
        dict(lr=0.01, **c)
        for c in _product(amsgrad=[False, True], weight_decay=[0, 0.1], maximize=[False, True])
    ],
    "RAdam": [
        dict(lr=0.01, **c)
        for c in _product(
            weight_decay=[0, 0.01], decoupled_weight_decay=[False, True], maximize=[False, True]
        )
    ],
}
CASES = [
    pytest.param(name, config, id=f"{name}-" + "-".join(f"{k}={v}" for k, v in config.items()))
    for name, configs in CONFIGS.items()
    for config in configs
]


# --- a small model whose parameters have every shape an optimizer meets ----------------------


class Toy(nn.Module):
    """A conv net with a 4-D, 2-D, 1-D and a scalar parameter, plus ``extra``, which takes
    part in the loss only on some steps (its ``.grad`` is ``None`` on the others)."""

    def __init__(self, dtype: torch.dtype, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(2, 3, 3, dtype=dtype)  # weight (3, 2, 3, 3), bias (3,)
        self.fc = nn.Linear(12, 2, dtype=dtype)  # weight (2, 12), bias (2,)
        self.scale = nn.Parameter(torch.tensor(1.5, dtype=dtype))  # 0-dim
        self.extra = nn.Parameter(torch.randn(2, dtype=dtype))

    def forward(self, x: torch.Tensor, use_extra: bool) -> torch.Tensor:
        y = self.fc(torch.tanh(self.conv(x)).flatten(1)) * self.scale
        return y + self.extra if use_extra else y


@functools.cache
def batches(dtype: torch.dtype, n: int = STEPS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1234)
    return [
        (torch.randn(4, 2, 4, 4, generator=g).to(dtype), torch.randn(4, 2, generator=g).to(dtype))
        for _ in range(n)
    ]


def loss_fn(model: Toy, t: int, dtype: torch.dtype) -> torch.Tensor:
    x, y = batches(dtype)[t % STEPS]
    return ((model(x, use_extra=t % 3 != 1) - y) ** 2).mean()


def train(opt_cls, kwargs, dtype, steps=STEPS, model=None, opt=None, start=0):
    """``steps`` steps of ``opt_cls(model.parameters(), **kwargs)`` (or of ``opt``)."""
    model = model if model is not None else Toy(dtype)
    opt = opt if opt is not None else opt_cls(model.parameters(), **kwargs)
    for t in range(start, start + steps):
        opt.zero_grad()
        loss = loss_fn(model, t, dtype)
        (-loss if opt.param_groups[0]["maximize"] else loss).backward()  # stay bounded
        opt.step()
    return model, opt


@functools.cache
def quadratic(dtype: torch.dtype) -> tuple[list, list]:
    r"""The loss of the long runs, with its gradient in closed form (cheaper than autograd):
    :math:`f_t(\theta) = \sum_i \tfrac12 \lVert a_i \odot \theta_i - y_{t,i} \rVert^2`
    over the parameters of :class:`Toy`, so the gradient depends on the trajectory."""
    g = torch.Generator().manual_seed(99)
    shapes = [p.shape for p in Toy(dtype).parameters()]
    a = [(torch.rand(s, generator=g) + 0.5).to(dtype) for s in shapes]
    ys = [[torch.randn(s, generator=g).to(dtype) for s in shapes] for _ in range(STEPS)]
    return a, ys


def train_quadratic(opt_cls, kwargs, dtype):
    """50 steps on :func:`quadratic`; the last parameter (``extra``) has no gradient on every
    third step."""
    params = list(Toy(dtype).parameters())
    opt = opt_cls(params, **kwargs)
    (a, ys), sign = quadratic(dtype), -1 if kwargs.get("maximize") else 1
    for t in range(STEPS):
        opt.zero_grad()
        for i, p in enumerate(params):
            if i < len(params) - 1 or t % 3 != 1:
                p.grad = sign * a[i] * (a[i] * p.detach() - ys[t][i])
        opt.step()
    return params, opt


@functools.cache
def torch_reference(name: str, frozen: tuple, dtype: torch.dtype, foreach: bool = False):
    """torch's for-loop (or foreach) trajectory (cached: shared by the tests of both paths)."""
    params, opt = train_quadratic(twin(name)[1], dict(frozen, foreach=foreach), dtype)
    return [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict())


def assert_identical(a, b, path="") -> None:
    """Bitwise equality of nested state (tensors: same dtype, shape and bits)."""
    if isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device, path
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=path or None)
    elif isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys(), f"{path}: {a.keys()} {b.keys()}"
        for key in b:
            assert_identical(a[key], b[key], f"{path}/{key}")
    elif isinstance(b, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{path}: {a!r} != {b!r}"


# --- the drop-in surface: signatures, defaults, state names ----------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_signature_and_defaults_match_torch(name):
    ours, theirs = twin(name)
    a, b = inspect.signature(ours).parameters, inspect.signature(theirs).parameters
    assert list(a) == list(b)
    for key in b:
        assert (a[key].kind, a[key].default) == (b[key].kind, b[key].default), key
    w = nn.Parameter(torch.ones(2))
    assert ours([w]).defaults == theirs([w]).defaults
    assert issubclass(ours, torch.optim.Optimizer)
    assert name in nopt.__all__


def test_public_names_and_doctests():
    # the optimizers of this file, plus Muon, its Newton-Schulz iteration and clipping
    # (tests/test_muon.py, test_clip.py)
    extra = {"Muon", "newton_schulz", "clip_grad_norm_", "clip_grad_value_", "get_total_norm"}
    assert set(nopt.__all__) == set(NAMES) | extra
    assert all(callable(getattr(nopt, name)) for name in extra)
    for name in NAMES:
        doc = getattr(nopt, name).__doc__
        assert "math::" in doc and "Example::" in doc and ">>>" in doc
    failures, tried = doctest.testmod(nopt, optionflags=doctest.NORMALIZE_WHITESPACE)[:2]
    assert tried >= 8 and failures == 0


# --- exactness: 50 steps, every option, both paths, bitwise ----------------------------------


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(("name", "config"), CASES)
def test_trajectory_and_state_bitwise_equal_torch_for_loop(name, config, dtype, foreach):
    """On the CPU every path of ours equals torch's for-loop bit for bit (torch's own foreach
    path does too, see the next test, so 'bitwise' is the right bar for our foreach); for
    RAdam, whose foreach torch computes in another order, our foreach equals torch's."""
    reference = foreach and name in TORCH_FOREACH_ORDER
    params, state = torch_reference(name, tuple(config.items()), dtype, reference)
    ours, opt = train_quadratic(twin(name)[0], dict(config, foreach=foreach), dtype)
    for p, ref in zip(ours, params, strict=True):
        assert_identical(p.detach(), ref)
    ours = opt.state_dict()
    ours["param_groups"][0]["foreach"] = reference
    assert_identical(ours, state)
    for entry in ours["state"].values():
        assert "step" not in entry or (entry["step"].dtype, entry["step"].shape) == (
            torch.float32,
            (),
        )


@pytest.mark.parametrize("name", [n for n in NAMES if n not in TORCH_FOREACH_ORDER])
def test_torch_foreach_is_bitwise_its_for_loop_on_cpu(name):
    """The premise of the previous test, for the richest configuration of each optimizer."""
    config = CONFIGS[name][-1]
    params, _ = torch_reference(name, tuple(config.items()), torch.float32)
    theirs, _ = train_quadratic(twin(name)[1], dict(config, foreach=True), torch.float32)
    for p, ref in zip(theirs, params, strict=True):
        assert_identical(p.detach(), ref)


class TextbookAdam(torch.optim.Optimizer):
    """Adam exactly as the paper writes it: m-hat / (sqrt(v-hat) + eps)."""

    def __init__(self, params, lr=0.01, betas=(0.9, 0.999), eps=1e-8, foreach=None):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, maximize=False))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            (beta1, beta2), lr, eps = group["betas"], group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                s = self.state[p]
                if not s:
                    s.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                s["t"] += 1
                s["m"] = beta1 * s["m"] + (1 - beta1) * p.grad
                s["v"] = beta2 * s["v"] + (1 - beta2) * p.grad**2
                m_hat, v_hat = s["m"] / (1 - beta1 ** s["t"]), s["v"] / (1 - beta2 ** s["t"])
                p -= lr * m_hat / (v_hat.sqrt() + eps)


def test_bitwise_needs_torchs_order_of_operations():
    """The bar is meaningful: the same algorithm in the paper's order of operations is close
    to torch's result but not bitwise equal to it."""
    config = dict(lr=0.01)
    params, _ = torch_reference("Adam", tuple(config.items()), torch.float32)
    textbook, _ = train_quadratic(TextbookAdam, config, torch.float32)
    pairs = list(zip(textbook, params, strict=True))
    for p, ref in pairs:
        torch.testing.assert_close(p.detach(), ref, rtol=1e-4, atol=1e-5)
    assert not all(torch.equal(p, ref) for p, ref in pairs)


@pytest.mark.parametrize("name", NAMES)
def test_default_path_on_cpu_is_the_for_loop(name, monkeypatch):
    ours = twin(name)[0]

    def refuse(*args, **kwargs):
        raise AssertionError("foreach path taken")

    monkeypatch.setattr(ours, "_foreach_update", refuse)
    train(ours, CONFIGS[name][-1], torch.float32, steps=2)  # foreach=None: the for-loop
    with pytest.raises(AssertionError, match="foreach path taken"):
        train(ours, dict(CONFIGS[name][-1], foreach=True), torch.float32, steps=2)


@pytest.mark.parametrize("name", NAMES)
def test_foreach_groups_by_dtype(name):
    """One parameter group holding float32 and float64 tensors: the foreach path splits it
    into one list per dtype and still equals the for-loop (and torch) bitwise."""

    def run(cls, foreach):
        torch.manual_seed(0)
        ps = [nn.Parameter(torch.randn(3, dtype=dt)) for dt in (torch.float32, torch.float64) * 2]
        opt = cls(ps, **dict(CONFIGS[name][-1], foreach=foreach))
        for t in range(5):
            for i, p in enumerate(ps):
                p.grad = (p.detach() * 0.5 + t - i).sin()
            opt.step()
        return ps, opt.state_dict()["state"]

    for foreach in (False, True):
        ref = run(twin(name)[1], foreach and name in TORCH_FOREACH_ORDER)
        assert_identical(run(twin(name)[0], foreach), ref)


# --- state dicts move between the twins ------------------------------------------------------


@pytest.mark.parametrize("direction", ["torch->normtut", "normtut->torch"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_moves_between_twins_and_training_continues(name, direction):
    config, dtype = CONFIGS[name][-1], torch.float32
    ours, theirs = twin(name)
    first, second = (theirs, ours) if direction == "torch->normtut" else (ours, theirs)
    model, opt = train(first, config, dtype, steps=10)
    buffer = io.BytesIO()  # through torch.save/torch.load, as a checkpoint would
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    resumed = Toy(dtype, seed=1)
    resumed.load_state_dict(checkpoint["model"])
    opt2 = second(resumed.parameters(), **config)
    opt2.load_state_dict(checkpoint["opt"])
    assert_identical(opt2.state_dict(), opt.state_dict())
    train(None, None, dtype, steps=10, model=resumed, opt=opt2, start=10)
    ref_model, ref_opt = train(theirs, config, dtype, steps=20)  # uninterrupted torch run
    for p, q in zip(resumed.parameters(), ref_model.parameters(), strict=True):
        assert_identical(p.detach(), q.detach())
    assert_identical(opt2.state_dict()["state"], ref_opt.state_dict()["state"])


@pytest.mark.parametrize("name", ["Adadelta", "RMSprop", "Adam", "AdamW", "RAdam"])
def test_step_follows_the_default_dtype_as_torch_does(name):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        states = []
        for cls in twin(name):
            w = nn.Parameter(torch.ones(2))
            opt = cls([w])
            w.grad = torch.ones(2)
            opt.step()
            states.append(opt.state[w]["step"])
    finally:
        torch.set_default_dtype(previous)
    assert states[0].dtype == states[1].dtype == torch.float64
    assert states[0].shape == () and states[0].device.type == "cpu"


# --- parameter groups, closures, zero_grad, grads that are None --------------------------------


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_parameter_groups_and_add_param_group(name, foreach):
    def run(cls):
        model = Toy(torch.float64)
        groups = [
            {"params": list(model.conv.parameters()), "lr": 0.003},
            {"params": [model.scale, model.extra]},
        ]
        opt = cls(groups, **dict(CONFIGS[name][-1], foreach=foreach))
        train(None, None, torch.float64, steps=5, model=model, opt=opt)
        opt.add_param_group({"params": list(model.fc.parameters()), "weight_decay": 0.1})
        train(None, None, torch.float64, steps=5, model=model, opt=opt, start=5)
        return list(model.parameters()), opt.state_dict()

    ours, theirs = run(twin(name)[0]), run(twin(name)[1])
    for group in ours[1]["param_groups"]:
        group["foreach"] = foreach
    for group in theirs[1]["param_groups"]:
        group["foreach"] = foreach
    assert_identical(ours, theirs)


@pytest.mark.parametrize("name", NAMES)
def test_step_with_closure_returns_the_loss(name):
    results = []
    for cls in twin(name):
        model, calls = Toy(torch.float32), []
        opt = cls(model.parameters(), **CONFIGS[name][0])

        def closure(model=model, opt=opt, calls=calls):
            calls.append(1)
            opt.zero_grad()
            loss = loss_fn(model, 0, torch.float32)
            loss.backward()
            return loss

        losses = [opt.step(closure).item() for _ in range(3)]
        results.append((losses, len(calls), [p.detach().clone() for p in model.parameters()]))
    assert results[0][1] == 3
    assert_identical(results[0], results[1])


def test_zero_grad_set_to_none_and_to_zero():
    w = nn.Parameter(torch.ones(3))
    opt = nopt.SGD([w], lr=0.1)
    w.grad = torch.ones(3)
    opt.zero_grad(set_to_none=False)
    assert torch.equal(w.grad, torch.zeros(3))
    opt.zero_grad()
    assert w.grad is None
    assert opt.step() is None and torch.equal(w.detach(), torch.ones(3))  # no grad: no move


@pytest.mark.parametrize("name", NAMES)
def test_parameter_without_grad_is_skipped_like_torch(name):
    states, values = [], []
    for cls in twin(name):
        a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
        opt = cls([a, b], **CONFIGS[name][-1])
        for _ in range(3):
            a.grad = torch.full((2,), 0.5)
            opt.step()
        states.append(opt.state_dict()["state"])
        values.append(b.detach().clone())
    assert_identical(states[0], states[1])
    assert torch.equal(values[0], torch.ones(2))  # b never moved
    if name != "Adagrad":  # Adagrad creates every state in its constructor
        assert list(states[0]) == [0]


def test_sgd_without_momentum_keeps_no_state():
    w = nn.Parameter(torch.ones(2))
    opt = nopt.SGD([w], lr=0.1)
    w.grad = torch.ones(2)
    opt.step()
    assert opt.state_dict()["state"] == torch.optim.SGD([w], lr=0.1).state_dict()["state"] == {}


@pytest.mark.parametrize("foreach", [False, True])
def test_foreach_never_writes_to_grad(foreach):
    """A documented difference: torch's *foreach* SGD with Nesterov momentum adds the momentum
    into ``p.grad`` in place (its for-loop does not); ours leaves ``.grad`` alone on both
    paths. The parameters agree either way."""
    ps = {}
    for cls in (nopt.SGD, torch.optim.SGD):
        w = nn.Parameter(torch.ones(3))
        opt = cls([w], lr=0.1, momentum=0.9, nesterov=True, foreach=foreach)
        for _ in range(2):
            w.grad = torch.full((3,), 2.0)
            opt.step()
        ps[cls] = (w.detach().clone(), w.grad.clone())
    assert torch.equal(ps[nopt.SGD][0], ps[torch.optim.SGD][0])
    assert torch.equal(ps[nopt.SGD][1], torch.full((3,), 2.0))
    assert torch.equal(ps[torch.optim.SGD][1], torch.full((3,), 2.0)) != foreach


def test_adagrad_uses_each_groups_initial_accumulator_value():
    """A documented difference: torch fills every ``sum`` from the constructor's value."""
    sums = []
    for cls in twin("Adagrad"):
        a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
        groups = [{"params": [a]}, {"params": [b], "initial_accumulator_value": 0.5}]
        opt = cls(groups, initial_accumulator_value=0.1)
        sums.append((opt.state[a]["sum"], opt.state[b]["sum"]))
    assert torch.equal(sums[0][0], torch.full((2,), 0.1))
    assert torch.equal(sums[0][1], torch.full((2,), 0.5))
    assert torch.equal(sums[1][1], torch.full((2,), 0.1))


# --- other inputs: complex parameters, tensor hyperparameters, random hyperparameters ---------


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_complex_parameters_match_torch(name, foreach):
    out = []
    for cls in twin(name):
        g = torch.Generator().manual_seed(0)
        w = nn.Parameter(torch.randn(4, 3, dtype=torch.complex64, generator=g))
        opt = cls([w], **dict(CONFIGS[name][-1], foreach=foreach))
        for _ in range(5):
            w.grad = torch.randn(4, 3, dtype=torch.complex64, generator=g)
            opt.step()
        out.append((w.detach().clone(), opt.state_dict()["state"]))
    assert_identical(out[0], out[1])


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("SGD", dict(lr=torch.tensor(0.05), momentum=0.9)),
        ("Adagrad", dict(lr=torch.tensor([0.1]), lr_decay=0.01)),
        ("RMSprop", dict(lr=torch.tensor(0.01), momentum=0.9, centered=True)),
        ("Adam", dict(lr=torch.tensor(0.01), amsgrad=True)),
        ("AdamW", dict(lr=0.01, betas=(torch.tensor(0.8), torch.tensor(0.99)))),
        ("Adadelta", dict(lr=torch.tensor(0.5), rho=0.8)),
        ("Adadelta", dict(lr=torch.tensor([0.5]), weight_decay=0.01, foreach=True)),
        ("RAdam", dict(lr=torch.tensor(0.01), weight_decay=0.01, decoupled_weight_decay=True)),
        ("RAdam", dict(lr=torch.tensor(0.01), foreach=True)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_tensor_hyperparameters_match_torch(name, kwargs):
    ours = train(twin(name)[0], kwargs, torch.float32, steps=10)
    theirs = train(twin(name)[1], kwargs, torch.float32, steps=10)
    for p, q in zip(ours[0].parameters(), theirs[0].parameters(), strict=True):
        assert_identical(p.detach(), q.detach())


@st.composite
def hyperparameters(draw):
    name = draw(st.sampled_from(NAMES))
    lr = draw(st.floats(1e-4, 0.5))
    wd = draw(st.sampled_from([0.0, draw(st.floats(1e-4, 0.1))]))
    if name == "SGD":
        momentum = draw(st.floats(0.0, 0.99))
        kw = dict(momentum=momentum, dampening=draw(st.floats(0.0, 0.5)))
    elif name == "Adagrad":
        kw = dict(lr_decay=draw(st.floats(0.0, 0.1)), eps=draw(st.floats(1e-10, 1e-3)))
    elif name == "RMSprop":
        kw = dict(alpha=draw(st.floats(0.5, 0.999)), momentum=draw(st.floats(0.0, 0.9)))
    elif name == "Adadelta":
        kw = dict(rho=draw(st.floats(0.0, 1.0)), eps=draw(st.floats(1e-10, 1e-3)))
    elif name == "RAdam":
        betas = (draw(st.floats(0.0, 0.99)), draw(st.floats(0.5, 0.9999)))
        kw = dict(betas=betas, decoupled_weight_decay=draw(st.booleans()))
    else:
        betas = (draw(st.floats(0.0, 0.99)), draw(st.floats(0.5, 0.9999)))
        kw = dict(betas=betas, eps=draw(st.floats(1e-10, 1e-3)), amsgrad=draw(st.booleans()))
    return name, dict(lr=lr, weight_decay=wd, **kw), draw(st.sampled_from(DTYPES))


@settings(max_examples=15, deadline=None)
@given(case=hyperparameters(), foreach=st.booleans())
def test_random_hyperparameters_bitwise_equal_torch(case, foreach):
    name, kwargs, dtype = case
    ours = train(twin(name)[0], dict(kwargs, foreach=foreach), dtype, steps=8)[0]
    reference = foreach and name in TORCH_FOREACH_ORDER
    theirs = train(twin(name)[1], dict(kwargs, foreach=reference), dtype, steps=8)[0]
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert_identical(p.detach(), q.detach())


# --- learning-rate schedulers -----------------------------------------------------------------

SCHEDULERS = {
    "StepLR": lambda opt: lr_scheduler.StepLR(opt, step_size=4, gamma=0.5),
    "CosineAnnealingLR": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=10),
    "LinearLR": lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=5),
    "OneCycleLR": lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=20),
    "ReduceLROnPlateau": lambda opt: lr_scheduler.ReduceLROnPlateau(opt, patience=1),
    "LambdaLR": lambda opt: lr_scheduler.LambdaLR(opt, lambda epoch: 0.9**epoch),
    "SequentialLR": lambda opt: lr_scheduler.SequentialLR(
        opt,
        [
            lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=4),
            lr_scheduler.CosineAnnealingLR(opt, T_max=12),
        ],
        milestones=[4],
    ),
}


SCHEDULED = {
    "SGD": dict(lr=0.05, momentum=0.9),
    "Adam": dict(lr=0.01),
    "Adadelta": dict(lr=1.0),
    "RAdam": dict(lr=0.01),
}


@pytest.mark.parametrize("name", SCHEDULED)
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_lr_schedulers_work_unchanged(scheduler, name):
    config = SCHEDULED[name]
    if scheduler == "OneCycleLR" and name == "Adadelta":  # no momentum to cycle: both refuse
        errors = []
        for cls in twin(name):
            with pytest.raises(ValueError) as info:
                SCHEDULERS[scheduler](cls(Toy(torch.float32).parameters(), **config))
            errors.append(str(info.value))
        assert errors[0] == errors[1] and "momentum" in errors[0]
        return
    runs = []
    for cls in twin(name):
        model = Toy(torch.float32)
        opt = cls(model.parameters(), **config)
        sched = SCHEDULERS[scheduler](opt)
        lrs, momenta = [], []
        for t in range(20):
            opt.zero_grad()
            loss = loss_fn(model, t, torch.float32)
            loss.backward()
            opt.step()
            sched.step(round(loss.item(), 1)) if scheduler == "ReduceLROnPlateau" else sched.step()
            lrs.append(opt.param_groups[0]["lr"])
            momenta.append(opt.param_groups[0].get("momentum", opt.param_groups[0].get("betas")))
        runs.append((lrs, momenta, [p.detach().clone() for p in model.parameters()]))
    assert len(set(runs[0][0])) > 1  # the schedule did change the learning rate
    assert_identical(runs[0], runs[1])


# --- errors ---------------------------------------------------------------------------------

BAD = [
    ("SGD", dict(lr=-0.1)),
    ("SGD", dict(momentum=-0.5)),
    ("SGD", dict(weight_decay=-1e-4)),
    ("SGD", dict(nesterov=True)),
    ("SGD", dict(nesterov=True, momentum=0.9, dampening=0.1)),
    ("SGD", dict(lr=torch.tensor([0.1, 0.2]))),
    ("Adagrad", dict(lr=-0.1)),
    ("Adagrad", dict(lr_decay=-0.1)),
    ("Adagrad", dict(weight_decay=-0.1)),
    ("Adagrad", dict(initial_accumulator_value=-0.1)),
    ("Adagrad", dict(eps=-1e-10)),
    ("RMSprop", dict(lr=-0.1)),
    ("RMSprop", dict(alpha=-0.5)),
    ("RMSprop", dict(eps=-1e-8)),
    ("RMSprop", dict(momentum=-0.9)),
    ("RMSprop", dict(weight_decay=-0.1)),
    ("RMSprop", dict(lr=float("nan"))),
    ("Adam", dict(lr=-1e-3)),
    ("Adam", dict(eps=-1e-8)),
    ("Adam", dict(betas=(1.0, 0.999))),
    ("Adam", dict(betas=(-0.1, 0.999))),
    ("Adam", dict(betas=(0.9, 1.0))),
    ("Adam", dict(betas=(0, 0.99))),
    ("Adam", dict(betas=(torch.tensor(0.9), 0.99))),
    ("Adam", dict(weight_decay=-0.1)),
    ("Adam", dict(lr=torch.tensor(0.01), foreach=True)),
    ("Adam", dict(betas=(torch.tensor(0.9), torch.tensor(0.99)), foreach=True)),
    ("AdamW", dict(lr=-1e-3)),
    ("AdamW", dict(betas=(0.9, 1.5))),
    ("AdamW", dict(weight_decay=-0.01)),
    ("AdamW", dict(lr=torch.tensor([0.1, 0.2]))),
    ("Adadelta", dict(lr=-1.0)),
    ("Adadelta", dict(lr=float("nan"))),
    ("Adadelta", dict(lr=torch.tensor([0.1, 0.2]))),
    ("Adadelta", dict(rho=-0.1)),
    ("Adadelta", dict(rho=1.5)),
    ("Adadelta", dict(rho=float("nan"))),
    ("Adadelta", dict(eps=-1e-6)),
    ("Adadelta", dict(weight_decay=-0.1)),
    ("Adadelta", dict(lr=-1.0, rho=2.0)),  # the first check wins, as in torch
    ("RAdam", dict(lr=-1e-3)),
    ("RAdam", dict(lr=torch.tensor([0.1, 0.2]))),
    ("RAdam", dict(eps=-1e-8)),
    ("RAdam", dict(betas=(1.0, 0.999))),
    ("RAdam", dict(betas=(-0.1, 0.999))),
    ("RAdam", dict(betas=(0.9, 1.0))),
    ("RAdam", dict(weight_decay=-0.1)),
    ("RAdam", dict(eps=-1.0, betas=(0.9, 1.0))),
]


@pytest.mark.parametrize(("name", "kwargs"), BAD, ids=[f"{n}-{k}" for n, k in BAD])
def test_bad_hyperparameters_raise_like_torch(name, kwargs):
    errors = []
    for cls in twin(name):
        with pytest.raises(ValueError) as info:
            cls([nn.Parameter(torch.ones(2))], **kwargs)
        errors.append(str(info.value))
    assert errors[0] == errors[1]


def test_nan_learning_rate_passes_sgd_as_in_torch():
    """torch's SGD checks ``lr < 0`` (NaN passes) while the others check ``not 0 <= lr``."""
    for cls in twin("SGD"):
        cls([nn.Parameter(torch.ones(2))], lr=float("nan"))


@pytest.mark.parametrize(
    ("name", "option"),
    [
        ("SGD", "fused"),
        ("SGD", "differentiable"),
        ("Adagrad", "fused"),
        ("RMSprop", "capturable"),
        ("RMSprop", "differentiable"),
        ("Adam", "capturable"),
        ("Adam", "differentiable"),  # Adam fused=True: tests/test_fused.py
        ("AdamW", "differentiable"),
        ("Adadelta", "capturable"),
        ("Adadelta", "differentiable"),
        ("RAdam", "capturable"),
        ("RAdam", "differentiable"),
    ],
)
def test_options_we_do_not_implement_raise_a_clear_error(name, option):
    w = nn.Parameter(torch.ones(2))
    with pytest.raises(NotImplementedError, match=f"{name} does not implement {option}=True"):
        twin(name)[0]([w], **{option: True})
    opt = twin(name)[0]([w], **{option: False})  # torch's default is accepted
    state = opt.state_dict()
    state["param_groups"][0][option] = True  # e.g. a checkpoint of a fused torch optimizer
    opt.load_state_dict(state)
    w.grad = torch.ones(2)
    with pytest.raises(NotImplementedError, match=option):
        opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_sparse_gradients_raise(name):
    emb = nn.Embedding(5, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        twin(name)[0](emb.parameters()).step()


# --- older and hand-made checkpoints (torch's __setstate__) ---------------------------------

# the param-group keys each torch twin's __setstate__ fills in when a checkpoint lacks them
SETSTATE_KEYS = {
    "SGD": ["nesterov", "maximize", "foreach", "differentiable", "fused"],
    "Adagrad": ["foreach", "maximize", "differentiable", "fused"],
    "Adadelta": ["foreach", "maximize", "differentiable", "capturable"],
    "RMSprop": ["momentum", "centered", "foreach", "maximize", "differentiable", "capturable"],
    "Adam": [
        "amsgrad", "maximize", "foreach", "capturable", "differentiable",
        "decoupled_weight_decay", "fused",
    ],
    "AdamW": [
        "amsgrad", "maximize", "foreach", "capturable", "differentiable",
        "decoupled_weight_decay", "fused",
    ],
    "RAdam": ["foreach", "maximize", "differentiable", "decoupled_weight_decay", "capturable"],
}  # fmt: skip
MISSING = [
    pytest.param(name, keys, id=f"{name}-{'all' if len(keys) > 1 else keys[0]}")
    for name, names in SETSTATE_KEYS.items()
    for keys in [names, *([k] for k in names)]
]


def _resume(name: str, config: dict, edit, foreach: bool | None = None):
    """5 torch steps, a checkpoint changed by ``edit``, loaded into both twins, 5 more steps
    each: (model, optimizer) per twin."""
    model, opt = train(twin(name)[1], config, torch.float32, steps=5)
    checkpoint = copy.deepcopy(opt.state_dict())
    edit(checkpoint)
    out = []
    for cls in twin(name):
        resumed = copy.deepcopy(model)
        opt2 = cls(resumed.parameters(), **config)
        opt2.load_state_dict(copy.deepcopy(checkpoint))
        if foreach is not None:
            opt2.param_groups[0]["foreach"] = foreach
        out.append((resumed, opt2, copy.deepcopy(opt2.state_dict())))
        train(None, None, torch.float32, steps=5, model=resumed, opt=opt2, start=5)
    return out


@pytest.mark.parametrize(("name", "keys"), MISSING)
def test_checkpoint_without_newer_group_keys_loads_and_steps_like_torch(name, keys):
    """A state_dict from an older torch (or written by hand) lacks keys that torch's
    ``__setstate__`` fills with defaults; ours fills the same and steps the same."""

    def drop(checkpoint):
        for group in checkpoint["param_groups"]:
            for key in keys:
                del group[key]

    (ours, opt, loaded), (theirs, ref, ref_loaded) = _resume(name, CONFIGS[name][-1], drop)
    assert_identical(loaded, ref_loaded)  # the same defaults filled in
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert_identical(p.detach(), q.detach())
    assert_identical(opt.state_dict(), ref.state_dict())


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize("number", [float, int])
@pytest.mark.parametrize("name", ["Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "RAdam"])
def test_number_step_in_loaded_state_becomes_a_tensor_like_torch(name, number, foreach):
    """Older checkpoints store ``step`` as a Python number: torch turns it back into a 0-dim
    float32 tensor on load; so do we (same state_dict right after loading and later)."""

    def to_number(checkpoint):
        for state in checkpoint["state"].values():
            state["step"] = number(state["step"].item())

    (ours, opt, loaded), (theirs, ref, ref_loaded) = _resume(
        name, CONFIGS[name][-1], to_number, foreach
    )
    assert_identical(loaded, ref_loaded)
    assert all(s["step"].dtype == torch.float32 for s in loaded["state"].values())
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert_identical(p.detach(), q.detach())
    assert_identical(opt.state_dict(), ref.state_dict())


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("betas", [(0.9,), (), 0.9, (0.9, 0.99, 0.5)], ids=repr)
def test_betas_are_read_by_index_at_construction_like_torch(name, betas):
    """torch reads ``betas[0]`` and ``betas[1]``: fewer raise ``IndexError`` (a number
    ``TypeError``) in the constructor, not at ``step()``; a third entry is not checked."""
    outcomes = []
    for cls in twin(name):
        try:
            cls([nn.Parameter(torch.ones(2))], betas=betas)
            outcomes.append("accepted")
        except (IndexError, TypeError) as error:
            outcomes.append(f"{type(error).__name__}: {error}")
    assert outcomes[0] == outcomes[1]
    if betas == (0.9,):
        assert outcomes[0].startswith("IndexError")


# --- bitwise where torch's foreach path differs from its for-loop -----------------------------


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_complex_with_weight_decay_bitwise_torch_foreach(name, maximize, dtype):
    """torch's foreach views complex tensors as real *before* adding the weight decay (its
    for-loop after): ours does the same on each path, so both paths are bitwise."""
    for foreach in (False, True):
        out = []
        for cls in twin(name):
            g = torch.Generator().manual_seed(1)
            w = nn.Parameter(torch.randn(64, 7, dtype=dtype, generator=g))
            config = dict(CONFIGS[name][-1], maximize=maximize, foreach=foreach)
            config["weight_decay"] = 0.37
            opt = cls([w], **config)
            for _ in range(5):
                w.grad = torch.randn(64, 7, dtype=dtype, generator=g)
                opt.step()
            out.append((w.detach().clone(), opt.state_dict()["state"]))
        assert_identical(out[0], out[1])


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize("config", [{}, dict(weight_decay=0.01, maximize=True)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_adagrad_low_precision_bitwise_torch(dtype, config, foreach):
    """torch's foreach Adagrad rounds ``-clr * g`` to the parameter dtype before dividing;
    ours too, so float16/bfloat16 parameters match torch on both paths."""
    out = []
    for cls in twin("Adagrad"):
        g = torch.Generator().manual_seed(2)
        w = nn.Parameter(torch.randn(256, dtype=dtype, generator=g))
        opt = cls([w], lr=0.1, lr_decay=0.01, foreach=foreach, **config)
        for _ in range(10):
            w.grad = torch.randn(256, generator=g).to(dtype)
            opt.step()
        out.append((w.detach().clone(), opt.state_dict()["state"]))
    assert_identical(out[0], out[1])


# --- RAdam: torch's foreach order, the rectification switch -----------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_radam_torch_foreach_differs_from_its_for_loop_in_the_last_bits(dtype):
    """Why RAdam is in TORCH_FOREACH_ORDER: from the same state, one step of torch's foreach
    RAdam and one of its for-loop differ by a few units in the last place of the update
    (measured from a zero parameter, so the parameter after the step is the update itself,
    rounded once); ours reproduces each path bitwise, on un-rectified and rectified steps."""
    g = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(4096, dtype=dtype, generator=g))
    opt = torch.optim.RAdam([w], lr=0.01, foreach=False)
    worst = []
    for _ in range(8):  # steps 1-5 un-rectified, 6-8 rectified (beta2 = 0.999)
        w.grad = torch.randn(4096, dtype=dtype, generator=g) + w.detach()
        updates = {}
        for foreach in (False, True):
            for cls in (torch.optim.RAdam, nopt.RAdam):
                v = nn.Parameter(torch.zeros_like(w))
                v.grad = w.grad.clone()
                o = cls([v], lr=0.01)
                o.load_state_dict(copy.deepcopy(opt.state_dict()))
                o.param_groups[0]["foreach"] = foreach  # (the state_dict brought False)
                o.step()
                updates[cls, foreach] = v.detach()
        for foreach in (False, True):  # ours = torch on each path, bitwise
            assert torch.equal(updates[nopt.RAdam, foreach], updates[torch.optim.RAdam, foreach])
        a, b = updates[torch.optim.RAdam, False], updates[torch.optim.RAdam, True]
        half_ulp = torch.finfo(dtype).eps / 2 * torch.maximum(a.abs(), b.abs())
        worst.append(((a - b).abs() / half_ulp).max().item())  # at most 2x the ulps
        opt.step()
    assert min(worst) > 0  # the two paths differ on every step ...
    assert max(worst) < 8  # ... by a few units in the last place (measured: up to about 6)


def _radam_by_hand(grads, theta0, lr, beta1, beta2, eps):
    """RAdam as Liu et al. (2020) write it, in float64 Python numbers: the updates."""
    m = v = 0.0
    theta, rho_inf, updates = theta0, 2 / (1 - beta2) - 1, []
    for t, g in enumerate(grads, start=1):
        m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
        if rho_t > 5:
            r = (
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            ) ** 0.5
            step = lr * m_hat * r * (1 - beta2**t) ** 0.5 / (v**0.5 + eps)
        else:
            step = lr * m_hat  # SGD with bias-corrected momentum, no 1/sqrt(v)
        theta -= step
        updates.append((rho_t, step))
    return updates


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9), (0.9, 0.6)], ids=str)
@pytest.mark.parametrize("cls", [nopt.RAdam, torch.optim.RAdam], ids=["normtut", "torch"])
def test_radam_rectification_switch_matches_a_hand_computation(cls, betas, foreach):
    """Steps with rho_t <= 5 are un-adapted SGD-with-momentum steps (lr * m-hat, whatever the
    gradient's scale); later ones are the rectified Adam step. With beta2 = 0.999 the first
    five steps are un-adapted; with beta2 = 0.6, rho_inf = 4 and no step ever is."""
    lr, eps, grads = 0.1, 1e-8, [3.0, -1.0, 2.0, 0.5, 4.0, -2.0, 1.0, 3.0, -0.5, 2.5]
    expected = _radam_by_hand(grads, 1.0, lr, *betas, eps)
    w = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = cls([w], lr=lr, betas=betas, eps=eps, foreach=foreach)
    for g, (rho_t, step) in zip(grads, expected, strict=True):
        before = w.item()
        w.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        assert before - w.item() == pytest.approx(step, rel=1e-12, abs=1e-15), rho_t
    n_plain = sum(rho_t <= 5 for rho_t, _ in expected)
    assert n_plain == {(0.9, 0.999): 5, (0.5, 0.9): 5, (0.9, 0.6): len(grads)}[betas]


def test_radam_first_steps_ignore_the_gradient_scale():
    """The un-adapted steps scale with the gradient (Adam's would not); the adapted do not."""
    runs = []
    for scale in (1.0, 1000.0):
        w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
        opt = nopt.RAdam([w], lr=1e-3)
        moves = []
        for t in range(8):
            before = w.detach().clone()
            w.grad = scale * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) * (t % 3 + 1)
            opt.step()
            moves.append(w.detach() - before)
        runs.append(torch.stack(moves))
    torch.testing.assert_close(runs[1][:5], 1000 * runs[0][:5], rtol=1e-12, atol=0)
    torch.testing.assert_close(runs[1][5:], runs[0][5:], rtol=1e-6, atol=0)


# --- Adadelta: the unit-correct step, learning rate 1 -----------------------------------------


def test_adadelta_default_lr_is_one_and_its_step_ignores_the_gradient_scale():
    """Zeiler's Adadelta has no learning rate (torch's default lr=1.0): the step is
    sqrt(u + eps) / sqrt(v + eps) * g, the same (up to eps) when the loss is scaled by 1000."""
    assert inspect.signature(nopt.Adadelta).parameters["lr"].default == 1.0
    runs = []
    for scale in (1.0, 1000.0):
        w = nn.Parameter(torch.tensor([1.0, -3.0, 100.0], dtype=torch.float64))
        opt = nopt.Adadelta([w])
        assert opt.param_groups[0]["lr"] == 1.0
        for _ in range(20):
            opt.zero_grad()
            (scale * (w**2).sum()).backward()
            opt.step()
        runs.append(w.detach().clone())
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-3, atol=0)
    assert (runs[0] - torch.tensor([1.0, -3.0, 100.0], dtype=torch.float64)).abs().min() > 0.01


def test_adadelta_first_step_is_about_sqrt_eps():
    """u_0 = 0: the first step is sqrt(eps) / sqrt((1 - rho) g^2 + eps) * g ~ sqrt(eps/(1-rho))
    per coordinate, whatever g; checked against the formula and torch."""
    for cls in twin("Adadelta"):
        w = nn.Parameter(torch.tensor([1.0, 100.0], dtype=torch.float64))
        opt = cls([w], rho=0.9, eps=1e-6)
        w.grad = 2 * w.detach()
        opt.step()
        g = torch.tensor([2.0, 200.0], dtype=torch.float64)
        step = (1e-6) ** 0.5 / (0.1 * g**2 + 1e-6) ** 0.5 * g
        torch.testing.assert_close(w.detach(), torch.tensor([1.0, 100.0]).double() - step)
        # the large gradient: (1 - rho) g^2 >> eps, a step of sqrt(eps / (1 - rho))
        assert abs(100.0 - w[1].item() - (1e-6 / 0.1) ** 0.5) < 1e-12


@pytest.mark.parametrize("name", ["Adadelta", "RAdam"])
def test_oldest_checkpoint_loads_and_continues_like_torch(name):
    """A checkpoint with none of the keys torch's __setstate__ fills in (and number steps):
    both twins load it alike, fill the same defaults and then step alike."""

    def oldest(checkpoint):
        for group in checkpoint["param_groups"]:
            for key in SETSTATE_KEYS[name]:
                del group[key]
        for state in checkpoint["state"].values():
            state["step"] = int(state["step"].item())

    (ours, opt, loaded), (theirs, ref, ref_loaded) = _resume(name, CONFIGS[name][0], oldest)
    assert_identical(loaded, ref_loaded)
    for key in SETSTATE_KEYS[name]:
        assert key in loaded["param_groups"][0]
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert_identical(p.detach(), q.detach())
    assert_identical(opt.state_dict(), ref.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_default_path_with_a_tensor_lr_is_torchs(name, monkeypatch):
    """On a foreach device (here the CPU, declared one for the test) ``foreach=None`` picks
    foreach as torch's ``_default_to_fused_or_foreach`` does, which ignores a tensor ``lr``;
    only Adam and AdamW then turn foreach off (torch's adam.py), as their foreach path
    refuses a tensor lr without ``capturable``."""
    monkeypatch.setattr(nopt, "_FOREACH_DEVICES", nopt._FOREACH_DEVICES | {"cpu"})
    cls = getattr(nopt, name)
    paths = []
    monkeypatch.setattr(cls, "_update", lambda self, *a: paths.append("for-loop"))
    monkeypatch.setattr(cls, "_foreach_update", lambda self, *a: paths.append("foreach"))
    w = nn.Parameter(torch.ones(3))
    w.grad = torch.ones(3)
    for lr in (0.01, torch.tensor(0.01)):
        cls([w], lr=lr).step()
    expected = ["foreach", "for-loop"] if name in ("Adam", "AdamW") else ["foreach", "foreach"]
    assert paths == expected
