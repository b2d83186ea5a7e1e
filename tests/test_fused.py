"""normtut.optim.Adam/AdamW(fused=True) (the compiled step, normtut._compiled) against
torch's fused=True and against normtut's for-loop path: trajectories within a few ulps, no
recompile when a scheduler changes lr, state_dicts that move between them, torch's errors.

Tiny tensors, shared compiled kernel (normtut._compiled caches it); the differences are
measured in ulps of the largest |parameter| of each tensor (the kernels round differently)."""

import copy

import pytest
import torch
from torch._dynamo.utils import counters

import normtut._compiled as no_compiled
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


def _mixed_params(dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    shapes = [(3,), (4, 5), (no_compiled.LARGE,), (2, 3, 2)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in shapes]
    params.append(torch.nn.Parameter(torch.randn(6, 4, generator=g, dtype=dtype).t()))
    return params, g


def _grads(params, g):
    for p in params:  # with the parameter's strides, as autograd makes them (torch's fused
        # CPU kernel gives wrong results for a transposed parameter with a contiguous grad)
        p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("amsgrad", [False, True])
def test_flat_buffers_small_large_and_strided(amsgrad):
    """Small contiguous tensors share one flat buffer (their state entries are views of it),
    the large and the transposed one are updated on their own; all match torch's fused."""
    ours, g = _mixed_params()
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    theirs[-1] = torch.nn.Parameter(ours[-1].detach().t().clone().t())  # same strides
    opt = no.AdamW(ours, lr=0.05, amsgrad=amsgrad, fused=True)
    ref = torch.optim.AdamW(theirs, lr=0.05, amsgrad=amsgrad, fused=True)
    for _ in range(6):
        _grads(ours, g)
        for p, q in zip(ours, theirs, strict=True):
            q.grad = p.grad.clone()
        opt.step()
        ref.step()
    assert _ulps(ours, theirs) <= ULP_BOUND
    small = [opt.state[ours[i]]["exp_avg"] for i in (0, 1, 3)]
    storage = {t.untyped_storage().data_ptr() for t in small}
    assert len(storage) == 1  # views of one buffer
    alone = [opt.state[ours[i]]["exp_avg"].untyped_storage().data_ptr() for i in (2, 4)]
    assert storage.isdisjoint(alone)
    assert all(opt.state[p]["step"].item() == 6 for p in ours)
    assert opt.state[ours[4]]["exp_avg"].stride() == ours[4].stride()


def test_flat_buffers_follow_state_edits_and_loads():
    """An in-place edit of a state view is seen; a replaced entry (load_state_dict, or by
    hand) is copied into new buffers; steps that differ fall back to one call per tensor."""
    ours, g = _mixed_params(torch.float64)
    twin = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt = no.Adam(ours, lr=0.05, fused=True)
    ref = no.Adam(twin, lr=0.05, foreach=False)
    for step in range(8):
        _grads(ours, g)
        for p, q in zip(ours, twin, strict=True):
            q.grad = p.grad.clone()
        opt.step()
        ref.step()
        if step == 1:  # in place, through the view
            for o in (opt, ref):
                o.state[list(o.state)[0]]["exp_avg"].mul_(0.5)
        if step == 3:  # replaced by hand, with a different step count
            for o, params in ((opt, ours), (ref, twin)):
                o.state[params[1]]["exp_avg_sq"] = o.state[params[1]]["exp_avg_sq"].clone()
                o.state[params[1]]["step"] = torch.tensor(2.0)
                o.state[params[1]]["step"] = o.state[params[1]]["step"].float()
        if step == 5:  # a checkpoint round trip
            opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert _ulps(ours, twin) <= ULP_BOUND
    assert opt.state[ours[1]]["step"].item() == 6 and opt.state[ours[0]]["step"].item() == 8
