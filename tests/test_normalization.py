"""Tests for normtut.normalization: every layer against its torch.nn twin, the hand-written
batch-norm backward against gradcheck and autograd, checkpoints both ways, errors, LeNet."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from normtut import normalization as nnorm

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-6}, torch.float64: {"rtol": 1e-10, "atol": 1e-10}}
BN_PAIRS = {
    1: (nnorm.BatchNorm1d, nn.BatchNorm1d),
    2: (nnorm.BatchNorm2d, nn.BatchNorm2d),
    3: (nnorm.BatchNorm3d, nn.BatchNorm3d),
}
FAST = settings(max_examples=12, deadline=None)


def close(actual, expected, dtype=None):
    """assert_close with the tolerances of this suite (None == None passes)."""
    if expected is None:
        assert actual is None
        return
    dtype = dtype or expected.dtype
    torch.testing.assert_close(actual, expected, **TOL.get(dtype, {}))


def randn(shape, seed, dtype=torch.float32, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype)


def twins(ours_cls, torch_cls, *args, seed=0, **kwargs):
    """The two modules with the same (random) affine parameters."""
    theirs = torch_cls(*args, **kwargs)
    ours = ours_cls(*args, **kwargs)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(randn(p.shape, seed, p.dtype, 0.5, 1.0))
            seed += 1
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def agree(ours, theirs, dtype, truth=None, rounding=0.0):
    """``ours`` equals torch's ``theirs`` to the suite's tolerance for ``dtype``.

    With ``truth`` (the float64 result of torch's layer, for a float32 comparison): where the
    two float32 results differ by more than the tolerance, ours must be no further from the
    truth than torch's worst element is, up to the same tolerance plus ``rounding`` (the
    float32 rounding bound of a long sum, see :func:`run_both`). This only matters for
    ill-conditioned inputs (nearly equal values, where the input gradient is a small
    difference of large terms) and for sums that cancel: there float32 arithmetic alone
    exceeds the tolerance, and torch's CPU kernels, which accumulate in double, are closer.
    """
    if theirs is None:
        assert ours is None
        return
    if truth is None:
        close(ours, theirs, dtype)
        return
    tol = TOL[dtype]
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    a, b, t = ours.double(), theirs.double(), truth.double()
    within = (a - b).abs() <= tol["atol"] + tol["rtol"] * b.abs()
    torch_error = (b - t).abs().max() if b.numel() else 0.0
    as_good = (a - t).abs() <= torch_error + tol["atol"] + tol["rtol"] * t.abs() + rounding
    bad = ~(within | as_good)
    assert not bad.any(), (
        f"ours {a[bad].tolist()}, torch {b[bad].tolist()}, float64 {t[bad].tolist()}"
    )


def float64_twin(theirs, dtype):
    """A float64 copy of torch's layer, the reference for float32 comparisons."""
    return copy.deepcopy(theirs).double() if dtype == torch.float32 else None


def run_both(ours, theirs, x, dtype, grad_seed=1, ref=None):
    """Forward and backward through both (and the float64 ``ref``); compare outputs, input
    gradients and parameter gradients."""
    xs = [x.clone().requires_grad_() for _ in range(2)]
    ys = [ours(xs[0]), theirs(xs[1])]
    g = randn(ys[0].shape, grad_seed, dtype)
    if ref is not None:
        xs.append(x.double().requires_grad_())
        ys.append(ref(xs[2]))
    for y, x_ in zip(ys, xs, strict=True):
        y.backward(g.to(x_.dtype))
    truth = (lambda i: i[2]) if ref is not None else (lambda i: None)
    agree(ys[0].detach(), ys[1].detach(), dtype, truth([y.detach() for y in ys]))
    agree(xs[0].grad, xs[1].grad, dtype, truth([x_.grad for x_ in xs]))
    modules = [ours, theirs] + ([ref] if ref is not None else [])
    named = [dict(m.named_parameters()) for m in modules]
    assert list(named[0]) == list(named[1])
    for name in named[1]:
        # A parameter gradient sums n = x.numel() / p.numel() terms g * x_hat (|x_hat| < 4
        # here); in float32 that sum may be off by n * eps * max|term| when it cancels.
        n = x.numel() // max(named[0][name].numel(), 1)
        rounding = n * torch.finfo(torch.float32).eps * 4 * g.abs().max().item()
        agree(named[0][name].grad, named[1][name].grad, dtype,
              truth([p[name].grad for p in named]), rounding)  # fmt: skip
    for m in modules:
        m.zero_grad()
    return ys[0]


def assert_same_buffers(ours, theirs, dtype, ref=None):
    ba, bb = dict(ours.named_buffers()), dict(theirs.named_buffers())
    bt = dict(ref.named_buffers()) if ref is not None else {}
    assert ba.keys() == bb.keys()
    for key in bb:
        if key.endswith("num_batches_tracked"):
            assert ba[key].dtype == torch.long
            assert torch.equal(ba[key], bb[key]), key
        else:
            agree(ba[key], bb[key], dtype, bt.get(key))


def well_conditioned(m, dtype):
    """Float32 comparisons need at least 4 values per normalized group.

    With 2 values the normalized outputs are +-d / sqrt(d^2 + eps) and the input gradient is
    a difference of terms ~1 / sqrt(var + eps) that nearly cancel: float32 rounding alone
    (ours and torch's alike) then exceeds rtol 1e-5 / atol 1e-6. Float64 covers every size.
    """
    return dtype == torch.float64 or m >= 4


def bn_shape(draw, dim):
    n = draw(st.integers(2, 6))
    c = draw(st.integers(1, 5))
    if dim == 1:
        return (n, c) if draw(st.booleans()) else (n, c, draw(st.integers(1, 4)))
    return (n, c, *[draw(st.integers(1, 4)) for _ in range(dim)])


# --- batch norm modules against torch ------------------------------------------------------


@st.composite
def bn_case(draw):
    dim = draw(st.sampled_from([1, 2, 3]))
    shape, dtype = bn_shape(draw, dim), draw(st.sampled_from(DTYPES))
    assume(well_conditioned(shape[0] * math.prod(shape[2:]), dtype))
    return {
        "dim": dim,
        "shape": shape,
        "dtype": dtype,
        "momentum": draw(st.sampled_from([0.1, None, 0.5, 1.0])),
        "affine": draw(st.booleans()),
        "track": draw(st.booleans()),
        "eps": draw(st.sampled_from([1e-5, 1e-3])),
        "seed": draw(st.integers(0, 2**16)),
        "scale": draw(st.floats(0.5, 4.0)),
        "shift": draw(st.floats(-3.0, 3.0)),
    }


