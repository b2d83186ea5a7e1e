r"""Parameter initialization from scratch, with the same math as ``torch.nn.init``.

The two classic schemes keep the variance of the signal constant from layer to layer. For a
layer :math:`y = W x` with ``fan_in`` inputs, i.i.d. zero-mean weights of variance
:math:`\sigma^2` and inputs independent of the weights,

.. math::
    \operatorname{Var}[y_i] = \sum_{j=1}^{n_\text{in}} \operatorname{Var}[w_{ij} x_j]
                            = n_\text{in}\, \sigma^2\, \mathbb{E}[x_j^2].

* **Xavier / Glorot** (Glorot & Bengio, 2010, "Understanding the difficulty of training deep
  feedforward neural networks") asks for :math:`n_\text{in}\sigma^2 = 1` (forward pass) and
  :math:`n_\text{out}\sigma^2 = 1` (backward pass) and compromises on
  :math:`\sigma^2 = 2 / (n_\text{in} + n_\text{out})`.
* **Kaiming / He** (He et al., 2015, "Delving deep into rectifiers") accounts for the ReLU,
  which zeroes half of its input: :math:`\mathbb{E}[x^2] = \operatorname{Var}[y_\text{prev}]/2`,
  hence :math:`\sigma^2 = 2 / n_\text{in}` (or :math:`2 / n_\text{out}` for the backward pass).

Both are scaled by a *gain* that depends on the nonlinearity (:func:`calculate_gain`). A
uniform distribution :math:`U(-b, b)` has variance :math:`b^2/3`, so the uniform variants use
the bound :math:`b = \sqrt{3}\,\sigma`.

Every function here is a drop-in for its ``torch.nn.init`` twin: same signature, same
defaults, same errors and the same random-number consumption, so that with the same seed the
results are bitwise identical.

The module also has :func:`mixture_init_` (the "custom initializer" of *Dive into Deep
Learning*), :func:`layer_statistics` (per-layer activation and gradient statistics measured
with hooks) and :func:`deep_mlp` (the deep network of the depth experiment).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "calculate_gain",
    "fan_in_and_fan_out",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "mixture_init_",
    "LayerStat",
    "layer_statistics",
    "layer_outputs",
    "deep_mlp",
]

FanMode = Literal["fan_in", "fan_out"]

_LINEAR_FNS = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)


def calculate_gain(nonlinearity: str, param: int | float | None = None) -> float:
    r"""The recommended gain for a nonlinearity (the table of ``torch.nn.init.calculate_gain``).

    ================= ================================================
    nonlinearity      gain
    ================= ================================================
    linear, conv*     :math:`1`
    sigmoid           :math:`1`
    tanh              :math:`5/3`
    relu              :math:`\sqrt{2}`
    leaky_relu        :math:`\sqrt{2 / (1 + a^2)}`, ``a = param`` (default 0.01)
    selu              :math:`3/4`
    ================= ================================================

    The ReLU gain :math:`\sqrt 2` undoes the halving of the second moment by the rectifier
    (He et al., 2015); for a leaky ReLU with slope :math:`a` the second moment is multiplied
    by :math:`(1 + a^2)/2` instead. The tanh and SELU gains are empirical.

    Raises:
        ValueError: for an unknown nonlinearity, or a ``leaky_relu`` slope that is not a
            number (``bool`` is rejected), with the same messages as PyTorch.
    """
    if nonlinearity in _LINEAR_FNS or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            negative_slope = 0.01
        elif (not isinstance(param, bool) and isinstance(param, int)) or isinstance(param, float):
            negative_slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + negative_slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    r"""``(fan_in, fan_out)`` of a weight tensor of shape ``(out, in, *kernel)``.

    For a ``Linear`` weight ``(out_features, in_features)`` this is ``(in, out)``. For a
    convolution weight ``(out_channels, in_channels, k_1, ..., k_d)`` every output value sums
    over ``in_channels`` times the receptive field :math:`\prod_i k_i`, so

    .. math::
        \text{fan\_in} = \text{in\_channels} \prod_i k_i, \qquad
        \text{fan\_out} = \text{out\_channels} \prod_i k_i.

    Raises:
        ValueError: for a tensor with fewer than 2 dimensions (same message as PyTorch).
    """
    if tensor.dim() < 2:
        raise ValueError(
            "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions"
        )
    receptive_field_size = 1
    for s in tensor.shape[2:]:
        receptive_field_size *= s
    fan_in = tensor.size(1) * receptive_field_size
    fan_out = tensor.size(0) * receptive_field_size
    return fan_in, fan_out


def _correct_fan(tensor: Tensor, mode: str) -> int:
    mode = mode.lower()
    valid_modes = ["fan_in", "fan_out"]
    if mode not in valid_modes:
        raise ValueError(f"Mode {mode} not supported, please use one of {valid_modes}")
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def xavier_uniform_(
    tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    r"""Fill ``tensor`` in place with :math:`U(-b, b)`, the Xavier/Glorot uniform scheme.

    .. math::
        \sigma = \text{gain}\sqrt{\frac{2}{\text{fan\_in} + \text{fan\_out}}}, \qquad
        b = \sqrt{3}\,\sigma

    (Glorot & Bengio, 2010). Runs under ``torch.no_grad()`` and returns ``tensor``; draws
    exactly what ``torch.nn.init.xavier_uniform_`` draws.
    """
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std  # Var U(-b, b) = b^2 / 3
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)


def xavier_normal_(
    tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    r"""Fill ``tensor`` in place with :math:`\mathcal N(0, \sigma^2)`, Xavier/Glorot normal.

    .. math::
        \sigma = \text{gain}\sqrt{\frac{2}{\text{fan\_in} + \text{fan\_out}}}

    (Glorot & Bengio, 2010). Runs under ``torch.no_grad()`` and returns ``tensor``.
    """
    fan_in, fan_out = fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    with torch.no_grad():
        return tensor.normal_(0.0, std, generator=generator)


def _kaiming_std(tensor: Tensor, a: float, mode: str, nonlinearity: str) -> float | None:
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return None
    fan = _correct_fan(tensor, mode)
    gain = calculate_gain(nonlinearity, a)
    return gain / math.sqrt(fan)


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0,
    mode: FanMode = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill ``tensor`` in place with :math:`U(-b, b)`, the Kaiming/He uniform scheme.

    .. math::
        \sigma = \frac{\text{gain}}{\sqrt{\text{fan\_mode}}}, \qquad b = \sqrt{3}\,\sigma

    with ``gain = calculate_gain(nonlinearity, a)`` (He et al., 2015). ``mode="fan_in"``
    preserves the variance of the forward signal, ``mode="fan_out"`` that of the backward
    gradients. Note the default ``nonlinearity="leaky_relu"`` with ``a=0``: a gain of
    :math:`\sqrt 2`, i.e. the ReLU scheme.

    Raises:
        ValueError: for a mode other than ``fan_in``/``fan_out``, an unknown nonlinearity or a
            tensor with fewer than 2 dimensions.
    """
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    if std is None:
        return tensor
    bound = math.sqrt(3.0) * std
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0,
    mode: FanMode = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill ``tensor`` in place with :math:`\mathcal N(0, \sigma^2)`, Kaiming/He normal.

    .. math::
        \sigma = \frac{\text{gain}}{\sqrt{\text{fan\_mode}}}

    (He et al., 2015). Same arguments and errors as :func:`kaiming_uniform_`.
    """
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    if std is None:
        return tensor
    with torch.no_grad():
        return tensor.normal_(0, std, generator=generator)


def mixture_init_(tensor: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""The "custom initializer" of *Dive into Deep Learning* (Zhang et al., 2023).

    .. math::
        w \sim \begin{cases}
            U(5, 10)   & \text{with probability } 1/4\\
            0          & \text{with probability } 1/2\\
            U(-10, -5) & \text{with probability } 1/4
        \end{cases}

    Implementation: draw :math:`u \sim U(-10, 10)` and set :math:`w = u \cdot [|u| \ge 5]`.
    The density of :math:`u` is flat (:math:`1/20`), so the probability of each interval is
    its length over 20: :math:`P(-5 < u < 5) = 10/20 = 1/2` (those entries become 0),
    :math:`P(u \ge 5) = 5/20 = 1/4` and :math:`P(u \le -5) = 1/4`. Conditioned on
    :math:`u \ge 5`, :math:`u` is still flat, i.e. :math:`U(5, 10)`; likewise on the negative
    side. Works in place under ``torch.no_grad()`` and returns ``tensor``.
    """
    with torch.no_grad():
        tensor.uniform_(-10, 10, generator=generator)
        tensor.mul_(tensor.abs() >= 5)
    return tensor


