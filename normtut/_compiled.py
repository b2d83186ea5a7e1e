"""Adam's ``fused=True`` path: the from-scratch step compiled with ``torch.compile``.

The whole update is ten readable lines (:func:`adam_kernel`, on 1-D tensors): the gradient
(negated if ``maximize``, plus :math:`\\lambda\\theta` for L2), the decoupled decay, the two
moving averages, the AMSGrad maximum and the bias-corrected step. Inductor turns them into
one vectorized loop, which is what torch's hand-written fused kernel is.

Why the scalars are packed: the bias corrections :math:`\\gamma/(1-\\beta_1^t)` and
:math:`\\sqrt{1-\\beta_2^t}` are computed in Python doubles (computed inside the kernel,
inductor re-evaluates ``pow`` once per vector: 8x slower) and passed, with the decoupled
factor :math:`1-\\gamma\\lambda`, as ONE float64 tensor of shape ``(3,)``. A tensor is a graph
input, so a scheduler changing ``lr`` does not recompile.

Why flat buffers: called once per tensor, the compiled kernel costs a guard check and a call
per tensor, 4x torch's fused kernel on 40 small tensors (and one graph over 200 tensors took
minutes to compile). So the small contiguous tensors of a bucket (each below
:data:`LARGE` elements) share flat buffers: the optimizer state ``exp_avg``, ``exp_avg_sq``,
``max_exp_avg_sq`` and ``step`` of each parameter are views into them (``state_dict`` and
in-place edits see them as usual; a state entry replaced by another tensor, as
``load_state_dict`` does, is copied into new buffers at the next step). Each step copies the
gradients and parameters into a flat scratch buffer (two ``torch._foreach_copy_``), runs the
kernel once over all of them, and copies the parameters back. Large or non-contiguous
tensors get one kernel call each, on their own storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

LARGE = 1 << 16  # elements; larger tensors are updated in place, one kernel call each


def adam_kernel(p, g, m, v, v_max, scalars, beta1, beta2, eps, weight_decay,
                maximize, amsgrad, decoupled):  # fmt: skip
    """One Adam/AdamW step; ``scalars`` = (lr / (1 - beta1^t), sqrt(1 - beta2^t), 1 - lr wd)."""
    g = -g if maximize else g
    if decoupled:
        p.mul_(scalars[2])  # AdamW: theta <- (1 - lr lambda) theta
    elif weight_decay != 0:
        g = g + weight_decay * p  # L2
    m.lerp_(g, 1 - beta1)  # m_t = beta1 m_{t-1} + (1 - beta1) g_t
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v_t
    if amsgrad:
        v = v_max.copy_(torch.maximum(v_max, v))  # (dynamo refuses a strided out=)
    p.sub_(scalars[0] * m / (v.sqrt() / scalars[1] + eps))


_compiled: Any = None


def _kernel() -> Any:
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(adam_kernel, fullgraph=True, dynamic=True)
    return _compiled


_KEYS = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


@dataclass
class _Flat:
    """Flat buffers of one bucket's small tensors, and the views handed out as their state."""

    params: list[Tensor]
    views: dict[str, list[Tensor]]  # state key -> views of buf[key], one per parameter
    buf: dict[str, Tensor]  # "param", "grad" (scratch), the state keys (persistent)
    param_views: list[Tensor]
    grad_views: list[Tensor]

    def valid(self, params: list[Tensor], states: list[dict[str, Any]]) -> bool:
        if len(params) != len(self.params) or any(
            p is not q for p, q in zip(params, self.params, strict=True)
        ):
            return False
        return all(
            s[k] is w for k, ws in self.views.items() for s, w in zip(states, ws, strict=True)
        )


