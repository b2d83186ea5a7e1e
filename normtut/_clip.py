r"""Gradient clipping from scratch: drop-ins for ``torch.nn.utils.clip_grad_norm_`` and
``clip_grad_value_`` (re-exported by :mod:`normtut.optim`).

**By norm** (Pascanu, Mikolov & Bengio, 2013, "On the difficulty of training recurrent neural
networks"): with the *global* norm of all gradients together,

.. math::

    \lVert g\rVert_p = \Bigl\lVert\bigl(\lVert g_1\rVert_p, \dots, \lVert g_k\rVert_p\bigr)
    \Bigr\rVert_p, \qquad g_i \leftarrow g_i \cdot \min\Bigl(1,
    \frac{c}{\lVert g\rVert_p + 10^{-6}}\Bigr),

every gradient is scaled by the same factor, so the update keeps its direction and only its
length is capped at :math:`c` (``max_norm``). ``norm_type=inf`` uses the largest
:math:`|g|`. The norms of the individual tensors are taken first and then combined, exactly as
torch does, so the returned norm and the clipped gradients equal torch's bitwise.

**By value**: every entry is clamped to :math:`[-c, c]`, which changes the direction.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm"]

# where torch's clipping uses the foreach kernels by default (torch.utils._foreach_utils); the
# CPU has them too (unlike the optimizers' default, which keeps the for-loop on the CPU)
_FOREACH_DEVICES = frozenset(
    {"cpu", "cuda", "xpu", "mtia", torch._C._get_privateuse1_backend_name()}
)


def _as_list(tensors: Tensor | Iterable[Tensor]) -> list[Tensor]:
    return [tensors] if isinstance(tensors, Tensor) else list(tensors)


def _by_device_and_dtype(tensors: list[Tensor]) -> dict[tuple, list[Tensor]]:
    """Tensors grouped by (device, dtype), groups in first-seen order (torch's grouping)."""
    groups: dict[tuple, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return groups


def _use_foreach(foreach: bool | None, device: torch.device, tensors: list[Tensor]) -> bool:
    """torch's rule: foreach by default where the device has the kernels and the tensors are
    plain tensors; ``foreach=True`` where the device has none is an error."""
    supported = device.type in _FOREACH_DEVICES
    if foreach is None:
        return supported and all(type(t) in (Tensor, torch.nn.Parameter) for t in tensors)
    if foreach and not supported:
        raise RuntimeError(
            f"foreach=True was passed, but can't use the foreach API on {device.type} tensors"
        )
    return bool(foreach)


@torch.no_grad()
def get_total_norm(
    tensors: Tensor | Iterable[Tensor],
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    r"""The norm of the norms: :math:`\lVert(\lVert t_1\rVert_p,\dots)\rVert_p`."""
    tensors = _as_list(tensors)
    norm_type = float(norm_type)
    if not tensors:
        return torch.tensor(0.0)
    first_device = tensors[0].device
    norms: list[Tensor] = []
    for (device, _), group in _by_device_and_dtype(tensors).items():
        if _use_foreach(foreach, device, group):
            norms.extend(torch._foreach_norm(group, norm_type))
        else:
            norms.extend(torch.linalg.vector_norm(t, norm_type) for t in group)
    total = torch.linalg.vector_norm(torch.stack([n.to(first_device) for n in norms]), norm_type)
    if error_if_nonfinite and torch.logical_or(total.isnan(), total.isinf()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the gradients "
            "by the non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    return total


@torch.no_grad()
def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    r"""Scale all gradients together so that their global ``norm_type``-norm is at most
    ``max_norm``; returns the norm *before* clipping (what to log)."""
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    else:
        was_generator = isinstance(parameters, types.GeneratorType)
        parameters = list(parameters)
        if was_generator and not parameters:
            warnings.warn(
                "`parameters` is an empty generator, no gradient clipping will occur.",
                stacklevel=3,
            )
    grads = [p.grad for p in parameters if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    if not grads:
        return total
    # min(1, c / (||g|| + 1e-6)): gradients already shorter than c are left alone
    factor = torch.clamp(float(max_norm) / (total + 1e-6), max=1.0)
    for (device, _), group in _by_device_and_dtype(grads).items():
        if _use_foreach(foreach, device, group):
            torch._foreach_mul_(group, factor.to(device))
        else:
            factor_here = factor.to(device)
            for g in group:
                g.mul_(factor_here)
    return total


@torch.no_grad()
def clip_grad_value_(
    parameters: Tensor | Iterable[Tensor], clip_value: float, foreach: bool | None = None
) -> None:
    r"""Clamp every gradient entry to :math:`[-c, c]` in place."""
    c = float(clip_value)
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    for (device, _), group in _by_device_and_dtype(grads).items():
        if _use_foreach(foreach, device, group):
            torch._foreach_clamp_min_(group, -c)
            torch._foreach_clamp_max_(group, c)
        else:
            for g in group:
                g.clamp_(min=-c, max=c)
