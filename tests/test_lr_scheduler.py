"""normtut.lr_scheduler against torch.optim.lr_scheduler: the same learning rates bitwise."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch.optim import lr_scheduler as tsched

from normtut import lr_scheduler as nsched
from normtut import optim as noptim

# (name, kwargs, steps): every scheduler with a few hyperparameter settings
CASES = [
    ("StepLR", {"step_size": 3}, 20),
    ("StepLR", {"step_size": 1, "gamma": 0.5}, 12),
    ("MultiStepLR", {"milestones": [2, 5, 5, 9], "gamma": 0.3}, 15),
    ("ExponentialLR", {"gamma": 0.9}, 40),
    ("CosineAnnealingLR", {"T_max": 10}, 45),
    ("CosineAnnealingLR", {"T_max": 7, "eta_min": 1e-3}, 30),
    ("LinearLR", {}, 10),
    ("LinearLR", {"start_factor": 0.01, "end_factor": 0.5, "total_iters": 8}, 15),
    ("LambdaLR", {"lr_lambda": lambda t: 1 / (1 + t) ** 0.5}, 20),
    ("OneCycleLR", {"max_lr": 0.5, "total_steps": 30}, 30),
    ("OneCycleLR", {"max_lr": [0.5, 0.2], "total_steps": 25, "anneal_strategy": "linear"}, 25),
    ("OneCycleLR", {"max_lr": 0.3, "epochs": 4, "steps_per_epoch": 5, "three_phase": True}, 20),
    ("OneCycleLR", {"max_lr": 0.3, "total_steps": 12, "pct_start": 0.5, "div_factor": 5.0}, 12),
]
OPTIMIZERS = {
    "torch.SGD": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "normtut.SGD": lambda ps: noptim.SGD(ps, lr=0.1, momentum=0.9),
    "torch.Adam": lambda ps: torch.optim.Adam(ps, lr=0.01),
    "normtut.AdamW": lambda ps: noptim.AdamW(ps, lr=0.01),
}


def _params(groups: int = 2) -> list[dict]:
    torch.manual_seed(0)
    return [
        {"params": [torch.nn.Parameter(torch.randn(3))], "lr": 0.1 * (i + 1)} for i in range(groups)
    ]


def _pair(name: str, kwargs: dict, make_opt=OPTIMIZERS["torch.SGD"]):
    """The same scheduler, ours and torch's, each on its own copy of the same optimizer."""
    opt_t, opt_n = make_opt(_params()), make_opt(_params())
    return (getattr(tsched, name)(opt_t, **kwargs), getattr(nsched, name)(opt_n, **kwargs))


def _hyper(opt) -> list:
    keys = (
        "lr",
        "momentum",
        "betas",
        "initial_lr",
        "max_lr",
        "min_lr",
        "max_momentum",
        "base_momentum",
    )
    return [[(k, g[k]) for k in keys if k in g] for g in opt.param_groups]


def _run(scheds, steps: int) -> None:
    for _ in range(steps):
        for s in scheds:
            s.optimizer.step()
            s.step()


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key in ("lr_lambdas", "anneal_func"):
            continue
        assert a[key] == b[key], key


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize(("name", "kwargs", "steps"), CASES, ids=lambda c: str(c)[:30])
def test_learning_rates_equal_torchs_bitwise(name, kwargs, steps, opt_name):
    if name == "OneCycleLR" and isinstance(kwargs["max_lr"], list):
        kwargs = dict(kwargs)
    t, n = _pair(name, kwargs, OPTIMIZERS[opt_name])
    assert n.get_last_lr() == t.get_last_lr()
    for _ in range(steps - 1 if name == "OneCycleLR" else steps):
        _run([t, n], 1)
        assert n.get_last_lr() == t.get_last_lr()  # == on floats: bitwise
        assert _hyper(n.optimizer) == _hyper(t.optimizer), "momentum / betas cycle too"
    _same_state(n.state_dict(), t.state_dict())


