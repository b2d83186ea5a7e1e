"""Tests for normtut.init: drop-in equality with torch.nn.init, statistics, layer statistics."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from normtut import init as ninit

SHAPES = [(3, 5), (64, 32), (1, 1), (16, 8, 3), (8, 4, 3, 3), (4, 2, 3, 3, 3), (5, 7, 1, 2)]
GAINS = [1.0, 5.0 / 3, math.sqrt(2.0), 0.75, 0.3]
NONLINEARITIES = [("relu", 0), ("leaky_relu", 0), ("leaky_relu", 0.2), ("tanh", 0),
                  ("linear", 0), ("sigmoid", 0), ("selu", 0), ("conv2d", 0)]  # fmt: skip
MODES = ["fan_in", "fan_out"]


def _same_draw(ours, theirs, shape, seed=0, dtype=torch.float32, **kwargs):
    """Run both initializers on fresh tensors from the same global seed and return both."""
    torch.manual_seed(seed)
    a = torch.empty(shape, dtype=dtype)
    out_a = ours(a, **kwargs)
    torch.manual_seed(seed)
    b = torch.empty(shape, dtype=dtype)
    out_b = theirs(b, **kwargs)
    assert out_a is a and out_b is b  # in place, returns its argument
    return a, b


# --------------------------------------------------------------------------- calculate_gain
@pytest.mark.parametrize(
    "nonlinearity",
    ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
     "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu"],
)  # fmt: skip
def test_calculate_gain_matches_torch(nonlinearity):
    assert ninit.calculate_gain(nonlinearity) == nn.init.calculate_gain(nonlinearity)


@pytest.mark.parametrize("param", [None, 0, 0.01, 0.2, 1, 3.5])
def test_leaky_relu_gain(param):
    expected = math.sqrt(2.0 / (1 + (0.01 if param is None else param) ** 2))
    assert ninit.calculate_gain("leaky_relu", param) == pytest.approx(expected, rel=1e-15)
    assert ninit.calculate_gain("leaky_relu", param) == nn.init.calculate_gain("leaky_relu", param)


def test_gain_table_known_values():
    assert ninit.calculate_gain("relu") == math.sqrt(2)
    assert ninit.calculate_gain("tanh") == 5 / 3
    assert ninit.calculate_gain("selu") == 0.75
    assert ninit.calculate_gain("sigmoid") == 1


@pytest.mark.parametrize(
    "args", [("softmax",), ("ReLU",), ("leaky_relu", True), ("leaky_relu", "0.1")]
)
def test_gain_errors_match_torch(args):
    with pytest.raises(ValueError) as ours:
        ninit.calculate_gain(*args)
    with pytest.raises(ValueError) as theirs:
        nn.init.calculate_gain(*args)
    assert str(ours.value) == str(theirs.value)


# --------------------------------------------------------------------------- fans
@pytest.mark.parametrize("shape", SHAPES)
def test_fans_match_torch(shape):
    t = torch.empty(shape)
    assert ninit.fan_in_and_fan_out(t) == nn.init._calculate_fan_in_and_fan_out(t)


def test_fans_conv_receptive_field():
    assert ninit.fan_in_and_fan_out(torch.empty(16, 3, 5, 5)) == (3 * 25, 16 * 25)


@pytest.mark.parametrize("shape", [(), (5,)])
@pytest.mark.parametrize(
    "fn, twin",
    [(ninit.xavier_uniform_, nn.init.xavier_uniform_),
     (ninit.xavier_normal_, nn.init.xavier_normal_),
     (ninit.kaiming_uniform_, nn.init.kaiming_uniform_),
     (ninit.kaiming_normal_, nn.init.kaiming_normal_),
     (lambda t: ninit.fan_in_and_fan_out(t), nn.init._calculate_fan_in_and_fan_out)],
)  # fmt: skip
def test_fewer_than_two_dims_raise_like_torch(shape, fn, twin):
    with pytest.raises(ValueError) as ours:
        fn(torch.empty(shape))
    with pytest.raises(ValueError) as theirs:
        twin(torch.empty(shape))
    assert str(ours.value) == str(theirs.value)


# --------------------------------------------------------------------------- bitwise equality
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain", GAINS)
@pytest.mark.parametrize("name", ["xavier_uniform_", "xavier_normal_"])
def test_xavier_bitwise_equal_to_torch(name, gain, shape):
    a, b = _same_draw(getattr(ninit, name), getattr(nn.init, name), shape, gain=gain)
    assert torch.equal(a, b)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nonlinearity, a", NONLINEARITIES)
@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_kaiming_bitwise_equal_to_torch(name, nonlinearity, a, mode, shape):
    x, y = _same_draw(
        getattr(ninit, name), getattr(nn.init, name), shape, a=a, mode=mode,
        nonlinearity=nonlinearity,
    )  # fmt: skip
    assert torch.equal(x, y)


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_kaiming_defaults_equal_to_torch(name):
    a, b = _same_draw(getattr(ninit, name), getattr(nn.init, name), (20, 30))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "name, kwargs",
    [("xavier_uniform_", {"gain": 2.0}), ("xavier_normal_", {}),
     ("kaiming_uniform_", {"mode": "fan_out"}), ("kaiming_normal_", {"nonlinearity": "relu"})],
)  # fmt: skip
def test_explicit_generator_bitwise_and_global_rng_untouched(name, kwargs):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = getattr(ninit, name)(
        torch.empty(7, 9), generator=torch.Generator().manual_seed(5), **kwargs
    )
    assert torch.equal(torch.get_rng_state(), state)  # only the private generator was used
    b = getattr(nn.init, name)(
        torch.empty(7, 9), generator=torch.Generator().manual_seed(5), **kwargs
    )
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["xavier_uniform_", "kaiming_normal_"])
def test_bitwise_other_dtypes(name, dtype):
    a, b = _same_draw(getattr(ninit, name), getattr(nn.init, name), (12, 6, 2), dtype=dtype)
    assert torch.equal(a, b)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=2, max_size=5).map(tuple),
    seed=st.integers(0, 2**31 - 1),
    gain=st.floats(0.01, 10.0),
    a=st.floats(0.0, 1.0),
    mode=st.sampled_from(MODES),
    nonlinearity=st.sampled_from(["relu", "leaky_relu", "tanh", "linear", "selu"]),
)
def test_property_bitwise_equal_to_torch(shape, seed, gain, a, mode, nonlinearity):
    for name in ("xavier_uniform_", "xavier_normal_"):
        x, y = _same_draw(getattr(ninit, name), getattr(nn.init, name), shape, seed, gain=gain)
        assert torch.equal(x, y)
    for name in ("kaiming_uniform_", "kaiming_normal_"):
        x, y = _same_draw(
            getattr(ninit, name), getattr(nn.init, name), shape, seed, a=a, mode=mode,
            nonlinearity=nonlinearity,
        )  # fmt: skip
        assert torch.equal(x, y)


def test_mode_is_case_insensitive_like_torch():
    a, b = _same_draw(ninit.kaiming_uniform_, nn.init.kaiming_uniform_, (4, 6), mode="FAN_OUT")
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_bad_mode_raises_like_torch(name):
    with pytest.raises(ValueError) as ours:
        getattr(ninit, name)(torch.empty(3, 4), mode="fan_avg")
    with pytest.raises(ValueError) as theirs:
        getattr(nn.init, name)(torch.empty(3, 4), mode="fan_avg")
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_unknown_nonlinearity_raises_like_torch(name):
    with pytest.raises(ValueError, match="Unsupported nonlinearity swish"):
        getattr(ninit, name)(torch.empty(3, 4), nonlinearity="swish")
    with pytest.raises(ValueError, match="Unsupported nonlinearity swish"):
        getattr(nn.init, name)(torch.empty(3, 4), nonlinearity="swish")


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_zero_element_tensor_warns_like_torch(name):
    t = torch.empty(0, 3)
    with pytest.warns(UserWarning, match="zero-element"):
        assert getattr(ninit, name)(t) is t


@pytest.mark.parametrize("name", ["xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
                                  "kaiming_normal_", "mixture_init_"])  # fmt: skip
def test_parameter_in_place_without_grad_tracking(name):
    layer = nn.Linear(8, 4)
    weight = layer.weight
    out = getattr(ninit, name)(layer.weight)
    assert out is weight and layer.weight is weight  # same Parameter, filled in place
    assert weight.requires_grad and weight.grad_fn is None and weight.is_leaf


# --------------------------------------------------------------------------- variances
def _relative_variance_error(t: torch.Tensor, expected_std: float) -> float:
    return abs(t.double().var().item() / expected_std**2 - 1)


@pytest.mark.parametrize("shape", [(1000, 1000), (1000, 500)])
@pytest.mark.parametrize("gain", GAINS)
@pytest.mark.parametrize("name", ["xavier_uniform_", "xavier_normal_"])
def test_xavier_variance(name, gain, shape):
    torch.manual_seed(0)
    t = getattr(ninit, name)(torch.empty(shape), gain=gain)
    fan_out, fan_in = shape
    assert _relative_variance_error(t, gain * math.sqrt(2 / (fan_in + fan_out))) < 0.02
    if name == "xavier_uniform_":
        bound = gain * math.sqrt(6 / (fan_in + fan_out))
        assert t.abs().max().item() <= bound
        assert t.abs().max().item() > 0.99 * bound


@pytest.mark.parametrize("shape", [(1000, 1000), (1000, 500), (100, 50, 5, 2)])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nonlinearity, a", NONLINEARITIES)
@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_kaiming_variance(name, nonlinearity, a, mode, shape):
    torch.manual_seed(0)
    t = getattr(ninit, name)(torch.empty(shape), a=a, mode=mode, nonlinearity=nonlinearity)
    fan_in, fan_out = ninit.fan_in_and_fan_out(t)
    fan = fan_in if mode == "fan_in" else fan_out
    gain = ninit.calculate_gain(nonlinearity, a)
    assert _relative_variance_error(t, gain / math.sqrt(fan)) < 0.02
    assert abs(t.double().mean().item()) < 0.01 * gain / math.sqrt(fan)


# --------------------------------------------------------------------------- mixture
def test_mixture_fractions_and_support():
    torch.manual_seed(0)
    w = ninit.mixture_init_(torch.empty(1000, 1000))
    pos, zero, neg = (w > 0).double().mean(), (w == 0).double().mean(), (w < 0).double().mean()
    assert abs(pos.item() / 0.25 - 1) < 0.01
    assert abs(zero.item() / 0.5 - 1) < 0.01
    assert abs(neg.item() / 0.25 - 1) < 0.01
    nonzero = w[w != 0]
    assert ((nonzero.abs() >= 5) & (nonzero.abs() <= 10)).all()
    # each side is uniform on its interval: mean 7.5 and variance 25/12
    assert w[w > 0].mean().item() == pytest.approx(7.5, abs=0.02)
    assert w[w < 0].mean().item() == pytest.approx(-7.5, abs=0.02)
    assert w[w > 0].var().item() == pytest.approx(25 / 12, rel=0.02)


def test_mixture_generator_reproducible():
    a = ninit.mixture_init_(torch.empty(50, 20), generator=torch.Generator().manual_seed(1))
    b = ninit.mixture_init_(torch.empty(50, 20), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- deep_mlp
def test_deep_mlp_structure():
    net = ninit.deep_mlp(16, 5, "tanh", in_features=10, out_features=3)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert len(linears) == 5 and len(net) == 9
    assert linears[0].in_features == 10 and linears[-1].out_features == 3
    assert all(isinstance(net[i], nn.Tanh) for i in range(1, 9, 2))
    assert net(torch.randn(2, 10)).shape == (2, 3)
    assert isinstance(ninit.deep_mlp(4, 2, nn.ReLU)[1], nn.ReLU)
    assert len(ninit.deep_mlp(4, 1)) == 1


@pytest.mark.parametrize("kwargs", [{"depth": 0}, {"activation": "swish"}])
def test_deep_mlp_errors(kwargs):
    with pytest.raises(ValueError):
        ninit.deep_mlp(4, **{"depth": 3, **kwargs})


# --------------------------------------------------------------------------- layer_statistics
def _init_mlp(net: nn.Module, fn) -> nn.Module:
    for m in net.modules():
        if isinstance(m, nn.Linear):
            fn(m.weight)
            nn.init.zeros_(m.bias)
    return net


def test_layer_statistics_one_row_per_layer_finite_positive():
    torch.manual_seed(0)
    net = ninit.deep_mlp(32, 6, "tanh")
    rows = ninit.layer_statistics(net, torch.randn(16, 32))
    assert [r.index for r in rows] == list(range(6))
    assert [r.name for r in rows] == ["0", "2", "4", "6", "8", "10"]
    assert all(r.kind == "Linear" for r in rows)
    for r in rows:
        for v in (r.act_std, r.act_grad_std, r.weight_std, r.weight_grad_std):
            assert math.isfinite(v) and v > 0
        assert math.isfinite(r.act_mean)
    assert set(rows[0].as_dict()) >= {"act_std", "act_grad_std", "weight_grad_std"}


def test_layer_statistics_matches_manual_computation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    rows = ninit.layer_statistics(net, x, y, nn.functional.cross_entropy)
    h = net[0](x)
    h.retain_grad()
    out = net[2](net[1](h))
    out.retain_grad()
    nn.functional.cross_entropy(out, y).backward()
    assert rows[0].act_std == pytest.approx(h.double().std(correction=0).item(), rel=1e-6)
    assert rows[0].act_grad_std == pytest.approx(h.grad.double().std(correction=0).item(), rel=1e-5)
    assert rows[1].act_grad_std == pytest.approx(
        out.grad.double().std(correction=0).item(), rel=1e-5
    )
    assert rows[0].weight_grad_std == pytest.approx(
        net[0].weight.grad.double().std(correction=0).item(), rel=1e-5
    )
    assert rows[1].act_mean == pytest.approx(out.double().mean().item(), abs=1e-6)


def test_layer_statistics_leaves_model_untouched():
    net = ninit.deep_mlp(8, 3)
    net.eval()
    x = torch.randn(4, 8)
    state = torch.get_rng_state()
    ninit.layer_statistics(net, x)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not consumed
    assert all(p.grad is None for p in net.parameters())
    assert not net.training
    assert not net[0]._forward_hooks  # hooks removed


def test_layer_statistics_without_gradients():
    rows = ninit.layer_statistics(ninit.deep_mlp(8, 3), torch.randn(4, 8), gradients=False)
    assert all(r.act_grad_std is None and r.weight_grad_std is None for r in rows)
    assert all(r.act_std > 0 for r in rows)


def test_layer_statistics_conv_and_shared_layers():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 3, 3, padding=1)
    net = nn.Sequential(conv, nn.ReLU(), conv, nn.Flatten(), nn.Linear(3 * 16, 2))
    rows = ninit.layer_statistics(net, torch.randn(2, 3, 4, 4))
    assert [r.kind for r in rows] == ["Conv2d", "Conv2d", "Linear"]
    assert rows[0].name == rows[1].name == "0"  # a shared layer is recorded once per call
    assert rows[0].weight_grad_std == rows[1].weight_grad_std  # the gradient of the shared weight


def test_layer_statistics_argument_errors():
    net = ninit.deep_mlp(4, 2)
    with pytest.raises(ValueError, match="both target and loss_fn"):
        ninit.layer_statistics(net, torch.randn(2, 4), target=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="no layer"):
        ninit.layer_statistics(nn.Sequential(nn.ReLU()), torch.randn(2, 4))


@pytest.mark.parametrize("seed", range(3))
def test_layer_statistics_detects_vanishing_and_kaiming_preserves(seed):
    torch.manual_seed(seed)
    x = torch.randn(128, 256)
    small = _init_mlp(ninit.deep_mlp(256, 30, "relu"), lambda w: nn.init.normal_(w, 0, 0.01))
    rows = ninit.layer_statistics(small, x)
    assert rows[-1].act_std / rows[0].act_std < 1e-3
    assert rows[-1].act_grad_std == pytest.approx(1.0, rel=0.05)  # standard-normal upstream
    assert rows[0].act_grad_std / rows[-1].act_grad_std < 1e-3  # gradients vanish too
    he = _init_mlp(
        ninit.deep_mlp(256, 30, "relu"), lambda w: ninit.kaiming_normal_(w, nonlinearity="relu")
    )
    rows = ninit.layer_statistics(he, x)
    assert 0.5 <= rows[-1].act_std / rows[0].act_std <= 2


def test_layer_statistics_no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ninit.layer_statistics(ninit.deep_mlp(8, 3), torch.randn(4, 8))


# --------------------------------------------------------------------------- layer_outputs
def test_layer_outputs_in_run_order():
    torch.manual_seed(0)
    net = ninit.deep_mlp(6, 3, "tanh")
    x = torch.randn(4, 6)
    outs = ninit.layer_outputs(net, x, layer_types=(nn.Tanh,))
    assert list(outs) == ["1", "3"]
    torch.testing.assert_close(outs["1"], torch.tanh(net[0](x)))
    assert not outs["3"].requires_grad
    assert not net[1]._forward_hooks
    linear = ninit.layer_outputs(net, x)
    assert list(linear) == ["0", "2", "4"]
    torch.testing.assert_close(linear["4"], net(x))


def test_layer_outputs_shared_module_and_errors():
    lin = nn.Linear(3, 3)
    outs = ninit.layer_outputs(nn.Sequential(lin, lin), torch.randn(2, 3))
    assert list(outs) == ["0", "0#2"]
    with pytest.raises(ValueError, match="no layer"):
        ninit.layer_outputs(nn.Sequential(nn.ReLU()), torch.randn(2, 3))