def _flatten(params: list[Tensor], states: list[dict[str, Any]], keys: tuple) -> _Flat:
    """New flat buffers holding the current values of the state, which become views."""
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]

    def views_of(buf: Tensor) -> list[Tensor]:
        return [v.view(shape) for v, shape in zip(buf.split(sizes), shapes, strict=True)]

    buf: dict[str, Tensor] = {}
    views: dict[str, list[Tensor]] = {}
    for key in keys:
        if key == "step":  # one float32 per parameter, 0-dim views, as torch's fused
            buf[key] = torch.stack([s[key] for s in states])
            views[key] = list(buf[key].unbind())
        else:
            buf[key] = torch.cat([s[key].reshape(-1) for s in states])
            views[key] = views_of(buf[key])
        for s, w in zip(states, views[key], strict=True):
            s[key] = w
    buf["param"], buf["grad"] = torch.empty_like(buf["exp_avg"]), torch.empty_like(buf["exp_avg"])
    return _Flat(list(params), views, buf, views_of(buf["param"]), views_of(buf["grad"]))


def _scalars(lr: float, beta1: float, beta2: float, weight_decay: float, t: float) -> Tensor:
    return torch.tensor(
        [lr / (1 - beta1**t), (1 - beta2**t) ** 0.5, 1 - lr * weight_decay], dtype=torch.float64
    )


def adam_step(group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
              states: list[dict[str, Any]], cache: dict[Any, _Flat]) -> None:  # fmt: skip
    """One fused (compiled) Adam/AdamW step of ``group`` on one (device, dtype) bucket;
    ``cache`` (the optimizer's) keeps the flat buffers between steps."""
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    lr = lr.item() if isinstance(lr, Tensor) else lr
    beta1 = beta1.item() if isinstance(beta1, Tensor) else beta1
    beta2 = beta2.item() if isinstance(beta2, Tensor) else beta2
    weight_decay, amsgrad = group["weight_decay"], group["amsgrad"]
    options = (beta1, beta2, eps, weight_decay, group["maximize"], amsgrad,
               group["decoupled_weight_decay"])  # fmt: skip

    def scalars(t: float) -> Tensor:
        return _scalars(lr, beta1, beta2, weight_decay, t)

    small = [i for i, p in enumerate(params) if p.numel() < LARGE and p.is_contiguous()]
    if len(small) < 2:  # nothing to share a call with
        small = []
    rest = sorted(set(range(len(params))).difference(small))
    try:
        # one graph per option set (maximize, amsgrad, decay, dtype), not per lr or length
        with torch._dynamo.config.patch(recompile_limit=64):
            kernel = _kernel()
            if small:
                key = (id(group), params[small[0]].device, params[small[0]].dtype)
                sp, ss = [params[i] for i in small], [states[i] for i in small]
                flat = cache.get(key)
                if flat is None or not flat.valid(sp, ss):
                    flat = cache[key] = _flatten(sp, ss, _KEYS if amsgrad else _KEYS[:3])
                b = flat.buf
                b["step"].add_(1)
                if torch.equal(b["step"], b["step"][:1].expand_as(b["step"])):  # one t: one call
                    torch._foreach_copy_(flat.grad_views, [grads[i] for i in small])
                    torch._foreach_copy_(flat.param_views, sp)
                    v_max = b.get("max_exp_avg_sq", b["exp_avg_sq"])
                    kernel(b["param"], b["grad"], b["exp_avg"], b["exp_avg_sq"], v_max,
                           scalars(b["step"][0].item()), *options)  # fmt: skip
                    torch._foreach_copy_(sp, flat.param_views)
                else:  # the steps differ (state loaded from several runs): tensor by tensor
                    b["step"].sub_(1)
                    rest = sorted(rest + small)
            for i in rest:
                s = states[i]
                s["step"].add_(1)
                tensors = [params[i], grads[i], s["exp_avg"], s["exp_avg_sq"],
                           s["max_exp_avg_sq"] if amsgrad else s["exp_avg_sq"]]  # fmt: skip
                if all(t.is_contiguous() for t in tensors):  # else as they are
                    tensors = [t.view(-1) for t in tensors]
                kernel(*tensors, scalars(s["step"].item()), *options)
    except torch._dynamo.exc.BackendCompilerFailed as err:
        raise RuntimeError(
            "normtut.optim fused=True needs torch.compile, which failed here (no C++ "
            f"compiler?): {err}"
        ) from err
