r"""Normalization layers from scratch: batch, layer, group and RMS normalization.

Every layer here is a drop-in for its ``torch.nn`` twin: the same constructor arguments and
defaults, the same parameter and buffer names (so ``state_dict`` checkpoints load both ways),
the same ``extra_repr`` and the same error types for the same bad input.

All four normalize a tensor with statistics taken over some of its axes and then apply a
learned affine map. With :math:`\mathcal{B}` the set of :math:`m` entries that share
statistics,

.. math::
    \mu = \frac{1}{m}\sum_{i\in\mathcal{B}} x_i, \qquad
    \sigma^2 = \frac{1}{m}\sum_{i\in\mathcal{B}} (x_i-\mu)^2, \qquad
    \hat{x}_i = \frac{x_i-\mu}{\sqrt{\sigma^2+\epsilon}}, \qquad
    y_i = \gamma\,\hat{x}_i + \beta .

* **Batch norm** (Ioffe & Szegedy, 2015, "Batch Normalization: Accelerating Deep Network
  Training by Reducing Internal Covariate Shift"): :math:`\mathcal{B}` = one channel over the
  batch and every spatial position; at evaluation time running estimates of :math:`\mu` and
  :math:`\sigma^2` replace the batch statistics. :func:`batch_norm`, :class:`BatchNorm1d`,
  :class:`BatchNorm2d`, :class:`BatchNorm3d`; the backward pass is derived by hand in
  :class:`BatchNormFunction`.
* **Layer norm** (Ba, Kiros & Hinton, 2016, "Layer Normalization"): :math:`\mathcal{B}` = the
  last ``len(normalized_shape)`` axes of one example. :func:`layer_norm`, :class:`LayerNorm`.
* **Group norm** (Wu & He, 2018, "Group Normalization"): :math:`\mathcal{B}` = one group of
  ``C / G`` channels of one example, with every spatial position. :func:`group_norm`,
  :class:`GroupNorm`.
* **RMS norm** (Zhang & Sennrich, 2019, "Root Mean Square Layer Normalization"): like layer
  norm without centring and without :math:`\beta`,
  :math:`y_i = \gamma_i x_i / \sqrt{\frac{1}{m}\sum_j x_j^2 + \epsilon}`. :func:`rms_norm`,
  :class:`RMSNorm`.

The batch norms run under ``torch.func`` transforms (``vmap``, ``grad``, ``jvp``) where
torch's do, and under forward-mode AD; they keep torch's memory formats and handle empty
batches as torch does. They subclass torch's private ``_BatchNorm`` only so that torch's
tools for batch norms (``torch.optim.swa_utils.update_bn``, ...) recognize them.

:func:`update_bn` recomputes the running statistics of a trained network (ours and torch's
batch norms alike). :func:`lenet` builds the LeNet of *Dive into Deep Learning*'s
batch-normalization chapter with any batch-norm classes (ours, ``torch.nn``'s, or none).

Example::

    >>> import torch
    >>> from normtut import normalization as nnorm
    >>> bn = nnorm.BatchNorm2d(6)
    >>> bn.load_state_dict(torch.nn.BatchNorm2d(6).state_dict())
    <All keys matched successfully>
    >>> bn(torch.randn(8, 6, 4, 4)).shape
    torch.Size([8, 6, 4, 4])
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import Parameter

__all__ = [
    "BatchNormFunction",
    "batch_norm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "update_bn",
    "layer_norm",
    "LayerNorm",
    "group_norm",
    "GroupNorm",
    "rms_norm",
    "RMSNorm",
    "lenet",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_SCALAR_TYPE_NAMES = {
    torch.bool: "Bool",
    torch.uint8: "Byte",
    torch.int8: "Char",
    torch.int16: "Short",
    torch.int32: "Int",
    torch.int64: "Long",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


# --- shared helpers ------------------------------------------------------------------------


def _verify_batch_size(size: Sequence[int]) -> None:
    """Raise torch's ``ValueError`` when each channel would see a single value."""
    size_prods = size[0]
    for s in size[2:]:
        size_prods *= s
    if size_prods == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {size}"
        )


def _check_floating(input: Tensor, op: str) -> None:
    if not input.is_floating_point():
        name = _SCALAR_TYPE_NAMES.get(input.dtype, str(input.dtype).removeprefix("torch."))
        raise NotImplementedError(f"\"{op}\" not implemented for '{name}'")


def _opmath(dtype: torch.dtype) -> torch.dtype:
    """The dtype the arithmetic runs in: float32 for float16/bfloat16 (as torch does)."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _dtype_name(dtype: torch.dtype) -> str:
    """torch's C++ name of a floating dtype (``Float``, ``Double``, ...), for messages."""
    names = {
        torch.float32: "Float",
        torch.float64: "Double",
        torch.float16: "Half",
        torch.bfloat16: "BFloat16",
    }
    return names.get(dtype, str(dtype).removeprefix("torch."))


def _check_param_dtype(input: Tensor, *tensors: Tensor | None) -> None:
    """torch's CPU rule: parameters have the input's dtype (or float32 for half inputs)."""
    allowed = {input.dtype, _opmath(input.dtype)}
    for t in tensors:
        if t is not None and t.dtype not in allowed:
            raise RuntimeError(
                "mixed dtype (CPU): expect parameter to have scalar type of "
                f"{_dtype_name(input.dtype)}"
            )


# --- batch normalization -------------------------------------------------------------------


