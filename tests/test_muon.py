"""normtut.optim.Muon against torch.optim.Muon: the same trajectory bitwise on the CPU."""

from __future__ import annotations

import copy

import pytest
import torch

from normtut import _muon as nmuon

SETTINGS = [
    {},
    {"lr": 0.02, "momentum": 0.9, "nesterov": False},
    {"lr": 0.05, "weight_decay": 0.0, "ns_steps": 3},
    {"lr": 0.01, "adjust_lr_fn": "match_rms_adamw"},
    {"lr": 0.01, "adjust_lr_fn": "original", "ns_coefficients": (2.0, -1.5, 0.5), "eps": 1e-5},
]
SHAPES = [(8, 5), (5, 8), (6, 6), (1, 7), (16, 1)]


def _problem(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in SHAPES]
    targets = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
    return params, targets


def _loss(params, targets):
    return sum(
        ((p - t) ** 2 * (1 + i)).sum() + p.sum() ** 3 * 1e-3
        for i, (p, t) in enumerate(zip(params, targets, strict=True))
    )


def _train(opt, params, targets, steps):
    for _ in range(steps):
        opt.zero_grad()
        _loss(params, targets).backward()
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kwargs", SETTINGS, ids=str)
def test_trajectory_equals_torchs_bitwise(kwargs, dtype):
    ours, targets = _problem(dtype)
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a, b = nmuon.Muon(ours, **kwargs), torch.optim.Muon(theirs, **kwargs)
    for _ in range(12):
        _train(a, ours, targets, 1)
        _train(b, theirs, targets, 1)
        for p, q in zip(ours, theirs, strict=True):
            assert torch.equal(p, q)
    assert a.state_dict()["param_groups"] == b.state_dict()["param_groups"]
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(a.state[p]["momentum_buffer"], b.state[q]["momentum_buffer"])


def test_param_groups_tensor_lr_and_missing_grads():
    ours, targets = _problem(torch.float32)
    theirs = [p.detach().clone().requires_grad_() for p in ours]

    def groups(ps):
        return [
            {"params": ps[:2], "lr": torch.tensor(0.03)},
            {"params": ps[2:], "nesterov": False, "weight_decay": 0.01},
        ]

    a, b = nmuon.Muon(groups(ours), lr=0.02), torch.optim.Muon(groups(theirs), lr=0.02)
    for step in range(6):
        for opt, ps in ((a, ours), (b, theirs)):
            opt.zero_grad()
            _loss(ps, targets).backward()
            if step % 2:
                ps[0].grad = None  # skipped: no update, no state change
            opt.step()
        assert all(torch.equal(p, q) for p, q in zip(ours, theirs, strict=True))


def test_state_dict_moves_between_the_twins_mid_training():
    ours, targets = _problem(torch.float32)
    ref = [p.detach().clone().requires_grad_() for p in ours]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a = nmuon.Muon(ours, lr=0.02)
    r = torch.optim.Muon(ref, lr=0.02)
    _train(a, ours, targets, 4)
    _train(r, ref, targets, 4)
    with torch.no_grad():
        for p, q in zip(theirs, ours, strict=True):
            p.copy_(q)
    b = torch.optim.Muon(theirs, lr=0.02)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    _train(b, theirs, targets, 4)
    _train(r, ref, targets, 4)
    assert all(torch.equal(p, q) for p, q in zip(theirs, ref, strict=True))
    c = nmuon.Muon([p.detach().clone().requires_grad_() for p in ref], lr=0.02)
    c.load_state_dict(copy.deepcopy(r.state_dict()))
    assert c.state_dict()["param_groups"] == r.state_dict()["param_groups"]


def test_newton_schulz_pushes_singular_values_towards_one():
    gen = torch.Generator().manual_seed(0)
    left, _ = torch.linalg.qr(torch.randn(64, 32, generator=gen))
    right, _ = torch.linalg.qr(torch.randn(32, 32, generator=gen))
    sigma = torch.logspace(-2, 0, 32)  # a condition number of 100
    U = left @ torch.diag(sigma) @ right.T
    assert (sigma / sigma.norm()).min() > 1 / 200
    X = nmuon.newton_schulz(U)
    s = torch.linalg.svdvals(X.float())
    assert X.dtype == torch.bfloat16 and X.shape == U.shape
    assert 0.6 < s.min() and s.max() < 1.25, s  # every singular value near 1 after 5 steps
    # the same as torch's private helper, bit for bit
    from torch.optim._muon import _zeropower_via_newtonschulz

    ref = _zeropower_via_newtonschulz(U, nmuon.NS_COEFFICIENTS, nmuon.NS_STEPS, nmuon.EPS)
    assert torch.equal(nmuon.newton_schulz(U), ref)


def test_errors_match_torchs():
    def both(make, *args, **kwargs):
        errors = []
        for cls in (nmuon.Muon, torch.optim.Muon):
            with pytest.raises(Exception) as info:
                make(cls)
            errors.append((type(info.value), str(info.value)))
        assert errors[0] == errors[1], errors

    w = torch.nn.Parameter(torch.zeros(3, 4))
    both(lambda cls: cls([torch.nn.Parameter(torch.zeros(3))]))
    both(lambda cls: cls([torch.nn.Parameter(torch.zeros(2, 3, 4))]))
    both(lambda cls: cls([w], lr=-1.0))
    both(lambda cls: cls([w], momentum=-0.1))
    both(lambda cls: cls([w], weight_decay=-0.1))
    both(lambda cls: cls([w], adjust_lr_fn="spectral"))
    both(lambda cls: cls([w], lr=torch.tensor([0.1, 0.2])))

    def complex_step(cls):
        z = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.complex64))
        z.grad = torch.ones_like(z)
        cls([z]).step()

    both(complex_step)

    def bad_steps(cls):
        w.grad = torch.ones_like(w)
        cls([w], ns_steps=100).step()

    both(bad_steps)