@dataclass(frozen=True)
class LayerStat:
    r"""Statistics of one layer, measured by :func:`layer_statistics` on one batch.

    Attributes:
        index: position of the layer (0 = first) among the selected layers.
        name: the module's name in ``model.named_modules()``.
        kind: the module's class name (``"Linear"``, ``"Conv2d"``, ...).
        act_mean, act_std: mean and standard deviation of the layer's *output* (for a
            ``Linear``/``Conv`` layer: the pre-activation), over all entries of the batch.
        act_grad_std: standard deviation of :math:`\partial L / \partial \\text{output}`,
            the gradient that flows back into the layer (``None`` when not measured).
        weight_std: standard deviation of the layer's ``weight`` (``None`` if it has none).
        weight_grad_std: standard deviation of :math:`\partial L / \partial W`
            (``None`` when not measured or the layer has no weight).
    """

    index: int
    name: str
    kind: str
    act_mean: float
    act_std: float
    act_grad_std: float | None
    weight_std: float | None
    weight_grad_std: float | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


_DEFAULT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
)


def _std(t: Tensor) -> float:
    return t.detach().double().std(correction=0).item()


def layer_statistics(
    model: nn.Module,
    x: Tensor,
    target: Tensor | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    *,
    layer_types: Sequence[type[nn.Module]] = _DEFAULT_LAYERS,
    gradients: bool = True,
) -> list[LayerStat]:
    r"""Per-layer activation and gradient statistics of ``model`` on the batch ``x``.

    A *layer* is every submodule that is an instance of ``layer_types`` (by default
    ``Linear`` and ``Conv1d/2d/3d``), in the order in which they run. What is measured:

    * the forward pass records, with forward hooks, the mean and standard deviation of each
      layer's **output** over all entries of the batch (for ``Linear`` this is the
      pre-activation :math:`y_l = W_l x_l + b_l`, the quantity whose variance the Xavier and
      Kaiming derivations keep constant);
    * with ``gradients=True`` a loss is back-propagated and the function records the standard
      deviation of the gradient with respect to each layer's output,
      :math:`\partial L / \partial y_l` (the backward signal), and of the gradient with
      respect to its weight, :math:`\partial L / \partial W_l`. The loss is
      ``loss_fn(model(x), target)`` when both are given; otherwise it is
      :math:`L = \sum_k g_k\, \text{model}(x)_k` with a fixed standard-normal :math:`g`
      (drawn from a private generator seeded 0, so the global RNG is not consumed): the
      gradient entering the last layer then has standard deviation about 1, and the ratio
      of the first layer's gradient std to the last one's is exactly how much the network
      shrinks or amplifies the backward signal.

    All standard deviations are population values (``correction=0``) computed in float64.
    Gradients are obtained with :func:`torch.autograd.grad`, so the ``.grad`` of the model's
    parameters is left untouched; the model's train/eval mode is not changed. A layer that is
    called more than once (shared weights) is recorded once per call.

    Returns:
        one :class:`LayerStat` per layer call, first layer first.
    """
    types = tuple(layer_types)
    records: list[tuple[str, nn.Module, Tensor]] = []
    handles = []

    def make_hook(name: str) -> Callable[[nn.Module, tuple, Tensor], None]:
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            records.append((name, module, output))

        return hook

    for name, module in model.named_modules():
        if isinstance(module, types):
            handles.append(module.register_forward_hook(make_hook(name)))
    if not handles:
        raise ValueError(
            f"layer_statistics found no layer of type {[t.__name__ for t in types]} in "
            f"{type(model).__name__}"
        )
    try:
        with torch.set_grad_enabled(gradients):
            output = model(x)
            # statistics of the forward pass, before anything can modify the outputs in place
            forward = [(float(out.detach().double().mean()), _std(out)) for _, _, out in records]
            act_grads: list[Tensor | None] = [None] * len(records)
            weight_grads: list[Tensor | None] = [None] * len(records)
            if gradients:
                if target is not None and loss_fn is not None:
                    loss = loss_fn(output, target)
                elif target is None and loss_fn is None:
                    g = torch.randn(output.shape, generator=torch.Generator().manual_seed(0))
                    loss = (output * g.to(device=output.device, dtype=output.dtype)).sum()
                else:
                    raise ValueError("pass both target and loss_fn, or neither")
                weights = [
                    m.weight
                    for _, m, _ in records
                    if isinstance(getattr(m, "weight", None), Tensor) and m.weight.requires_grad
                ]
                unique_weights = list({id(w): w for w in weights}.values())
                outs = [out for _, _, out in records]
                grads = torch.autograd.grad(loss, outs + unique_weights, allow_unused=True)
                act_grads = list(grads[: len(outs)])
                by_id = {id(w): g for w, g in zip(unique_weights, grads[len(outs) :], strict=True)}
                weight_grads = [by_id.get(id(getattr(m, "weight", None))) for _, m, _ in records]
    finally:
        for h in handles:
            h.remove()

    rows = []
    for i, ((name, module, _), (mean, std)) in enumerate(zip(records, forward, strict=True)):
        weight = getattr(module, "weight", None)
        rows.append(
            LayerStat(
                index=i,
                name=name,
                kind=type(module).__name__,
                act_mean=mean,
                act_std=std,
                act_grad_std=None if act_grads[i] is None else _std(act_grads[i]),
                weight_std=_std(weight) if isinstance(weight, Tensor) else None,
                weight_grad_std=None if weight_grads[i] is None else _std(weight_grads[i]),
            )
        )
    return rows


