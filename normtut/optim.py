r"""Optimizers from scratch: SGD (with momentum and Nesterov), Adagrad, Adadelta, RMSprop, Adam,
AdamW and RAdam.

Every class here subclasses :class:`torch.optim.Optimizer` and is a drop-in for its
``torch.optim`` twin: the same constructor signature and defaults (torch 2.13), the same
``param_groups`` keys and the same per-parameter state (``step``, ``momentum_buffer``,
``sum``, ``square_avg``, ``acc_delta``, ``grad_avg``, ``exp_avg``, ``exp_avg_sq``,
``max_exp_avg_sq``, with ``step`` a 0-dim float32 CPU tensor as torch keeps it), so a
``state_dict`` moves between the twins in both directions and training goes on as if nothing
happened. Learning-rate
schedulers from :mod:`torch.optim.lr_scheduler` work unchanged.

All seven take a gradient :math:`g_t = \nabla_\theta f_t(\theta_{t-1})` (negated with
``maximize=True``; plus :math:`\lambda\theta_{t-1}` with an L2 ``weight_decay`` :math:`\lambda`)
and move the parameters :math:`\theta` against it:

* **SGD** (Robbins & Monro, 1951, "A Stochastic Approximation Method"), with heavy-ball
  momentum (Polyak, 1964, "Some methods of speeding up the convergence of iteration methods")
  and Nesterov momentum in the form of Sutskever, Martens, Dahl & Hinton (2013, "On the
  importance of initialization and momentum in deep learning"): :class:`SGD`.
* **Adagrad** (Duchi, Hazan & Singer, 2011, "Adaptive Subgradient Methods for Online Learning
  and Stochastic Optimization"): a per-coordinate step :math:`\gamma/\sqrt{\sum_s g_s^2}`.
  :class:`Adagrad`.
* **Adadelta** (Zeiler, 2012, "ADADELTA: An Adaptive Learning Rate Method"): RMSprop's
  denominator, with a moving root-mean-square of the past updates as numerator, so that the
  step has the units of :math:`\theta` (learning rate 1). :class:`Adadelta`.
* **RMSprop** (Tieleman & Hinton, 2012, Lecture 6.5 of "Neural Networks for Machine
  Learning"): Adagrad with a moving average instead of a sum. :class:`RMSprop`.
* **Adam** (Kingma & Ba, 2015, "Adam: A Method for Stochastic Optimization"): moving averages
  of :math:`g` and :math:`g^2` with bias correction; ``amsgrad=True`` is AMSGrad (Reddi, Kale &
  Kumar, 2018, "On the Convergence of Adam and Beyond"). :class:`Adam`.
* **AdamW** (Loshchilov & Hutter, 2019, "Decoupled Weight Decay Regularization"): Adam with the
  weight decay applied to :math:`\theta` directly, not through the gradient. :class:`AdamW`.
* **RAdam** (Liu, Jiang, He, Chen, Liu, Gao & Han, 2020, "On the Variance of the Adaptive
  Learning Rate and Beyond"): Adam whose adaptive step is off for the first few steps (SGD with
  momentum) and then scaled by a rectification that rises to 1. :class:`RAdam`.

**Exactness.** Each update is written with the same tensor operations in the same order as
torch's for-loop implementation (``foreach=False``), so on the CPU the parameters and the
state are *bitwise* equal to ``torch.optim``'s after any number of steps.

**Two paths.** ``foreach=False`` updates one parameter at a time (the equations as written);
``foreach=True`` runs each line of the update on whole lists of tensors with
``torch._foreach_*`` operations, one list per device and dtype, which saves the Python loop
(on a GPU it also saves kernel launches). Each path gives the bits of torch's same path. In
float32 and float64 both paths give the same numbers, except for RAdam, whose foreach step
torch computes in another order (its two paths differ in the last bits; see :class:`RAdam`),
and for float16/bfloat16 Adagrad, whose foreach torch rounds :math:`-\tilde\gamma_t g_t`
once more (ours too). Complex parameters are updated as real views with a trailing axis of
2, where torch takes them (foreach: before the weight decay; the for-loop: after it, except
RAdam's, before). ``foreach=None`` (the default) picks the for-loop on the CPU and
``foreach`` on CUDA, as torch does.

**Older checkpoints.** ``load_state_dict`` fills the param-group keys an older (or
hand-made) state_dict lacks with torch's defaults and turns a number ``step`` into torch's
0-dim float32 tensor, as each twin's ``__setstate__`` does.

**Not implemented** (accepted with torch's defaults; anything else raises
``NotImplementedError``): ``capturable=True`` (CUDA graphs), ``differentiable=True``
(gradients through the step) and ``fused=True``. Sparse gradients raise ``RuntimeError``
(torch's SGD and Adagrad accept them).

Example::

    >>> import torch
    >>> from normtut import optim
    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    >>> opt = optim.SGD([w], lr=0.1, momentum=0.9)
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     (w**2).sum().backward()
    ...     _ = opt.step()
    >>> w.detach()
    tensor([ 0.0620, -0.1240])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.optimizer import _device_dtype_check_for_fused

from normtut import _compiled

__all__ = [
    "SGD",
    "Adagrad",
    "Adadelta",
    "RMSprop",
    "Adam",
    "AdamW",
    "RAdam",
    "Muon",
    "newton_schulz",
    "clip_grad_norm_",
    "clip_grad_value_",
    "get_total_norm",
]

# torch's messages for hyperparameters that must be >= 0 (torch/optim/*.py)
_INVALID = {
    "lr": "Invalid learning rate",
    "momentum": "Invalid momentum value",
    "weight_decay": "Invalid weight_decay value",
    "eps": "Invalid epsilon value",
    "lr_decay": "Invalid lr_decay value",
    "initial_accumulator_value": "Invalid initial_accumulator_value value",
    "alpha": "Invalid alpha value",
}
# devices where torch's optimizers default to foreach (torch.utils._foreach_utils)
_FOREACH_DEVICES = frozenset({"cuda", "xpu", "mtia", torch._C._get_privateuse1_backend_name()})
_NOT_IMPLEMENTED = {"capturable": False, "differentiable": False, "fused": None}


# --- shared helpers ------------------------------------------------------------------------


def _check_nonnegative(nan_ok: bool = False, **values: Any) -> None:
    """Raise torch's ``ValueError`` for a negative hyperparameter (or a tensor ``lr`` with more
    than one element). torch's SGD compares with ``< 0`` (NaN passes), the others with
    ``not 0 <= x`` (NaN fails); ``nan_ok`` picks the first."""
    for name, value in values.items():
        if isinstance(value, Tensor) and value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element")
        if (value < 0.0) if nan_ok else not 0.0 <= value:
            raise ValueError(f"{_INVALID[name]}: {value}")


def _check_implemented(owner: str, options: dict[str, Any], allowed: tuple = ()) -> None:
    """Refuse the torch options that normtut does not implement (set to a non-default);
    ``allowed`` names the ones this optimizer does implement (Adam's ``fused``)."""
    for name, default in _NOT_IMPLEMENTED.items():
        if name not in allowed and options.get(name, default):
            raise NotImplementedError(
                f"normtut.optim.{owner} does not implement {name}=True; "
                f"use torch.optim.{owner} for it"
            )


def _scalar(x: float | Tensor) -> float | Tensor:
    """A 1-element tensor hyperparameter as a 0-dim tensor (torch's ``_to_scalar``)."""
    return x.squeeze() if isinstance(x, Tensor) and x.dim() != 0 else x


def _number(x: float | Tensor) -> float:
    """A Python number for the ``alpha=``/``value=``/scalar-list arguments of the foreach ops.

    A 0-dim tensor passed as such an argument is read the same way, so the result is the
    same."""
    return x.item() if isinstance(x, Tensor) else x


def _step_counter() -> Tensor:
    """The ``step`` state: a 0-dim CPU tensor, float32 (float64 if that is the default dtype),
    as torch keeps it (an exact integer count up to 2**24)."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(0.0, dtype=dtype)


def _loaded_step(step: Any, p: Tensor, group: dict[str, Any]) -> Tensor:
    """A ``step`` loaded as a number (older checkpoints), as torch's ``__setstate__`` turns
    it back into a tensor: on the parameter's device (float32 if fused) with ``capturable``
    or ``fused``, else a CPU tensor of :func:`_step_counter`'s dtype."""
    if group.get("capturable") or group.get("fused"):
        dtype = torch.float32 if group.get("fused") else _step_counter().dtype
        return torch.tensor(float(step), dtype=dtype, device=p.device)
    return torch.tensor(float(step), dtype=_step_counter().dtype)


def _params_with_grad(owner: str, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor]]:
    """The parameters of ``group`` that have a gradient, and their gradients.

    A parameter whose ``.grad`` is ``None`` (it took no part in the loss, or its gradient was
    set to ``None``) is skipped: no update, no state change, its ``step`` does not advance."""
    params, grads = [], []
    for p in group["params"]:
        grad = p.grad
        if grad is None:
            continue
        if grad.is_sparse:
            raise RuntimeError(f"normtut.optim.{owner} does not support sparse gradients")
        params.append(p)
        grads.append(grad)
    return params, grads


