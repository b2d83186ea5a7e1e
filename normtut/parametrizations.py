r"""Weight, spectral and orthogonal parametrizations from scratch.

Drop-ins for ``torch.nn.utils.parametrizations``: :func:`weight_norm`, :func:`spectral_norm`
and :func:`orthogonal` take the same arguments, register through
:func:`torch.nn.utils.parametrize.register_parametrization` exactly as torch does, and so give
the same ``state_dict`` keys (``parametrizations.weight.original``, ``original0``/``original1``,
``parametrizations.weight.0._u``/``_v``/``base``), the same values for the same seed and the
same error types for the same bad input. A parametrization replaces a stored tensor by a
function of unconstrained ones: reading ``module.weight`` computes it, assigning
``module.weight = W`` stores ``right_inverse(W)``.

* **Weight normalization** (Salimans & Kingma, 2016, "Weight Normalization: A Simple
  Reparameterization to Accelerate Training of Deep Neural Networks"): each slice of
  :math:`\mathbf{w}` along ``dim`` is a length :math:`g` times a direction,

  .. math::
      \mathbf{w} = g\,\frac{\mathbf{v}}{\lVert\mathbf{v}\rVert_2} .

  :class:`WeightNorm`, :func:`weight_norm`; checkpoints of the deprecated
  ``torch.nn.utils.weight_norm`` (keys ``weight_g``/``weight_v``) load as well.
* **Spectral normalization** (Miyato, Kataoka, Koyama & Yoshida, 2018, "Spectral
  Normalization for Generative Adversarial Networks"): :math:`W_{SN} = W/\sigma(W)`, the
  largest singular value :math:`\sigma(W) \approx \mathbf{u}^\mathsf{H} W\mathbf{v}` estimated
  by :func:`power_iteration` on persistent vectors :math:`\mathbf{u}, \mathbf{v}`, one step per
  forward in training mode. :class:`SpectralNorm`, :func:`spectral_norm`,
  :func:`spectral_norm_estimate`.
* **Orthogonal parametrization**: :math:`Q^\mathsf{H}Q = I` (tall) or :math:`QQ^\mathsf{H} = I`
  (wide) through the matrix exponential or the Cayley map of a skew-symmetric matrix
  (Lezcano-Casado & Martínez-Rubio, 2019, "Cheap Orthogonal Constraints in Neural Networks"),
  or a product of Householder reflections (Mhammedi, Hellicar, Rahman & Bailey, 2017,
  "Efficient Orthogonal Parametrisation of Recurrent Neural Networks Using Householder
  Reflections"), optionally composed with a stored base (dynamic trivialization,
  Lezcano-Casado, 2019, "Trivializations for Gradient-Based Optimization on Manifolds").
  :class:`Orthogonal`, :func:`orthogonal`, :func:`matrix_exp_map`, :func:`cayley_map`,
  :func:`householder_map`.

**One knowing difference from PyTorch: the sign of the Householder diagonal.** torch's
Householder map multiplies :math:`Q` by ``X.diagonal().int()``, meant to be the signs
:math:`\pm 1` stored on the diagonal of the unconstrained tensor :math:`X`. The diagonal gets
no gradient, but weight decay still shrinks it: after a single step it is
:math:`-(1-\eta\lambda)`, the ``int`` cast truncates it to ``0`` and the whole weight becomes
the zero matrix (one ``torch.optim.AdamW`` step with its default ``lr=1e-3,
weight_decay=1e-2`` on ``orthogonal(nn.Linear(3, 5))``, whose default map is Householder, is
enough). A diagonal that grows past 2 in magnitude scales :math:`Q` by an integer instead.
Here the sign is taken from the sign bit, :math:`s_i = -1` if :math:`x_{ii}` is negative
(or ``-0.0``) and :math:`+1` otherwise, so :math:`Q` stays orthogonal whatever an optimizer
does to the diagonal. While every diagonal entry has magnitude in :math:`[1, 2)` (as at
registration and after any assignment) the two rules agree and our weights equal torch's
exactly. ``householder_sign="int"`` (on :func:`orthogonal`, :class:`Orthogonal` and
:func:`householder_map`) restores torch's rule.

Example::

    >>> import torch
    >>> from torch import nn
    >>> from normtut import parametrizations as npar
    >>> m = npar.orthogonal(nn.Linear(3, 5))
    >>> Q = m.weight
    >>> torch.allclose(Q.T @ Q, torch.eye(3), atol=1e-6)
    True
    >>> sorted(m.state_dict())
    ['bias', 'parametrizations.weight.0.base', 'parametrizations.weight.original']
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = [
    "WeightNorm",
    "weight_norm",
    "power_iteration",
    "spectral_norm_estimate",
    "SpectralNorm",
    "spectral_norm",
    "matrix_exp_map",
    "cayley_map",
    "householder_map",
    "Orthogonal",
    "orthogonal",
    "ORTHOGONAL_MAPS",
]

HouseholderSign = Literal["sign", "int"]
ORTHOGONAL_MAPS = ("matrix_exp", "cayley", "householder")
"""The names accepted by :func:`orthogonal` for ``orthogonal_map``."""


def _tensor_attribute(module: nn.Module, name: str) -> Tensor:
    """``module.<name>`` if it is a tensor, else torch's ``ValueError``."""
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    return weight


