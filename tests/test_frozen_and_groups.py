"""Tests for normtut.normalization's frozen batch norms and normtut.params.param_groups."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from normtut import normalization as nnorm
from normtut import parametrizations as npar
from normtut.normalization import (
    FrozenBatchNorm1d,
    FrozenBatchNorm2d,
    FrozenBatchNorm3d,
    freeze_batch_norm,
)
from normtut.params import DEFAULT_NO_DECAY, GroupTable, param_groups

KEYS = ["weight", "bias", "running_mean", "running_var"]


def _trained_bn(cls=nn.BatchNorm2d, c=3, shape=(16, 3, 5, 5), dtype=torch.float32, **kw):
    """A batch norm with non-trivial statistics and affine parameters, in eval mode."""
    torch.manual_seed(0)
    bn = cls(c, dtype=dtype, **kw)
    for _ in range(3):
        bn(torch.randn(shape, dtype=dtype) * 2 + 0.5)
    if bn.affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
    return bn.eval()


# --- FrozenBatchNorm2d: torchvision's semantics -----------------------------------------------


def test_defaults_buffers_and_keys_are_torchvision_s():
    f = FrozenBatchNorm2d(4)
    assert f.eps == 1e-5 and f.num_features == 4
    assert list(f.state_dict()) == KEYS
    assert [n for n, _ in f.named_buffers()] == KEYS
    assert list(f.parameters()) == []
    assert torch.equal(f.weight, torch.ones(4)) and torch.equal(f.bias, torch.zeros(4))
    assert torch.equal(f.running_mean, torch.zeros(4))
    assert torch.equal(f.running_var, torch.ones(4))
    assert repr(f) == "FrozenBatchNorm2d(4, eps=1e-05)"
    assert FrozenBatchNorm2d(4, 1e-3).eps == 1e-3  # eps is the second positional argument


def test_forward_is_torchvision_s_formula():
    f = FrozenBatchNorm2d(3, eps=0.1)
    with torch.no_grad():
        for name in KEYS:
            getattr(f, name).copy_(torch.rand(3) + 0.1)
    x = torch.randn(2, 3, 4, 4)
    w, b, rm, rv = (getattr(f, n).reshape(1, -1, 1, 1) for n in KEYS)
    scale = w * (rv + 0.1).rsqrt()
    assert torch.equal(f(x), x * scale + (b - rm * scale))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_equals_batch_norm_in_eval_mode(dtype, affine):
    bn = _trained_bn(dtype=dtype, affine=affine)
    frozen = FrozenBatchNorm2d.from_batch_norm(bn)
    x = torch.randn(4, 3, 6, 6, dtype=dtype) * 3 - 1
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(frozen(x), bn(x), atol=tol, rtol=tol)
    assert frozen.weight.dtype == dtype and frozen.eps == bn.eps


def test_loads_a_torch_batch_norm_checkpoint_strictly():
    bn = _trained_bn(eps=1e-3)
    assert "num_batches_tracked" in bn.state_dict()
    frozen = FrozenBatchNorm2d(3, eps=1e-3)
    result = frozen.load_state_dict(bn.state_dict())  # strict=True by default
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(frozen(x), bn(x))


def test_loads_normtut_batch_norm_and_a_nested_checkpoint():
    ours = _trained_bn(cls=nnorm.BatchNorm2d)
    net = nn.Sequential(nn.Conv2d(3, 3, 1), ours)
    frozen_net = nn.Sequential(nn.Conv2d(3, 3, 1), FrozenBatchNorm2d(3))
    frozen_net.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(frozen_net(x), net.eval()(x))


@pytest.mark.parametrize("bn_cls", [nn.BatchNorm2d, nnorm.BatchNorm2d])
def test_checkpoint_of_frozen_loads_back_into_a_batch_norm(bn_cls):
    """The frozen layer's checkpoint has no version metadata, so a batch norm treats it as
    a pre-counter (version < 2) checkpoint and fills in num_batches_tracked itself."""
    frozen = FrozenBatchNorm2d.from_batch_norm(_trained_bn())
    bn = bn_cls(3)
    bn.load_state_dict(frozen.state_dict())  # strict
    assert int(bn.num_batches_tracked) == 0
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(bn.eval()(x), frozen(x))


def test_state_dict_round_trip_through_torch_save():
    frozen = FrozenBatchNorm2d.from_batch_norm(_trained_bn())
    buf = io.BytesIO()
    torch.save(frozen.state_dict(), buf)
    buf.seek(0)
    again = FrozenBatchNorm2d(3)
    again.load_state_dict(torch.load(buf, weights_only=True))
    for name in KEYS:
        assert torch.equal(getattr(again, name), getattr(frozen, name))


def test_train_mode_changes_nothing():
    bn = _trained_bn()
    frozen = FrozenBatchNorm2d.from_batch_norm(bn)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    x = torch.randn(8, 3, 4, 4) * 5 + 3
    out_eval = frozen.eval()(x)
    out_train = frozen.train()(x)
    assert frozen.training and torch.equal(out_eval, out_train)
    for k, v in frozen.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_gradient_flows_to_the_input_not_to_the_buffers():
    bn = _trained_bn()
    frozen = FrozenBatchNorm2d.from_batch_norm(bn)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    (frozen(x) * torch.arange(3.0).reshape(1, 3, 1, 1)).sum().backward()
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    expected = (torch.arange(3.0) * scale).reshape(1, 3, 1, 1).expand_as(x)
    torch.testing.assert_close(x.grad, expected)
    for name in KEYS:
        t = getattr(frozen, name)
        assert not t.requires_grad and t.grad is None


def test_from_batch_norm_copies_and_does_not_share():
    bn = _trained_bn()
    frozen = FrozenBatchNorm2d.from_batch_norm(bn)
    with torch.no_grad():
        bn.weight.add_(1)
        bn.running_mean.add_(1)
    assert not torch.equal(frozen.weight, bn.weight)
    assert not torch.equal(frozen.running_mean, bn.running_mean)


def test_errors_for_bad_input():
    with pytest.raises(ValueError, match="num_features"):
        FrozenBatchNorm2d(0)
    with pytest.raises(ValueError, match="num_features"):
        FrozenBatchNorm2d(2.5)
    with pytest.raises(ValueError, match="eps"):
        FrozenBatchNorm2d(3, eps=-1.0)
    f = FrozenBatchNorm2d(3)
    with pytest.raises(ValueError, match="expected 4D input"):
        f(torch.randn(3, 4, 4))
    with pytest.raises(RuntimeError, match="channels"):
        f(torch.randn(2, 4, 5, 5))
    with pytest.raises(TypeError, match="batch norm"):
        FrozenBatchNorm2d.from_batch_norm(nn.LayerNorm(3))
    with pytest.raises(ValueError, match="running statistics"):
        FrozenBatchNorm2d.from_batch_norm(nn.BatchNorm2d(3, track_running_stats=False))
    with pytest.raises(ValueError, match="lazy"):
        FrozenBatchNorm2d.from_batch_norm(nn.LazyBatchNorm2d())
    with pytest.raises(RuntimeError, match="size mismatch"):
        FrozenBatchNorm2d(4).load_state_dict(nn.BatchNorm2d(3).state_dict())
    with pytest.raises(RuntimeError, match="Missing key"):  # affine=False has no weight/bias
        FrozenBatchNorm2d(3).load_state_dict(nn.BatchNorm2d(3, affine=False).state_dict())


@pytest.mark.parametrize(
    "frozen_cls,bn_cls,shape",
    [
        (FrozenBatchNorm1d, nn.BatchNorm1d, (6, 3)),
        (FrozenBatchNorm1d, nn.BatchNorm1d, (6, 3, 7)),
        (FrozenBatchNorm3d, nn.BatchNorm3d, (2, 3, 3, 4, 4)),
    ],
)
def test_1d_and_3d_twins(frozen_cls, bn_cls, shape):
    bn = _trained_bn(cls=bn_cls, shape=shape)
    frozen = frozen_cls.from_batch_norm(bn)
    x = torch.randn(shape)
    torch.testing.assert_close(frozen.train()(x), bn(x))
    assert list(frozen.state_dict()) == KEYS
    with pytest.raises(ValueError, match="input"):
        frozen(torch.randn(3))


@settings(max_examples=25, deadline=None)
@given(
    c=st.integers(1, 5),
    n=st.integers(1, 4),
    eps=st.sampled_from([1e-5, 1e-3, 0.1]),
    seed=st.integers(0, 2**16),
)
def test_matches_eval_batch_norm_for_random_states(c, n, eps, seed):
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c, eps=eps, dtype=torch.float64).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        bn.bias.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        bn.running_mean.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(c, generator=g, dtype=torch.float64) + 0.01)
    frozen = FrozenBatchNorm2d(c, eps=eps, dtype=torch.float64)
    frozen.load_state_dict(bn.state_dict())
    x = torch.randn(n, c, 3, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(frozen(x), bn(x), atol=1e-12, rtol=1e-12)


# --- freeze_batch_norm -------------------------------------------------------------------------


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 4, 3), nnorm.BatchNorm2d(4)), nn.Flatten(),
        nn.Linear(4 * 24 * 24, 8), nn.BatchNorm1d(8), nn.LayerNorm(8), nn.Linear(8, 2),
    )  # fmt: skip
    net.train()
    for _ in range(3):
        net(torch.randn(8, 1, 28, 28))
    return net


def test_freeze_replaces_every_batch_norm_and_keeps_the_function():
    net = _net()
    x = torch.randn(5, 1, 28, 28)
    expected = net.eval()(x)
    out = freeze_batch_norm(net)
    assert out is net
    assert isinstance(net[1], FrozenBatchNorm2d) and isinstance(net[3][1], FrozenBatchNorm2d)
    assert isinstance(net[6], FrozenBatchNorm1d) and isinstance(net[7], nn.LayerNorm)
    torch.testing.assert_close(net.train()(x), expected)
    assert not any(
        isinstance(m, (nn.modules.batchnorm._BatchNorm, nnorm.BatchNorm2d)) for m in net.modules()
    )


def test_freeze_keeps_state_dict_keys_except_the_counter():
    net = _net()
    keys = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    freeze_batch_norm(net)
    assert list(net.state_dict()) == keys


def test_frozen_model_loads_the_unfrozen_checkpoint():
    net = _net()
    state = net.state_dict()
    frozen = freeze_batch_norm(copy.deepcopy(net))
    with torch.no_grad():
        for b in frozen.buffers():
            b.zero_()
    frozen.load_state_dict(state)  # strict: num_batches_tracked is dropped
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(frozen(x), net.eval()(x))


def test_freeze_drops_affine_parameters_from_the_optimizer_s_view():
    net = _net()
    before = sum(p.numel() for p in net.parameters())
    freeze_batch_norm(net)
    after = sum(p.numel() for p in net.parameters())
    assert before - after == 2 * (4 + 4 + 8)


def test_freeze_on_a_batch_norm_returns_its_twin_and_keeps_shared_modules_shared():
    bn = _trained_bn()
    frozen = freeze_batch_norm(bn)
    assert isinstance(frozen, FrozenBatchNorm2d)
    shared = nn.BatchNorm2d(2)
    net = nn.Sequential(shared, nn.Identity(), shared)
    freeze_batch_norm(net)
    assert isinstance(net[0], FrozenBatchNorm2d) and net[0] is net[2]


def test_freeze_keeps_device_dtype_and_sync_batch_norm_becomes_2d():
    net = nn.Sequential(nn.BatchNorm2d(3, dtype=torch.float64), nn.SyncBatchNorm(3))
    freeze_batch_norm(net)
    assert net[0].weight.dtype == torch.float64 and isinstance(net[1], FrozenBatchNorm2d)


def test_freeze_errors():
    with pytest.raises(TypeError, match="nn.Module"):
        freeze_batch_norm("not a model")
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, track_running_stats=False))
    with pytest.raises(ValueError, match="layer '1'"):
        freeze_batch_norm(net)


# --- param_groups ------------------------------------------------------------------------------


def _names(group) -> set[str]:
    return set(group["param_names"])


def test_default_groups_biases_and_norms_get_no_decay():
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nnorm.BatchNorm2d(2), nn.Flatten(),
        nn.Linear(8, 4), nn.LayerNorm(4), nnorm.LayerNorm(4), nn.GroupNorm(2, 4),
        nnorm.GroupNorm(2, 4), nnorm.RMSNorm(4), nn.Linear(4, 2, bias=False),
    )  # fmt: skip
    groups = param_groups(net, weight_decay=0.05)
    assert isinstance(groups, list) and len(groups) == 2
    decay, exempt = groups
    assert decay["weight_decay"] == 0.05 and exempt["weight_decay"] == 0.0
    assert _names(decay) == {"0.weight", "4.weight", "10.weight"}
    assert "0.bias" in _names(exempt) and "9.weight" in _names(exempt)
    for i in (1, 2, 5, 6, 7, 8):
        assert {f"{i}.weight", f"{i}.bias"} <= _names(exempt)
    n_all = sum(p.numel() for p in net.parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == n_all
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))


def test_torch_rms_norm_and_instance_norm_are_norms():
    assert nn.RMSNorm in DEFAULT_NO_DECAY and "bias" in DEFAULT_NO_DECAY
    net = nn.Sequential(nn.Linear(3, 3), nn.RMSNorm(3), nn.InstanceNorm1d(3, affine=True))
    _, exempt = param_groups(net, 0.1)
    assert _names(exempt) == {"0.bias", "1.weight", "2.weight", "2.bias"}


def test_groups_go_into_an_optimizer_and_decay_only_the_decay_group():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    opt = torch.optim.AdamW(param_groups(net, weight_decay=0.5, lr=0.1))
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.1]
    before = [p.detach().clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = torch.zeros_like(p)  # Adam's step is 0, only the decay moves a tensor
    opt.step()
    w, b, g, beta = (p.detach() for p in net.parameters())
    torch.testing.assert_close(w, before[0] * (1 - 0.1 * 0.5))
    assert torch.equal(b, before[1]) and torch.equal(g, before[2]) and torch.equal(beta, before[3])


def test_tied_parameters_are_listed_once():
    emb = nn.Embedding(10, 4)
    dec = nn.Linear(4, 10)
    dec.weight = emb.weight
    net = nn.ModuleDict({"emb": emb, "dec": dec})
    groups = param_groups(net, 0.1)
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len(set(map(id, params))) == 2
    row = groups.table["emb.weight"]
    assert row.shared_with == ("dec.weight",) and row.decay
    assert "dec.weight" in str(groups.table)
    torch.optim.SGD(groups, lr=0.1)  # no duplicate-parameter warning is an error here


def test_tie_with_an_exempt_name_is_exempt():
    ln = nn.LayerNorm(4)
    lin = nn.Linear(4, 4)
    lin.bias = ln.bias  # the same tensor, reached from a norm and from a bias
    groups = param_groups(nn.Sequential(lin, ln), 0.1, no_decay=[nn.LayerNorm])
    assert _names(groups[1]) == {"0.bias", "1.weight"}  # under the tensor's first name
    assert _names(groups[0]) == {"0.weight"}


def test_custom_no_decay_types_names_and_patterns():
    net = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    net.register_parameter("pos_embed", nn.Parameter(torch.zeros(3, 4)))
    _, exempt = param_groups(net, 0.1, no_decay=[nn.Embedding, "pos_embed"])
    assert _names(exempt) == {"0.weight", "pos_embed"}
    _, exempt = param_groups(net, 0.1, no_decay=["2.*"])
    assert _names(exempt) == {"2.weight", "2.bias"}
    _, exempt = param_groups(net, 0.1, no_decay="bias")  # one entry
    assert _names(exempt) == {"1.bias", "2.bias"}
    decay, exempt = param_groups(net, 0.1, no_decay=())
    assert exempt["params"] == [] and len(decay["params"]) == 6


def test_parametrized_weights_belong_to_their_layer():
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    npar.weight_norm(net[0])
    npar.weight_norm(net[1])
    decay, exempt = param_groups(net, 0.1)
    assert _names(decay) == {
        "0.parametrizations.weight.original0",
        "0.parametrizations.weight.original1",
    }
    assert "1.parametrizations.weight.original0" in _names(exempt)
    _, exempt = param_groups(net, 0.1, no_decay=["0.weight"])  # the logical name
    assert "0.parametrizations.weight.original1" in _names(exempt)


def test_frozen_parameters_are_left_out_unless_asked():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    net[0].requires_grad_(False)
    groups = param_groups(net, 0.1)
    assert groups.table.skipped == ["0.weight", "0.bias"]
    assert sum(len(g["params"]) for g in groups) == 2
    assert "2 frozen left out" in groups.table.footer()
    groups = param_groups(net, 0.1, include_frozen=True)
    assert sum(len(g["params"]) for g in groups) == 4


def test_table_text_fits_the_page_and_counts():
    net = nn.Sequential(nn.Linear(10, 10), nn.BatchNorm1d(10))
    table = param_groups(net, 1e-4).table
    assert isinstance(table, GroupTable) and len(table) == 4
    text = str(table)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "decay: 1 tensors, 100 scalars; no decay: 3 tensors, 30 scalars" in text
    assert "in BatchNorm1d" in text and "name 'bias'" in text
    assert "<table" in table._repr_html_()
    assert table.numel(True) == 100 and table.numel(False) == 30


def test_param_groups_errors():
    net = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="nn.Module"):
        param_groups([net.weight], 0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(net, -0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(net, math.nan)
    with pytest.raises(TypeError, match="weight_decay"):
        param_groups(net, "0.1")
    with pytest.raises(TypeError, match="no_decay"):
        param_groups(net, 0.1, no_decay=[3])
    with pytest.raises(TypeError, match="no_decay"):
        param_groups(net, 0.1, no_decay=[torch.Tensor])
    with pytest.raises(TypeError, match="params"):
        param_groups(net, 0.1, params=[])
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(nn.ReLU(), 0.1)