@pytest.mark.parametrize(
    ("name", "kwargs", "steps"), [c for c in CASES if c[0] != "LambdaLR"], ids=lambda c: str(c)[:30]
)
def test_a_checkpoint_moves_between_the_twins_mid_schedule(name, kwargs, steps):
    t, n = _pair(name, kwargs)
    half = steps // 2
    _run([t, n], half)
    # torch's state into ours, ours into torch's; both go on to the end, equal to uninterrupted
    t2, n2 = _pair(name, kwargs)
    n2.optimizer.load_state_dict(t.optimizer.state_dict())
    n2.load_state_dict(copy.deepcopy(t.state_dict()))
    t2.optimizer.load_state_dict(n.optimizer.state_dict())
    t2.load_state_dict(copy.deepcopy(n.state_dict()))
    for _ in range(steps - half - (1 if name == "OneCycleLR" else 0)):
        _run([t, n2, t2], 1)
        assert n2.get_last_lr() == t.get_last_lr() == t2.get_last_lr()


def test_the_chainable_form_agrees_with_the_closed_form():
    for name, kwargs, steps in CASES[:8]:
        _, n = _pair(name, kwargs)
        for _ in range(steps):
            _run([n], 1)
            closed = n._get_closed_form_lr()
            for a, b in zip(n.get_last_lr(), closed, strict=True):
                assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15), (name, n.last_epoch)


def test_two_schedulers_on_one_optimizer_chain_as_torchs():
    opts = [torch.optim.SGD(_params(), lr=0.1), noptim.SGD(_params(), lr=0.1)]
    torch_pair = [tsched.ExponentialLR(opts[0], 0.9), tsched.MultiStepLR(opts[0], [3, 6], 0.5)]
    ours = [nsched.ExponentialLR(opts[1], 0.9), nsched.MultiStepLR(opts[1], [3, 6], 0.5)]
    for _ in range(10):
        for opt, pair in zip(opts, (torch_pair, ours), strict=True):
            opt.step()
            for s in pair:
                s.step()
        assert ours[1].get_last_lr() == torch_pair[1].get_last_lr()
    assert ours[1].get_last_lr()[0] == pytest.approx(0.1 * 0.9**10 * 0.25)


def _warmup_cosine(mod, opt):
    warm = mod.LinearLR(opt, start_factor=0.1, total_iters=4)
    cos = mod.CosineAnnealingLR(opt, T_max=12, eta_min=1e-4)
    return mod.SequentialLR(opt, [warm, cos], milestones=[4])


@pytest.mark.parametrize("make_opt", [OPTIMIZERS["torch.SGD"], OPTIMIZERS["normtut.SGD"]])
def test_sequential_warmup_then_cosine_equals_torchs(make_opt):
    t = _warmup_cosine(tsched, make_opt(_params()))
    n = _warmup_cosine(nsched, make_opt(_params()))
    assert n.get_last_lr() == t.get_last_lr()
    lrs = []
    for _ in range(16):
        _run([t, n], 1)
        assert n.get_last_lr() == t.get_last_lr()
        lrs.append(n.get_last_lr()[0])
    assert lrs[3] == pytest.approx(0.1), "the cosine starts at the base rate after warmup"
    state = n.state_dict()
    assert [type(s) for s in state["_schedulers"]] == [dict, dict]
    _same_state(
        {k: v for k, v in state.items() if k != "_schedulers"},
        {k: v for k, v in t.state_dict().items() if k != "_schedulers"},
    )


def test_reduce_lr_on_plateau_equals_torchs():
    metrics = [1.0, 0.9, 0.9, 0.9, 0.91, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.49999, 0.4, 0.4]
    kwargs = {"patience": 2, "factor": 0.5, "cooldown": 1, "min_lr": [0.0, 0.08]}
    opt_t, opt_n = torch.optim.SGD(_params(), lr=0.1), noptim.SGD(_params(), lr=0.1)
    t = tsched.ReduceLROnPlateau(opt_t, **kwargs)
    n = nsched.ReduceLROnPlateau(opt_n, **kwargs)
    for m in metrics:
        opt_t.step()
        opt_n.step()
        t.step(m)
        n.step(m)
        assert n.get_last_lr() == t.get_last_lr()
        assert (n.num_bad_epochs, n.cooldown_counter, n.best) == (
            t.num_bad_epochs,
            t.cooldown_counter,
            t.best,
        )
    assert n.get_last_lr()[0] < 0.1 and n.get_last_lr()[1] == 0.08, "floored at min_lr"
    _same_state(n.state_dict(), t.state_dict())
    for mode in ("max",):
        for tm in ("abs", "rel"):
            a = tsched.ReduceLROnPlateau(
                torch.optim.SGD(_params(), 0.1), mode, threshold_mode=tm, patience=0
            )
            b = nsched.ReduceLROnPlateau(
                torch.optim.SGD(_params(), 0.1), mode, threshold_mode=tm, patience=0
            )
            for m in [0.1, 0.2, 0.2, 0.1, 0.3]:
                a.step(m)
                b.step(m)
                assert a.get_last_lr() == b.get_last_lr()