# --- weight normalization ------------------------------------------------------------------


def _norm_except_dim(v: Tensor, dim: int) -> Tensor:
    r"""The 2-norm of every slice ``v.select(dim, i)``, shaped to broadcast against ``v``.

    As ``torch.norm_except_dim(v, 2, dim)``, in the same memory layout (so the sums run in
    the same order and the norms are bitwise torch's): ``dim=-1`` means the whole tensor (a
    0-d result), *not* the last axis; any other negative ``dim`` counts from the end. (The
    weight built from them can still differ from torch's by an ulp for ``dim=0`` or the last
    axis when ``v`` requires grad: torch then calls its fused ``_weight_norm_interface``.)
    """
    if dim == -1:
        return torch.linalg.vector_norm(v)
    ndim = v.dim()
    if not -ndim <= dim < ndim:
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], "
            f"but got {dim})"
        )
    dim %= ndim
    shape = [1] * ndim
    shape[dim] = v.size(dim)
    if dim == 0:  # one row per slice
        return torch.linalg.vector_norm(v.contiguous().view(v.size(0), -1), dim=1).view(shape)
    if dim == ndim - 1:  # one column per slice
        return torch.linalg.vector_norm(v.contiguous().view(-1, v.size(-1)), dim=0).view(shape)
    return _norm_except_dim(v.transpose(0, dim), 0).transpose(0, dim)