def layer_outputs(
    model: nn.Module,
    x: Tensor,
    layer_types: Sequence[type[nn.Module]] = _DEFAULT_LAYERS,
) -> dict[str, Tensor]:
    """The outputs of every submodule of type ``layer_types`` on the batch ``x``, in run order.

    Returns ``{module name: detached output}`` (without building a graph), e.g. the
    activations after every ``nn.Tanh`` with ``layer_types=(nn.Tanh,)``, ready for
    :func:`normtut.plot.plot_layer_histograms`. A module that runs more than once gets one
    entry per call, the later ones named ``"name#2"``, ``"name#3"``, ...
    """
    types = tuple(layer_types)
    outputs: dict[str, Tensor] = {}

    def make_hook(name: str) -> Callable[[nn.Module, tuple, Tensor], None]:
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            key, k = name, 1
            while key in outputs:
                k += 1
                key = f"{name}#{k}"
            outputs[key] = output.detach().clone()

        return hook

    handles = [
        m.register_forward_hook(make_hook(n))
        for n, m in model.named_modules()
        if isinstance(m, types)
    ]
    if not handles:
        raise ValueError(
            f"layer_outputs found no layer of type {[t.__name__ for t in types]} in "
            f"{type(model).__name__}"
        )
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return outputs


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "linear": nn.Identity,
    "identity": nn.Identity,
}