def _use_foreach(foreach: bool | None, params: list[Tensor], *hyper: Any) -> bool:
    """torch's default: foreach when every parameter is a plain tensor on a GPU-like device
    and no hyperparameter is a tensor; an explicit ``True``/``False`` wins."""
    if foreach is not None:
        return foreach
    return not any(isinstance(h, Tensor) for h in hyper) and all(
        type(p) in (Tensor, torch.nn.Parameter) and p.device.type in _FOREACH_DEVICES
        for p in params
    )


def _by_device_and_dtype(*lists: list) -> Iterable[tuple[list, ...]]:
    """Split parallel lists (params, grads, states, ...) into one bucket per (device, dtype) of
    the parameter: a ``torch._foreach_*`` op needs all its tensors on one device, one dtype."""
    keys = [(p.device, p.dtype) for p in lists[0]]
    if len(set(keys)) <= 1:
        yield lists
        return
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, key in enumerate(keys):
        buckets.setdefault(key, []).append(i)
    for index in buckets.values():
        yield tuple([items[i] for i in index] for items in lists)


def _real(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Complex tensors as real views with a trailing axis of 2 (the update is elementwise)."""
    if torch.is_complex(tensors[0]):
        return tuple(torch.view_as_real(t) for t in tensors)
    return tensors


def _foreach_real(*lists: list[Tensor]) -> tuple[list[Tensor], ...]:
    """:func:`_real` on parallel lists: every complex entry replaced by its real view."""
    if not any(torch.is_complex(p) for p in lists[0]):
        return lists
    return tuple(
        [torch.view_as_real(t) if torch.is_complex(t) else t for t in items] for items in lists
    )


def _gradient(grad: Tensor, param: Tensor, maximize: bool, weight_decay: float) -> Tensor:
    r"""The gradient the update uses: :math:`g \leftarrow \pm g + \lambda\theta` (new tensor if
    changed; ``param.grad`` itself is never written)."""
    if maximize:
        grad = -grad
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    return grad


def _foreach_gradient(
    grads: list[Tensor], params: list[Tensor], maximize: bool, weight_decay: float
) -> list[Tensor]:
    """:func:`_gradient` on lists (new tensors if changed; ``.grad`` is never written)."""
    if maximize:
        grads = torch._foreach_neg(grads)
        if weight_decay != 0:
            torch._foreach_add_(grads, params, alpha=_number(weight_decay))
    elif weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=_number(weight_decay))
    return grads


def _zeros_like(p: Tensor) -> Tensor:
    return torch.zeros_like(p, memory_format=torch.preserve_format)


class _Optimizer(Optimizer):
    """The step shared by every optimizer here: closure, grad-None skip, state, the two paths.

    A subclass defines ``_init_state(state, p, group)`` (fill an empty state),
    ``_update(group, params, grads, states)`` (the for-loop path) and ``_foreach_update``
    (same arguments, one device/dtype at a time).
    """

    _lazy_state = True  # SGD creates its state only when there is momentum
    # the param-group keys (with torch's defaults) that torch's ``__setstate__`` fills in when
    # an older or hand-made state_dict lacks them, and whether ``step`` is a tensor state
    _SETSTATE_DEFAULTS: dict[str, Any] = {}
    _TENSOR_STEP = True
    _IMPLEMENTED: tuple[str, ...] = ()  # options of _NOT_IMPLEMENTED this one implements

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        if defaults.get("fused") and defaults.get("differentiable") and self._IMPLEMENTED:
            raise RuntimeError("`fused` does not support `differentiable`")
        _check_implemented(type(self).__name__, defaults, self._IMPLEMENTED)
        if defaults.get("fused") and defaults.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Fill the param-group keys an older checkpoint lacks and turn a number ``step``
        into torch's 0-dim tensor, as each ``torch.optim`` twin's ``__setstate__`` does (it
        runs in ``load_state_dict`` and on unpickling)."""
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self._SETSTATE_DEFAULTS.items():
                group.setdefault(key, value)
            if not self._TENSOR_STEP:
                continue
            for p in group["params"]:
                p_state = self.state.get(p, [])
                if len(p_state) != 0 and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = _loaded_step(p_state["step"], p, group)

    def _init_state(self, state: dict[str, Any], p: Tensor, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _has_state(self, group: dict[str, Any]) -> bool:
        return True

    def _update(self, group: dict[str, Any], params: list, grads: list, states: list) -> None:
        raise NotImplementedError

    def _foreach_update(
        self, group: dict[str, Any], params: list, grads: list, states: list
    ) -> None:
        raise NotImplementedError

    def _foreach_allowed(self, group: dict[str, Any], params: list[Tensor]) -> bool:
        # torch's default ignores a tensor lr here (only Adam's turns foreach off for it)
        return _use_foreach(group["foreach"], params)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; ``closure`` (optional) re-evaluates the model and
        returns the loss, which ``step`` returns."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        owner = type(self).__name__
        for group in self.param_groups:
            _check_implemented(owner, group, self._IMPLEMENTED)
            params, grads = _params_with_grad(owner, group)
            if not params:
                continue
            states: list[dict[str, Any]] = []
            if self._has_state(group):
                for p in params:
                    state = self.state[p]
                    if not state:
                        self._init_state(state, p, group)
                    states.append(state)
            if group.get("fused") and "fused" in self._IMPLEMENTED:
                if not hasattr(self, "_fused_buffers"):  # flat state buffers, by bucket
                    self._fused_buffers: dict = {}
                for bucket in _by_device_and_dtype(params, grads, states):
                    _compiled.adam_step(group, *bucket, self._fused_buffers)
            elif self._foreach_allowed(group, params):
                for bucket in _by_device_and_dtype(params, grads, states or [{}] * len(params)):
                    self._foreach_update(group, *bucket)
            else:
                self._update(group, params, grads, states)
        return loss


# --- SGD -----------------------------------------------------------------------------------


class SGD(_Optimizer):
    r"""Stochastic gradient descent, with optional (Nesterov) momentum.

    With learning rate :math:`\gamma`, momentum :math:`\mu`, dampening :math:`\tau` and weight
    decay :math:`\lambda`, at step :math:`t`:

    .. math::
        g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) + \lambda\theta_{t-1}
            \quad(\text{negated first if maximize}) \\
        b_t &\leftarrow \begin{cases} g_t & t = 1 \\
            \mu b_{t-1} + (1-\tau) g_t & t > 1 \end{cases}
            \qquad(\text{only if } \mu \neq 0;\ \texttt{momentum\_buffer}) \\
        d_t &\leftarrow \begin{cases} g_t + \mu b_t & \text{nesterov} \\
            b_t & \text{otherwise (} g_t \text{ if } \mu = 0) \end{cases} \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma\, d_t .

    Plain SGD is Robbins & Monro (1951); the momentum buffer is Polyak's (1964) heavy ball,
    and Nesterov momentum follows Sutskever et al. (2013) rewritten in terms of
    :math:`\theta` at the look-ahead point. As in PyTorch (and unlike Sutskever et al.), the
    learning rate multiplies the buffer rather than entering it, and :math:`b_1 = g_1`
    (no dampening on the first step).

    Arguments, defaults and state are those of :class:`torch.optim.SGD` (note ``lr=1e-3``).
    State per parameter: ``momentum_buffer`` (only when ``momentum != 0``).

    Example::

        >>> import torch
        >>> from normtut.optim import SGD
        >>> w = torch.nn.Parameter(torch.ones(3))
        >>> opt = SGD([w], lr=0.1, momentum=0.9, nesterov=True)
        >>> (w**2).sum().backward()
        >>> _ = opt.step()
        >>> w.detach()
        tensor([0.6200, 0.6200, 0.6200])
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        _check_nonnegative(nan_ok=True, lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov, maximize=maximize, foreach=foreach,
            differentiable=differentiable, fused=fused,
        )  # fmt: skip
        super().__init__(params, defaults)

    _SETSTATE_DEFAULTS = dict(
        nesterov=False, maximize=False, foreach=None, differentiable=False, fused=False
    )
    _TENSOR_STEP = False

    def _has_state(self, group: dict[str, Any]) -> bool:
        return group["momentum"] != 0

    def _init_state(self, state: dict[str, Any], p: Tensor, group: dict[str, Any]) -> None:
        pass  # the momentum buffer is the first step's gradient

    def _update(self, group, params, grads, states) -> None:
        lr, mu, dampening = _scalar(group["lr"]), group["momentum"], group["dampening"]
        nesterov, maximize = group["nesterov"], group["maximize"]
        weight_decay = group["weight_decay"]
        for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
            grad = _gradient(grad, param, maximize, weight_decay)
            if mu != 0:
                momentum_buffer = states[i].get("momentum_buffer")
                if momentum_buffer is None:  # b_1 = g_1
                    momentum_buffer = states[i]["momentum_buffer"] = grad.detach().clone()
                else:  # b_t = mu b_{t-1} + (1 - tau) g_t
                    momentum_buffer.mul_(mu).add_(grad, alpha=1 - dampening)
                grad = grad.add(momentum_buffer, alpha=mu) if nesterov else momentum_buffer
            param.add_(grad, alpha=-lr)  # theta_t = theta_{t-1} - lr d_t

    def _foreach_update(self, group, params, grads, states) -> None:
        lr, mu, dampening = _number(group["lr"]), group["momentum"], group["dampening"]
        grads = _foreach_gradient(grads, params, group["maximize"], group["weight_decay"])
        if mu != 0:
            buffers = [state.get("momentum_buffer") for state in states]
            old = [i for i, b in enumerate(buffers) if b is not None]
            if old:
                old_buffers = [buffers[i] for i in old]
                old_grads = grads if len(old) == len(grads) else [grads[i] for i in old]
                torch._foreach_mul_(old_buffers, mu)
                torch._foreach_add_(old_buffers, old_grads, alpha=1 - dampening)
            for i, b in enumerate(buffers):
                if b is None:
                    buffers[i] = states[i]["momentum_buffer"] = grads[i].detach().clone()
            grads = torch._foreach_add(grads, buffers, alpha=mu) if group["nesterov"] else buffers
        torch._foreach_add_(params, grads, alpha=-lr)


# --- Adagrad -------------------------------------------------------------------------------


class Adagrad(_Optimizer):
    r"""Adagrad: a per-coordinate learning rate that shrinks with the gradients seen so far.

    With learning rate :math:`\gamma`, decay :math:`\eta` (``lr_decay``), weight decay
    :math:`\lambda`, initial accumulator :math:`\tau` and :math:`\epsilon`:

    .. math::
        s_0 &= \tau \\
        g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) + \lambda\theta_{t-1}
            \quad(\text{negated first if maximize}) \\
        \tilde\gamma_t &\leftarrow \gamma / \bigl(1 + (t-1)\eta\bigr) \\
        s_t &\leftarrow s_{t-1} + g_t^2 \qquad(\texttt{sum}) \\
        \theta_t &\leftarrow \theta_{t-1} - \tilde\gamma_t\, \frac{g_t}{\sqrt{s_t} + \epsilon}.

    Duchi, Hazan & Singer (2011). Rarely seen coordinates keep a large step, frequent ones get a
    small one; because :math:`s_t` only grows, the step decays like :math:`1/\sqrt{t}`.

    Arguments, defaults and state are those of :class:`torch.optim.Adagrad`. State per
    parameter (created for every parameter in the constructor, as torch does): ``step``
    (0-dim float32 tensor) and ``sum``. One deliberate difference: a parameter group's own
    ``initial_accumulator_value`` is used for its ``sum`` (torch fills every ``sum`` from the
    constructor's value and ignores a group's override).

    Example::

        >>> import torch
        >>> from normtut.optim import Adagrad
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 100.0]))
        >>> opt = Adagrad([w], lr=0.5)
        >>> (w**2).sum().backward()
        >>> _ = opt.step()
        >>> w.detach()  # the same step for both coordinates: g / sqrt(g**2) = 1
        tensor([ 0.5000, 99.5000])
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        _check_nonnegative(
            lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value, eps=eps,
        )  # fmt: skip
        defaults = dict(
            lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value, foreach=foreach,
            maximize=maximize, differentiable=differentiable, fused=fused,
        )  # fmt: skip
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(self.state[p], p, group)

    _SETSTATE_DEFAULTS = dict(foreach=None, maximize=False, differentiable=False, fused=None)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # torch's Adagrad then converts every state's number step if the first one is not a
        # tensor (with the last group's ``fused``)
        states = list(self.state.values())
        if states and not torch.is_tensor(states[0]["step"]):
            fused = self.param_groups[-1]["fused"] if self.param_groups else None
            dtype = torch.float32 if fused else _step_counter().dtype
            for s in states:
                s["step"] = torch.tensor(float(s["step"]), dtype=dtype)

    def _init_state(self, state: dict[str, Any], p: Tensor, group: dict[str, Any]) -> None:
        tau = group["initial_accumulator_value"]
        state["step"] = _step_counter()
        state["sum"] = torch.full_like(
            p, complex(tau, tau) if torch.is_complex(p) else tau,
            memory_format=torch.preserve_format,
        )  # fmt: skip

    def share_memory(self) -> None:
        """Call ``share_memory_()`` on every ``sum`` (as :class:`torch.optim.Adagrad`)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()

    def _update(self, group, params, grads, states) -> None:
        lr, eta, eps = _scalar(group["lr"]), group["lr_decay"], group["eps"]
        maximize, weight_decay = group["maximize"], group["weight_decay"]
        for param, grad, state in zip(params, grads, states, strict=True):
            step_t = state["step"]
            step_t += 1
            t = step_t.item()
            grad = _gradient(grad, param, maximize, weight_decay)
            clr = lr / (1 + (t - 1) * eta)  # decayed learning rate
            param, grad, s = _real(param, grad, state["sum"])
            s.addcmul_(grad, grad, value=1)  # s_t = s_{t-1} + g_t^2
            std = s.sqrt().add_(eps)
            param.addcdiv_(grad, std, value=-clr)

    def _foreach_update(self, group, params, grads, states) -> None:
        lr, eta, eps = _scalar(group["lr"]), group["lr_decay"], group["eps"]
        steps = [state["step"] for state in states]
        sums = [state["sum"] for state in states]
        torch._foreach_add_(steps, 1.0)
        # as torch's foreach: complex entries as real views first, then the gradient
        params, grads, sums = _foreach_real(params, grads, sums)
        grads = _foreach_gradient(grads, params, group["maximize"], group["weight_decay"])
        minus_clr = [-_number(lr / (1 + (t.item() - 1) * eta)) for t in steps]
        torch._foreach_addcmul_(sums, grads, grads, value=1)
        std = torch._foreach_sqrt(sums)
        torch._foreach_add_(std, eps)
        # -clr g first, rounded to the parameter dtype, as torch's foreach (for float32 and
        # float64 the same bits as addcdiv's value=-clr; for float16/bfloat16 one rounding
        # more, and the in-place and out-of-place products differ: torch's choice of each)
        if group["weight_decay"] != 0 or group["maximize"]:
            torch._foreach_mul_(grads, minus_clr)  # new tensors here, not the .grad
            numerator = grads
        else:
            numerator = torch._foreach_mul(grads, minus_clr)
        torch._foreach_addcdiv_(params, numerator, std)


# --- RMSprop -------------------------------------------------------------------------------


class RMSprop(_Optimizer):
    r"""RMSprop: divide the gradient by a moving root-mean-square of recent gradients.

    With learning rate :math:`\gamma`, smoothing :math:`\alpha`, weight decay :math:`\lambda`,
    momentum :math:`\mu` and :math:`\epsilon`:

    .. math::
        g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) + \lambda\theta_{t-1}
            \quad(\text{negated first if maximize}) \\
        v_t &\leftarrow \alpha v_{t-1} + (1-\alpha) g_t^2 \qquad(\texttt{square\_avg}) \\
        \bar g_t &\leftarrow \alpha \bar g_{t-1} + (1-\alpha) g_t
            \qquad(\texttt{grad\_avg}, \text{ centered only}) \\
        \sigma_t &\leftarrow \sqrt{v_t - \bar g_t^2} + \epsilon
            \quad(\sqrt{v_t} + \epsilon \text{ if not centered}) \\
        b_t &\leftarrow \mu b_{t-1} + g_t / \sigma_t \qquad(\texttt{momentum\_buffer},
            \ \mu > 0) \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma\, b_t
            \quad(\theta_{t-1} - \gamma\, g_t/\sigma_t \text{ if } \mu = 0).

    Tieleman & Hinton (2012), Coursera "Neural Networks for Machine Learning", lecture 6.5;
    the centered variant (an estimate of the variance instead of the second moment) is from
    Graves (2013), "Generating Sequences With Recurrent Neural Networks".

    Arguments (all positional, as in torch), defaults and state are those of
    :class:`torch.optim.RMSprop`. State per parameter: ``step``, ``square_avg``, and
    ``momentum_buffer`` (``momentum > 0``) and ``grad_avg`` (``centered``).

    Example::

        >>> import torch
        >>> from normtut.optim import RMSprop
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 100.0]))
        >>> opt = RMSprop([w], lr=0.01)
        >>> (w**2).sum().backward()
        >>> _ = opt.step()
        >>> w.detach()  # the same step for both: g / sqrt(0.01 g**2) = 10
        tensor([ 0.9000, 99.9000])
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        _check_nonnegative(
            lr=lr, eps=eps, momentum=momentum, weight_decay=weight_decay, alpha=alpha
        )
        defaults = dict(
            lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
            weight_decay=weight_decay, capturable=capturable, foreach=foreach,
            maximize=maximize, differentiable=differentiable,
        )  # fmt: skip
        super().__init__(params, defaults)

    _SETSTATE_DEFAULTS = dict(
        momentum=0, centered=False, foreach=None, maximize=False, differentiable=False,
        capturable=False,
    )  # fmt: skip

    def _init_state(self, state: dict[str, Any], p: Tensor, group: dict[str, Any]) -> None:
        state["step"] = _step_counter()
        state["square_avg"] = _zeros_like(p)
        if group["momentum"] > 0:
            state["momentum_buffer"] = _zeros_like(p)
        if group["centered"]:
            state["grad_avg"] = _zeros_like(p)

    def _update(self, group, params, grads, states) -> None:
        lr, alpha, eps, mu = _scalar(group["lr"]), group["alpha"], group["eps"], group["momentum"]
        centered, maximize = group["centered"], group["maximize"]
        weight_decay = group["weight_decay"]
        for param, grad, state in zip(params, grads, states, strict=True):
            state["step"] += 1
            grad = _gradient(grad, param, maximize, weight_decay)
            param, grad, square_avg = _real(param, grad, state["square_avg"])
            square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)  # v_t
            if centered:
                (grad_avg,) = _real(state["grad_avg"])
                grad_avg.lerp_(grad, 1 - alpha)  # g-bar_t
                avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
            else:
                avg = square_avg.sqrt()
            avg = avg.add_(eps)  # sigma_t
            if mu > 0:
                (momentum_buffer,) = _real(state["momentum_buffer"])
                momentum_buffer.mul_(mu).addcdiv_(grad, avg)  # b_t
                param.add_(momentum_buffer, alpha=-lr)
            else:
                param.addcdiv_(grad, avg, value=-lr)

    def _foreach_update(self, group, params, grads, states) -> None:
        lr, alpha, eps, mu = _number(group["lr"]), group["alpha"], group["eps"], group["momentum"]
        centered = group["centered"]
        torch._foreach_add_([state["step"] for state in states], 1.0)
        square_avgs = [state["square_avg"] for state in states]
        grad_avgs = [state["grad_avg"] for state in states] if centered else []
        buffers = [state["momentum_buffer"] for state in states] if mu > 0 else []
        # as torch's foreach: complex entries as real views first, then the gradient
        params, grads, square_avgs, grad_avgs, buffers = _foreach_real(
            params, grads, square_avgs, grad_avgs or params, buffers or params
        )
        grads = _foreach_gradient(grads, params, group["maximize"], group["weight_decay"])
        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
        if centered:
            torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
            avg = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(avg, eps)
        if mu > 0:
            torch._foreach_mul_(buffers, mu)
            torch._foreach_addcdiv_(buffers, grads, avg)
            torch._foreach_add_(params, buffers, alpha=-lr)
        else:
            torch._foreach_addcdiv_(params, grads, avg, value=-lr)