class WeightNorm(nn.Module):
    r"""Weight normalization (Salimans & Kingma, 2016) as a parametrization.

    .. math::
        \mathbf{w} = g\,\frac{\mathbf{v}}{\lVert\mathbf{v}\rVert_2},

    with one length :math:`g` per slice along ``dim`` (``g`` has ``v``'s shape with every
    other axis of size 1), or one for the whole tensor when ``dim`` is ``None`` or ``-1``
    (as in torch, ``-1`` is *not* the last axis here). The twin of torch's private
    ``_WeightNorm``.

    ``forward(weight_g, weight_v)`` returns :math:`\mathbf{w}`; ``right_inverse(weight)``
    returns ``(g, v) = (‖weight‖, weight)``, so that registering keeps the weight's value.

    Example::

        >>> import torch
        >>> wn = WeightNorm(dim=0)
        >>> g, v = wn.right_inverse(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
        >>> g.flatten().tolist()
        [5.0, 2.0]
        >>> wn(2 * g, v).tolist()
        [[6.0, 8.0], [0.0, 4.0]]
    """

    def __init__(self, dim: int | None = 0) -> None:
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g: Tensor, weight_v: Tensor) -> Tensor:
        """:math:`g\\,v/\\lVert v\\rVert_2`, per slice along ``dim``."""
        return weight_v * (weight_g / _norm_except_dim(weight_v, self.dim))

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """``(g, v)`` with :math:`g = \\lVert w\\rVert_2` per slice and :math:`v = w`."""
        weight_g = _norm_except_dim(weight, self.dim)
        weight_v = weight
        return weight_g, weight_v

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def weight_norm(module: nn.Module, name: str = "weight", dim: int | None = 0) -> nn.Module:
    r"""Apply weight normalization to ``module.<name>``; the twin of torch's ``weight_norm``.

    .. math::
        \mathbf{w} = g\,\frac{\mathbf{v}}{\lVert\mathbf{v}\rVert_2}

    decouples the length of each slice of the weight along ``dim`` (``0``: one per output
    unit/channel; ``None`` or ``-1``: one for the whole tensor) from its direction
    (Salimans & Kingma, 2016). ``g`` is stored as ``parametrizations.<name>.original0`` and
    ``v`` as ``original1``; a ``state_dict`` saved with the deprecated
    ``torch.nn.utils.weight_norm`` (keys ``<name>_g``, ``<name>_v``) loads too.

    Args:
        module: the module holding the tensor.
        name: the tensor's attribute name. Default ``"weight"``.
        dim: the axis that keeps one norm per entry. Default ``0``.

    Returns:
        ``module``, now parametrized.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> m = weight_norm(nn.Linear(20, 40))
        >>> m.parametrizations.weight.original0.shape
        torch.Size([40, 1])
        >>> m.parametrizations.weight.original1.shape
        torch.Size([40, 20])
    """
    parametrize.register_parametrization(module, name, WeightNorm(dim), unsafe=True)

    def _weight_norm_compat_hook(
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Rename the old ``<name>_g``/``<name>_v`` keys to ``original0``/``original1``."""
        g_key, v_key = f"{prefix}{name}_g", f"{prefix}{name}_v"
        if g_key in state_dict and v_key in state_dict:
            state_dict[f"{prefix}parametrizations.{name}.original0"] = state_dict.pop(g_key)
            state_dict[f"{prefix}parametrizations.{name}.original1"] = state_dict.pop(v_key)

    module._register_load_state_dict_pre_hook(_weight_norm_compat_hook)
    return module


# --- spectral normalization ----------------------------------------------------------------


def _normalize(x: Tensor, eps: float) -> Tensor:
    r""":math:`x / \max(\lVert x\rVert_2, \epsilon)`, as ``F.normalize(x, dim=0, eps=eps)``."""
    return x / torch.linalg.vector_norm(x, dim=0, keepdim=True).clamp_min(eps)


@torch.no_grad()
def power_iteration(
    weight_mat: Tensor,
    u: Tensor,
    v: Tensor,
    n_power_iterations: int = 1,
    eps: float = 1e-12,
) -> tuple[Tensor, Tensor]:
    r"""Power iteration for the top singular vectors of ``weight_mat`` (Miyato et al., 2018).

    Each of the ``n_power_iterations`` steps is, in torch's order (first :math:`u`, then
    :math:`v` from the new :math:`u`),

    .. math::
        \mathbf{u} \leftarrow \frac{W\mathbf{v}}{\max(\lVert W\mathbf{v}\rVert_2, \epsilon)},
        \qquad
        \mathbf{v} \leftarrow
        \frac{W^\mathsf{H}\mathbf{u}}{\max(\lVert W^\mathsf{H}\mathbf{u}\rVert_2, \epsilon)} .

    The vectors converge to the left and right singular vectors of the largest singular
    value when the starting :math:`\mathbf{v}` is not orthogonal to the right one. The
    arithmetic is that of torch's ``_SpectralNorm._power_method``, so the result is
    bitwise the same; nothing here carries a gradient (the estimate treats
    :math:`\mathbf{u}, \mathbf{v}` as constants) and the inputs are not modified.

    Args:
        weight_mat: :math:`W`, shape ``(h, w)``.
        u: shape ``(h,)``.
        v: shape ``(w,)``.
        n_power_iterations: number of steps, ``>= 0``.
        eps: floor of the norms.

    Returns:
        The new ``(u, v)``.

    Example::

        >>> import torch
        >>> W = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
        >>> u, v = power_iteration(W, torch.ones(2), torch.ones(2), 20)
        >>> round(spectral_norm_estimate(W, u, v).item(), 4)
        3.0
    """
    if n_power_iterations < 0:
        raise ValueError(
            f"Expected n_power_iterations to be non-negative, got {n_power_iterations}"
        )
    if weight_mat.ndim != 2:
        raise ValueError(f"Expected weight_mat to be a matrix, got {weight_mat.ndim} dimensions")
    for _ in range(n_power_iterations):
        u = _normalize(torch.mv(weight_mat, v), eps)  # u = W v / ||W v||
        v = _normalize(torch.mv(weight_mat.mH, u), eps)  # v = W^H u / ||W^H u||
    return u, v


def spectral_norm_estimate(weight_mat: Tensor, u: Tensor, v: Tensor) -> Tensor:
    r"""The spectral-norm estimate :math:`\sigma = \mathbf{u}^\mathsf{H} W \mathbf{v}`.

    Equal to the largest singular value :math:`\sigma_1(W)` when :math:`\mathbf{u},
    \mathbf{v}` are its unit singular vectors (see :func:`power_iteration`); differentiable
    in ``weight_mat``, with :math:`\partial\sigma/\partial W = \mathbf{u}\mathbf{v}^\mathsf{H}`
    for real matrices.
    """
    return torch.vdot(u, torch.mv(weight_mat, v))


class SpectralNorm(nn.Module):
    r"""Spectral normalization (Miyato et al., 2018) as a parametrization.

    .. math::
        W_{SN} = \frac{W}{\sigma(W)}, \qquad
        \sigma(W) \approx \mathbf{u}^\mathsf{H} W_\text{mat}\, \mathbf{v},

    where :math:`W_\text{mat}` is the weight with axis ``dim`` moved to the front and the
    others flattened, shape ``(h, w)``. The buffers ``_u`` (``h``) and ``_v`` (``w``) start as
    normalized Gaussian vectors (drawn in that order, as torch does, so a seed gives torch's
    values) refined by 15 steps of :func:`power_iteration`; each forward in training mode
    does ``n_power_iterations`` more, in place, and evaluation mode reuses them. A 1-D weight
    is simply divided by its norm (no buffers). ``right_inverse`` is the identity. The twin
    of torch's private ``_SpectralNorm``.

    Example::

        >>> import torch
        >>> W = torch.diag(torch.tensor([4.0, 1.0]))
        >>> sn = SpectralNorm(W)
        >>> sn(W).diagonal().tolist()
        [1.0, 0.25]
    """

    _u: Tensor
    _v: Tensor

    def __init__(
        self,
        weight: Tensor,
        n_power_iterations: int = 1,
        dim: int = 0,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        ndim = weight.ndim
        if dim >= ndim or dim < -ndim:
            raise IndexError(
                "Dimension out of range (expected to be in range of "
                f"[-{ndim}, {ndim - 1}] but got {dim})"
            )
        if n_power_iterations <= 0:
            raise ValueError(
                "Expected n_power_iterations to be positive, but "
                f"got n_power_iterations={n_power_iterations}"
            )
        self.dim = dim % ndim
        self.eps = eps
        self.n_power_iterations = n_power_iterations
        if ndim > 1:  # a vector needs no estimate (see forward)
            with torch.no_grad():
                W = self._reshape_weight_to_matrix(weight)
                h, w = W.shape
                u = torch.randn(h, dtype=W.dtype, device=W.device)  # u first, then v:
                v = torch.randn(w, dtype=W.dtype, device=W.device)  # torch's RNG order
                self.register_buffer("_u", _normalize(u, eps))
                self.register_buffer("_v", _normalize(v, eps))
                self._power_method(W, 15)  # start near the top singular vectors

    def _reshape_weight_to_matrix(self, weight: Tensor) -> Tensor:
        """:math:`W_\\text{mat}`: axis ``dim`` first, the others flattened, shape (h, w)."""
        if self.dim != 0:
            weight = weight.movedim(self.dim, 0)
        return weight.flatten(1)

    @torch.no_grad()
    def _power_method(self, weight_mat: Tensor, n_power_iterations: int) -> None:
        """:func:`power_iteration`, written into the buffers *in place* (so that replicas of
        the module that share the buffers' storage, e.g. under ``DataParallel``, see it)."""
        u, v = power_iteration(weight_mat, self._u, self._v, n_power_iterations, self.eps)
        self._u.copy_(u)
        self._v.copy_(v)

    def forward(self, weight: Tensor) -> Tensor:
        """:math:`W / \\sigma(W)`, after a power step in training mode."""
        if weight.ndim == 1:
            return _normalize(weight, self.eps)  # sigma of a vector is its norm
        W = self._reshape_weight_to_matrix(weight)
        if self.training:
            self._power_method(W, self.n_power_iterations)
        # Copies: a later in-place power step must not change what autograd saved here.
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        sigma = spectral_norm_estimate(W, u, v)
        return weight / sigma

    def right_inverse(self, value: Tensor) -> Tensor:
        """The identity: an assigned weight is stored as it is (and normalized on read)."""
        return value

    def extra_repr(self) -> str:
        return f"n_power_iterations={self.n_power_iterations}, dim={self.dim}, eps={self.eps}"


_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def spectral_norm(
    module: nn.Module,
    name: str = "weight",
    n_power_iterations: int = 1,
    eps: float = 1e-12,
    dim: int | None = None,
) -> nn.Module:
    r"""Apply spectral normalization to ``module.<name>``; the twin of torch's
    ``spectral_norm``.

    .. math::
        W_{SN} = \frac{W}{\sigma(W)}, \qquad
        \sigma(W) = \max_{\mathbf{h}\ne 0}\frac{\lVert W\mathbf{h}\rVert_2}{\lVert\mathbf{h}
        \rVert_2} \approx \mathbf{u}^\mathsf{H} W \mathbf{v}

    keeps the layer 1-Lipschitz (Miyato et al., 2018). :math:`\sigma` is estimated by
    ``n_power_iterations`` steps of :func:`power_iteration` whenever the weight is read in
    training mode; see :class:`SpectralNorm`. ``dim`` is the output axis: ``0``, or ``1`` for
    ``ConvTranspose1d/2d/3d``. Registered with torch's default ``unsafe=False``, which reads
    the weight once: right after registration the vectors have had ``15 + n_power_iterations``
    steps, as in torch.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> m = spectral_norm(nn.Linear(20, 40))
        >>> round(torch.linalg.matrix_norm(m.weight, 2).item(), 2)
        1.0
    """
    weight = _tensor_attribute(module, name)
    if dim is None:
        dim = 1 if isinstance(module, _CONV_TRANSPOSE) else 0
    parametrize.register_parametrization(
        module, name, SpectralNorm(weight, n_power_iterations, dim, eps)
    )
    return module


# --- orthogonal maps -----------------------------------------------------------------------


def _skew_from_tril(X: Tensor) -> Tensor:
    r"""The skew-symmetric (skew-Hermitian) :math:`A = L - L^\mathsf{H}`, shape (..., n, n),
    from the lower triangle :math:`L` of a tall ``X`` (n >= k), zero-padded to n columns.

    For real ``X`` the diagonal cancels and the strictly lower part holds :math:`nk -
    k(k+1)/2` free entries, the dimension of the set of :math:`n\times k` matrices with
    orthonormal columns (complex ``X`` adds the imaginary part of the diagonal). For a square
    real matrix :math:`\exp(A)` reaches the rotations (:math:`\det Q = +1`) only; the base of
    the dynamic trivialization supplies the other component.
    """
    n, k = X.size(-2), X.size(-1)
    L = X.tril()
    if n != k:
        L = torch.cat([L, L.new_zeros(n, n - k).expand(*L.shape[:-2], -1, -1)], dim=-1)
    return L - L.mH


def _matrix_exp_tall(X: Tensor) -> Tensor:
    r""":math:`Q = \exp(A)_{:, :k}` for a tall ``X``."""
    k = X.size(-1)
    return torch.matrix_exp(_skew_from_tril(X))[..., :k]


def _cayley_tall(X: Tensor) -> Tensor:
    r""":math:`Q = \big((I - A/2)^{-1}(I + A/2)\big)_{:, :k}` for a tall ``X``."""
    n, k = X.size(-2), X.size(-1)
    A = _skew_from_tril(X)
    Id = torch.eye(n, dtype=A.dtype, device=A.device)
    return torch.linalg.solve(Id - A / 2, Id + A / 2)[..., :k]


def _householder_tall(X: Tensor, sign: HouseholderSign = "sign") -> Tensor:
    r""":math:`Q = H_1 \cdots H_k\,\mathrm{diag}(s)` for a tall real ``X`` (n >= k).

    Column :math:`j` of the strictly lower triangle, with an implicit 1 on the diagonal, is
    the reflector :math:`\mathbf{h}_j`, and :math:`H_j = I - \tau_j \mathbf{h}_j
    \mathbf{h}_j^\mathsf{T}` with :math:`\tau_j = 2/\lVert\mathbf{h}_j\rVert^2 = 2/(1 +
    \lVert\text{tail}_j\rVert^2)`, a reflection. :math:`s_j` is the sign of :math:`x_{jj}`
    (``sign="sign"``, sign bit: ``-0.0`` counts as negative, ``+0.0`` as positive) or torch's
    ``int(x_jj)`` (``sign="int"``), which is 0 once :math:`|x_{jj}| < 1`.
    """
    if X.is_complex():
        raise ValueError("The householder parametrization does not support complex tensors.")
    H = X.tril(diagonal=-1)
    tau = 2.0 / (1.0 + (H * H).sum(dim=-2))
    Q = torch.linalg.householder_product(H, tau)
    d = X.diagonal(dim1=-2, dim2=-1)
    if sign == "int":
        s = d.int()  # torch's rule: truncation toward zero
    elif sign == "sign":
        s = 1.0 - 2.0 * torch.signbit(d).to(Q.dtype)  # -1 where d < 0 or d is -0.0, else +1
    else:
        raise ValueError(f'householder_sign has to be one of "sign", "int". Got: {sign}')
    return Q * s.unsqueeze(-2)  # the sign carries no gradient


def _as_tall(map_tall, X: Tensor, *args: Any) -> Tensor:
    """Apply a tall-matrix map to ``X``, transposing wide matrices there and back."""
    if X.ndim < 2:
        raise ValueError(
            f"Expected a matrix or batch of matrices. Got a tensor of {X.ndim} dimensions."
        )
    wide = X.size(-2) < X.size(-1)
    Q = map_tall(X.mT if wide else X, *args)
    return Q.mT if wide else Q


def matrix_exp_map(X: Tensor) -> Tensor:
    r"""The orthogonal (unitary) :math:`Q = \exp(A)` of a skew-symmetric :math:`A` built
    from ``X`` (Lezcano-Casado & Martínez-Rubio, 2019).

    For a tall ``X`` of shape ``(..., n, k)``: :math:`L` = the lower triangle of ``X``
    padded with zeros to ``(n, n)``, :math:`A = L - L^\mathsf{H}` (so :math:`A^\mathsf{H} =
    -A` and :math:`\exp(A)^\mathsf{H}\exp(A) = \exp(-A)\exp(A) = I`), and :math:`Q` = the
    first :math:`k` columns of :math:`\exp(A)`. A wide ``X`` is transposed, mapped and
    transposed back (orthonormal rows). Exactly what ``orthogonal(...,
    orthogonal_map="matrix_exp", use_trivialization=False)`` computes from its ``original``.

    .. note::
        This calls ``torch.matrix_exp`` as torch's parametrization does, so it shares a
        torch bug (pytorch/pytorch#196592, present in torch 2.13): a *single* matrix (batch
        of one) whose norm selects the degree-8 Taylor polynomial is evaluated with a wrong
        coefficient. The rotation generator :math:`A = \theta\,(e_2e_1^\mathsf{T} -
        e_1e_2^\mathsf{T})` gives a :math:`Q` that is orthogonal only to about
        :math:`10^{-5}` in float32 at :math:`\theta = 0.5` and :math:`4\cdot 10^{-12}` in
        float64 at :math:`\theta = 0.04`; batches of two or more take an accurate path.

    Example::

        >>> import torch
        >>> Q = matrix_exp_map(torch.randn(5, 3))
        >>> torch.allclose(Q.T @ Q, torch.eye(3), atol=1e-6)
        True
    """
    return _as_tall(_matrix_exp_tall, X)


def cayley_map(X: Tensor) -> Tensor:
    r"""The orthogonal (unitary) Cayley transform
    :math:`Q = (I - A/2)^{-1}(I + A/2)` of the skew-symmetric :math:`A` built from ``X``.

    :math:`A` and the handling of tall, wide and batched ``X`` are those of
    :func:`matrix_exp_map`; :math:`I - A/2` is invertible because the eigenvalues of a
    skew-symmetric matrix are imaginary. A rational approximation of :math:`\exp(A)` that
    needs one linear solve. Exactly what ``orthogonal(..., orthogonal_map="cayley",
    use_trivialization=False)`` computes from its ``original``.

    Example::

        >>> import torch
        >>> Q = cayley_map(torch.randn(2, 4, 4, dtype=torch.float64))
        >>> torch.allclose(Q.mT @ Q, torch.eye(4, dtype=torch.float64))
        True
    """
    return _as_tall(_cayley_tall, X)


def householder_map(X: Tensor, *, sign: HouseholderSign = "sign") -> Tensor:
    r"""The orthogonal :math:`Q = H_1 H_2 \cdots H_k\,\mathrm{diag}(s)`, a product of
    Householder reflections (Mhammedi et al., 2017) read off a real ``X``.

    For a tall ``X`` of shape ``(..., n, k)``, column :math:`j` below the diagonal, with an
    implicit 1 on the diagonal, is the reflector :math:`\mathbf{h}_j`, and

    .. math::
        H_j = I - \tau_j\mathbf{h}_j\mathbf{h}_j^\mathsf{T}, \qquad
        \tau_j = \frac{2}{\lVert\mathbf{h}_j\rVert_2^2}
               = \frac{2}{1 + \sum_{i>j} x_{ij}^2}

    (``torch.linalg.householder_product``), keeping the first :math:`k` columns. The
    diagonal of ``X`` holds signs :math:`s_j`, so that :math:`-I` is reachable too. A wide
    ``X`` is transposed, mapped and transposed back. Complex ``X`` raises ``ValueError``.

    **Differs from torch on purpose.** torch uses :math:`s_j = \operatorname{int}(x_{jj})`,
    which is 0 as soon as weight decay pulls :math:`|x_{jj}|` below 1 (the weight collapses to
    zero) and an integer other than :math:`\pm1` beyond 2. We use the sign
    (``sign="sign"``): :math:`s_j = -1` if :math:`x_{jj} < 0` or :math:`x_{jj}` is ``-0.0``,
    else :math:`+1`. Both agree whenever :math:`1 \le |x_{jj}| < 2`; ``sign="int"`` gives
    torch's rule.

    Example::

        >>> import torch
        >>> X = torch.tensor([[-0.5, 0.0], [0.3, -0.5], [0.1, 0.2]])
        >>> householder_map(X, sign="int").abs().sum().item()  # torch: diag -0.5 -> 0
        0.0
        >>> Q = householder_map(X)
        >>> torch.allclose(Q.T @ Q, torch.eye(2), atol=1e-6)
        True
    """
    return _as_tall(_householder_tall, X, sign)


# --- orthogonal parametrization ------------------------------------------------------------


def _is_orthogonal(Q: Tensor) -> bool:
    r""":math:`Q^\mathsf{H}Q \approx I` within :math:`10\,n\,\varepsilon` (torch's test)."""
    n, k = Q.size(-2), Q.size(-1)
    Id = torch.eye(k, dtype=Q.dtype, device=Q.device)
    return torch.allclose(Q.mH @ Q, Id, atol=10.0 * n * torch.finfo(Q.dtype).eps)


def _make_orthogonal(A: Tensor) -> Tensor:
    r"""The :math:`Q` of :math:`A = QR` with :math:`\operatorname{diag}(R)` real and
    non-negative, for a tall (possibly complex, batched) ``A``."""
    X, tau = torch.geqrf(A)
    Q = torch.linalg.householder_product(X, tau)
    Q *= X.diagonal(dim1=-2, dim2=-1).sgn().unsqueeze(-2)  # diag(X) = diag(R)
    return Q


_TALL_MAPS = {
    "matrix_exp": _matrix_exp_tall,
    "cayley": _cayley_tall,
    "householder": _householder_tall,
}


class Orthogonal(nn.Module):
    r"""The orthogonal (unitary) parametrization; the twin of torch's private ``_Orthogonal``.

    ``forward(X)`` maps an unconstrained ``X`` of shape ``(..., n, k)`` to :math:`Q` with
    :math:`Q^\mathsf{H}Q = I_k` (:math:`n \ge k`) or :math:`QQ^\mathsf{H} = I_n`
    (:math:`n < k`) through ``orthogonal_map`` (:func:`matrix_exp_map`, :func:`cayley_map`
    or :func:`householder_map`, computed on the tall orientation). With
    ``use_trivialization=True`` (dynamic trivialization, Lezcano-Casado, 2019) the result is
    :math:`B\,\phi(X)` with a fixed orthogonal base :math:`B` (``n x n``, the buffer
    ``base``): ``right_inverse(Q)`` stores :math:`B` = ``Q`` completed to a square orthogonal
    matrix (QR with a non-negative diagonal of :math:`R` when ``Q`` is not orthogonal, a
    Gaussian completion for rectangular ``Q``, drawn exactly as torch draws it) and returns
    ``X`` = :math:`-I` (zeros with ``-1`` on the diagonal), whose image is :math:`I`, so that
    reading the weight gives ``Q`` back. Without it, ``right_inverse`` only exists for the
    Householder map (the reflectors of ``geqrf(Q)``).

    ``householder_sign`` picks the Householder diagonal rule: ``"sign"`` (ours, orthogonal
    whatever the optimizer does to the diagonal) or ``"int"`` (torch's, zero once weight
    decay shrinks the diagonal below 1). See :func:`householder_map`.

    Example::

        >>> import torch
        >>> W = torch.randn(4, 4)
        >>> orth = Orthogonal(W, "cayley")
        >>> X = orth.right_inverse(W)
        >>> Q = orth(X)
        >>> torch.allclose(Q.T @ Q, torch.eye(4), atol=1e-6)
        True
    """

    base: Tensor | None

    def __init__(
        self,
        weight: Tensor,
        orthogonal_map: str,
        *,
        use_trivialization: bool = True,
        householder_sign: HouseholderSign = "sign",
    ) -> None:
        super().__init__()
        orthogonal_map = getattr(orthogonal_map, "name", orthogonal_map)  # torch's enum too
        if orthogonal_map not in _TALL_MAPS:
            raise ValueError(
                'orthogonal_map has to be one of "matrix_exp", "cayley", "householder". '
                f"Got: {orthogonal_map}"
            )
        # A complex n x n matrix needs n^2 real parameters; complex reflectors with their
        # tau given by the reflectors alone have n(n-1): not every unitary matrix is reached.
        if weight.is_complex() and orthogonal_map == "householder":
            raise ValueError("The householder parametrization does not support complex tensors.")
        if householder_sign not in ("sign", "int"):
            raise ValueError(
                f'householder_sign has to be one of "sign", "int". Got: {householder_sign}'
            )
        self.shape = weight.shape
        self.orthogonal_map = orthogonal_map
        self.householder_sign = householder_sign
        if use_trivialization:
            self.register_buffer("base", None)

    def _phi(self, X: Tensor) -> Tensor:
        """The map on a tall ``X``."""
        if self.orthogonal_map == "householder":
            return _householder_tall(X, self.householder_sign)
        return _TALL_MAPS[self.orthogonal_map](X)

    def forward(self, X: Tensor) -> Tensor:
        r""":math:`Q = B\,\phi(X)` (or :math:`\phi(X)`), computed on the tall orientation."""
        wide = X.size(-2) < X.size(-1)
        if wide:
            X = X.mT
        Q = self._phi(X)
        if hasattr(self, "base"):
            Q = self.base @ Q
        return Q.mT if wide else Q

    @torch.no_grad()
    def right_inverse(self, Q: Tensor) -> Tensor:
        """An ``X`` with ``forward(X) == Q`` (orthogonalizing ``Q`` first if it is not)."""
        if Q.shape != self.shape:
            raise ValueError(
                f"Expected a matrix or batch of matrices of shape {self.shape}. "
                f"Got a tensor of shape {Q.shape}."
            )
        Q_init = Q
        n, k = Q.size(-2), Q.size(-1)
        wide = n < k
        if wide:
            Q = Q.mT
            n, k = k, n

        if not hasattr(self, "base"):
            if self.orthogonal_map != "householder":
                # Finding X with exp(L - L^H)[:, :k] = Q has no closed form.
                raise NotImplementedError(
                    "It is not possible to assign to the matrix exponential "
                    "or the Cayley parametrizations when use_trivialization=False."
                )
            # Q = H_1 ... H_k R: the reflectors below the diagonal, signs on it. A reflector
            # LAPACK skipped (tau = 0) is applied by our forward anyway (tau = 2/|h|^2), and
            # a flipped sign undoes it.
            A, tau = torch.geqrf(Q)
            A.diagonal(dim1=-2, dim2=-1).sign_()
            A.diagonal(dim1=-2, dim2=-1)[tau == 0.0] *= -1
            return A.mT if wide else A

        if n == k:
            Q = Q.clone() if _is_orthogonal(Q) else _make_orthogonal(Q)
        else:  # complete the k orthonormal columns to a square orthogonal base
            N = torch.randn(*(Q.size()[:-2] + (n, n - k)), dtype=Q.dtype, device=Q.device)
            Q = _make_orthogonal(torch.cat([Q, N], dim=-1))
        self.base = Q
        # phi(-I) = I for every map (for the Householder map: tau = 2 reflects e_j, and the
        # sign -1 undoes it), so forward returns the base's first k columns.
        neg_Id = torch.zeros_like(Q_init)
        neg_Id.diagonal(dim1=-2, dim2=-1).fill_(-1.0)
        return neg_Id

    def extra_repr(self) -> str:
        extra = f", householder_sign={self.householder_sign!r}"
        return f"orthogonal_map={self.orthogonal_map!r}" + (
            extra if self.orthogonal_map == "householder" else ""
        )


def orthogonal(
    module: nn.Module,
    name: str = "weight",
    orthogonal_map: str | None = None,
    *,
    use_trivialization: bool = True,
    householder_sign: HouseholderSign = "sign",
) -> nn.Module:
    r"""Make ``module.<name>`` orthogonal (unitary); the twin of torch's ``orthogonal``.

    .. math::
        Q^\mathsf{H} Q = I_n \quad (m \ge n), \qquad Q Q^\mathsf{H} = I_m \quad (m < n)

    for :math:`Q \in \mathbb{K}^{m\times n}` (or a batch of them), through ``orthogonal_map``:
    ``"matrix_exp"`` (:math:`\exp(A)`, :func:`matrix_exp_map`), ``"cayley"``
    (:math:`(I - A/2)^{-1}(I + A/2)`, :func:`cayley_map`) of a skew-symmetric :math:`A`
    (Lezcano-Casado & Martínez-Rubio, 2019), or ``"householder"`` (a product of reflections,
    :func:`householder_map`, Mhammedi et al., 2017). Default, as torch: ``"matrix_exp"`` for
    a square or complex matrix, ``"householder"`` otherwise. With ``use_trivialization`` the
    base :math:`B` is stored as ``parametrizations.<name>.0.base`` (see :class:`Orthogonal`).
    The initial :math:`Q` is the weight itself when it is orthogonal, else the Q of its QR
    decomposition.

    ``householder_sign="sign"`` (default) differs from torch on purpose: torch's
    Householder map multiplies by ``int(diagonal)``, and a single weight-decay step turns the
    weight into zeros; ours stays orthogonal. ``"int"`` gives torch's behaviour.

    Raises:
        ValueError: ``module`` has no tensor ``name``; the tensor has fewer than 2
            dimensions; an unknown ``orthogonal_map``; a complex tensor with
            ``"householder"``.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> m = orthogonal(nn.Linear(20, 40))
        >>> m.parametrizations.weight[0].orthogonal_map
        'householder'
        >>> Q = m.weight
        >>> torch.dist(Q.T @ Q, torch.eye(20)).item() < 1e-5
        True
    """
    weight = _tensor_attribute(module, name)
    # The maps on the sphere would do for vectors, but torch refuses them: so do we.
    if weight.ndim < 2:
        raise ValueError(
            "Expected a matrix or batch of matrices. "
            f"Got a tensor of {weight.ndim} dimensions. "
            f"(module {type(module).__name__}, tensor '{name}' of shape {tuple(weight.shape)})"
        )
    if orthogonal_map is None:
        square = weight.size(-2) == weight.size(-1)
        orthogonal_map = "matrix_exp" if square or weight.is_complex() else "householder"
    orth = Orthogonal(
        weight,
        orthogonal_map,
        use_trivialization=use_trivialization,
        householder_sign=householder_sign,
    )
    parametrize.register_parametrization(module, name, orth, unsafe=True)
    return module
