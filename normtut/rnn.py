r"""A plain recurrent network, the memory task and the gradient per time step.

The chapters on orthogonal weights and on gradient clipping both train the same small tanh
RNN on the same task, so both live here (written once, imported by both).

**The network** (:class:`VanillaRNN`): with input matrix :math:`U`, recurrent matrix
:math:`W` and a linear read-out of the last state,

.. math::

    \mathbf h_t = \phi\left(U\mathbf x_t + W\mathbf h_{t-1}\right), \quad \mathbf h_0 = 0,
    \qquad \text{output } V\mathbf h_T + \mathbf c,

with :math:`\phi = \tanh` unless another activation is passed. ``U`` and ``W`` are
``nn.Linear`` layers without bias and ``out`` an ``nn.Linear`` with one, created in this
order (so a seed fixes all three). ``W`` is read at every step through ``self.W(h)``, which
is what makes a parametrization on it (e.g. ``orthogonal``) apply at every step.

**The memory task** (:func:`memory_batch`): the first input is one of ``num_symbols`` symbols
(one-hot), the next :math:`T - 1` inputs are zero, and the target is the symbol. The
information has to travel through :math:`T - 1` multiplications by :math:`W`, and so does the
gradient that could teach the network to keep it.

**The gradient per time step** (:func:`state_grad_norms`): for :math:`L = \langle\mathbf g,
\mathbf h_T\rangle`, the norms :math:`\lVert\partial L/\partial\mathbf h_t\rVert` for
:math:`t = 1,\dots,T`, the product of Jacobians of Pascanu, Mikolov & Bengio (2013, "On the
difficulty of training recurrent neural networks") made visible.

Example::

    >>> import torch
    >>> from normtut import rnn as nrnn
    >>> x, y = nrnn.memory_batch(8, 20, generator=torch.Generator().manual_seed(0))
    >>> x.shape, y.shape
    (torch.Size([20, 8, 4]), torch.Size([8]))
    >>> net = nrnn.VanillaRNN(4, 16, 4)
    >>> net(x).shape
    torch.Size([8, 4])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VanillaRNN", "memory_batch", "state_grad_norms"]


class VanillaRNN(nn.Module):
    r""":math:`\mathbf h_t = \phi(U\mathbf x_t + W\mathbf h_{t-1})`, output
    :math:`V\mathbf h_T + \mathbf c`; inputs are ``(T, batch, d_in)``."""

    def __init__(
        self, d_in: int, hidden: int, d_out: int, act: Callable[[Tensor], Tensor] = torch.tanh
    ) -> None:
        super().__init__()
        self.U = nn.Linear(d_in, hidden, bias=False)
        self.W = nn.Linear(hidden, hidden, bias=False)
        self.out, self.act = nn.Linear(hidden, d_out), act

    def states(self, x: Tensor) -> list[Tensor]:
        """x: (T, batch, d_in) -> the states [h_1, ..., h_T]."""
        hs = [x.new_zeros(x.shape[1], self.W.in_features)]  # h_0
        for x_t in x:
            hs.append(self.act(self.U(x_t) + self.W(hs[-1])))  # reads W.weight
        return hs[1:]

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.states(x)[-1])


def memory_batch(
    batch_size: int,
    length: int,
    num_symbols: int = 4,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """A batch of the memory task: ``x`` of shape ``(length, batch_size, num_symbols)``
    (float32, the symbol one-hot at step 0, zeros after it) and the symbols ``y`` (int64,
    ``(batch_size,)``). The batch is drawn on the CPU, from ``generator`` when one is passed
    (a private random stream), and then moved to ``device``, so that every device sees the
    same batches."""
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    y = torch.randint(num_symbols, (batch_size,), generator=generator)
    x = torch.zeros(length, batch_size, num_symbols)
    x[0] = F.one_hot(y, num_symbols).float()  # the symbol, then length - 1 zeros
    return x.to(device), y.to(device)


def state_grad_norms(rnn: VanillaRNN, x: Tensor, g: Tensor) -> Tensor:
    r""":math:`\lVert\partial L/\partial\mathbf h_t\rVert` for :math:`t = 1,\dots,T` (on the
    CPU), with :math:`L = \langle\mathbf g, \mathbf h_T\rangle` summed over the batch; ``g``
    has the shape of a state, ``(batch, hidden)``. Accumulates gradients in ``rnn``'s
    parameters as any backward pass does."""
    hs = rnn.states(x)
    for h in hs:
        h.retain_grad()
    (hs[-1] * g).sum().backward()
    return torch.stack([h.grad.norm() for h in hs]).cpu()