def test_stepping_the_scheduler_before_the_optimizer_warns_like_torch():
    for mod in (tsched, nsched):
        opt = torch.optim.SGD(_params(), lr=0.1)
        s = mod.StepLR(opt, 2)
        with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
            s.step()
    opt = noptim.SGD(_params(), lr=0.1)
    s = nsched.StepLR(opt, 2)
    opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.step()  # the right order: no warning


def test_get_lr_outside_step_warns_and_get_last_lr_is_a_copy():
    opt = torch.optim.SGD([p for g in _params() for p in g["params"]], lr=torch.tensor(0.1))
    s = nsched.ExponentialLR(opt, 0.5)
    with pytest.warns(UserWarning, match="get_last_lr"):
        s.get_lr()
    opt.step()
    s.step()
    last = s.get_last_lr()[0]
    assert isinstance(last, torch.Tensor) and isinstance(opt.param_groups[0]["lr"], torch.Tensor)
    last.fill_(7.0)
    assert opt.param_groups[0]["lr"].item() == pytest.approx(0.05), "a tensor lr is not aliased"


def test_errors_match_torchs():
    def both(name, *args, **kwargs):
        errors = []
        for mod in (tsched, nsched):
            opt = torch.optim.SGD(_params(), lr=0.1)
            with pytest.raises(Exception) as info:
                getattr(mod, name)(opt, *args, **kwargs)
            errors.append((type(info.value), str(info.value)))
        assert errors[0] == errors[1]

    both("LinearLR", start_factor=0.0)
    both("LinearLR", end_factor=1.5)
    both("OneCycleLR", max_lr=0.1)
    both("OneCycleLR", max_lr=0.1, total_steps=0)
    both("OneCycleLR", max_lr=[0.1], total_steps=5)
    both("OneCycleLR", max_lr=0.1, total_steps=5, pct_start=2.0)
    both("OneCycleLR", max_lr=0.1, total_steps=5, anneal_strategy="exp")
    both("ReduceLROnPlateau", factor=1.0)
    both("ReduceLROnPlateau", mode="median")
    both("LambdaLR", [lambda t: 1.0])
    both("SequentialLR", [], milestones=[])
    opt = torch.optim.SGD(_params(), lr=0.1)
    with pytest.raises(ValueError, match="expects number of schedulers"):
        nsched.SequentialLR(opt, [nsched.StepLR(opt, 2)], milestones=[3])
    with pytest.raises(ValueError, match="does not support `ReduceLROnPlateau`"):
        nsched.SequentialLR(opt, [nsched.StepLR(opt, 2), tsched.ReduceLROnPlateau(opt)], [2])
    with pytest.raises(KeyError, match="initial_lr"):
        nsched.StepLR(torch.optim.SGD(_params(), lr=0.1), 2, last_epoch=3)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        nsched.StepLR(object(), 2)
    with pytest.raises(ValueError, match="momentum or beta1"):
        nsched.OneCycleLR(torch.optim.Adagrad(_params()), max_lr=0.1, total_steps=5)
    s = nsched.OneCycleLR(torch.optim.SGD(_params(), lr=0.1), max_lr=0.1, total_steps=2)
    s.optimizer.step()
    s.step()
    s.step()  # step 2 of 2 is the last one allowed
    with pytest.raises(ValueError, match="Tried to step 3 times"):
        s.step()


def test_one_cycle_writes_betas_and_adds_keys_to_the_groups():
    opt = noptim.Adam(_params(), lr=1e-3)
    nsched.OneCycleLR(opt, max_lr=0.01, total_steps=10)
    group = opt.param_groups[0]
    assert group["betas"][0] == 0.95 and group["betas"][1] == 0.999
    assert {"initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"} <= group.keys()
