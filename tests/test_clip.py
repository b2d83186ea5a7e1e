"""normtut's gradient clipping against torch.nn.utils: the same norms and gradients bitwise."""

from __future__ import annotations

import math

import pytest
import torch

from normtut import _clip as nclip

SHAPES = [[(3, 4), (5,), (2, 2, 2)], [(1,)], [(0,), (4,)], [(100, 30), (30,), (7, 7)]]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _params(shapes, dtype, scale=3.0, seed=0, missing_grad=False):
    gen = torch.Generator().manual_seed(seed)
    params = []
    for i, shape in enumerate(shapes):
        p = torch.nn.Parameter(torch.zeros(shape, dtype=dtype))
        if not (missing_grad and i == 0):
            p.grad = (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)
        params.append(p)
    return params


def _twins(*args, **kwargs):
    return _params(*args, **kwargs), _params(*args, **kwargs)


def _grads(params):
    return [p.grad for p in params if p.grad is not None]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, math.inf, 0.5])
@pytest.mark.parametrize("max_norm", [0.1, 1.0, 1e4])
def test_clip_grad_norm_equals_torchs_bitwise(dtype, shapes, norm_type, max_norm):
    ours, theirs = _twins(shapes, dtype)
    if norm_type == math.inf and any(0 in shape for shape in shapes):
        errors = []
        for fn, params in ((nclip.clip_grad_norm_, ours), (torch.nn.utils.clip_grad_norm_, theirs)):
            with pytest.raises(RuntimeError) as info:
                fn(params, max_norm, norm_type)
            errors.append(str(info.value))
        assert errors[0] == errors[1] and "empty tensor" in errors[0]
        return
    n = nclip.clip_grad_norm_(ours, max_norm, norm_type)
    t = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert n.dtype == t.dtype and torch.equal(n, t)
    for a, b in zip(_grads(ours), _grads(theirs), strict=True):
        assert torch.equal(a, b)


def test_clip_grad_norm_caps_the_global_norm_and_keeps_the_direction():
    params = _params([(10,), (20,)], torch.float64, scale=5.0)
    before = torch.cat([g.flatten() for g in _grads(params)]).clone()
    total = nclip.clip_grad_norm_(params, 1.0)
    after = torch.cat([g.flatten() for g in _grads(params)])
    assert total == pytest.approx(before.norm().item())
    assert after.norm().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(after / after.norm(), before / before.norm())


def test_mixed_dtypes_missing_grads_and_a_single_tensor():
    mixed = _params([(3,), (4,)], torch.float32) + _params([(5,)], torch.float64, seed=1)
    mixed_t = _params([(3,), (4,)], torch.float32) + _params([(5,)], torch.float64, seed=1)
    assert torch.equal(
        nclip.clip_grad_norm_(mixed, 0.5), torch.nn.utils.clip_grad_norm_(mixed_t, 0.5)
    )
    ours, theirs = _twins([(3,), (4,)], torch.float32, missing_grad=True)
    assert torch.equal(
        nclip.clip_grad_norm_(ours, 0.5), torch.nn.utils.clip_grad_norm_(theirs, 0.5)
    )
    assert ours[0].grad is None
    one, one_t = _twins([(6,)], torch.float32)
    assert torch.equal(
        nclip.clip_grad_norm_(one[0], 0.5), torch.nn.utils.clip_grad_norm_(one_t[0], 0.5)
    )
    assert torch.equal(one[0].grad, one_t[0].grad)


def test_no_gradients_at_all():
    p = torch.nn.Parameter(torch.zeros(3))
    assert torch.equal(nclip.clip_grad_norm_([p], 1.0), torch.nn.utils.clip_grad_norm_([p], 1.0))
    assert torch.equal(nclip.clip_grad_norm_([], 1.0), torch.tensor(0.0))
    with pytest.warns(UserWarning, match="empty generator"):
        nclip.clip_grad_norm_((p for p in []), 1.0)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_error_if_nonfinite(bad):
    ours, theirs = _twins([(3,)], torch.float32)
    ours[0].grad[1] = bad
    theirs[0].grad[1] = bad
    with pytest.raises(RuntimeError) as mine:
        nclip.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError) as torchs:
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
    assert str(mine.value) == str(torchs.value)
    # without the flag both scale by the non-finite norm, to the same (non-finite) gradients
    n = nclip.clip_grad_norm_(ours, 1.0)
    t = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert torch.equal(
        n,
        t,
    ) or (n.isnan() and t.isnan())
    assert torch.equal(ours[0].grad.isnan(), theirs[0].grad.isnan())


@pytest.mark.parametrize("foreach", [None, True, False])
def test_foreach_paths_are_torchs(foreach):
    ours, theirs = _twins([(3,), (2,)], torch.float32)
    n = nclip.clip_grad_norm_(ours, 1.0, foreach=foreach)
    t = torch.nn.utils.clip_grad_norm_(theirs, 1.0, foreach=foreach)
    assert torch.equal(n, t)
    assert all(torch.equal(a, b) for a, b in zip(_grads(ours), _grads(theirs), strict=True))


def test_foreach_true_where_no_kernels_exist_is_torchs_error():
    for fn in (nclip.clip_grad_norm_, torch.nn.utils.clip_grad_norm_):
        p = torch.nn.Parameter(torch.zeros(3, device="meta"))
        p.grad = torch.ones(3, device="meta")
        with pytest.raises(RuntimeError, match="can't use the foreach API on meta tensors"):
            fn([p], 1.0, foreach=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("clip_value", [0.0, 0.5, 2.0, 100])
def test_clip_grad_value_equals_torchs(dtype, clip_value):
    ours, theirs = _twins([(4, 5), (3,)], dtype, missing_grad=False)
    assert nclip.clip_grad_value_(ours, clip_value) is None
    torch.nn.utils.clip_grad_value_(theirs, clip_value)
    for a, b in zip(_grads(ours), _grads(theirs), strict=True):
        assert torch.equal(a, b)
        assert a.abs().max() <= clip_value


def test_clipping_is_not_recorded_by_autograd():
    p = torch.nn.Parameter(torch.tensor([1.5, 2.0, 0.0]))
    (p.grad,) = torch.autograd.grad((p**2).sum(), p, create_graph=True)  # 2p, with a graph
    assert p.grad.requires_grad
    nclip.clip_grad_norm_([p], 1.0)
    assert torch.allclose(p.grad.detach(), torch.tensor([0.6, 0.8, 0.0]), atol=1e-6)