# --- Adadelta ------------------------------------------------------------------------------


class Adadelta(_Optimizer):
    r"""Adadelta: RMSprop's step, with the root-mean-square of recent *updates* as its numerator.

    With learning rate :math:`\gamma`, decay :math:`\rho`, weight decay :math:`\lambda` and
    :math:`\epsilon`; :math:`v_0 = u_0 = 0`:

    .. math::
        g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) + \lambda\theta_{t-1}
            \quad(\text{negated first if maximize}) \\
        v_t &\leftarrow \rho v_{t-1} + (1-\rho) g_t^2 \qquad(\texttt{square\_avg}) \\
        \Delta\theta_t &\leftarrow \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t \\
        u_t &\leftarrow \rho u_{t-1} + (1-\rho) \Delta\theta_t^2 \qquad(\texttt{acc\_delta}) \\
        \theta_t &\leftarrow \theta_{t-1} - \gamma\, \Delta\theta_t .

    Zeiler (2012), "ADADELTA: An Adaptive Learning Rate Method". The ratio of two
    root-mean-squares has the units of :math:`\theta` over those of :math:`g` (the units of an
    inverse Hessian), so the step has the units of :math:`\theta` and the paper has no
    learning rate at all: that is :math:`\gamma = 1`, torch's default. :math:`\epsilon` sits
    inside both square roots: the first step, with :math:`u_0 = 0`, is about
    :math:`\sqrt{\epsilon/(1-\rho)}` in every coordinate whose gradient is not tiny.

    Arguments (``foreach`` positional, as in torch), defaults and state are those of
    :class:`torch.optim.Adadelta`. State per parameter: ``step``, ``square_avg`` and
    ``acc_delta``.

    Example::

        >>> import torch
        >>> from normtut.optim import Adadelta
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 100.0]))
        >>> opt = Adadelta([w], eps=1e-4)
        >>> (w**2).sum().backward()
        >>> _ = opt.step()
        >>> w.detach()  # the same step for both: sqrt(eps) / sqrt(0.1) = 0.0316
        tensor([ 0.9684, 99.9684])
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        _check_nonnegative(lr=lr)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        _check_nonnegative(eps=eps, weight_decay=weight_decay)
        defaults = dict(
            lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
            capturable=capturable, foreach=foreach, differentiable=differentiable,
        )  # fmt: skip
        super().__init__(params, defaults)

    _SETSTATE_DEFAULTS = dict(
        foreach=None, maximize=False, differentiable=False, capturable=False
    )  # fmt: skip

    def _init_state(self, state: dict[str, Any], p: Tensor, group: dict[str, Any]) -> None:
        state["step"] = _step_counter()
        state["square_avg"] = _zeros_like(p)
        state["acc_delta"] = _zeros_like(p)

    def _update(self, group, params, grads, states) -> None:
        lr, rho, eps = _scalar(group["lr"]), group["rho"], group["eps"]
        maximize, weight_decay = group["maximize"], group["weight_decay"]
        for param, grad, state in zip(params, grads, states, strict=True):
            state["step"] += 1
            grad = _gradient(grad, param, maximize, weight_decay)
            # as torch's for-loop: the weight decay on complex tensors, the rest on real views
            grad, square_avg, acc_delta = _real(grad, state["square_avg"], state["acc_delta"])
            square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)  # v_t
            std = square_avg.add(eps).sqrt_()
            delta = acc_delta.add(eps).sqrt_()
            delta.div_(std).mul_(grad)  # Delta theta_t
            acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)  # u_t
            if torch.is_complex(param):
                delta = torch.view_as_complex(delta)
            param.add_(delta, alpha=-lr)

    def _foreach_update(self, group, params, grads, states) -> None:
        lr, rho, eps = _number(group["lr"]), group["rho"], group["eps"]
        steps = [state["step"] for state in states]
        square_avgs = [state["square_avg"] for state in states]
        acc_deltas = [state["acc_delta"] for state in states]
        # as torch's foreach: complex entries as real views first, then the gradient
        params, grads, square_avgs, acc_deltas = _foreach_real(
            params, grads, square_avgs, acc_deltas
        )
        torch._foreach_add_(steps, 1.0)
        grads = _foreach_gradient(grads, params, group["maximize"], group["weight_decay"])
        torch._foreach_mul_(square_avgs, rho)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - rho)
        std = torch._foreach_add(square_avgs, eps)
        torch._foreach_sqrt_(std)
        deltas = torch._foreach_add(acc_deltas, eps)
        torch._foreach_sqrt_(deltas)
        torch._foreach_div_(deltas, std)
        torch._foreach_mul_(deltas, grads)
        torch._foreach_mul_(acc_deltas, rho)
        torch._foreach_addcmul_(acc_deltas, deltas, deltas, value=1 - rho)
        torch._foreach_add_(params, deltas, alpha=-lr)


# --- Adam and AdamW ------------------------------------------------------------------------


class Adam(_Optimizer):
    r"""Adam: moving averages of the gradient and its square, with bias correction.

    With learning rate :math:`\gamma`, :math:`(\beta_1, \beta_2)` (``betas``), weight decay
    :math:`\lambda` and :math:`\epsilon`; :math:`m_0 = v_0 = \hat v_0^{\max} = 0`:

    .. math::
        g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) + \lambda\theta_{t-1}
            \quad(\text{negated first if maximize}; \text{ no } \lambda\theta
            \text{ if decoupled}) \\
        \theta_{t-1} &\leftarrow (1 - \gamma\lambda)\,\theta_{t-1}
            \qquad(\text{decoupled weight decay only, AdamW}) \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t \qquad(\texttt{exp\_avg}) \\
        v_t &\leftarrow \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \qquad(\texttt{exp\_avg\_sq}) \\
        v^{\max}_t &\leftarrow \max(v^{\max}_{t-1}, v_t)
            \qquad(\texttt{max\_exp\_avg\_sq}, \text{ amsgrad only; used for } v_t) \\
        \theta_t &\leftarrow \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}.

    Kingma & Ba (2015); ``amsgrad=True`` is AMSGrad (Reddi, Kale & Kumar, 2018), which keeps
    the running maximum of :math:`v_t` so the effective step never grows. The last line is
    :math:`\theta_t = \theta_{t-1} - \gamma\,\hat m_t / (\sqrt{\hat v_t} + \epsilon)` with
    :math:`\hat m_t = m_t/(1-\beta_1^t)`, :math:`\hat v_t = v_t/(1-\beta_2^t)`, computed the
    way torch computes it (the step size :math:`\gamma/(1-\beta_1^t)` and
    :math:`\sqrt{1-\beta_2^t}` as Python floats), which the bitwise equality relies on.

    Arguments, defaults and state are those of :class:`torch.optim.Adam` (including
    ``decoupled_weight_decay``, which makes it :class:`AdamW`). State per parameter: ``step``,
    ``exp_avg``, ``exp_avg_sq`` and ``max_exp_avg_sq`` (``amsgrad``).

    Example::

        >>> import torch
        >>> from normtut.optim import Adam
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 100.0]))
        >>> opt = Adam([w], lr=0.1)
        >>> (w**2).sum().backward()
        >>> _ = opt.step()
        >>> w.detach()  # the first step is lr * sign(g) for every coordinate
        tensor([ 0.9000, 99.9000])
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and foreach and not capturable:
            raise ValueError(
                "lr as a Tensor is not supported for capturable=False and foreach=True"
            )
        _check_nonnegative(lr=lr, eps=eps)
        # torch reads betas[0] and betas[1] (IndexError for fewer than two, TypeError for a
        # number, as torch); nothing beyond them is checked
        for i in (0, 1):
            if not 0.0 <= betas[i] < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {betas[i]}")
        _check_nonnegative(weight_decay=weight_decay)
        if not all(isinstance(betas[i], float) for i in (0, 1)) and not all(
            isinstance(betas[i], Tensor) for i in (0, 1)
        ):
            raise ValueError("betas must be either both floats or both Tensors")
        for i in (0, 1):
            beta = betas[i]
            if isinstance(beta, Tensor):
                if foreach and not capturable:
                    raise ValueError(
                        f"betas[{i}] as a Tensor is not supported for capturable=False and "
                        "foreach=True"
                    )
                if beta.numel() != 1:
                    raise ValueError(f"Tensor betas[{i}] must be 1-element")
        defaults = dict(
            lr=lr, betas=tuple(map(_scalar, betas)), eps=eps, weight_decay=weight_decay,
            amsgrad=amsgrad, maximize=maximize, foreach=foreach, capturable=capturable,
            differentiable=differentiable, fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )  # fmt: skip
        super().__init__(params, defaults)

    _SETSTATE_DEFAULTS = dict(
        amsgrad=False, maximize=False, foreach=None, capturable=False, differentiable=False,
        decoupled_weight_decay=False, fused=None,
    )  # fmt: skip

    _IMPLEMENTED = ("fused",)  # compiled from scratch: normtut._compiled

    def _init_state(self, state: dict[str, Any], p: Tensor, group: dict[str, Any]) -> None:
        if group["fused"]:  # as torch's fused: checked, step float32 on the param's device
            _device_dtype_check_for_fused(p)
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
        else:
            state["step"] = _step_counter()
        state["exp_avg"] = _zeros_like(p)
        state["exp_avg_sq"] = _zeros_like(p)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = _zeros_like(p)

    def _foreach_allowed(self, group: dict[str, Any], params: list[Tensor]) -> bool:
        if group["foreach"] and isinstance(group["lr"], Tensor):
            raise RuntimeError(
                "lr as a Tensor is not supported for capturable=False and foreach=True"
            )
        return _use_foreach(group["foreach"], params, group["lr"], *group["betas"])

    def _update(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = _scalar(group["lr"]), group["betas"], group["eps"]
        amsgrad, maximize = group["amsgrad"], group["maximize"]
        weight_decay, decoupled = group["weight_decay"], group["decoupled_weight_decay"]
        for param, grad, state in zip(params, grads, states, strict=True):
            step_t = state["step"]
            step_t += 1
            if decoupled:
                grad = _gradient(grad, param, maximize, 0)
                if weight_decay != 0:
                    param.mul_(1 - lr * weight_decay)  # AdamW: theta <- (1 - lr lambda) theta
            else:
                grad = _gradient(grad, param, maximize, weight_decay)
            param, grad, exp_avg, exp_avg_sq = _real(
                param, grad, state["exp_avg"], state["exp_avg_sq"]
            )
            b1 = beta1.to(param.dtype) if isinstance(beta1, Tensor) else beta1
            exp_avg.lerp_(grad, 1 - b1)  # m_t = beta1 m_{t-1} + (1 - beta1) g_t
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v_t
            t = step_t.item()
            bias_correction1 = 1 - beta1**t
            bias_correction2 = 1 - beta2**t
            step_size = lr / bias_correction1
            bias_correction2_sqrt = bias_correction2**0.5
            if amsgrad:
                (max_exp_avg_sq,) = _real(state["max_exp_avg_sq"])
                torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
                exp_avg_sq = max_exp_avg_sq
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            param.addcdiv_(exp_avg, denom, value=-step_size)

    def _foreach_update(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = _number(group["lr"]), group["betas"], group["eps"]
        weight_decay, amsgrad = group["weight_decay"], group["amsgrad"]
        decoupled = group["decoupled_weight_decay"]
        steps = [state["step"] for state in states]
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        max_exp_avg_sqs = [state["max_exp_avg_sq"] for state in states] if amsgrad else []
        torch._foreach_add_(steps, 1.0)
        # as torch's foreach: complex entries as real views first, then the gradient
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs = _foreach_real(
            params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else params
        )
        if decoupled:
            grads = _foreach_gradient(grads, params, group["maximize"], 0)
            if weight_decay != 0:
                torch._foreach_mul_(params, 1 - lr * weight_decay)
        else:
            grads = _foreach_gradient(grads, params, group["maximize"], weight_decay)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        ts = [t.item() for t in steps]
        minus_step_size = [-(lr / (1 - beta1**t)) for t in ts]
        bias_correction2_sqrt = [(1 - beta2**t) ** 0.5 for t in ts]
        if amsgrad:
            torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
            exp_avg_sqs = max_exp_avg_sqs
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, minus_step_size)


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay.

    Everything as in :class:`Adam`, except that the weight decay does not enter the gradient
    (and so is not rescaled by :math:`1/\sqrt{\hat v_t}`); it shrinks the parameters directly:

    .. math::
        \theta_{t-1} \leftarrow (1 - \gamma\lambda)\,\theta_{t-1}, \qquad
        \theta_t \leftarrow \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,
            \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}.

    Loshchilov & Hutter (2019): with Adam, L2 regularization and weight decay are not the same
    thing, and the decoupled form generalizes better. Arguments, defaults (``weight_decay``
    is ``1e-2``) and state are those of :class:`torch.optim.AdamW`.

    Example::

        >>> import torch
        >>> from normtut.optim import AdamW
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 100.0]))
        >>> opt = AdamW([w], lr=0.1, weight_decay=0.1)
        >>> w.grad = torch.zeros(2)  # no gradient signal: only the decay acts
        >>> _ = opt.step()
        >>> w.detach()
        tensor([ 0.9900, 99.0000])
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
            capturable=capturable, differentiable=differentiable, fused=fused,
            decoupled_weight_decay=True,
        )  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # as torch's AdamW: always decoupled
            group["decoupled_weight_decay"] = True