@FAST
@given(case=bn_case())
def test_batchnorm_matches_torch_over_training_then_eval(case):
    ours_cls, torch_cls = BN_PAIRS[case["dim"]]
    dtype, shape = case["dtype"], case["shape"]
    ours, theirs = twins(
        ours_cls, torch_cls, shape[1], eps=case["eps"], momentum=case["momentum"],
        affine=case["affine"], track_running_stats=case["track"], dtype=dtype,
        seed=case["seed"],
    )  # fmt: skip
    ref = float64_twin(theirs, dtype)
    for step in range(3):
        x = randn(shape, case["seed"] + step, dtype, case["scale"], case["shift"])
        run_both(ours, theirs, x, dtype, grad_seed=case["seed"] + 10 + step, ref=ref)
        assert_same_buffers(ours, theirs, dtype, ref)
    for m in (ours, theirs, ref):
        if m is not None:
            m.eval()
    x = randn(shape, case["seed"] + 99, dtype, case["scale"], case["shift"])
    run_both(ours, theirs, x, dtype, ref=ref)
    assert_same_buffers(ours, theirs, dtype, ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_num_batches_tracked_and_running_stats_known_answers(dtype, momentum):
    bn = nnorm.BatchNorm1d(3, momentum=momentum, dtype=dtype)
    ref = nn.BatchNorm1d(3, momentum=momentum, dtype=dtype)
    means, variances = [], []
    expected_mean = torch.zeros(3, dtype=dtype)
    expected_var = torch.ones(3, dtype=dtype)
    for k in range(1, 5):
        x = randn((7, 3), k, dtype, 2.0, 1.0)
        bn(x)
        ref(x)
        means.append(x.mean(0))
        variances.append(x.var(0, unbiased=True))  # running_var holds the unbiased variance
        if momentum is None:  # the cumulative average of every batch so far
            expected_mean = torch.stack(means).mean(0)
            expected_var = torch.stack(variances).mean(0)
        else:  # new = (1 - m) old + m batch
            expected_mean = (1 - momentum) * expected_mean + momentum * means[-1]
            expected_var = (1 - momentum) * expected_var + momentum * variances[-1]
        assert bn.num_batches_tracked.item() == k == ref.num_batches_tracked.item()
        close(bn.running_mean, expected_mean)
        close(bn.running_var, expected_var)
        assert_same_buffers(bn, ref, dtype)


def test_normalization_uses_the_biased_variance():
    x = randn((5, 2), 0, torch.float64, 3.0)
    y = nnorm.BatchNorm1d(2, dtype=torch.float64)(x)
    expected = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    close(y, expected)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_eval_under_enable_grad_uses_running_stats(dim):
    ours_cls, _ = BN_PAIRS[dim]
    bn = ours_cls(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    bn.eval()
    shape = (4, 3) + (2,) * (dim if dim > 1 else 1)
    x = randn(shape, 0).requires_grad_()
    with torch.enable_grad():
        y = bn(x)
    view = (3,) + (1,) * (x.dim() - 2)
    expected = (x - bn.running_mean.view(view)) / torch.sqrt(bn.running_var.view(view) + 1e-5)
    close(y, expected)
    assert y.requires_grad
    assert bn.num_batches_tracked.item() == 0  # eval never updates
    close(bn.running_mean, torch.tensor([1.0, -2.0, 0.5]))


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_train_under_no_grad_uses_batch_stats_and_updates(dim):
    ours_cls, torch_cls = BN_PAIRS[dim]
    ours, theirs = twins(ours_cls, torch_cls, 3)
    shape = (4, 3) + (2,) * (dim if dim > 1 else 1)
    x = randn(shape, 1, scale=2.0, shift=1.0)
    with torch.no_grad():
        ya, yb = ours(x), theirs(x)
    close(ya, yb)
    dims = (0, *range(2, x.dim()))
    xhat = (x - x.mean(dims, keepdim=True)) / torch.sqrt(
        x.var(dims, unbiased=False, keepdim=True) + 1e-5
    )
    view = (3,) + (1,) * (x.dim() - 2)
    close(ya, xhat * ours.weight.view(view) + ours.bias.view(view))
    assert ours.num_batches_tracked.item() == 1
    assert not torch.equal(ours.running_mean, torch.zeros(3))
    assert_same_buffers(ours, theirs, torch.float32)


@pytest.mark.parametrize("affine", [True, False])
def test_without_running_stats_batch_stats_in_eval(affine):
    ours, theirs = twins(nnorm.BatchNorm2d, nn.BatchNorm2d, 4, affine=affine,
                         track_running_stats=False)  # fmt: skip
    assert ours.running_mean is None and ours.num_batches_tracked is None
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = randn((3, 4, 2, 2), 0, scale=2.0)
    ours.eval()
    theirs.eval()
    y = run_both(ours, theirs, x, torch.float32)
    mean, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5)  # the batch's own statistics, in eval
    if affine:
        expected = expected * ours.weight.view(4, 1, 1) + ours.bias.view(4, 1, 1)
    close(y, expected)
    # a module whose buffers were removed also falls back to batch statistics in eval
    a, b = twins(nnorm.BatchNorm2d, nn.BatchNorm2d, 4)
    for m in (a, b):
        m.eval()
        m.running_mean = None
        m.running_var = None
    run_both(a, b, x, torch.float32)


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_state_dict_both_ways(dim, dtype):
    ours_cls, torch_cls = BN_PAIRS[dim]
    shape = (5, 3) + (2,) * (dim if dim > 1 else 1)
    for src_cls, dst_cls in ((torch_cls, ours_cls), (ours_cls, torch_cls)):
        src, _ = twins(src_cls, torch_cls, 3, dtype=dtype)
        for step in range(3):  # move the running statistics and the counter
            src(randn(shape, step, dtype, 2.0, 1.0))
        dst = dst_cls(3, dtype=dtype)
        assert list(dst.state_dict()) == list(src.state_dict())
        assert dst.load_state_dict(src.state_dict()).missing_keys == []
        assert dst.num_batches_tracked.item() == 3
        assert_same_buffers(dst, src, dtype)
        src.eval()
        dst.eval()
        x = randn(shape, 7, dtype)
        close(dst(x), src(x), dtype)
        src.train()
        dst.train()
        close(dst(x), src(x), dtype)


def test_state_dict_metadata_version_is_torchs():
    ours, theirs = nnorm.BatchNorm2d(3), nn.BatchNorm2d(3)
    assert (
        ours.state_dict()._metadata[""]["version"] == theirs.state_dict()._metadata[""]["version"]
    )


@pytest.mark.parametrize("src_cls", [nn.BatchNorm1d, nnorm.BatchNorm1d])
def test_old_checkpoint_without_num_batches_tracked(src_cls):
    """A checkpoint from before num_batches_tracked (version < 2, or no metadata) loads and
    keeps the counter, exactly as torch's _NormBase does; a version-2 one must have it."""
    src = src_cls(3)
    src(randn((4, 3), 0))
    old = {k: v for k, v in src.state_dict().items() if k != "num_batches_tracked"}
    for cls in (nn.BatchNorm1d, nnorm.BatchNorm1d):
        dst = cls(3)
        dst.num_batches_tracked.fill_(5)
        result = dst.load_state_dict(dict(old))  # a plain dict: no version metadata
        assert result.missing_keys == []
        assert dst.num_batches_tracked.item() == 5
        close(dst.running_mean, src.running_mean)
        versioned = src.state_dict()
        del versioned["num_batches_tracked"]
        with pytest.raises(RuntimeError, match="num_batches_tracked"):
            cls(3).load_state_dict(versioned)
        versioned._metadata[""]["version"] = 1
        dst = cls(3)
        assert dst.load_state_dict(versioned).missing_keys == []
        assert dst.num_batches_tracked.item() == 0


@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False, "eps": 1e-3},
                                    {"track_running_stats": False}, {"bias": False}])  # fmt: skip
def test_batchnorm_repr_params_and_buffers_like_torch(kwargs):
    for dim, (ours_cls, torch_cls) in BN_PAIRS.items():
        ours, theirs = ours_cls(5, **kwargs), torch_cls(5, **kwargs)
        assert repr(ours) == repr(theirs)
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
        assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
        assert list(ours.state_dict()) == list(theirs.state_dict())
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            a, b = getattr(ours, name), getattr(theirs, name)
            assert (a is None) == (b is None), (dim, name)
            if b is not None:
                assert torch.equal(a, b) and a.dtype == b.dtype


def test_factory_kwargs_and_resets():
    bn = nnorm.BatchNorm2d(4, dtype=torch.float64, device="cpu")
    assert bn.weight.dtype == bn.running_var.dtype == torch.float64
    assert bn.num_batches_tracked.dtype == torch.long
    bn(randn((3, 4, 2, 2), 0, torch.float64, 2.0, 1.0))
    with torch.no_grad():
        bn.weight.mul_(3)
    bn.reset_parameters()
    assert torch.equal(bn.weight, torch.ones(4, dtype=torch.float64))
    assert torch.equal(bn.running_mean, torch.zeros(4, dtype=torch.float64))
    assert bn.num_batches_tracked.item() == 0


def test_batchnorm_in_low_precision_close_to_torch():
    for dtype in (torch.bfloat16, torch.float16):
        ours, theirs = twins(nnorm.BatchNorm2d, nn.BatchNorm2d, 3, dtype=dtype)
        x = randn((4, 3, 3, 3), 0, dtype, 2.0, 1.0)
        ya, yb = ours(x), theirs(x)
        assert ya.dtype == dtype
        torch.testing.assert_close(ya, yb, rtol=2e-2, atol=2e-2)


# --- batch norm errors ---------------------------------------------------------------------


def raises_like(fn_ours, fn_theirs):
    """Both raise, the same exception type; returns the two exceptions."""
    with pytest.raises(Exception) as theirs:
        fn_theirs()
    with pytest.raises(Exception) as ours:
        fn_ours()
    assert type(ours.value) is type(theirs.value), (ours.value, theirs.value)
    return ours.value, theirs.value


@pytest.mark.parametrize(("dim", "ndim"), [(1, 1), (1, 4), (2, 2), (2, 3), (2, 5), (3, 4), (3, 6)])
def test_wrong_ndim_raises_torchs_value_error(dim, ndim):
    ours_cls, torch_cls = BN_PAIRS[dim]
    x = torch.randn((2, 3) + (2,) * (ndim - 2)) if ndim >= 2 else torch.randn(3)
    a, b = raises_like(lambda: ours_cls(3)(x), lambda: torch_cls(3)(x))
    assert isinstance(a, ValueError) and str(a) == str(b)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_wrong_channel_count_raises_like_torch(affine, track, training):
    x = torch.randn(4, 5, 2, 2)
    ours = nnorm.BatchNorm2d(3, affine=affine, track_running_stats=track).train(training)
    theirs = nn.BatchNorm2d(3, affine=affine, track_running_stats=track).train(training)
    if not affine and not track:  # nothing has a channel count: torch normalizes any C
        close(ours(x), theirs(x))
        return
    a, b = raises_like(lambda: ours(x), lambda: theirs(x))
    assert isinstance(a, RuntimeError) and str(a) == str(b)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1), (1, 3, 1, 1, 1)])
def test_one_value_per_channel_in_training(shape):
    dim = max(len(shape) - 2, 1)
    ours_cls, torch_cls = BN_PAIRS[dim]
    x = torch.randn(shape)
    a, b = raises_like(lambda: ours_cls(3)(x), lambda: torch_cls(3)(x))
    assert isinstance(a, ValueError) and str(a) == str(b)
    assert "Expected more than 1 value per channel when training" in str(a)
    close(ours_cls(3).eval()(x), torch_cls(3).eval()(x))  # fine in eval


def test_functional_batch_norm_errors_like_torch():
    x = torch.randn(4, 3)
    rm, rv, w = torch.zeros(3), torch.ones(3), torch.ones(3)
    cases = [
        ((x, None, None), {"training": True, "eps": 0.0}),  # eps must be positive
        ((x, rm, rv), {"eps": -1.0}),
        ((x, None, None), {}),  # eval without running stats
        ((x, rm, None), {}),
        ((x, rm, None), {"training": True}),  # both or neither
        ((torch.randn(5), None, None), {"training": True}),  # 1-D input: IndexError
        ((torch.ones(4, 3, dtype=torch.long), None, None), {"training": True}),
        ((x, rm.double(), rv.double()), {"training": True}),  # mixed dtype
        ((x, None, None, w.double()), {"training": True}),
        ((x, rm, torch.ones(4)), {"training": True}),
        ((x, rm, rv, w, torch.zeros(5)), {"training": True}),
        ((torch.randn(1, 3), None, None), {"training": True}),
    ]
    for args, kwargs in cases:
        a, b = raises_like(
            lambda a=args, k=kwargs: nnorm.batch_norm(*a, **k),
            lambda a=args, k=kwargs: F.batch_norm(*a, **k),
        )
        if not isinstance(a, IndexError):
            assert str(a) == str(b)


@FAST
@given(shape=st.sampled_from([(3, 2), (4, 3, 5), (2, 3, 2, 2), (2, 2, 2, 1, 3)]),
       dtype=st.sampled_from(DTYPES), training=st.booleans(), affine=st.booleans(),
       momentum=st.sampled_from([0.1, 0.0, 1.0]), seed=st.integers(0, 1000))  # fmt: skip
def test_functional_batch_norm_matches_torch(shape, dtype, training, affine, momentum, seed):
    c = shape[1]
    x = randn(shape, seed, dtype, 2.0, 0.5)
    w = randn((c,), seed + 1, dtype, 0.5, 1.0) if affine else None
    b = randn((c,), seed + 2, dtype) if affine else None
    stats = [randn((c,), seed + 3, dtype), randn((c,), seed + 4, dtype).abs() + 0.5]
    ours_stats = [s.clone() for s in stats]
    y = nnorm.batch_norm(x, *ours_stats, w, b, training, momentum, 1e-5)
    expected = F.batch_norm(x, *stats, w, b, training, momentum, 1e-5)
    close(y, expected, dtype)
    close(ours_stats[0], stats[0], dtype)
    close(ours_stats[1], stats[1], dtype)