def deep_mlp(
    width: int,
    depth: int,
    activation: str | Callable[[], nn.Module] = "relu",
    *,
    in_features: int | None = None,
    out_features: int | None = None,
    bias: bool = True,
) -> nn.Sequential:
    """A plain deep MLP: ``depth`` ``Linear`` layers, each but the last followed by ``activation``.

    ``Linear(in_features, width)``, then ``depth - 2`` ``Linear(width, width)``, then
    ``Linear(width, out_features)`` (both ends default to ``width``, so every layer is square).
    ``activation`` is a name (``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"leaky_relu"``,
    ``"gelu"``, ``"linear"``) or a zero-argument factory such as ``nn.ReLU``. The weights keep
    PyTorch's default initialization; re-initialize them with ``net.apply(fn)``.
    """
    if depth < 1:
        raise ValueError(f"deep_mlp needs depth >= 1, got {depth}")
    if isinstance(activation, str):
        try:
            make_act = _ACTIVATIONS[activation]
        except KeyError:
            raise ValueError(
                f"unknown activation {activation!r}; use one of {sorted(_ACTIVATIONS)}"
            ) from None
    else:
        make_act = activation
    sizes = [in_features or width] + [width] * (depth - 1) + [out_features or width]
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=bias))
        if i < depth - 1:
            layers.append(make_act())
    return nn.Sequential(*layers)
