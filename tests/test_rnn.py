"""Tests of normtut.rnn: the plain RNN, the memory task and the gradient per time step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normtut import parametrizations as npar
from normtut import rnn as nrnn


def reference_states(rnn, x):
    # the recurrence written out with explicit matrices
    U, W = rnn.U.weight, rnn.W.weight
    h, hs = torch.zeros(x.shape[1], W.shape[0], dtype=x.dtype), []
    for x_t in x:
        h = rnn.act(x_t @ U.T + h @ W.T)
        hs.append(h)
    return hs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("act", [torch.tanh, nn.Identity(), torch.relu])
@pytest.mark.parametrize("T, batch", [(1, 1), (7, 3)])
def test_states_and_output_follow_the_recurrence(dtype, act, T, batch):
    torch.manual_seed(0)
    rnn = nrnn.VanillaRNN(5, 6, 3, act).to(dtype)
    x = torch.randn(T, batch, 5, dtype=dtype)
    hs = rnn.states(x)
    assert len(hs) == T and all(h.shape == (batch, 6) for h in hs)
    for h, ref in zip(hs, reference_states(rnn, x), strict=True):
        torch.testing.assert_close(h, ref)
    torch.testing.assert_close(rnn(x), hs[-1] @ rnn.out.weight.T + rnn.out.bias)


def test_layers_are_created_in_a_fixed_order_with_torch_defaults():
    torch.manual_seed(3)
    rnn = nrnn.VanillaRNN(4, 8, 2)
    torch.manual_seed(3)
    U, W, out = nn.Linear(4, 8, bias=False), nn.Linear(8, 8, bias=False), nn.Linear(8, 2)
    assert [n for n, _ in rnn.named_parameters()] == [
        "U.weight",
        "W.weight",
        "out.weight",
        "out.bias",
    ]
    for mine, ref in zip(rnn.parameters(), [U.weight, W.weight, out.weight, out.bias], strict=True):
        assert torch.equal(mine, ref)


def test_a_parametrization_on_W_applies_at_every_step():
    torch.manual_seed(0)
    rnn = nrnn.VanillaRNN(3, 5, 2)
    npar.orthogonal(rnn.W)
    x = torch.randn(4, 2, 3)
    for h, ref in zip(rnn.states(x), reference_states(rnn, x), strict=True):
        torch.testing.assert_close(h, ref)
    W = rnn.W.weight
    torch.testing.assert_close(W.T @ W, torch.eye(5))


@pytest.mark.parametrize("num_symbols", [2, 4, 7])
@pytest.mark.parametrize("length", [1, 5])
def test_memory_batch_holds_the_symbol_then_zeros(num_symbols, length):
    gen = torch.Generator().manual_seed(0)
    x, y = nrnn.memory_batch(64, length, num_symbols, gen)
    assert x.shape == (length, 64, num_symbols) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.int64
    assert torch.equal(x[0], F.one_hot(y, num_symbols).float())
    assert torch.count_nonzero(x[1:]) == 0
    assert set(y.tolist()) == set(range(num_symbols))  # 64 draws hit every symbol


def test_memory_batch_is_reproducible_and_uses_only_its_generator():
    a = nrnn.memory_batch(16, 3, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    b = nrnn.memory_batch(16, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), before)  # the global stream is untouched
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # the same draws as torch.randint on that generator
    y = torch.randint(4, (16,), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[1], y)


def test_memory_batch_rejects_an_empty_sequence():
    with pytest.raises(ValueError, match="length must be at least 1"):
        nrnn.memory_batch(4, 0)


def test_state_grad_norms_of_a_linear_rnn_are_powers_of_W_transpose():
    torch.manual_seed(0)
    rnn = nrnn.VanillaRNN(3, 4, 1, nn.Identity()).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    g = torch.randn(2, 4, dtype=torch.float64)
    norms = nrnn.state_grad_norms(rnn, x, g)
    W = rnn.W.weight.detach()
    expected = [(g @ torch.linalg.matrix_power(W, 6 - t)).norm() for t in range(1, 7)]
    torch.testing.assert_close(norms, torch.stack(expected))
    assert norms.device.type == "cpu" and rnn.W.weight.grad is not None


def test_state_grad_norms_explode_for_a_large_recurrent_matrix():
    torch.manual_seed(0)
    rnn = nrnn.VanillaRNN(3, 32, 1, nn.Identity()).double()
    with torch.no_grad():
        Q, _ = torch.linalg.qr(torch.randn(32, 32, dtype=torch.float64))
        rnn.W.weight.copy_(1.5 * Q)  # every singular value 1.5
    x = torch.randn(10, 2, 3, dtype=torch.float64)
    norms = nrnn.state_grad_norms(rnn, x, torch.randn(2, 32, dtype=torch.float64))
    assert math.isclose(norms[0] / norms[-1], 1.5**9, rel_tol=1e-9)


def test_memory_batch_is_drawn_on_the_cpu_and_moved_to_the_device():
    x, y = nrnn.memory_batch(8, 3, generator=torch.Generator().manual_seed(1), device="meta")
    assert x.device.type == "meta" and y.device.type == "meta"
    x_cpu, _ = nrnn.memory_batch(8, 3, generator=torch.Generator().manual_seed(1))
    assert x_cpu.device.type == "cpu"