class BatchNormFunction(torch.autograd.Function):
    r"""Batch normalization with batch statistics, forward and a hand-derived backward.

    ``BatchNormFunction.apply(x, weight, bias, eps)`` returns ``(y, mean, var)``: the output
    and the per-channel batch mean and *biased* variance (these two carry no gradient; the
    caller uses them for the running estimates). ``x`` has shape :math:`(N, C, *)`;
    ``weight``/``bias`` (:math:`\gamma`, :math:`\beta`) have :math:`C` elements or are ``None``.

    **Forward.** For one channel, over its :math:`m = N\cdot\prod *` entries,

    .. math::
        \mu = \tfrac{1}{m}\textstyle\sum_i x_i,\quad
        \sigma^2 = \tfrac{1}{m}\textstyle\sum_i (x_i-\mu)^2,\quad
        r = (\sigma^2+\epsilon)^{-1/2},\quad
        \hat{x}_i = (x_i-\mu)\,r,\quad
        y_i = \gamma\hat{x}_i + \beta .

    **Backward.** Given :math:`g_i = \partial L/\partial y_i`,

    .. math::
        \frac{\partial L}{\partial \beta} = \sum_i g_i, \qquad
        \frac{\partial L}{\partial \gamma} = \sum_i g_i\,\hat{x}_i .

    For the input, :math:`\partial\mu/\partial x_j = 1/m` and
    :math:`\partial\sigma^2/\partial x_j = 2(x_j-\mu)/m`, so
    :math:`\partial \hat{x}_i/\partial x_j = r\,(\delta_{ij} - \tfrac{1}{m}
    - \tfrac{1}{m}\hat{x}_i\hat{x}_j)`. With :math:`\partial L/\partial\hat{x}_i = \gamma g_i`,

    .. math::
        \frac{\partial L}{\partial x_j}
        = \frac{\gamma\, r}{m}\Big(m\,g_j - \sum_i g_i - \hat{x}_j \sum_i g_i\hat{x}_i\Big)
        = \gamma\, r\,\Big(g_j - \frac{1}{m}\frac{\partial L}{\partial \beta}
          - \frac{\hat{x}_j}{m}\frac{\partial L}{\partial \gamma}\Big).

    The forward returns :math:`\mu` and :math:`\sigma^2`, and the context keeps them with
    :math:`x` (not :math:`\hat{x}`: ``x`` is alive anyway; :math:`r` is recomputed from
    :math:`\sigma^2`). The backward needs two reductions, :math:`\sum_i g_i` and
    :math:`\sum_i g_i (x_i-\mu)`. It is differentiable once: asking for a second derivative
    (``create_graph=True``, then ``backward`` again) raises a ``RuntimeError``.

    **Transforms.** ``forward`` takes no ``ctx`` (``setup_context`` fills it). In plain
    eager mode each half writes into one buffer of its own; under a ``torch.func`` transform
    or a batched backward the same operations run out of place, so ``torch.func.vmap`` can
    batch them (``generate_vmap_rule``): ensembles, per-sample gradients, batched gradients
    (``is_grads_batched=True``, ``gradcheck(..., check_batched_grad=True)``). Forward-mode AD
    (``torch.func.jvp``, ``torch.autograd.forward_ad``) is the ``jvp`` of the subclass that
    :func:`batch_norm` uses in eager mode: with :math:`\dot x` the tangent of :math:`x` and
    :math:`\dot d = \dot x - \tfrac1m\sum_i \dot x_i`,

    .. math::
        \dot{\hat x}_j = r\Big(\dot d_j - \hat x_j\,\tfrac1m\textstyle\sum_i \hat x_i \dot d_i
        \Big),\qquad
        \dot y_j = \gamma\,\dot{\hat x}_j + \dot\gamma\,\hat x_j + \dot\beta .

    Under ``torch.compile`` both halves are traced as written (``fullgraph=True`` works):
    the compiled backward is this one, not autograd through the forward, and the compiler
    fuses each half with its neighbours (in BN-LeNet: the sigmoid and max-pool that follow
    the forward, and their backward). Dynamo cannot trace a custom ``jvp``, so compiled
    code uses this class, without it. On the CPU, compile convolutional models with
    ``options={"layout_optimization": False}``: by default inductor stores every convolution
    output channels-last, and with BN-LeNet's 6 and 16 channels the conversions and
    channels-last reductions cost more than they save (``benchmarks/README.md``).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        y, mean, var, _ = _batch_norm_forward(x, weight, bias, eps)
        return y, mean, var

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, weight, bias, eps = inputs[:4]
        _, mean, var = output
        ctx.save_for_backward(x, mean, var, weight)  # r and x_hat = (x - mu) r recomputed
        ctx.save_for_forward(x, mean, var, weight)
        ctx.eps = eps
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.mark_non_differentiable(mean, var)
        ctx.set_materialize_grads(False)  # a missing tangent is None, not zeros

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_y: Tensor, _grad_mean: Tensor | None, _grad_var: Tensor | None, *_: Any
    ) -> tuple[Tensor | None, ...]:
        if grad_y is None:
            return (None,) * len(ctx.needs_input_grad)
        x, mean, var, weight = ctx.saved_tensors
        invstd = torch.rsqrt(var + ctx.eps)  # the forward's r, bit for bit
        grad_x, dgamma, dbeta = _batch_norm_backward(
            grad_y, x, mean, invstd, weight, ctx.needs_input_grad[0]
        )
        grad_w = grad_b = None
        if weight is not None and ctx.needs_input_grad[1]:
            grad_w = dgamma.to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_b = dbeta.to(ctx.bias_dtype)
        grads = (grad_x if ctx.needs_input_grad[0] else None, grad_w, grad_b, None)
        return grads + (None,) * (len(ctx.needs_input_grad) - 4)


class _BatchNormFunctionJvp(BatchNormFunction):
    """:class:`BatchNormFunction` with forward-mode AD, for eager mode (Dynamo refuses a
    custom ``jvp``). ``apply(x, weight, bias, eps, running)`` with ``running`` ``None`` or
    the tuple ``(running_mean, running_var, momentum)``: the running estimates are updated
    inside ``forward``, below any ``torch.func`` transform, as torch's kernel does (a
    transform may not write its values into a tensor it did not create); inside a tuple
    they are no input of the autograd graph, so a tangent on them is ignored, as torch
    ignores it in training."""

    @staticmethod
    def forward(
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        eps: float,
        running: tuple[Tensor, Tensor, float] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        y, mean, var, _ = _batch_norm_forward(x, weight, bias, eps)
        if running is not None:
            _update_running_stats(x, running[0], running[1], mean, var, running[2])
        return y, mean, var

    @staticmethod
    def jvp(ctx: Any, x_t: Tensor | None, weight_t: Tensor | None, bias_t: Tensor | None, *_):
        x, mean, var, weight = ctx.saved_tensors
        return _batch_norm_jvp(x, mean, var, weight, ctx.eps, x_t, weight_t, bias_t), None, None


def _in_place_ok(*tensors: Tensor | None) -> bool:
    """Whether the batch-norm halves may write into their own buffers: plain eager mode.

    Under ``torch.func`` transforms and the vmap of ``is_grads_batched=True`` an operand may
    carry a batch dimension that the buffer lacks, and an in-place write of it fails; under
    ``torch.compile`` the compiler plans the buffers itself. There the halves run out of
    place (the same operations, the same numbers, two more tensors of ``x``'s size)."""
    if torch.compiler.is_compiling():
        return False
    functorch = torch._C._functorch
    return functorch.maybe_current_level() is None and not any(
        t is not None and functorch.is_legacy_batchedtensor(t) for t in tensors
    )


def _batch_norm_forward(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The forward of :class:`BatchNormFunction`: ``(y, mu, sigma^2, r)``."""
    dims = (0, *range(2, x.dim()))  # every axis but the channels
    shape = (-1,) + (1,) * (x.dim() - 2)  # (C, 1, ..., 1) broadcasts against (N, C, *)
    xf = x.to(_opmath(x.dtype))  # float16/bfloat16 compute in float32, as torch does
    # Statistics by the corrected two-pass algorithm (Chan, Golub & LeVeque 1983): a first
    # mean, then the deviations from it, whose mean corrects the rounding of the first.
    # As exact as torch's kernel (which accumulates in double) and, on the CPU, several
    # times faster than Welford's one-pass torch.var_mean over (N, H, W). In eager mode
    # every step writes into y's buffer: one new tensor per call, as torch's kernel.
    mean = xf.mean(dims)
    y = torch.sub(xf, mean.view(shape))  # x - mean, rounded mean
    delta = y.mean(dims)  # the rounding error of the first mean
    var = y.mul_(y).mean(dims).sub_(delta * delta)  # biased variance sigma^2 (y * y)
    mean = mean + delta  # mu
    invstd = torch.rsqrt(var + eps)  # r = 1 / sqrt(sigma^2 + eps)
    scale = invstd if weight is None else invstd * weight.to(xf.dtype)  # gamma r
    beta = None if bias is None else bias.to(xf.dtype).view(shape)
    if _in_place_ok(x, weight, bias):
        torch.sub(xf, mean.view(shape), out=y).mul_(scale.view(shape))  # gamma x_hat
        if beta is not None:
            y.add_(beta)  # + beta
    else:  # the same operations out of place (see _in_place_ok)
        y = torch.sub(xf, mean.view(shape)) * scale.view(shape)
        if beta is not None:
            y = y + beta
    return y.to(x.dtype), mean, var, invstd


def _batch_norm_backward(
    grad_y: Tensor,
    x: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    need_grad_x: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """The backward of :class:`BatchNormFunction`: ``(dL/dx, dL/dgamma, dL/dbeta)``."""
    dims = (0, *range(2, x.dim()))
    shape = (-1,) + (1,) * (x.dim() - 2)
    xf = x.to(mean.dtype)
    g = grad_y.to(mean.dtype)
    m = max(x.numel() // x.shape[1], 1) if x.shape[1] else 1
    in_place = _in_place_ok(grad_y, x, mean, invstd, weight)
    dbeta = g.sum(dims)  # dL/dbeta = sum_i g_i
    # dL/dgamma = sum_i g_i x_hat_i = r sum_i g_i (x_i - mu), in a buffer that becomes dx
    x_mu = torch.sub(xf, mean.view(shape))
    buf = x_mu.mul_(g) if in_place else x_mu * g
    dgamma = buf.sum(dims).mul_(invstd)
    if not need_grad_x:
        return buf, dgamma, dbeta
    scale = invstd if weight is None else invstd * weight.to(mean.dtype)  # gamma r
    # dx = gamma r g - (gamma r dgamma / m) x_hat - gamma r dbeta / m, with x_hat = (x - mu) r;
    # (x - mu) is recomputed rather than x r - mu r, which loses digits when |mu| >> sigma
    k1 = (scale * invstd * dgamma).div_(-m).view(shape)
    k0 = (scale * dbeta).div_(-m).view(shape)
    if in_place:
        grad_x = torch.sub(xf, mean.view(shape), out=buf).mul_(k1)
        grad_x.addcmul_(g, scale.view(shape)).add_(k0)
    else:  # the same operations out of place (see _in_place_ok)
        grad_x = x_mu * k1 + g * scale.view(shape) + k0
    return grad_x.to(x.dtype), dgamma, dbeta


def _batch_norm_jvp(
    x: Tensor,
    mean: Tensor,
    var: Tensor,
    weight: Tensor | None,
    eps: float,
    x_t: Tensor | None,
    weight_t: Tensor | None,
    bias_t: Tensor | None,
) -> Tensor:
    r"""The tangent of ``y`` (forward-mode AD of :class:`BatchNormFunction`); ``None`` when
    only the running estimates carry tangents (they do not enter ``y``)."""
    if x_t is None and weight_t is None and bias_t is None:
        return None
    dims = (0, *range(2, x.dim()))
    shape = (-1,) + (1,) * (x.dim() - 2)
    invstd = torch.rsqrt(var + eps).view(shape)
    x_hat = (x.to(mean.dtype) - mean.view(shape)) * invstd
    y_t = torch.zeros_like(x_hat)
    if x_t is not None:
        t = x_t.to(mean.dtype)
        d = t - t.mean(dims).view(shape)  # the centred tangent
        x_hat_t = (d - x_hat * (x_hat * d).mean(dims).view(shape)) * invstd
        y_t = y_t + (x_hat_t if weight is None else x_hat_t * weight.to(mean.dtype).view(shape))
    if weight_t is not None:
        y_t = y_t + x_hat * weight_t.to(mean.dtype).view(shape)
    if bias_t is not None:
        y_t = y_t + bias_t.to(mean.dtype).view(shape)
    return y_t.to(x.dtype)


def _update_running_stats(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    mean: Tensor,
    var: Tensor,
    momentum: float,
) -> None:
    r"""``running += momentum * (batch - running)``, in place (the module's buffers), with the
    unbiased variance :math:`\tfrac{m}{m-1}\sigma^2` (Bessel's correction)."""
    m = x.numel() // x.size(1)
    with torch.no_grad():
        running_mean.lerp_(mean.view(running_mean.shape).to(running_mean.dtype), momentum)
        unbiased = var * (m / (m - 1))
        running_var.lerp_(unbiased.view(running_var.shape).to(running_var.dtype), momentum)


class _BatchNormEval(torch.autograd.Function):
    r"""Batch normalization with the running estimates (evaluation), an affine map of ``x``:
    :math:`y = x\,s + t` with :math:`s = \gamma/\sqrt{\hat\sigma^2+\epsilon}` and
    :math:`t = \beta - \hat\mu s`; ``apply(x, running_mean, running_var, weight, bias, eps)``.

    Its backward (:math:`\partial L/\partial x = g\,s` in ``x``'s memory format,
    :math:`\partial L/\partial\gamma = \sum g\,\hat x`, :math:`\partial L/\partial\beta =
    \sum g`) gives no gradient to the running estimates: :func:`batch_norm` refuses them
    with ``requires_grad``, as torch does."""

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        eps: float,
    ) -> Tensor:
        shape = (-1,) + (1,) * (x.dim() - 2)
        dtype = _opmath(x.dtype)
        scale = torch.rsqrt(running_var.reshape(-1).to(dtype) + eps)
        if weight is not None:
            scale = scale * weight.reshape(-1).to(dtype)
        shift = -running_mean.reshape(-1).to(dtype) * scale
        if bias is not None:
            shift = shift + bias.reshape(-1).to(dtype)
        return torch.addcmul(shift.view(shape), x.to(dtype), scale.view(shape)).to(x.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, running_mean, running_var, weight, bias, eps = inputs
        ctx.save_for_backward(x, running_mean, running_var, weight)
        ctx.save_for_forward(x, running_mean, running_var, weight)
        ctx.eps = eps
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.memory_format = _memory_format(x)
        ctx.set_materialize_grads(False)  # a missing tangent is None, not zeros

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor | None) -> tuple[Tensor | None, ...]:
        if grad_y is None:
            return (None,) * 6
        x, running_mean, running_var, weight = ctx.saved_tensors
        dims = (0, *range(2, x.dim()))
        shape = (-1,) + (1,) * (x.dim() - 2)
        dtype = _opmath(x.dtype)
        g = grad_y.to(dtype)
        invstd = torch.rsqrt(running_var.reshape(-1).to(dtype) + ctx.eps)
        scale = invstd if weight is None else invstd * weight.reshape(-1).to(dtype)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = (g * scale.view(shape)).to(x.dtype)
            grad_x = grad_x.contiguous(memory_format=ctx.memory_format)  # torch's layout
        dshift = g.sum(dims)  # dL/dt
        if weight is not None and ctx.needs_input_grad[3]:
            # dL/dgamma = sum g x_hat = r (sum g x - mu-hat sum g): dL/ds r + dL/dt (-mu-hat r)
            dscale = (g * x.to(dtype)).sum(dims)
            running = running_mean.reshape(-1).to(dtype)
            grad_w = ((dscale - running * dshift) * invstd).to(weight.dtype).view(weight.shape)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[4]:
            grad_b = dshift.to(ctx.bias_dtype)
        return grad_x, None, None, grad_w, grad_b, None


class _BatchNormEvalJvp(_BatchNormEval):
    """:class:`_BatchNormEval` with forward-mode AD, for eager mode. As torch: a tangent on
    the running estimates together with one on ``x``, ``weight`` or ``bias`` raises; alone,
    it is ignored: the output's tangent is zero (``torch.func.jvp`` gives torch's zeros;
    under ``torch.autograd.forward_ad`` torch leaves the tangent undefined, ``None``, which
    a custom ``jvp`` cannot return)."""

    @staticmethod
    def jvp(ctx: Any, x_t, running_mean_t, running_var_t, weight_t, bias_t, _eps_t):
        tangents = (x_t, weight_t, bias_t)
        if running_mean_t is not None or running_var_t is not None:
            if any(t is not None for t in tangents):
                raise RuntimeError(
                    "batch_norm is not differentiable wrt running_mean and running_var, they "
                    "cannot have forward grad defined"
                )
        x, running_mean, running_var, weight = ctx.saved_tensors
        shape = (-1,) + (1,) * (x.dim() - 2)
        dtype = _opmath(x.dtype)
        invstd = torch.rsqrt(running_var.reshape(-1).to(dtype) + ctx.eps).view(shape)
        scale = invstd if weight is None else invstd * weight.reshape(-1).to(dtype).view(shape)
        y_t = torch.zeros(x.shape, dtype=dtype, device=x.device)
        if x_t is not None:
            y_t = y_t + x_t.to(dtype) * scale
        if weight_t is not None:
            x_hat = (x.to(dtype) - running_mean.reshape(-1).to(dtype).view(shape)) * invstd
            y_t = y_t + x_hat * weight_t.reshape(-1).to(dtype).view(shape)
        if bias_t is not None:
            y_t = y_t + bias_t.reshape(-1).to(dtype).view(shape)
        return y_t.to(x.dtype)


def _memory_format(x: Tensor) -> torch.memory_format:
    """``x``'s memory format as torch's kernels read it (``suggest_memory_format``);
    contiguous where it cannot be asked (inside ``vmap``)."""
    try:
        if x.dim() == 4 and not x.is_contiguous():
            if x.is_contiguous(memory_format=torch.channels_last):
                return torch.channels_last
        if x.dim() == 5 and not x.is_contiguous():
            if x.is_contiguous(memory_format=torch.channels_last_3d):
                return torch.channels_last_3d
    except RuntimeError:  # a batched tensor has no strides to ask
        pass
    return torch.contiguous_format


def _check_numel(name: str, t: Tensor | None, c: int) -> None:
    if t is not None and t.numel() != c:
        raise RuntimeError(f"{name} should contain {c} elements not {t.numel()}")


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    r"""Batch normalization of ``input`` :math:`(N, C, *)` per channel; same semantics as
    :func:`torch.nn.functional.batch_norm`.

    With ``training=True`` the batch statistics normalize (biased variance, through
    :class:`BatchNormFunction` and its hand-written backward) and, when ``running_mean`` and
    ``running_var`` are given, these are updated in place with the *unbiased* variance:

    .. math::
        \hat\mu \leftarrow (1-\text{momentum})\,\hat\mu + \text{momentum}\,\mu_\mathcal{B},\qquad
        \hat\sigma^2 \leftarrow (1-\text{momentum})\,\hat\sigma^2
            + \text{momentum}\,\tfrac{m}{m-1}\sigma^2_\mathcal{B}.

    With ``training=False`` the running estimates normalize:
    :math:`y = \gamma\,(x-\hat\mu)/\sqrt{\hat\sigma^2+\epsilon} + \beta` (an affine map of
    ``x``; a forward-mode tangent on the running estimates raises, as in torch).

    Edge cases as torch's: an empty input gives an empty output (and zero gradients for
    ``weight`` and ``bias``) and leaves the running estimates alone; a 1-D input has no
    channel axis, so torch counts 0 channels (``running_mean should contain 0 elements not
    5``) and only an empty one passes.

    Ioffe & Szegedy (2015), "Batch Normalization: Accelerating Deep Network Training by
    Reducing Internal Covariate Shift".
    """
    if training:
        _verify_batch_size(input.size())
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    elif eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    if input.numel() == 0:  # torch's shortcut: no statistics, no checks, no update
        y = input.clone()
        if weight is not None:
            y = y * weight[0]
        if bias is not None:
            y = y + bias[0]
        return y
    # torch reads the channel count as size(1), and as 0 for a 1-D (or 0-D) input
    c = input.size(1) if input.dim() > 1 else 0
    for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
        if stat is not None:
            _check_numel(name, stat, c)
        elif not training:
            raise RuntimeError(f"{name} must be defined in evaluation mode")
    _check_numel("weight", weight, c)
    _check_numel("bias", bias, c)
    _check_floating(input, "batch_norm")
    c = input.size(1)  # a 1-D input fails here with torch's IndexError
    if training and (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if torch.is_grad_enabled():
        for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
            if stat is not None and stat.requires_grad:
                raise RuntimeError(
                    f"The function 'native_batch_norm' is not differentiable with respect to "
                    f"argument '{name}'. This input cannot have requires_grad True."
                )
    _check_param_dtype(input, running_mean, running_var, weight, bias)
    w = weight.reshape(-1) if weight is not None else None
    b = bias.reshape(-1) if bias is not None else None
    compiling = torch.compiler.is_compiling()  # Dynamo cannot trace the custom jvp

    if not training:
        function = _BatchNormEval if compiling else _BatchNormEvalJvp
        return function.apply(input, running_mean, running_var, w, b, eps)

    if compiling:
        y, mean, var = BatchNormFunction.apply(input, w, b, eps)
        if running_mean is not None:
            _update_running_stats(input, running_mean, running_var, mean, var, momentum)
        return y
    running = None if running_mean is None else (running_mean, running_var, momentum)
    y, _, _ = _BatchNormFunctionJvp.apply(input, w, b, eps, running)
    return y


class _NormBase(nn.Module):
    """Parameters, buffers, state-dict versioning and ``extra_repr`` of the batch norms.

    Mirrors ``torch.nn.modules.batchnorm._NormBase``: ``weight``/``bias`` (``None`` without
    ``affine``), buffers ``running_mean``/``running_var``/``num_batches_tracked`` (``None``
    without ``track_running_stats``), and ``_version = 2`` so that a checkpoint written before
    ``num_batches_tracked`` existed loads with the counter kept (or set to 0).
    """

    _version = 2
    num_features: int
    eps: float
    momentum: float | None
    affine: bool
    track_running_stats: bool

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        factory_kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
        nn.Module.__init__(self)  # not torch's _BatchNorm.__init__ (see _BatchNorm)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if self.affine:
            self.weight = Parameter(torch.empty(num_features, **factory_kwargs))
            if bias:
                self.bias = Parameter(torch.empty(num_features, **factory_kwargs))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory_kwargs))
            self.register_buffer("running_var", torch.ones(num_features, **factory_kwargs))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, batch counter 0."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics and set :math:`\\gamma = 1`, :math:`\\beta = 0`."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def _check_input_dim(self, input: Tensor) -> None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        version = local_metadata.get("version", None)
        if (version is None or version < 2) and self.track_running_stats:
            # version 2 added num_batches_tracked: an older checkpoint keeps our counter
            key = prefix + "num_batches_tracked"
            if key not in state_dict:
                state_dict[key] = (
                    self.num_batches_tracked
                    if self.num_batches_tracked is not None
                    and self.num_batches_tracked.device != torch.device("meta")
                    else torch.tensor(0, dtype=torch.long)
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class _BatchNorm(_NormBase, nn.modules.batchnorm._BatchNorm):
    """The forward shared by the batch norms.

    Torch's private ``torch.nn.modules.batchnorm._BatchNorm`` is a base only so that tools
    keyed on it recognize ours: :func:`torch.optim.swa_utils.update_bn`,
    :func:`torch.func.replace_all_batch_norm_modules_`, FSDP's mixed precision (which keeps
    batch norms in float32), ``nn.SyncBatchNorm.convert_sync_batchnorm`` (which replaces
    them with torch's own ``SyncBatchNorm``). Nothing of torch's runs: ``_NormBase`` and this
    class define every method torch's two classes define (``__init__``, ``forward``,
    ``reset_*``, ``_check_input_dim``, ``extra_repr``, ``_load_from_state_dict``), and they
    come first in the method resolution order.
    """

    def _running_factor(self) -> float:
        r"""Count a training batch and return the weight of its statistics in the running
        estimates: ``momentum``, or :math:`1/\text{num\_batches\_tracked}` (the cumulative
        average) when ``momentum`` is ``None``."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        return factor

    def forward(self, input: Tensor) -> Tensor:
        """Normalize ``input``; train or eval comes from ``self.training`` only.

        Training: batch statistics normalize and, with ``track_running_stats``, the running
        estimates are updated (momentum, or the cumulative average
        :math:`1/\\text{num\\_batches\\_tracked}` when ``momentum`` is ``None``). Eval: the
        running estimates normalize, or the batch statistics when there are none.
        """
        self._check_input_dim(input)
        factor = self._running_factor()
        if self.training:
            use_batch_stats = True
        else:
            use_batch_stats = self.running_mean is None and self.running_var is None
        track = not self.training or self.track_running_stats
        return batch_norm(
            input,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight,
            self.bias,
            use_batch_stats,
            factor,
            self.eps,
        )


class BatchNorm1d(_BatchNorm):
    r"""Batch normalization over a 2-D :math:`(N, C)` or 3-D :math:`(N, C, L)` input; a drop-in
    for :class:`torch.nn.BatchNorm1d`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}\,\gamma + \beta

    Statistics per channel over :math:`N` (and :math:`L`); biased variance to normalize,
    unbiased variance in ``running_var``; ``momentum`` weights the new batch,
    ``momentum=None`` gives the cumulative average. Ioffe & Szegedy (2015).

    Args: ``num_features`` (:math:`C`), ``eps=1e-5``, ``momentum=0.1`` (or ``None``),
    ``affine=True``, ``track_running_stats=True``, ``device``, ``dtype``, keyword ``bias=True``.

    ``isinstance(bn, torch.nn.modules.batchnorm._BatchNorm)`` is true (for the 2-D and 3-D
    layers too), so torch's tools for batch norms, such as
    :func:`torch.optim.swa_utils.update_bn`, treat these layers as torch's; every method
    is still ours (see ``_BatchNorm``). ``isinstance(bn, torch.nn.BatchNorm1d)`` is false:
    code that checks the concrete class (``torch.fx`` fusion patterns, quantization) does
    not see them.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 2 and input.dim() != 3:
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")


class BatchNorm2d(_BatchNorm):
    r"""Batch normalization over a 4-D :math:`(N, C, H, W)` input; a drop-in for
    :class:`torch.nn.BatchNorm2d`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}\,\gamma + \beta

    Statistics per channel over :math:`N, H, W`. See :class:`BatchNorm1d` for the arguments.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")


class BatchNorm3d(_BatchNorm):
    r"""Batch normalization over a 5-D :math:`(N, C, D, H, W)` input; a drop-in for
    :class:`torch.nn.BatchNorm3d`.

    Statistics per channel over :math:`N, D, H, W`. See :class:`BatchNorm1d` for the
    arguments.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 5:
            raise ValueError(f"expected 5D input (got {input.dim()}D input)")


def _is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, (_BatchNorm, nn.modules.batchnorm._BatchNorm))


def update_bn(
    loader: Iterable[Any], model: nn.Module, device: torch.device | str | int | None = None
) -> None:
    r"""Recompute the running statistics of every batch norm in ``model`` from ``loader``.

    The same as :func:`torch.optim.swa_utils.update_bn` (which also sees ours, as they
    subclass torch's ``_BatchNorm``), for ours and torch's alike: reset ``running_mean`` and
    ``running_var``, switch to the cumulative average (``momentum=None``), run one pass
    over ``loader`` in train mode, then restore the momenta. Each batch is a tensor or a
    list/tuple whose first element is the input; ``device``, if given, is where batches go.
    Differences from torch's: the pass runs under ``torch.no_grad()``, and every submodule
    gets back the mode it had.

    Why: the running estimates average the last ~1/momentum batches, taken with weights that
    have changed since; after training with a large learning rate they can lag behind the
    final weights enough to cost several points of test accuracy. With the weights fixed,
    the cumulative average over the training set is the estimate the paper prescribes for
    inference (Ioffe & Szegedy 2015, Alg. 2).
    """
    norms = [m for m in model.modules() if _is_batch_norm(m)]
    if not norms:
        return
    momenta = {m: m.momentum for m in norms}
    modes = [(m, m.training) for m in model.modules()]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        with torch.no_grad():
            for batch in loader:
                if isinstance(batch, (list, tuple)):
                    batch = batch[0]
                if device is not None:
                    batch = batch.to(device)
                model(batch)
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, mode in modes:
            m.training = mode


def _register_affine(
    module: nn.Module,
    shape: tuple[int, ...],
    affine: bool,
    bias: bool,
    factory_kwargs: dict[str, Any],
) -> None:
    """``weight`` (gamma) and ``bias`` (beta) of ``shape``, or ``None`` entries as torch keeps
    them when the layer has no affine part, so that ``state_dict`` keys match."""
    weight = Parameter(torch.empty(shape, **factory_kwargs)) if affine else None
    beta = Parameter(torch.empty(shape, **factory_kwargs)) if affine and bias else None
    module.register_parameter("weight", weight)
    module.register_parameter("bias", beta)


def _reset_affine(module: nn.Module) -> None:
    """gamma = 1, beta = 0 (a no-op for the missing ones)."""
    if module.weight is not None:
        nn.init.ones_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


# --- layer normalization -------------------------------------------------------------------


def _as_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        return (int(normalized_shape),)
    return tuple(normalized_shape)


def _check_normalized(
    input: Tensor,
    normalized_shape: Sequence[int],
    weight: Tensor | None,
    bias: Tensor | None,
    sep: str,
) -> tuple[int, ...]:
    """torch's checks of ``normalized_shape`` against the input, weight and bias."""
    if isinstance(normalized_shape, numbers.Integral) or not isinstance(normalized_shape, Sequence):
        raise TypeError(
            "layer_norm(): argument 'normalized_shape' (position 2) must be tuple of ints, "
            f"not {type(normalized_shape).__name__}"
        )
    shape = tuple(int(s) for s in normalized_shape)
    if len(shape) < 1:
        raise RuntimeError(
            "Expected normalized_shape to be at least 1-dimensional, i.e., containing at "
            f"least one element, but got normalized_shape = {list(shape)}"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise RuntimeError(
                f"Expected {name} to be of same shape as normalized_shape, but got {name} of "
                f"shape {list(t.shape)} and normalized_shape = {list(shape)}"
            )
    if input.dim() < len(shape) or tuple(input.shape[input.dim() - len(shape) :]) != shape:
        inner = ", ".join(str(s) for s in shape)
        raise RuntimeError(
            f"Given normalized_shape={list(shape)}, expected input with shape "
            f"[*{sep}{inner}], but got input of size{list(input.shape)}"
        )
    return shape


def layer_norm(
    input: Tensor,
    normalized_shape: Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    r"""Layer normalization over the last ``len(normalized_shape)`` axes; same semantics as
    :func:`torch.nn.functional.layer_norm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}\odot\gamma + \beta

    with mean and biased variance over the normalized axes of each example, and
    :math:`\gamma`, :math:`\beta` of shape ``normalized_shape`` (elementwise). The same in
    training and evaluation; the output is contiguous, as torch's, whatever the input's
    memory format. Ba, Kiros & Hinton (2016), "Layer Normalization".
    """
    shape = _check_normalized(input, normalized_shape, weight, bias, sep=", ")
    _check_floating(input, "layer_norm")
    dims = tuple(range(-len(shape), 0))
    x = input.to(_opmath(input.dtype)).contiguous()  # torch's output is contiguous
    var, mean = torch.var_mean(x, dim=dims, correction=0, keepdim=True)
    y = (x - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight.to(x.dtype)
    if bias is not None:
        y = y + bias.to(x.dtype)
    return y.to(input.dtype)


class LayerNorm(nn.Module):
    r"""Layer normalization over the last axes; a drop-in for :class:`torch.nn.LayerNorm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}\odot\gamma + \beta

    Args: ``normalized_shape`` (an int or a shape: the trailing axes to normalize over),
    ``eps=1e-5``, ``elementwise_affine=True`` (learn ``weight`` :math:`\gamma` = 1 and ``bias``
    :math:`\beta` = 0 of shape ``normalized_shape``), ``bias=True``, ``device``, ``dtype``.
    Ba, Kiros & Hinton (2016).
    """

    normalized_shape: tuple[int, ...]
    eps: float
    elementwise_affine: bool

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        _register_affine(self, self.normalized_shape, elementwise_affine, bias, factory_kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """:math:`\\gamma = 1`, :math:`\\beta = 0`."""
        _reset_affine(self)

    def forward(self, input: Tensor) -> Tensor:
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )


# --- group normalization -------------------------------------------------------------------


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    r"""Group normalization of :math:`(N, C, *)`; same semantics as
    :func:`torch.nn.functional.group_norm`.

    The :math:`C` channels are split into ``num_groups`` groups of :math:`C/G` consecutive
    channels; each group of each example is normalized with its own mean and biased variance
    (over its channels and every spatial position), then scaled and shifted per channel:

    .. math::
        y_{ncs} = \frac{x_{ncs} - \mu_{ng}}{\sqrt{\sigma^2_{ng} + \epsilon}}\,\gamma_c + \beta_c,
        \qquad g = \lfloor c / (C/G) \rfloor .

    ``G = 1`` is layer norm over :math:`(C, *)` with per-channel affine; ``G = C`` is instance
    norm. As torch's: a channels-last input gives a channels-last output (and input
    gradient, for an output gradient laid out like the output), an empty batch an empty
    output and zero gradients. One difference: with no values per group (a zero-size
    spatial axis) the ``weight`` gradient is 0 where torch 2.13's is NaN. Wu & He (2018),
    "Group Normalization".
    """
    if input.dim() < 2:
        raise RuntimeError(
            f"Expected at least 2 dimensions for input tensor but received {input.dim()}"
        )
    n, c = input.shape[0], input.shape[1]
    _verify_batch_size([n * c // num_groups, num_groups, *input.shape[2:]])
    if c % num_groups != 0:
        raise RuntimeError(
            "Expected number of channels in input to be divisible by num_groups, but got "
            f"input of shape {list(input.shape)} and num_groups={num_groups}"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.dim() != 1 or t.numel() != c):
            raise RuntimeError(
                f"Expected {name} to be a vector of size equal to the number of channels in "
                f"input, but got {name} of shape {list(t.shape)} and input of shape "
                f"{list(input.shape)}"
            )
    _check_floating(input, "group_norm")
    x = input.to(_opmath(input.dtype))
    size = input.numel() // (n * num_groups) if n * num_groups else 0  # values per group
    grouped = x.reshape(n, num_groups, size)  # (a copy if x is channels-last)
    if size:
        var, mean = torch.var_mean(grouped, dim=-1, correction=0, keepdim=True)
    else:  # an empty batch (or no values per group): empty output, zero gradients
        var = mean = grouped.new_zeros(n, num_groups, 1)
    # the statistics of group g for each of its C/G channels, then elementwise on x itself,
    # which keeps x's memory format (channels-last stays channels-last, as in torch)
    per_channel = (n, c) + (1,) * (input.dim() - 2)
    mean = mean.expand(n, num_groups, c // num_groups).reshape(per_channel)
    rstd = torch.rsqrt(var + eps).expand(n, num_groups, c // num_groups).reshape(per_channel)
    y = (x - mean) * rstd
    shape = (-1,) + (1,) * (input.dim() - 2)
    if weight is not None:
        y = y * weight.to(x.dtype).view(shape)
    if bias is not None:
        y = y + bias.to(x.dtype).view(shape)
    return y.to(input.dtype)


class GroupNorm(nn.Module):
    r"""Group normalization; a drop-in for :class:`torch.nn.GroupNorm`.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}}\,\gamma + \beta

    with statistics per example and per group of ``num_channels // num_groups`` channels, and
    per-channel ``weight`` :math:`\gamma` (ones) and ``bias`` :math:`\beta` (zeros) when
    ``affine``. ``num_channels`` must be divisible by ``num_groups`` (``ValueError``).
    Wu & He (2018).
    """

    num_groups: int
    num_channels: int
    eps: float
    affine: bool

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        bias: bool = True,
    ) -> None:
        factory_kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError(
                f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})"
            )
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        _register_affine(self, (num_channels,), affine, bias, factory_kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """:math:`\\gamma = 1`, :math:`\\beta = 0`."""
        _reset_affine(self)

    def forward(self, input: Tensor) -> Tensor:
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
            f"bias={self.bias is not None}"
        )


# --- RMS normalization ---------------------------------------------------------------------


def rms_norm(
    input: Tensor,
    normalized_shape: Sequence[int],
    weight: Tensor | None = None,
    eps: float | None = None,
) -> Tensor:
    r"""Root-mean-square normalization over the last ``len(normalized_shape)`` axes; same
    semantics as :func:`torch.nn.functional.rms_norm`.

    .. math::
        y = \frac{x}{\mathrm{RMS}(x)}\odot\gamma, \qquad
        \mathrm{RMS}(x) = \sqrt{\epsilon + \tfrac{1}{m}\textstyle\sum_{i=1}^{m} x_i^2}

    No centring and no bias. ``eps=None`` means the machine epsilon of the computation
    type, ``torch.finfo(dtype).eps``, where float16/bfloat16 inputs compute in float32 (as
    torch does). Complex inputs compute as torch's do, with :math:`x^2` (not
    :math:`|x|^2`) and the machine epsilon of the real dtype. Zhang & Sennrich (2019), "Root
    Mean Square Layer Normalization".
    """
    shape = _check_normalized(input, normalized_shape, weight, None, sep="")
    if not input.is_complex():  # complex inputs compute as torch's: x^2, not |x|^2
        _check_floating(input, "rms_norm")
    dtype = _opmath(input.dtype)
    if eps is None:
        eps = torch.finfo(dtype).eps
    dims = tuple(range(-len(shape), 0))
    x = input.to(dtype)
    y = x * torch.rsqrt(x.pow(2).mean(dim=dims, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(dtype)
    return y.to(input.dtype)


class RMSNorm(nn.Module):
    r"""Root-mean-square normalization; a drop-in for :class:`torch.nn.RMSNorm`.

    .. math::
        y_i = \frac{x_i}{\sqrt{\epsilon + \frac{1}{m}\sum_{j=1}^{m} x_j^2}}\,\gamma_i

    Args: ``normalized_shape`` (int or shape), ``eps=None`` (machine epsilon of the computation
    type), ``elementwise_affine=True`` (``weight`` :math:`\gamma` = 1, no bias), ``device``,
    ``dtype``. Zhang & Sennrich (2019).
    """

    normalized_shape: tuple[int, ...]
    eps: float | None
    elementwise_affine: bool

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None = None,
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if self.elementwise_affine:
            self.weight = Parameter(torch.empty(self.normalized_shape, **factory_kwargs))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """:math:`\\gamma = 1`."""
        if self.elementwise_affine:
            nn.init.ones_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )


# --- LeNet with batch normalization --------------------------------------------------------


def lenet(
    bn2d: Callable[[int], nn.Module] | None = None,
    bn1d: Callable[[int], nn.Module] | None = None,
) -> nn.Sequential:
    """The LeNet of d2l's batch-normalization chapter, with the given batch-norm classes.

    ``lenet(BatchNorm2d, BatchNorm1d)`` (ours), ``lenet(nn.BatchNorm2d, nn.BatchNorm1d)``
    (PyTorch's) and ``lenet()`` (no normalization) have the same 16 modules at the same
    indices; a missing batch norm is an ``nn.Identity`` (no parameters), so the first two
    have identical ``state_dict`` keys and a checkpoint moves between them::

        0 Conv2d(1, 6, 5)    1 BN(6)    2 Sigmoid  3 MaxPool2d(2, 2)
        4 Conv2d(6, 16, 5)   5 BN(16)   6 Sigmoid  7 MaxPool2d(2, 2)  8 Flatten
        9 Linear(256, 120)  10 BN(120) 11 Sigmoid
       12 Linear(120, 84)   13 BN(84)  14 Sigmoid 15 Linear(84, 10)

    Input: ``(N, 1, 28, 28)`` Fashion-MNIST images. Without batch norm this is *not* d2l's
    chapter-6 LeNet, which pads the first convolution (``padding=2``), uses ``AvgPool2d`` and
    has ``Linear(400, 120)``: we keep the BN-LeNet's layers (no padding, max pooling,
    ``Linear(256, 120)``) so that batch norm is the only difference between the variants.
    """

    def norm(factory: Callable[[int], nn.Module] | None, n: int) -> nn.Module:
        return nn.Identity() if factory is None else factory(n)

    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5), norm(bn2d, 6), nn.Sigmoid(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), norm(bn2d, 16), nn.Sigmoid(),
        nn.MaxPool2d(kernel_size=2, stride=2), nn.Flatten(),
        nn.Linear(16 * 4 * 4, 120), norm(bn1d, 120), nn.Sigmoid(),
        nn.Linear(120, 84), norm(bn1d, 84), nn.Sigmoid(),
        nn.Linear(84, 10),
    )  # fmt: skip


# --- Frozen batch norm (fine-tuning) --------------------------------------------------------
# Appended block: FrozenBatchNorm1d/2d/3d and freeze_batch_norm.

__all__ += ["FrozenBatchNorm1d", "FrozenBatchNorm2d", "FrozenBatchNorm3d", "freeze_batch_norm"]


def _freezable(module: nn.Module) -> bool:
    """A batch norm of ours or of torch's (including SyncBatchNorm and the lazy ones)."""
    ours = (BatchNorm1d, BatchNorm2d, BatchNorm3d)
    return isinstance(module, (*ours, nn.modules.batchnorm._BatchNorm))


class _FrozenBatchNorm(nn.Module):
    r"""Batch norm with fixed statistics and fixed affine parameters, all four of them buffers.

    .. math::
        y = x \cdot s + (\beta - \hat\mu\, s), \qquad
        s = \gamma \,/\, \sqrt{\hat\sigma^2 + \epsilon}

    per channel, which is what a batch norm computes in eval mode. There is no training mode:
    ``train()`` changes nothing, no statistic is updated and no buffer receives a gradient;
    the gradient flows to the input only.
    """

    _dims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if (
            not isinstance(num_features, numbers.Integral)
            or isinstance(num_features, bool)
            or num_features <= 0
        ):
            raise ValueError(
                f"{type(self).__name__}: num_features must be a positive int, got {num_features!r}"
            )
        if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or eps < 0:
            raise ValueError(f"{type(self).__name__}: eps must be a number >= 0, got {eps!r}")
        super().__init__()
        self.eps = float(eps)
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.register_buffer("weight", torch.ones(num_features, **kw))
        self.register_buffer("bias", torch.zeros(num_features, **kw))
        self.register_buffer("running_mean", torch.zeros(num_features, **kw))
        self.register_buffer("running_var", torch.ones(num_features, **kw))

    @property
    def num_features(self) -> int:
        return self.weight.shape[0]

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # a batch norm's checkpoint carries a batch counter that a frozen layer has no use for
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in self._dims:
            want = " or ".join(f"{d}D" for d in self._dims)
            raise ValueError(f"expected {want} input (got {input.dim()}D input)")
        if input.shape[1] != self.num_features:
            raise RuntimeError(
                f"{type(self).__name__}({self.num_features}) got an input with "
                f"{input.shape[1]} channels (shape {tuple(input.shape)})"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        shape = (1, -1) + (1,) * (x.dim() - 2)  # reshapes first, as torchvision does
        w, b = self.weight.reshape(shape), self.bias.reshape(shape)
        rv, rm = self.running_var.reshape(shape), self.running_mean.reshape(shape)
        scale = w * (rv + self.eps).rsqrt()
        bias = b - rm * scale
        return x * scale + bias

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def from_batch_norm(cls, bn: nn.Module) -> _FrozenBatchNorm:
        """A frozen copy of batch norm ``bn`` (``torch.nn``'s or normtut's) in its eval state.

        The running statistics, ``eps`` and the affine parameters are copied (detached, same
        device and dtype); without ``affine`` the weight is 1 and the bias 0. A batch norm
        without running statistics (``track_running_stats=False``) has nothing to freeze and
        raises ``ValueError``; a lazy one that has not seen an input raises too.
        """
        if not _freezable(bn):
            raise TypeError(
                f"{cls.__name__}.from_batch_norm expects a batch norm, got {type(bn).__name__}"
            )
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError(
                f"{cls.__name__}.from_batch_norm: {bn!r} has no running statistics "
                "(track_running_stats=False), so there is nothing to freeze"
            )
        if isinstance(bn.running_mean, nn.parameter.UninitializedBuffer):
            raise ValueError(
                f"{cls.__name__}.from_batch_norm: {type(bn).__name__} is lazy and not "
                "initialized yet; run one forward pass first"
            )
        rm = bn.running_mean
        frozen = cls(rm.shape[0], eps=bn.eps, device=rm.device, dtype=rm.dtype)
        with torch.no_grad():
            frozen.running_mean.copy_(rm)
            frozen.running_var.copy_(bn.running_var)
            if bn.weight is not None:
                frozen.weight.copy_(bn.weight)
            if bn.bias is not None:
                frozen.bias.copy_(bn.bias)
        return frozen


class FrozenBatchNorm1d(_FrozenBatchNorm):
    """Frozen :class:`BatchNorm1d` for :math:`(N, C)` or :math:`(N, C, L)` inputs.

    Same buffers and forward as :class:`FrozenBatchNorm2d`; torchvision has no 1-D version.
    """

    _dims = (2, 3)


class FrozenBatchNorm2d(_FrozenBatchNorm):
    r"""Batch norm with fixed statistics and affine parameters, for :math:`(N, C, H, W)` input.

    A drop-in for ``torchvision.ops.FrozenBatchNorm2d(num_features, eps=1e-5)``: the same
    buffers ``weight``, ``bias``, ``running_mean``, ``running_var`` (so the same
    ``state_dict`` keys; checkpoints move both ways), the same forward

    .. math::
        y = x \cdot s + (\beta - \hat\mu\, s), \qquad s = \gamma \,(\hat\sigma^2 + \epsilon)^{-1/2},

    and loading drops a batch norm's ``num_batches_tracked``, so a ``torch.nn.BatchNorm2d``
    checkpoint loads with ``strict=True``. Nothing depends on ``self.training``: calling
    ``model.train()`` leaves it frozen, which is its point in fine-tuning (detection models
    train with batches of a few images, far too few for batch statistics). Build one from a
    trained layer with :meth:`from_batch_norm`, or convert a whole model with
    :func:`freeze_batch_norm`.

    Example::

        >>> bn = torch.nn.BatchNorm2d(3).eval()
        >>> frozen = FrozenBatchNorm2d(3)
        >>> frozen.load_state_dict(bn.state_dict())
        <All keys matched successfully>
        >>> x = torch.randn(2, 3, 4, 4)
        >>> torch.allclose(frozen.train()(x), bn(x), atol=1e-6)
        True
    """

    _dims = (4,)


class FrozenBatchNorm3d(_FrozenBatchNorm):
    """Frozen :class:`BatchNorm3d` for :math:`(N, C, D, H, W)` inputs (buffers as 2-D)."""

    _dims = (5,)


def _frozen_class(bn: nn.Module) -> type[_FrozenBatchNorm]:
    tbn = nn.modules.batchnorm
    if isinstance(bn, (BatchNorm1d, tbn.BatchNorm1d, tbn.LazyBatchNorm1d)):
        return FrozenBatchNorm1d
    if isinstance(bn, (BatchNorm3d, tbn.BatchNorm3d, tbn.LazyBatchNorm3d)):
        return FrozenBatchNorm3d
    return FrozenBatchNorm2d  # BatchNorm2d (ours, torch's) and SyncBatchNorm


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every batch norm in ``module`` by its frozen twin, keeping statistics and affine.

    ``BatchNorm1d``/``2d``/``3d`` (``torch.nn``'s and normtut's) become
    :class:`FrozenBatchNorm1d`/``2d``/``3d`` built with :meth:`~FrozenBatchNorm2d.from_batch_norm`;
    ``torch.nn.SyncBatchNorm``, which does not know its input's rank, becomes
    :class:`FrozenBatchNorm2d` (the convolutional case; a 3-D input then fails loudly).
    Other layers, including layer/group/RMS norms, are left alone. A batch norm reached under
    several names (a shared module) is replaced by one frozen module everywhere.

    The model is changed in place; the return value is ``module`` itself, or its frozen twin
    when ``module`` is a batch norm (as ``nn.SyncBatchNorm.convert_sync_batchnorm``): always use
    the return value. Build the optimizer *after* freezing: the affine parameters become
    buffers and leave ``parameters()``. Raises ``ValueError`` (naming the layer) for a batch
    norm without running statistics.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"freeze_batch_norm expects an nn.Module, got {type(module).__name__}")
    done: dict[int, nn.Module] = {}

    def convert(m: nn.Module, path: str) -> nn.Module:
        if id(m) in done:
            return done[id(m)]
        if _freezable(m):
            try:
                new: nn.Module = _frozen_class(m).from_batch_norm(m)
            except ValueError as err:
                raise ValueError(f"freeze_batch_norm: layer {path or '(root)'!r}: {err}") from None
        else:
            new = m
            for name, child in list(m._modules.items()):  # every name, shared too
                if child is None:
                    continue
                frozen = convert(child, f"{path}.{name}" if path else name)
                if frozen is not child:
                    setattr(m, name, frozen)
        done[id(m)] = new
        return new

    return convert(module, "")
