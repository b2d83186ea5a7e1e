"""normtut.amp.GradScaler against torch.amp.GradScaler: the same decisions and scales."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from normtut import amp as namp
from normtut import optim as noptim


def _model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)


def _batches(n, poison=()):
    gen = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        X = torch.randn(16, 4, generator=gen)
        if i in poison:
            X[0, 0] = float("inf") if i % 2 else float("nan")
        out.append((X, torch.randint(0, 2, (16,), generator=gen)))
    return out


def _iteration(model, opt, scaler, X, y, unscale_first=False, clip=None):
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(X.to(next(model.parameters()).dtype)), y)
    scaler.scale(loss).backward()
    if unscale_first:
        scaler.unscale_(opt)
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
    scaler.step(opt)
    scaler.update()


KWARGS = [
    {"device": "cpu"},
    {"device": "cpu", "init_scale": 2.0**20, "growth_interval": 3},
    {
        "device": "cpu",
        "init_scale": 3.0e38,
        "growth_factor": 3.0,
        "backoff_factor": 0.3,
        "growth_interval": 2,
    },
    {"device": "cpu", "init_scale": 7.0, "growth_factor": 1.7, "growth_interval": 1},
]


@pytest.mark.parametrize("unscale_first", [False, True])
@pytest.mark.parametrize("kwargs", KWARGS, ids=str)
def test_decisions_and_scales_equal_torchs_step_by_step(kwargs, unscale_first):
    batches = _batches(14, poison={2, 3, 7, 11})
    runs = []
    for Scaler in (namp.GradScaler, torch.amp.GradScaler):
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scaler = Scaler(**kwargs)
        trace = []
        for X, y in batches:
            before = [p.detach().clone() for p in model.parameters()]
            _iteration(model, opt, scaler, X, y, unscale_first, clip=1.0)
            stepped = any(
                not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
            )
            trace.append((stepped, scaler.get_scale(), scaler._get_growth_tracker()))
        runs.append((trace, [p.detach() for p in model.parameters()], scaler.state_dict()))
    (ours, p_ours, sd_ours), (torchs, p_torch, sd_torch) = runs
    assert ours == torchs
    assert [s for s, _, _ in ours].count(False) >= 4, "the poisoned steps were skipped"
    assert all(torch.equal(a, b) for a, b in zip(p_ours, p_torch, strict=True))
    assert sd_ours == sd_torch


def test_unscaled_gradients_equal_torchs_bitwise_in_every_dtype():
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        grads = []
        for Scaler in (namp.GradScaler, torch.amp.GradScaler):
            model = _model(dtype=dtype)
            opt = noptim.SGD(model.parameters(), lr=0.1)
            scaler = Scaler("cpu", init_scale=1000.0)
            X, y = _batches(1)[0]
            nn.functional.cross_entropy(scaler.scale(model(X.to(dtype))).float(), y).backward()
            scaler.unscale_(opt)
            grads.append([p.grad.clone() for p in model.parameters()])
        assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True)), dtype


def test_state_dict_moves_between_twins_and_training_resumes():
    batches = _batches(12, poison={5})
    ref_model, ref_opt = _model(), None
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1)
    ref = torch.amp.GradScaler("cpu", growth_interval=2)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ours = namp.GradScaler("cpu", growth_interval=2)
    for i, (X, y) in enumerate(batches):
        if i == 6:  # checkpoint ours, resume in a torch scaler (and the reverse for the ref)
            ours, saved = torch.amp.GradScaler("cpu"), copy.deepcopy(ours.state_dict())
            ours.load_state_dict(saved)
            ref2 = namp.GradScaler("cpu")
            ref2.load_state_dict(copy.deepcopy(ref.state_dict()))
            ref = ref2
        _iteration(model, opt, ours, X, y)
        _iteration(ref_model, ref_opt, ref, X, y)
        assert ours.get_scale() == ref.get_scale()
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), ref_model.parameters(), strict=True)
    )


def test_growth_stops_at_a_non_finite_scale():
    for Scaler in (namp.GradScaler, torch.amp.GradScaler):
        scaler = Scaler("cpu", init_scale=3.0e38, growth_interval=1)
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        scaler.scale(torch.zeros(()))
        for _ in range(2):
            opt.zero_grad()
            for p in model.parameters():
                p.grad = torch.zeros_like(p)
            scaler.step(opt)
            scaler.update()
        assert scaler.get_scale() == pytest.approx(3.0e38, rel=1e-6)


def test_errors_match_torchs():
    def both(action):
        errors = []
        for Scaler in (namp.GradScaler, torch.amp.GradScaler):
            model = _model()
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            with pytest.raises(Exception) as info:
                action(Scaler, model, opt)
            errors.append((type(info.value), str(info.value)))
        assert errors[0] == errors[1], errors

    def backward(scaler, model):
        X, y = _batches(1)[0]
        scaler.scale(nn.functional.cross_entropy(model(X), y)).backward()

    def twice_unscale(S, m, o):
        s = S("cpu")
        backward(s, m)
        s.unscale_(o)
        s.unscale_(o)

    def unscale_after_step(S, m, o):
        s = S("cpu")
        backward(s, m)
        s.step(o)
        s.unscale_(o)

    def step_twice(S, m, o):
        s = S("cpu")
        backward(s, m)
        s.step(o)
        s.step(o)

    def closure(S, m, o):
        s = S("cpu")
        backward(s, m)
        s.step(o, closure=lambda: 0.0)

    def half_grads(S, m, o):
        s = S("cpu")
        s.scale(torch.ones(()))
        for p in m.parameters():
            p.grad = torch.zeros_like(p, dtype=torch.float16)
        s.unscale_(o)

    def new_scale_wrong(S, m, o):
        s = S("cpu")
        backward(s, m)
        s.step(o)
        s.update(torch.ones(2))

    both(lambda S, m, o: S("cpu").update())
    both(lambda S, m, o: S("cpu").step(o))
    both(lambda S, m, o: S("cpu", growth_factor=1.0))
    both(lambda S, m, o: S("cpu", backoff_factor=1.0))
    both(lambda S, m, o: S("cpu").load_state_dict({}))
    both(lambda S, m, o: S("cpu").scale(3.0))
    for action in (
        twice_unscale,
        unscale_after_step,
        step_twice,
        closure,
        half_grads,
        new_scale_wrong,
    ):
        both(action)


def test_disabled_and_cuda_without_cuda():
    with pytest.warns(UserWarning, match="CUDA is not available"):
        scaler = namp.GradScaler()  # device "cuda" by default
    if not torch.cuda.is_available():
        assert not scaler.is_enabled() and scaler.get_scale() == 1.0
        assert scaler.state_dict() == torch.amp.GradScaler("cpu", enabled=False).state_dict() == {}
    off = namp.GradScaler("cpu", enabled=False)
    loss = torch.tensor(2.0)
    assert off.scale(loss) is loss
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    X, y = _batches(1)[0]
    nn.functional.cross_entropy(model(X), y).backward()
    off.step(opt)
    off.update()


def test_scale_nested_outputs_and_pickle():
    scaler = namp.GradScaler("cpu", init_scale=4.0)
    out = scaler.scale([torch.ones(2), (torch.ones(()), torch.full((1,), 2.0))])
    assert isinstance(out, list) and isinstance(out[1], tuple)
    assert out[0].tolist() == [4.0, 4.0] and out[1][1].item() == 8.0
    restored = pickle.loads(pickle.dumps(scaler))
    assert restored.get_scale() == 4.0 and restored._scale is None
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    X, y = _batches(1)[0]
    scaler.scale(nn.functional.cross_entropy(model(X), y)).backward()
    scaler.unscale_(opt)
    with pytest.raises(AssertionError, match="may only be pickled"):
        pickle.dumps(scaler)


def test_a_fused_torch_optimizer_is_handed_the_scale():
    results = []
    for Scaler in (namp.GradScaler, torch.amp.GradScaler):
        model = _model()
        opt = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
        scaler = Scaler("cpu", init_scale=256.0, growth_interval=2)
        for X, y in _batches(6, poison={3}):
            _iteration(model, opt, scaler, X, y)
        results.append(([p.detach() for p in model.parameters()], scaler.state_dict()))
    assert all(torch.equal(a, b) for a, b in zip(results[0][0], results[1][0], strict=True))
    assert results[0][1] == results[1][1]
