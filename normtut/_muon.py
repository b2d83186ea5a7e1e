r"""Muon from scratch: momentum, orthogonalized by a Newton–Schulz iteration (re-exported by
:mod:`normtut.optim`; a drop-in for ``torch.optim.Muon``).

Muon (Jordan et al., 2024, "Muon: An optimizer for hidden layers in neural networks"; Liu et
al., 2025, "Muon is Scalable for LLM Training") keeps SGD's momentum buffer for a 2-D weight
:math:`W \in \mathbb{R}^{A\times B}` and replaces the update by the nearest semi-orthogonal
matrix:

.. math::

    B_t = \mu B_{t-1} + (1-\mu) G_t, \qquad
    U_t = \begin{cases} (1-\mu) G_t + \mu B_t & \text{(Nesterov)}\\ B_t \end{cases}, \qquad
    W_t = (1 - \eta\lambda) W_{t-1} - \eta' \,\mathrm{NS}(U_t),

where :math:`\mathrm{NS}(U) \approx \operatorname{msign}(U) = P Q^\top` for the SVD
:math:`U = P\Sigma Q^\top`: every singular value is pushed towards 1. That is the steepest
descent direction under the spectral norm (Bernstein & Newhouse, 2024, "Old Optimizer, New
Norm"). The Newton–Schulz iteration gets there with matrix products only: with
:math:`X_0 = U/\lVert U\rVert_F` (all singular values in :math:`(0, 1]`),

.. math::

    X_{k+1} = a X_k + b\,(X_k X_k^\top) X_k + c\,(X_k X_k^\top)^2 X_k,

the odd polynomial :math:`\varphi(\sigma) = a\sigma + b\sigma^3 + c\sigma^5` applied to each
singular value. Keller Jordan's coefficients :math:`(a, b, c) = (3.4445, -4.7750, 2.0315)`
make :math:`\varphi` steep at 0 (:math:`\varphi'(0) = a`), so five steps take every singular
value above about 1/200 of :math:`\lVert U\rVert_F` into roughly :math:`[0.7, 1.2]` (not
exactly 1: speed over precision; ``tests/test_muon.py`` checks it). The iteration runs in
bfloat16, on the wide orientation (:math:`A \le B`, so :math:`X X^\top` is the smaller Gram
matrix), as torch's.

``adjust_lr_fn``: ``None``/``"original"`` scales the step by :math:`\sqrt{\max(1, A/B)}`
(Jordan's); ``"match_rms_adamw"`` by :math:`0.2\sqrt{\max(A, B)}` (Liu et al.: an update with
AdamW's typical RMS, so AdamW's learning rate and weight decay carry over).

Muon is for 2-D hidden weights only; embeddings, the output layer, biases and normalization
parameters go to AdamW in another optimizer (Jordan et al.). Each line below uses the same
tensor operations as ``torch.optim.Muon``, so on the CPU the trajectory equals torch's bitwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["Muon", "newton_schulz"]

EPS = 1e-7
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def newton_schulz(
    update: Tensor,
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    ns_steps: int = NS_STEPS,
    eps: float = EPS,
) -> Tensor:
    r"""Approximately orthogonalize a 2-D ``update``: :math:`X \leftarrow aX + (bS + cS^2)X`
    with :math:`S = XX^\top`, ``ns_steps`` times, in bfloat16, from :math:`X_0 = U/\lVert U
    \rVert_F`. Returns a bfloat16 matrix of the same shape."""
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if len(update.shape) != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    a, b, c = ns_coefficients
    X = update.bfloat16()
    tall = update.size(0) > update.size(1)
    if tall:  # work on the wide side: X X^T is then the smaller Gram matrix
        X = X.T
    X.div_(X.norm().clamp(min=eps))  # singular values now in (0, 1]
    for _ in range(ns_steps):
        S = X @ X.T
        poly = torch.addmm(S, S, S, beta=b, alpha=c)  # b S + c S^2
        X = torch.addmm(X, poly, X, beta=a)  # a X + (b S + c S^2) X
    return X.T if tall else X


def _adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    A, B = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, A / B))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(A, B))
    else:
        ratio = 1.0
    return lr * ratio


class Muon(Optimizer):
    r"""Momentum SGD whose update is orthogonalized (see the module docstring for the math).

    Same arguments, defaults, errors and state (``momentum_buffer``) as ``torch.optim.Muon``.

    Example::

        >>> import torch
        >>> from normtut.optim import Muon
        >>> W = torch.nn.Parameter(torch.randn(4, 3))
        >>> opt = Muon([W], lr=0.02)
        >>> (W.sum() ** 2).backward()
        >>> _ = opt.step()
        >>> opt.state[W]["momentum_buffer"].shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = EPS,
        ns_steps: int = NS_STEPS,
        adjust_lr_fn: str | None = None,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 <= momentum:
            raise ValueError(f"momentum should be >= 0 but is: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
        if adjust_lr_fn is not None and adjust_lr_fn not in ["original", "match_rms_adamw"]:
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_coefficients": ns_coefficients,
            "eps": eps,
            "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(
                        "Muon only supports 2D parameters whereas we found a parameter with "
                        f"size: {p.size()}"
                    )

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"]
            if isinstance(lr, Tensor) and lr.dim() != 0:  # a 1-element tensor lr, as torch
                lr = lr.squeeze()
            mu = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if torch.is_complex(p):
                    raise RuntimeError("Muon does not support complex parameters")
                if p.grad.is_sparse:
                    raise RuntimeError("Muon does not support sparse gradients")
                g = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(
                        g, memory_format=torch.preserve_format
                    )
                buf = state["momentum_buffer"]
                buf.lerp_(g, 1 - mu)  # B_t = mu B_{t-1} + (1 - mu) G_t
                update = g.lerp(buf, mu) if group["nesterov"] else buf
                update = newton_schulz(
                    update, group["ns_coefficients"], group["ns_steps"], group["eps"]
                )
                p.mul_(1 - lr * group["weight_decay"])  # decoupled weight decay
                p.add_(update, alpha=-_adjusted_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss
