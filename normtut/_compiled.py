"""Adam's ``fused=True`` path: the from-scratch step compiled with ``torch.compile``.

The whole update is ten readable lines (:func:`_adam_chunk`): the gradient (negated if
``maximize``, plus :math:`\\lambda\\theta` for L2), the decoupled decay, the two moving
averages, the AMSGrad maximum and the bias-corrected step. Inductor turns them into one loop
per tensor, which is what torch's hand-written fused kernel is.

Why the scalars are packed: the bias corrections :math:`\\gamma/(1-\\beta_1^t)` and
:math:`\\sqrt{1-\\beta_2^t}` are computed here in Python doubles from ``step.item()`` (computed
inside the kernel, inductor re-evaluates ``pow`` once per vector: 8x slower), and passed,
with the decoupled factor :math:`1-\\gamma\\lambda`, as ONE float64 tensor of shape ``(3, N)``.
A tensor is a graph input, so a scheduler changing ``lr`` does not recompile, and one input
instead of 3N Python floats removes the per-tensor guard overhead.

Why chunks: one compiled call over 200 tensors took 200-310 s to compile. The tensors are
flattened to 1-D and fed in chunks of at most :data:`CHUNK` with ``dynamic=True``, so one
graph serves every full chunk whatever the sizes (one more for the last, shorter chunk).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

CHUNK = 32


def _adam_chunk(params, grads, exp_avgs, exp_avg_sqs, max_sqs, scalars, beta1, beta2, eps,
                weight_decay, maximize, amsgrad, decoupled):  # fmt: skip
    for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, strict=True)):
        g = -g if maximize else g
        if decoupled:
            p.mul_(scalars[2, i])  # AdamW: theta <- (1 - lr lambda) theta
        elif weight_decay != 0:
            g = g + weight_decay * p  # L2
        m.lerp_(g, 1 - beta1)  # m_t
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v_t
        if amsgrad:
            v = torch.maximum(max_sqs[i], v, out=max_sqs[i])
        p.sub_(scalars[0, i] * m / (v.sqrt() / scalars[1, i] + eps))


_compiled: Any = None


def _kernel() -> Any:
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(_adam_chunk, fullgraph=True, dynamic=True)
    return _compiled


def adam_step(group: dict[str, Any], params: list[Tensor], grads: list[Tensor],
              states: list[dict[str, Any]]) -> None:  # fmt: skip
    """One fused (compiled) Adam/AdamW step of ``group`` on these parameters."""
    lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
    lr = lr.item() if isinstance(lr, Tensor) else lr
    beta1 = beta1.item() if isinstance(beta1, Tensor) else beta1
    beta2 = beta2.item() if isinstance(beta2, Tensor) else beta2
    weight_decay, amsgrad = group["weight_decay"], group["amsgrad"]
    decoupled = group["decoupled_weight_decay"]
    steps = [s["step"] for s in states]
    torch._foreach_add_(steps, 1.0)
    ts = [t.item() for t in steps]
    scalars = torch.tensor(
        [[lr / (1 - beta1**t) for t in ts], [(1 - beta2**t) ** 0.5 for t in ts],
         [1 - lr * weight_decay] * len(ts)],
        dtype=torch.float64,
    )  # fmt: skip

    def flat(ts: list[Tensor]) -> list[Tensor]:
        return [t.view(-1) if t.is_contiguous() else t for t in ts]

    exp_avgs = flat([s["exp_avg"] for s in states])
    exp_avg_sqs = flat([s["exp_avg_sq"] for s in states])
    max_sqs = flat([s["max_exp_avg_sq"] for s in states]) if amsgrad else exp_avg_sqs
    params, grads = flat(params), flat(grads)
    try:
        kernel = _kernel()
        # one graph per option set (maximize, amsgrad, decay, dtype, chunk length), not per lr
        with torch._dynamo.config.patch(recompile_limit=64):
            for a in range(0, len(params), CHUNK):
                b = a + CHUNK
                kernel(params[a:b], grads[a:b], exp_avgs[a:b], exp_avg_sqs[a:b], max_sqs[a:b],
                       scalars[:, a:b], beta1, beta2, eps, weight_decay,
                       group["maximize"], amsgrad, decoupled)  # fmt: skip
    except torch._dynamo.exc.BackendCompilerFailed as err:
        raise RuntimeError(
            "normtut.optim fused=True needs torch.compile, which failed here (no C++ "
            f"compiler?): {err}"
        ) from err