def test_empty_batch_like_torch():
    ours, theirs = nnorm.BatchNorm1d(3), nn.BatchNorm1d(3)
    x = torch.randn(0, 3)
    assert ours(x).shape == theirs(x).shape == (0, 3)
    assert_same_buffers(ours, theirs, torch.float32)


def test_update_bn_recomputes_running_stats_like_torchs():
    torch.manual_seed(0)
    theirs = nnorm.lenet(nn.BatchNorm2d, nn.BatchNorm1d)
    ours = nnorm.lenet(nnorm.BatchNorm2d, nnorm.BatchNorm1d)
    ours.load_state_dict(theirs.state_dict())
    batches = [(randn((16, 1, 28, 28), i), torch.zeros(16, dtype=torch.long)) for i in range(3)]
    reference = copy.deepcopy(theirs)
    torch.optim.swa_utils.update_bn(batches, reference)
    ours[10].momentum = 0.3
    ours.eval()
    ours[2].train()  # a submodule in another mode: its mode comes back
    nnorm.update_bn(batches, ours)
    nnorm.update_bn(batches, theirs)
    for net in (ours, theirs):
        assert_same_buffers(net, reference, torch.float32)
        assert net[1].num_batches_tracked.item() == 3
    assert ours[10].momentum == 0.3 and ours[1].momentum == 0.1
    assert not ours.training and not ours[1].training and ours[2].training
    # torch's own update_bn looks for torch's _BatchNorm class: ours subclass it
    fresh = nnorm.lenet(nnorm.BatchNorm2d, nnorm.BatchNorm1d)
    fresh.load_state_dict(theirs.state_dict())
    torch.optim.swa_utils.update_bn(batches, fresh)
    assert_same_buffers(fresh, reference, torch.float32)


# --- the hand-written backward -------------------------------------------------------------

GRAD_SHAPES = [(4, 3), (3, 2, 5), (3, 2, 3, 2), (2, 2, 2, 2, 3)]


@pytest.mark.parametrize("shape", GRAD_SHAPES)
@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
def test_batch_norm_function_gradcheck(shape, affine):
    c = shape[1]
    x = randn(shape, 0, torch.float64, 2.0, 1.0).requires_grad_()
    w = randn((c,), 1, torch.float64, 0.5, 1.0).requires_grad_()
    b = randn((c,), 2, torch.float64).requires_grad_()
    w = w if affine in ("both", "weight") else None
    b = b if affine in ("both", "bias") else None

    def f(x, w, b):
        return nnorm.BatchNormFunction.apply(x, w, b, 1e-5)[0]

    assert torch.autograd.gradcheck(f, (x, w, b))


@pytest.mark.parametrize("shape", GRAD_SHAPES)
def test_functional_batch_norm_gradcheck_with_running_stats(shape):
    c = shape[1]
    x = randn(shape, 3, torch.float64).requires_grad_()
    w = randn((c,), 4, torch.float64, 0.5, 1.0).requires_grad_()
    b = randn((c,), 5, torch.float64).requires_grad_()

    def f(x, w, b):  # fresh running stats each call: the update must not touch the graph
        rm, rv = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
        return nnorm.batch_norm(x, rm, rv, w, b, training=True)

    assert torch.autograd.gradcheck(f, (x, w, b))
    rm, rv = randn((c,), 6, torch.float64), randn((c,), 7, torch.float64).abs() + 0.1
    assert torch.autograd.gradcheck(lambda x, w, b: nnorm.batch_norm(x, rm, rv, w, b), (x, w, b))


def naive_batch_norm(x, w, b, eps=1e-5):
    """The formula, differentiated by autograd."""
    dims = (0, *range(2, x.dim()))
    view = (-1,) + (1,) * (x.dim() - 2)
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w.view(view) + b.view(view)


@settings(max_examples=20, deadline=None)
@given(shape=st.sampled_from(GRAD_SHAPES + [(64, 6, 4, 4), (256, 10)]),
       seed=st.integers(0, 10_000), dtype=st.sampled_from(DTYPES))  # fmt: skip
def test_hand_backward_equals_autograd_of_the_formula(shape, seed, dtype):
    c = shape[1]
    inputs = [randn(shape, seed, dtype, 2.0, -1.0), randn((c,), seed + 1, dtype, 0.5, 1.0),
              randn((c,), seed + 2, dtype)]  # fmt: skip
    g = randn(shape, seed + 3, dtype)
    ours = [t.clone().requires_grad_() for t in inputs]
    y, mean, var = nnorm.BatchNormFunction.apply(*ours, 1e-5)
    y.backward(g)
    assert not mean.requires_grad and not var.requires_grad
    naive = {}  # autograd through the formula, in dtype and (the float32 reference) float64
    for ref_dtype in {dtype, torch.float64}:
        leaves = [t.detach().to(ref_dtype).clone().requires_grad_() for t in inputs]
        out = naive_batch_norm(*leaves)
        out.backward(g.to(ref_dtype))
        naive[ref_dtype] = [out.detach()] + [t.grad for t in leaves]
    truth = naive[torch.float64] if dtype == torch.float32 else [None] * 4
    for a, b, t in zip([y.detach()] + [t.grad for t in ours], naive[dtype], truth, strict=True):
        agree(a, b, dtype, t)


@pytest.mark.parametrize("shift", [100.0, 1000.0])
def test_precision_with_a_mean_far_from_zero(shift):
    """|mu| >> sigma: the statistics, the output and the gradients stay as close to the
    float64 truth as torch's (whose kernel accumulates in double)."""
    x = randn((64, 4, 5, 5), 0, torch.float32, 1.0, shift)
    g = randn(x.shape, 1)
    errors = {}
    for name, cls in (("ours", nnorm.BatchNorm2d), ("torch", nn.BatchNorm2d)):
        bn = cls(4)
        xx = x.clone().requires_grad_()
        bn(xx).backward(g)
        errors[name] = (bn(x).detach(), xx.grad, bn.running_mean, bn.running_var)
    x64 = x.double().requires_grad_()
    ones, zeros = torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    y64 = naive_batch_norm(x64, ones, zeros)
    y64.backward(g.double())
    ref = nn.BatchNorm2d(4, dtype=torch.float64)
    ref(x.double())
    truth = (naive_batch_norm(x.double(), ones, zeros), x64.grad, ref.running_mean)
    for ours, theirs, t in zip(errors["ours"], errors["torch"], truth, strict=False):
        ours_err = (ours.double() - t).abs().max()
        torch_err = (theirs.double() - t).abs().max()
        assert ours_err <= 2 * torch_err + 1e-6, (ours_err, torch_err)


