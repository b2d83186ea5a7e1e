"""normtut.optim.Adam/AdamW(fused=True) (the compiled step, normtut._compiled) against
torch's fused=True and against normtut's for-loop path: trajectories within a few ulps, no
recompile when a scheduler changes lr, state_dicts that move between them, torch's errors.

Tiny tensors, shared compiled kernel (normtut._compiled caches it); the differences are
measured in ulps of the largest |parameter| of each tensor (the kernels round differently)."""

import copy

import pytest
import torch
from torch._dynamo.utils import counters

import normtut.optim as no

SHAPES = [(3,), (4, 5), (2, 3, 2)]
STEPS = 20
ULP_BOUND = 4  # measured: at most 1.21 ulps of max|p| (float32 and float64), > 0


def _ulps(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        x, y = x.detach(), y.detach()
        spacing = torch.finfo(y.dtype).eps * y.abs().max().clamp_min(1e-30)
        worst = max(worst, ((x - y).abs().max() / spacing).item())
    return worst


def _run(cls, kwargs, dtype=torch.float32, steps=STEPS, sched=False):
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in SHAPES]
    opt = cls(params, **kwargs)
    lr_s = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.9) if sched else None
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=dtype)
        opt.step()
        if lr_s:
            lr_s.step()
    return params, opt


CASES = [
    ("Adam", {}),
    ("Adam", {"amsgrad": True}),
    ("Adam", {"maximize": True, "weight_decay": 0.1}),
    ("Adam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("AdamW", {}),
    ("AdamW", {"amsgrad": True, "maximize": True, "weight_decay": 0.3}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("name", "kw"), CASES)
def test_trajectory(name, kw, dtype):
    kw = {"lr": 0.05, **kw}
    ours, _ = _run(getattr(no, name), {**kw, "fused": True}, dtype)
    theirs, _ = _run(getattr(torch.optim, name), {**kw, "fused": True}, dtype)
    loop, _ = _run(getattr(no, name), {**kw, "foreach": False}, dtype)
    assert _ulps(ours, theirs) <= ULP_BOUND
    assert _ulps(ours, loop) <= ULP_BOUND


def test_scheduler_does_not_recompile():
    _run(no.Adam, {"lr": 0.05, "fused": True}, steps=1)
    before = counters["stats"]["unique_graphs"]
    _run(no.Adam, {"lr": 0.05, "fused": True}, sched=True)
    assert counters["stats"]["unique_graphs"] == before


def test_state_matches_torch_and_round_trips():
    ours, opt = _run(no.Adam, {"lr": 0.05, "fused": True}, steps=5)
    theirs, ref = _run(torch.optim.Adam, {"lr": 0.05, "fused": True}, steps=5)
    for p, q in zip(ours, theirs, strict=True):
        s, r = opt.state[p], ref.state[q]
        assert s.keys() == r.keys()
        assert s["step"].dtype == r["step"].dtype == torch.float32
        assert s["step"].device == r["step"].device
    # torch fused -> normtut fused mid-training, and back
    moved = [torch.nn.Parameter(q.detach().clone()) for q in theirs]
    ours2 = no.Adam(moved, lr=0.05, fused=True)
    ours2.load_state_dict(copy.deepcopy(ref.state_dict()))  # not shared tensors
    back = torch.optim.Adam(ours, lr=0.05, fused=True)
    back.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert back.state_dict()["state"][0]["step"].item() == 5
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        for p, q in zip(moved, theirs, strict=True):
            q.grad = torch.randn(q.shape, generator=g)
            p.grad = q.grad.clone()
        ours2.step()
        ref.step()
    assert _ulps(moved, theirs) <= ULP_BOUND


@pytest.mark.parametrize("cls", [no.Adam, no.AdamW])
def test_errors(cls):
    w = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together."):
        cls(w, fused=True, foreach=True)
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        cls(w, fused=True, differentiable=True)
    ints = [torch.nn.Parameter(torch.zeros(2, dtype=torch.complex64))]
    opt = cls(ints, fused=True)
    ints[0].grad = torch.zeros_like(ints[0])
    with pytest.raises(RuntimeError, match="`fused=True` requires all the params"):
        opt.step()


def test_other_optimizers_still_refuse_fused():
    with pytest.raises(NotImplementedError):
        no.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, fused=True)