# --- RAdam ---------------------------------------------------------------------------------


class RAdam(_Optimizer):
    r"""RAdam: Adam whose adaptive step is switched on, and scaled, by the variance it can trust.

    With learning rate :math:`\gamma`, :math:`(\beta_1, \beta_2)` (``betas``), weight decay
    :math:`\lambda` and :math:`\epsilon`; :math:`m_0 = v_0 = 0` and
    :math:`\rho_\infty = 2/(1-\beta_2) - 1`:

    .. math::
        g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) + \lambda\theta_{t-1}
            \quad(\text{negated first if maximize}; \text{ no } \lambda\theta
            \text{ if decoupled}) \\
        \theta_{t-1} &\leftarrow (1 - \gamma\lambda)\,\theta_{t-1}
            \qquad(\texttt{decoupled\_weight\_decay} \text{ only}) \\
        m_t &\leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t \qquad(\texttt{exp\_avg}) \\
        v_t &\leftarrow \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \qquad(\texttt{exp\_avg\_sq}) \\
        \hat m_t &\leftarrow m_t / (1-\beta_1^t), \qquad
        \rho_t \leftarrow \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t} \\
        r_t &\leftarrow \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}
            {(\rho_\infty-4)(\rho_\infty-2)\rho_t}} \qquad(\text{if } \rho_t > 5) \\
        \theta_t &\leftarrow \begin{cases}
            \theta_{t-1} - \gamma\, \hat m_t\, r_t\,
            \dfrac{\sqrt{1-\beta_2^t}}{\sqrt{v_t}+\epsilon} & \rho_t > 5 \\
            \theta_{t-1} - \gamma\, \hat m_t & \rho_t \le 5.
            \end{cases}

    Liu, Jiang, He, Chen, Liu, Gao & Han (2020), "On the Variance of the Adaptive Learning
    Rate and Beyond": :math:`\rho_t` is the length of the simple moving average that
    :math:`v_t` approximates. While it is short, the variance of the adaptive learning rate
    :math:`\sqrt{1-\beta_2^t}/\sqrt{v_t}` is intractable (the paper's cut-off is
    :math:`\rho_t > 4`; torch, like the authors' code, uses 5: the first five steps for
    :math:`\beta_2 = 0.999`), and the step is plain SGD with bias-corrected momentum; after
    that the adaptive step is multiplied by the rectification :math:`r_t < 1`, which rises to
    1 as :math:`t` grows. A built-in warmup, without a warmup schedule.

    Arguments, defaults and state are those of :class:`torch.optim.RAdam` (including
    ``decoupled_weight_decay``, "RAdamW"). State per parameter: ``step``, ``exp_avg`` and
    ``exp_avg_sq``. The for-loop path (``foreach=False``, the CPU default) is bitwise torch's
    for-loop. torch's *foreach* RAdam computes the step in another order (one multiplier
    :math:`-\gamma r_t \sqrt{1-\beta_2^t}/((1-\beta_1^t)(\sqrt{v_t}+\epsilon))`, then
    :math:`\theta \mathrel{+}= m_t \cdot` multiplier), so each of its steps differs from its
    for-loop's by a few units in the last place of the update (and the trajectories drift
    apart); ours follows each torch path bitwise.

    Example::

        >>> import torch
        >>> from normtut.optim import RAdam
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 100.0]))
        >>> opt = RAdam([w], lr=0.1)
        >>> (w**2).sum().backward()
        >>> _ = opt.step()
        >>> w.detach()  # step 1 is not adapted: lr * g, as SGD (m-hat_1 = g_1)
        tensor([ 0.8000, 80.0000])
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        _check_nonnegative(lr=lr, eps=eps)
        for i in (0, 1):
            if not 0.0 <= betas[i] < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {betas[i]}")
        _check_nonnegative(weight_decay=weight_decay)
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
            foreach=foreach, capturable=capturable,
            decoupled_weight_decay=decoupled_weight_decay, differentiable=differentiable,
        )  # fmt: skip
        super().__init__(params, defaults)

    _SETSTATE_DEFAULTS = dict(
        foreach=None, maximize=False, differentiable=False, decoupled_weight_decay=False,
        capturable=False,
    )  # fmt: skip

    def _init_state(self, state: dict[str, Any], p: Tensor, group: dict[str, Any]) -> None:
        state["step"] = _step_counter()
        state["exp_avg"] = _zeros_like(p)
        state["exp_avg_sq"] = _zeros_like(p)

    @staticmethod
    def _rho(t: float, beta2: float) -> tuple[float, float]:
        r""":math:`\rho_\infty` and :math:`\rho_t` (as Python floats, torch's expressions)."""
        rho_inf = 2 / (1 - beta2) - 1
        return rho_inf, rho_inf - 2 * t * (beta2**t) / (1 - beta2**t)

    @staticmethod
    def _rect(rho_inf: float, rho_t: float) -> float:
        r"""The rectification :math:`r_t` (only for :math:`\rho_t > 5`, so also
        :math:`\rho_\infty > 5`: no division by zero)."""
        return (
            (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        ) ** 0.5

    def _update(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = _scalar(group["lr"]), group["betas"], group["eps"]
        weight_decay, decoupled = group["weight_decay"], group["decoupled_weight_decay"]
        for param, grad, state in zip(params, grads, states, strict=True):
            grad = _gradient(grad, param, group["maximize"], 0)
            # as torch's for-loop: complex entries as real views before the weight decay
            param, grad, exp_avg, exp_avg_sq = _real(
                param, grad, state["exp_avg"], state["exp_avg_sq"]
            )
            step_t = state["step"]
            step_t += 1
            t = step_t.item()
            if weight_decay != 0:
                if decoupled:
                    param.mul_(1 - lr * weight_decay)  # theta <- (1 - lr lambda) theta
                else:
                    grad = grad.add(param, alpha=weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)  # m_t
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v_t
            bias_correction1 = 1 - beta1**t
            bias_correction2 = 1 - beta2**t
            m_hat = exp_avg / bias_correction1
            rho_inf, rho_t = self._rho(t, beta2)
            if rho_t > 5.0:  # rectified adaptive step
                rect = self._rect(rho_inf, rho_t)
                adaptive_lr = (bias_correction2**0.5) / exp_avg_sq.sqrt().add_(eps)
                param.add_(m_hat * lr * adaptive_lr * rect, alpha=-1.0)
            else:  # SGD with bias-corrected momentum
                param.add_(m_hat * lr, alpha=-1.0)

    def _foreach_update(self, group, params, grads, states) -> None:
        lr, (beta1, beta2), eps = _scalar(group["lr"]), group["betas"], group["eps"]
        weight_decay, decoupled = group["weight_decay"], group["decoupled_weight_decay"]
        steps = [state["step"] for state in states]
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        # as torch's foreach: complex entries as real views first, then the gradient
        params, grads, exp_avgs, exp_avg_sqs = _foreach_real(params, grads, exp_avgs, exp_avg_sqs)
        torch._foreach_add_(steps, 1.0)
        ts = [s.item() for s in steps]
        grads = _foreach_gradient(
            grads, params, group["maximize"], 0 if decoupled else weight_decay
        )
        if decoupled and weight_decay != 0:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        # torch's foreach order: one multiplier per tensor,
        # -lr r_t sqrt(1 - beta2^t) / ((1 - beta1^t) (sqrt(v_t) + eps)), or -lr / (1 - beta1^t)
        # when rho_t <= 5 (then r_t = 0 and the first term is 1 / -inf = -0.0)
        rects = []
        for t in ts:
            rho_inf, rho_t = self._rho(t, beta2)
            rects.append(self._rect(rho_inf, rho_t) if rho_t > 5 else 0)
        bias_correction1 = [1 - beta1**t for t in ts]
        unrect_step_size = [
            (lr * (0 if r > 0 else 1.0) / bc) * -1
            for r, bc in zip(rects, bias_correction1, strict=True)
        ]
        rect_step_size = [
            ((1 - beta2**t) ** 0.5) * (lr * r / bc) * -1
            for t, r, bc in zip(ts, rects, bias_correction1, strict=True)
        ]
        buffer = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(buffer, eps)
        torch._foreach_div_(buffer, rect_step_size)
        torch._foreach_reciprocal_(buffer)
        torch._foreach_add_(buffer, unrect_step_size)
        torch._foreach_addcmul_(params, exp_avgs, buffer)


# Muon and gradient clipping live in their own modules (one concept each) and are part of
# normtut.optim's public API, as torch.optim.Muon and torch.nn.utils.clip_grad_* are torch's.
from normtut._clip import clip_grad_norm_, clip_grad_value_, get_total_norm  # noqa: E402
from normtut._muon import Muon, newton_schulz  # noqa: E402