def test_double_backward_raises_a_clear_error():
    x = randn((4, 3), 0, torch.float64).requires_grad_()
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    y = nnorm.BatchNormFunction.apply(x, w, None, 1e-5)[0]
    (gx,) = torch.autograd.grad((y**3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        gx.sum().backward()


def test_torch_compile_runs_the_hand_written_backward(monkeypatch):
    """Compiled with ``fullgraph=True``, the backward is ours, not autograd through the
    forward: a backward patched to double dL/dx doubles the compiled gradient."""

    def doubled(*args):
        grad_x, dgamma, dbeta = backward(*args)
        return grad_x * 2, dgamma, dbeta

    backward = nnorm._batch_norm_backward
    monkeypatch.setattr(nnorm, "_batch_norm_backward", doubled)
    x, w = randn((6, 3, 4, 4), 0).requires_grad_(), randn((3,), 1)
    g = randn(x.shape, 2)
    torch._dynamo.reset()
    try:
        fn = torch.compile(nnorm.BatchNormFunction.apply, backend="aot_eager", fullgraph=True)
        (fn(x, w, None, 1e-5)[0] * g).sum().backward()
    finally:
        torch._dynamo.reset()
    expected = torch.autograd.grad((F.batch_norm(x, None, None, w, training=True) * g).sum(), x)
    close(x.grad, 2 * expected[0])


@pytest.mark.parametrize("options", [None, {"layout_optimization": False}])
def test_compiled_model_trains_like_torch(options):
    """torch.compile (inductor, with its defaults and as the benchmark runs it) of a model
    with our batch norms: three SGD steps and an evaluation give torch's numbers."""

    def net(bn2d, bn1d):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3), bn2d(8), nn.Sigmoid(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(8 * 8 * 8, 16), bn1d(16), nn.Sigmoid(), nn.Linear(16, 4),
        )  # fmt: skip

    theirs = net(nn.BatchNorm2d, nn.BatchNorm1d)
    ours = net(nnorm.BatchNorm2d, nnorm.BatchNorm1d)
    ours.load_state_dict(theirs.state_dict())
    x, y = randn((32, 3, 18, 18), 1), torch.arange(32) % 4
    torch._dynamo.reset()
    compiled = torch.compile(ours, fullgraph=True, options=options)
    opts = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (ours, theirs)]
    tol = {"rtol": 1e-4, "atol": 1e-5}  # the compiled convolutions sum in another order
    try:
        for _ in range(3):
            losses = []
            for model, opt in zip((compiled, theirs), opts, strict=True):
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                losses.append(loss.detach())
            torch.testing.assert_close(losses[0], losses[1], **tol)
        for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, **tol)
        compiled.eval()
        theirs.eval()
        torch.testing.assert_close(compiled(x), theirs(x), **tol)
    finally:
        torch._dynamo.reset()


def test_module_uses_the_hand_written_function():
    bn = nnorm.BatchNorm2d(3)
    y = bn(torch.randn(4, 3, 2, 2, requires_grad=True))
    assert "BatchNormFunction" in type(y.grad_fn).__name__


# --- layer, group and RMS norm -------------------------------------------------------------


@st.composite
def trailing_case(draw):
    lead = [draw(st.integers(1, 4)) for _ in range(draw(st.integers(0, 2)))]
    norm = [draw(st.integers(1, 5)) for _ in range(draw(st.integers(1, 3)))]
    dtype = draw(st.sampled_from(DTYPES))
    assume(well_conditioned(math.prod(norm), dtype))
    return {
        "shape": tuple(lead + norm),
        "normalized_shape": tuple(norm) if len(norm) > 1 or draw(st.booleans()) else norm[0],
        "dtype": dtype,
        "affine": draw(st.booleans()),
        "bias": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@FAST
@given(case=trailing_case())
def test_layernorm_matches_torch(case):
    dtype = case["dtype"]
    ours, theirs = twins(
        nnorm.LayerNorm, nn.LayerNorm, case["normalized_shape"], eps=1e-5,
        elementwise_affine=case["affine"], bias=case["bias"], dtype=dtype, seed=case["seed"],
    )  # fmt: skip
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = randn(case["shape"], case["seed"], dtype, 2.0, 1.0)
    ref = float64_twin(theirs, dtype)
    run_both(ours, theirs, x, dtype, ref=ref)
    ours.eval()
    theirs.eval()  # the same in eval
    run_both(ours, theirs, x, dtype, ref=ref)


@FAST
@given(case=trailing_case(), eps=st.sampled_from([None, 1e-6, 0.1]))
def test_rmsnorm_matches_torch(case, eps):
    dtype = case["dtype"]
    ours, theirs = twins(
        nnorm.RMSNorm, nn.RMSNorm, case["normalized_shape"], eps=eps,
        elementwise_affine=case["affine"], dtype=dtype, seed=case["seed"],
    )  # fmt: skip
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = randn(case["shape"], case["seed"], dtype, 2.0, 1.0)
    run_both(ours, theirs, x, dtype, ref=float64_twin(theirs, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsnorm_default_eps_is_machine_epsilon(dtype):
    x = torch.full((2, 3), 1e-5, dtype=dtype)  # eps matters at this scale
    eps = torch.finfo(dtype).eps
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    close(nnorm.rms_norm(x, (3,)), expected)
    close(nnorm.RMSNorm(3, dtype=dtype)(x), F.rms_norm(x, (3,)))


@st.composite
def group_case(draw):
    groups = draw(st.integers(1, 4))
    channels = groups * draw(st.integers(1, 3))
    spatial = [draw(st.integers(1, 4)) for _ in range(draw(st.integers(0, 2)))]
    dtype = draw(st.sampled_from(DTYPES))
    assume(well_conditioned(channels // groups * math.prod(spatial), dtype))
    return {
        "groups": groups,
        "channels": channels,
        "shape": (draw(st.integers(2, 4)), channels, *spatial),
        "dtype": dtype,
        "affine": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@FAST
@given(case=group_case())
def test_groupnorm_matches_torch(case):
    dtype = case["dtype"]
    ours, theirs = twins(
        nnorm.GroupNorm, nn.GroupNorm, case["groups"], case["channels"],
        affine=case["affine"], dtype=dtype, seed=case["seed"],
    )  # fmt: skip
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = randn(case["shape"], case["seed"], dtype, 2.0, 1.0)
    run_both(ours, theirs, x, dtype, ref=float64_twin(theirs, dtype))


@pytest.mark.parametrize(
    ("ours_cls", "torch_cls", "args"),
    [(nnorm.LayerNorm, nn.LayerNorm, ([3, 4],)), (nnorm.GroupNorm, nn.GroupNorm, (2, 4)),
     (nnorm.RMSNorm, nn.RMSNorm, ([3, 4],))],
)  # fmt: skip
def test_layer_group_rms_state_dict_both_ways(ours_cls, torch_cls, args):
    x = randn((2, 4, 3, 4), 0, scale=2.0)
    for src_cls, dst_cls in ((torch_cls, ours_cls), (ours_cls, torch_cls)):
        src, _ = twins(src_cls, torch_cls, *args, seed=3)
        dst = dst_cls(*args)
        dst.load_state_dict(src.state_dict())
        close(dst(x), src(x))


def test_layer_group_rms_errors_like_torch():
    x = torch.randn(2, 3)
    cases = [  # each runs with (modules, functionals) = (nnorm, nnorm) and (nn, F)
        lambda M, f: M.LayerNorm(4)(x),
        lambda M, f: f.layer_norm(x, 3),  # an int normalized_shape: TypeError
        lambda M, f: f.layer_norm(x, ()),
        lambda M, f: f.layer_norm(x, (3,), torch.ones(4)),
        lambda M, f: f.layer_norm(x, (3,), None, torch.ones(4)),
        lambda M, f: f.layer_norm(torch.randn(3), (2, 3)),
        lambda M, f: f.layer_norm(torch.ones(2, 3, dtype=torch.long), (3,)),
        lambda M, f: M.RMSNorm(4)(x),
        lambda M, f: f.rms_norm(x, (3,), torch.ones(4)),
        lambda M, f: M.GroupNorm(2, 3),  # ValueError: num_channels must be divisible
        lambda M, f: M.GroupNorm(0, 4),
        lambda M, f: M.GroupNorm(2, 4)(torch.randn(2, 6, 3)),
        lambda M, f: M.GroupNorm(2, 4)(torch.randn(2, 5, 3)),
        lambda M, f: M.GroupNorm(2, 4)(torch.randn(4)),
        lambda M, f: M.GroupNorm(4, 4)(torch.randn(1, 4)),
        lambda M, f: f.group_norm(torch.randn(2, 4), 2, None, torch.ones(3)),
    ]
    for case in cases:
        a, b = raises_like(lambda c=case: c(nnorm, nnorm), lambda c=case: c(nn, F))
        if isinstance(a, ValueError) or "normalized_shape" in str(b):
            assert str(a) == str(b)
    with pytest.raises(ValueError, match=r"num_channels \(4\) must be divisible by num_groups"):
        nnorm.GroupNorm(3, 4)


# --- LeNet ---------------------------------------------------------------------------------


def test_lenet_variants_share_layout_and_keys():
    ours = nnorm.lenet(nnorm.BatchNorm2d, nnorm.BatchNorm1d)
    theirs = nnorm.lenet(nn.BatchNorm2d, nn.BatchNorm1d)
    plain = nnorm.lenet()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert len(ours) == len(theirs) == len(plain) == 16
    for i in (1, 5):
        assert isinstance(ours[i], nnorm.BatchNorm2d) and isinstance(theirs[i], nn.BatchNorm2d)
    for i in (10, 13):
        assert isinstance(ours[i], nnorm.BatchNorm1d) and isinstance(theirs[i], nn.BatchNorm1d)
    assert all(isinstance(plain[i], nn.Identity) for i in (1, 5, 10, 13))
    assert not any("running" in k for k in plain.state_dict())
    plain_keys = set(plain.state_dict())
    assert plain_keys <= set(theirs.state_dict())  # conv/linear weights at the same indices
    assert plain(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_lenet_torch_checkpoint_into_normtut_gives_identical_outputs():
    torch.manual_seed(0)
    theirs = nnorm.lenet(nn.BatchNorm2d, nn.BatchNorm1d)
    ours = nnorm.lenet(nnorm.BatchNorm2d, nnorm.BatchNorm1d)
    theirs.train()
    for step in range(3):  # running statistics away from their initial values
        theirs(randn((16, 1, 28, 28), step))
    ours.load_state_dict(theirs.state_dict())
    theirs.eval()
    ours.eval()
    x = randn((8, 1, 28, 28), 10)
    close(ours(x), theirs(x))
    reverse = nnorm.lenet(nn.BatchNorm2d, nn.BatchNorm1d)
    reverse.load_state_dict(ours.state_dict())
    close(reverse.eval()(x), ours(x))
    theirs.train()
    ours.train()
    x = randn((16, 1, 28, 28), 11)
    close(ours(x), theirs(x))


# --- where torch's own tests probe: empty batches, 1-D input, memory format, complex -------

BN_SHAPES = {1: (4, 3, 5), 2: (4, 3, 2, 3), 3: (2, 3, 2, 2, 3)}


def outcome(fn):
    """The result of ``fn()``, or its error as ``"Type: message"``, for comparing twins."""
    try:
        return fn()
    except (RuntimeError, ValueError, IndexError) as error:
        return f"{type(error).__name__}: {error}"


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_batchnorm_empty_batch_gives_zero_grads_like_torch(dim, training, momentum):
    """An empty batch (the last shard of a distributed sampler): empty output, zero (not
    NaN) parameter gradients, running estimates untouched, the counter still counts."""
    shape = (0, *BN_SHAPES[dim][1:])
    ours, theirs = twins(*BN_PAIRS[dim], 3, momentum=momentum)
    x = torch.randn(shape)
    for m in (ours, theirs):
        m.train(training)
        xs = x.clone().requires_grad_()
        y = m(xs)
        y.sum().backward()
        assert y.shape == xs.grad.shape == shape
        assert torch.equal(m.weight.grad, torch.zeros(3))
        assert torch.equal(m.bias.grad, torch.zeros(3))
    assert_same_buffers(ours, theirs, torch.float32)
    assert ours.num_batches_tracked.item() == (1 if training else 0)


@pytest.mark.parametrize("shape", [(0, 4), (0, 4, 3), (0, 4, 3, 3), (0, 4, 2, 3, 2), (2, 0, 3)])
def test_groupnorm_empty_batch_like_torch(shape):
    c = shape[1]
    groups = 2 if c else 1
    for module in (nnorm.GroupNorm(groups, c), nn.GroupNorm(groups, c)):
        x = torch.randn(shape, requires_grad=True)
        y = module(x)
        y.sum().backward()
        assert y.shape == x.grad.shape == shape
        assert torch.equal(module.weight.grad, torch.zeros(c))
        assert torch.equal(module.bias.grad, torch.zeros(c))
    x = torch.randn(shape, requires_grad=True)
    w, b = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
    y = nnorm.group_norm(x, groups, w, b)
    y.sum().backward()
    assert y.shape == shape and x.grad.shape == shape
    assert torch.equal(w.grad, torch.zeros(c)) and torch.equal(b.grad, torch.zeros(c))


ONE_D = [
    dict(),
    dict(running_mean=torch.zeros(5), running_var=torch.ones(5)),
    dict(running_mean=torch.zeros(0), running_var=torch.ones(0)),
    dict(weight=torch.ones(5)),
    dict(weight=torch.ones(1), bias=torch.zeros(1)),
    dict(running_mean=torch.zeros(0), running_var=None),
]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "kwargs",
    ONE_D,
    ids=lambda k: (
        "-".join(f"{n}{list(t.shape) if t is not None else None}" for n, t in k.items()) or "none"
    ),
)
@pytest.mark.parametrize("shape", [(5,), (0,)], ids=str)
def test_one_dimensional_input_like_torch(shape, kwargs, training):
    """A 1-D input has no channel axis: torch counts 0 channels ("running_mean should contain
    0 elements not 5"), fails with an IndexError where it needs the channel axis, and
    computes an empty input's (empty) result."""
    x = torch.randn(shape)
    results = []
    for fn in (nnorm.batch_norm, F.batch_norm):
        args = {k: None if v is None else v.clone() for k, v in kwargs.items()}
        args.setdefault("running_mean", None)
        args.setdefault("running_var", None)
        results.append(outcome(lambda fn=fn, args=args: fn(x, **args, training=training)))
    if isinstance(results[1], str):
        assert results[0] == results[1]
    else:
        assert results[0].shape == results[1].shape
    if shape == (5,) and kwargs.get("running_mean") is not None and kwargs["running_mean"].numel():
        assert results[0] == "RuntimeError: running_mean should contain 0 elements not 5"


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("stat", ["running_mean", "running_var"])
def test_running_stats_with_requires_grad_raise_like_torch(stat, training):
    errors = []
    for fn in (nnorm.batch_norm, F.batch_norm):
        stats = {"running_mean": torch.zeros(3), "running_var": torch.ones(3)}
        stats[stat].requires_grad_()
        errors.append(outcome(lambda fn=fn, s=stats: fn(torch.randn(4, 3), **s, training=training)))
    assert errors[0] == errors[1]
    assert "not differentiable with respect to argument" in errors[0]


def layout(t):
    formats = [torch.contiguous_format, torch.channels_last, torch.channels_last_3d]
    for fmt in formats:
        if t.is_contiguous(memory_format=fmt):
            return str(fmt)
    return str(t.stride())


LAYOUT_CASES = {
    "BatchNorm2d-train": (lambda m: m.BatchNorm2d(4), (6, 4, 3, 5), torch.channels_last, True),
    "BatchNorm2d-eval": (lambda m: m.BatchNorm2d(4), (6, 4, 3, 5), torch.channels_last, False),
    "BatchNorm3d-train": (
        lambda m: m.BatchNorm3d(4),
        (3, 4, 2, 3, 5),
        torch.channels_last_3d,
        True,
    ),
    "BatchNorm3d-eval": (
        lambda m: m.BatchNorm3d(4),
        (3, 4, 2, 3, 5),
        torch.channels_last_3d,
        False,
    ),
    "GroupNorm-4d": (lambda m: m.GroupNorm(2, 4), (6, 4, 3, 5), torch.channels_last, True),
    "GroupNorm-5d": (lambda m: m.GroupNorm(2, 4), (3, 4, 2, 3, 5), torch.channels_last_3d, True),
    "LayerNorm": (lambda m: m.LayerNorm([3, 5]), (6, 4, 3, 5), torch.channels_last, True),
    "LayerNorm-all": (lambda m: m.LayerNorm([4, 3, 5]), (6, 4, 3, 5), torch.channels_last, True),
    "RMSNorm": (lambda m: m.RMSNorm(5), (6, 4, 3, 5), torch.channels_last, True),
}


@pytest.mark.parametrize("case", LAYOUT_CASES)
def test_memory_format_of_output_and_input_grad_like_torch(case):
    """Channels-last in: the output and the input gradient (with a gradient laid out like
    the output, as ``randn_like(y)`` gives) have torch's memory format; and the values agree."""
    make, shape, fmt, training = LAYOUT_CASES[case]
    layouts = []
    for module in (nnorm, nn):
        torch.manual_seed(0)
        m = make(module).train(training)
        x = torch.randn(shape).to(memory_format=fmt).requires_grad_()
        y = m(x * 1)  # x * 1: a non-leaf input, whose gradient is what the layer returns
        (dx,) = torch.autograd.grad(y, x, torch.randn_like(y))
        layouts.append((layout(y), layout(dx), y.detach(), dx))
    assert layouts[0][:2] == layouts[1][:2]
    close(layouts[0][2], layouts[1][2])
    close(layouts[0][3], layouts[1][3])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dim", [2, 3])
def test_batchnorm_input_grad_in_input_layout_for_any_grad_layout(dim, training):
    """torch's batch norm returns the input gradient in the input's memory format even for a
    contiguous output gradient; so does ours (training: by construction; eval: converted)."""
    shape, fmt = BN_SHAPES[dim], [torch.channels_last, torch.channels_last_3d][dim - 2]
    for cls in BN_PAIRS[dim]:
        m = cls(3).train(training)
        x = torch.randn(shape).to(memory_format=fmt).requires_grad_()
        (dx,) = torch.autograd.grad(m(x * 1), x, torch.randn(shape))
        assert dx.is_contiguous(memory_format=fmt), cls


@pytest.mark.parametrize("weight", ["complex", "real", "none"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=str)
@pytest.mark.parametrize("normalized_shape", [(5,), (4, 5)], ids=str)
def test_rms_norm_complex_like_torch(normalized_shape, dtype, weight):
    """Complex inputs as torch computes them: ``x * rsqrt(mean(x**2) + eps)`` (the square,
    not ``|x|**2``), with eps the machine epsilon of the real dtype; gradients too."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, dtype=dtype, generator=g)
    w = {"complex": torch.randn(normalized_shape, dtype=dtype, generator=g),
         "real": torch.rand(normalized_shape, generator=g) + 0.5, "none": None}[weight]  # fmt: skip
    outs = []
    for fn in (nnorm.rms_norm, F.rms_norm):
        xs = x.clone().requires_grad_()
        y = fn(xs, normalized_shape, w)
        y.abs().sum().backward()
        outs.append((y.detach(), xs.grad))
    assert outs[0][0].dtype == outs[1][0].dtype == dtype
    torch.testing.assert_close(outs[0], outs[1])
    ours, theirs = twins(nnorm.RMSNorm, nn.RMSNorm, normalized_shape, dtype=dtype)
    torch.testing.assert_close(ours(x), theirs(x))


# --- forward-mode AD and batched gradients ---------------------------------------------------


def _bn_inputs(shape, seed=0):
    c = shape[1]
    return {
        "x": randn(shape, seed, torch.float64, 2.0, 1.0),
        "running_mean": randn((c,), seed + 1, torch.float64),
        "running_var": randn((c,), seed + 2, torch.float64).abs() + 0.5,
        "weight": randn((c,), seed + 3, torch.float64, 0.5, 1.0),
        "bias": randn((c,), seed + 4, torch.float64),
    }


def _jvp(fn, inputs, tangents, training, api):
    """The output tangent of ``fn`` through ``torch.func.jvp`` or ``forward_ad``."""
    names = list(tangents)

    def f(*primals):
        args = dict(inputs, **dict(zip(names, primals, strict=True)))
        args["running_mean"] = args["running_mean"].clone()  # updated in training
        args["running_var"] = args["running_var"].clone()
        return fn(**{"input": args.pop("x")}, **args, training=training)

    primals = tuple(inputs[n] for n in names)
    if api == "func.jvp":
        return torch.func.jvp(f, primals, tuple(tangents.values()))[1]
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in zip(primals, tangents.values(), strict=True)]
        return fwAD.unpack_dual(f(*duals)).tangent


@pytest.mark.parametrize("api", ["func.jvp", "forward_ad"])
@pytest.mark.parametrize("wrt", [("x",), ("weight",), ("x", "weight", "bias")], ids="+".join)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=str)
def test_forward_mode_ad_through_batch_norm_like_torch(shape, training, wrt, api):
    inputs = _bn_inputs(shape)
    tangents = {n: randn(inputs[n].shape, 10 + i, torch.float64) for i, n in enumerate(wrt)}
    ours = _jvp(nnorm.batch_norm, inputs, tangents, training, api)
    theirs = _jvp(F.batch_norm, inputs, tangents, training, api)
    close(ours, theirs)


@pytest.mark.parametrize("api", ["func.jvp", "forward_ad"])
@pytest.mark.parametrize("stat", ["running_mean", "running_var"])
@pytest.mark.parametrize("training", [True, False])
def test_forward_mode_tangent_on_running_stats_like_torch(training, stat, api):
    """Eval: a tangent on a running estimate together with one on ``x`` raises torch's
    error. Training: it is ignored. A tangent on the running estimate alone: ignored (the
    output tangent is zero; with ``forward_ad`` torch leaves it ``None``, ours is zero)."""
    inputs = _bn_inputs((4, 3, 2))
    both = {"x": randn((4, 3, 2), 20, torch.float64), stat: torch.ones(3, dtype=torch.float64)}
    results = [outcome(lambda fn=fn: _jvp(fn, inputs, both, training, api))
               for fn in (nnorm.batch_norm, F.batch_norm)]  # fmt: skip
    if training:
        close(results[0], results[1])
    else:
        message = "batch_norm is not differentiable wrt running_mean and running_var"
        assert results[0] == results[1] and message in results[0]
    alone = {stat: torch.ones(3, dtype=torch.float64)}
    ours = _jvp(nnorm.batch_norm, inputs, alone, training, api)
    theirs = _jvp(F.batch_norm, inputs, alone, training, api)
    if theirs is None and ours is not None:  # the documented difference: forward_ad in eval
        assert api == "forward_ad" and not training
        theirs = torch.zeros_like(ours)
    close(ours, theirs)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=str)
def test_gradcheck_batched_and_forward_grads(shape, training):
    """gradcheck with batched gradients (the backward under vmap), forward-mode AD and
    batched forward gradients, through the functional batch norm in both modes."""
    inputs = _bn_inputs(shape, seed=3)
    x, w, b = (inputs[n].clone().requires_grad_() for n in ("x", "weight", "bias"))

    def f(x, w, b):
        stats = inputs["running_mean"].clone(), inputs["running_var"].clone()
        return nnorm.batch_norm(x, *stats, w, b, training=training)

    assert torch.autograd.gradcheck(
        f, (x, w, b), check_batched_grad=True, check_forward_ad=True,
        check_batched_forward_grad=True,
    )  # fmt: skip


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 3, 2)], ids=str)
def test_batched_gradients_like_torch(shape, training):
    """``is_grads_batched=True``, ``torch.func.vmap`` over a ``vjp``, over the forward (an
    ensemble of weights) and over ``grad`` (per-sample gradients) agree with torch."""
    inputs = _bn_inputs(shape, seed=5)
    x, w, b = inputs["x"], inputs["weight"], inputs["bias"]
    stats = (inputs["running_mean"], inputs["running_var"])
    cotangents = randn((5, *shape), 6, torch.float64)
    results = []
    for fn in (nnorm.batch_norm, F.batch_norm):

        def f(x, w, fn=fn):
            return fn(x, *(None, None) if training else stats, w, b, training=training)

        xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
        batched = torch.autograd.grad(f(xs, ws), (xs, ws), cotangents, is_grads_batched=True)
        _, vjp = torch.func.vjp(f, x, w)
        ensemble = torch.func.vmap(f, in_dims=(None, 0))(x, randn((4, shape[1]), 7, torch.float64))
        loss_grad = torch.func.grad(lambda w, x: f(x, w).pow(3).sum())
        samples = randn((3, *shape), 8, torch.float64)
        per_sample = torch.func.vmap(loss_grad, in_dims=(None, 0))(w, samples)
        results.append((batched, torch.func.vmap(vjp)(cotangents), ensemble, per_sample))
    torch.testing.assert_close(results[0], results[1], rtol=1e-10, atol=1e-10)


def test_transforms_never_touch_the_eager_in_place_path(monkeypatch):
    """The fast path writes into its own buffers; under a transform the out-of-place one
    runs (and eager mode takes the fast one)."""
    calls = []
    real = nnorm._in_place_ok
    monkeypatch.setattr(nnorm, "_in_place_ok", lambda *t: calls.append(real(*t)) or calls[-1])
    x = torch.randn(4, 3, 2, requires_grad=True)
    nnorm.batch_norm(x, None, None, training=True).sum().backward()
    assert calls == [True, True]
    calls.clear()
    torch.func.vmap(lambda x: nnorm.batch_norm(x, None, None, training=True))(torch.randn(2, 4, 3))
    assert calls == [False]


# --- recognized by torch's tools for batch norms ---------------------------------------------


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_batchnorms_are_torchs_batchnorm_for_tools_but_run_our_code(dim):
    """isinstance of torch's private ``_BatchNorm`` (so update_bn and friends see them), but
    every method of torch's two base classes resolves to ours."""
    ours = BN_PAIRS[dim][0](3)
    assert isinstance(ours, nn.modules.batchnorm._BatchNorm)
    assert not isinstance(ours, BN_PAIRS[dim][1])
    for base in (nn.modules.batchnorm._BatchNorm, nn.modules.batchnorm._NormBase):
        for name, value in vars(base).items():
            if callable(value) and not name.startswith("__") or name == "__init__":
                assert getattr(type(ours), name).__module__ == "normtut.normalization", name
    torch.func.replace_all_batch_norm_modules_(ours)
    assert ours.running_mean is None and not ours.track_running_stats
    y = ours.eval()(torch.randn(BN_SHAPES[dim]))  # batch statistics from now on
    close(y.mean((0, *range(2, y.dim()))), torch.zeros(3), torch.float32)


def test_groupnorm_without_values_per_group_documented_difference():
    """A zero-size spatial axis: both give an empty output; torch 2.13's weight gradient is
    NaN (0 / 0 statistics), ours is 0 (the sum over no values), as documented."""
    grads = []
    for module in (nnorm.GroupNorm(2, 4), nn.GroupNorm(2, 4)):
        x = torch.randn(2, 4, 0, requires_grad=True)
        module(x).sum().backward()
        grads.append(module.weight.grad)
    assert torch.equal(grads[0], torch.zeros(4))
    assert grads[1].isnan().all() or torch.equal(grads[1], torch.zeros(4))  # a later torch
