"""Inspecting the parameters of a model: names, shapes, counts, ties and gradients.

The helpers in this module answer the questions the first chapters keep asking:

- :func:`param_table` -- which tensors does a module hold, under which names, with which
  shape, dtype and device, and which names are the *very same* tensor (tied)?
- :func:`tied_parameters` -- the groups of names that refer to one ``nn.Parameter`` object;
- :func:`count_parameters` -- how many scalars does the model learn, counting each tied
  tensor once (what the optimizer sees) or once per name (what ``state_dict`` stores);
- :func:`grad_stats` -- per-parameter gradient norm, mean, std and max-abs after a backward
  pass, with ``none`` for parameters whose ``.grad`` is still ``None``;
- :func:`snapshot` and :func:`update_ratio` -- the update:data ratio
  :math:`\\lVert \\theta_{t+1} - \\theta_t \\rVert / \\lVert \\theta_t \\rVert` per parameter, a
  quick health check of a learning rate (Karpathy's makemore lectures; CS231n);
- :func:`param_groups` -- optimizer parameter groups with and without weight decay, chosen
  by parameter name and layer type (biases and normalization layers get none by default),
  each tied tensor once, with a table of what went where.

Sharing is decided by object identity (``a is b``), never by equal values: two layers that
happen to hold equal numbers are *copies*, they receive separate gradients and drift apart
as soon as they are trained.

Example::

    >>> from torch import nn
    >>> shared = nn.Linear(4, 4)
    >>> net = nn.Sequential(shared, nn.ReLU(), shared)
    >>> tied_parameters(net)
    [['0.weight', '2.weight'], ['0.bias', '2.bias']]
    >>> count_parameters(net), count_parameters(net, unique=False)
    (20, 40)
"""

from __future__ import annotations

import fnmatch
import html
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin
from torch.nn.utils.parametrize import ParametrizationList

from normtut import normalization as _nnorm

__all__ = [
    "ParamRow",
    "ParamTable",
    "GradRow",
    "GradTable",
    "param_table",
    "tied_parameters",
    "count_parameters",
    "grad_stats",
    "snapshot",
    "update_ratio",
    "DEFAULT_NO_DECAY",
    "GroupRow",
    "GroupTable",
    "ParamGroups",
    "param_groups",
]


# --------------------------------------------------------------------------------------------
# Small rendering helpers shared by the two tables
# --------------------------------------------------------------------------------------------


def _fmt_shape(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "uninitialized"
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _fmt_dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _fmt_float(x: float | None) -> str:
    return "none" if x is None else f"{x:.3e}"


def _text_table(
    header: Sequence[str], body: Sequence[Sequence[str]], footer: str, right: Sequence[bool]
) -> str:
    """Aligned plain-text table: ``right[i]`` right-aligns column ``i``; a footer line below."""
    widths = [len(h) for h in header]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in body), rule, *_wrap(footer)])


def _wrap(footer: str, width: int = 80) -> list[str]:
    """The footer's ``; ``-separated parts on lines of at most ``width`` characters."""
    lines: list[str] = []
    for part in footer.split("; "):
        if lines and len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += "; " + part
        else:
            lines.append(part)
    return lines


def _html_table(header: Sequence[str], body: Sequence[Sequence[str]], footer: str) -> str:
    esc = html.escape
    # inline styles: the book's theme gives bare tables no cell padding
    cell = "padding:0.2em 0.9em 0.2em 0;white-space:nowrap;text-align:left"
    head = "".join(f"<th style='{cell}'>{esc(h)}</th>" for h in header)
    rows = "".join(
        "<tr>" + "".join(f"<td style='{cell}'><code>{esc(c)}</code></td>" for c in row) + "</tr>"
        for row in body
    )
    return (
        "<table class='normtut-table'>"
        f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody>"
        f"<tfoot><tr><td colspan='{len(header)}'>{esc(footer)}</td></tr></tfoot>"
        "</table>"
    )


# --------------------------------------------------------------------------------------------
# Parameter table
# --------------------------------------------------------------------------------------------


class _Table:
    """What the two tables share: rows, lookup by name, text and HTML rendering."""

    columns: tuple[str, ...] = ()
    _right: tuple[bool, ...] = ()
    _what = "entry"

    def __init__(self, rows: Sequence[Any]):
        self.rows = list(rows)

    # -- container protocol, for tests and loops --------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def _matches(self, row: Any, name: str) -> bool:
        return row.name == name

    def __getitem__(self, name: str) -> Any:
        for r in self.rows:
            if self._matches(r, name):
                return r
        raise KeyError(f"no {self._what} named {name!r}; names: {self.names}")

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rows]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{name: {"shape": ..., ...}}`` in table order."""
        out = {}
        for r in self.rows:
            d = asdict(r)
            d.pop("name")
            out[r.name] = d
        return out

    # -- rendering ---------------------------------------------------------------------------
    def _body(self) -> list[list[str]]:
        raise NotImplementedError

    def footer(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return _text_table(self.columns, self._body(), self.footer(), self._right)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        return _html_table(self.columns, self._body(), self.footer())


@dataclass(frozen=True)
class ParamRow:
    """One named tensor of a module.

    ``shape`` is ``None`` and ``numel`` is ``0`` for a lazy module's parameter that has not
    been materialized yet (``nn.LazyLinear`` before its first forward pass).
    ``shared_with`` lists the *other* names under which the very same tensor object appears.
    """

    name: str
    shape: tuple[int, ...] | None
    numel: int
    dtype: str
    device: str
    requires_grad: bool
    kind: str  # "param" or "buffer"
    shared_with: tuple[str, ...] = field(default_factory=tuple)

    @property
    def initialized(self) -> bool:
        return self.shape is not None


class ParamTable(_Table):
    """What :func:`param_table` returns: rows plus totals, printable as text or HTML.

    Totals count every *unique* tensor once: ``total`` is the number of scalars stored in
    memory (parameters and, if included, buffers), ``total_params`` the learnable ones.
    ``duplicates`` is how many entries repeat a tensor already listed under another name.
    """

    columns = ("name", "shape", "numel", "dtype", "device", "grad", "kind", "shared with")
    _right = (False, False, True, False, False, False, False, False)

    def __init__(self, rows: Sequence[ParamRow]):
        super().__init__(rows)
        firsts = self._first_entries()
        self.total: int = sum(r.numel for r in firsts)
        self.total_params: int = sum(r.numel for r in firsts if r.kind == "param")
        self.total_buffers: int = sum(r.numel for r in firsts if r.kind == "buffer")
        self.trainable: int = sum(r.numel for r in firsts if r.kind == "param" and r.requires_grad)
        self.n_unique: int = len(firsts)
        self.duplicates: int = len(self.rows) - len(firsts)
        self.uninitialized: int = sum(not r.initialized for r in self.rows)

    def _first_entries(self) -> list[ParamRow]:
        seen: set[str] = set()
        firsts = []
        for r in self.rows:
            if r.name in seen:
                continue
            firsts.append(r)
            seen.update(r.shared_with)
        return firsts

    _what = "parameter or buffer"

    def _body(self) -> list[list[str]]:
        return [
            [
                r.name,
                _fmt_shape(r.shape),
                f"{r.numel:,}",
                r.dtype,
                r.device,
                "yes" if r.requires_grad else "no",
                r.kind,
                ", ".join(r.shared_with) or "-",
            ]
            for r in self.rows
        ]

    def footer(self) -> str:
        """The total line: unique scalars, tensors, and how many entries are tied duplicates."""
        parts = [f"total: {self.total:,} scalars in {self.n_unique} unique tensors"]
        if self.total_buffers:
            parts.append(f"{self.total_params:,} in parameters, {self.total_buffers:,} in buffers")
        if self.trainable != self.total_params:
            parts.append(f"{self.trainable:,} trainable")
        dup = "entry is a tied duplicate" if self.duplicates == 1 else "entries are tied duplicates"
        parts.append(f"{self.duplicates} {dup}")
        if self.uninitialized:
            parts.append(f"{self.uninitialized} uninitialized (lazy) not counted")
        return "; ".join(parts)


def _identity_groups(named: Sequence[tuple[str, torch.Tensor]]) -> dict[str, tuple[str, ...]]:
    """For each name, the other names bound to the same tensor object."""
    by_id: dict[int, list[str]] = {}
    for name, t in named:
        by_id.setdefault(id(t), []).append(name)
    return {name: tuple(n for n in by_id[id(t)] if n != name) for name, t in named}


def _row(name: str, t: torch.Tensor, kind: str, shared_with: tuple[str, ...]) -> ParamRow:
    lazy = isinstance(t, UninitializedTensorMixin)
    return ParamRow(
        name=name,
        shape=None if lazy else tuple(t.shape),
        numel=0 if lazy else t.numel(),
        dtype=_fmt_dtype(t.dtype),
        device=str(t.device),
        requires_grad=bool(t.requires_grad),
        kind=kind,
        shared_with=shared_with,
    )


def param_table(module: nn.Module, *, include_buffers: bool = False) -> ParamTable:
    """Tabulate every named parameter of ``module`` (and its buffers if asked).

    One row per entry of ``module.named_parameters(remove_duplicate=False)`` -- so a tied
    tensor appears once under each of its names, as in ``state_dict()`` -- followed, with
    ``include_buffers=True``, by one row per ``named_buffers(remove_duplicate=False)``.
    ``shared_with`` names the other entries that are the *same object* (``is``); the total
    line counts each tensor once and says how many entries are such duplicates.

    In a notebook the table renders as HTML; ``print(table)`` gives aligned text.

    Example::

        >>> t = param_table(nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), include_buffers=True)
        >>> t.total_params, t["0.weight"].shape
        (12, (2, 3))
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"param_table expects an nn.Module, got {type(module).__name__}")
    named: list[tuple[str, torch.Tensor]] = list(module.named_parameters(remove_duplicate=False))
    n_params = len(named)
    if include_buffers:
        named += [(n, b) for n, b in module.named_buffers(remove_duplicate=False) if b is not None]
    shared = _identity_groups(named)
    rows = [
        _row(name, t, "param" if i < n_params else "buffer", shared[name])
        for i, (name, t) in enumerate(named)
    ]
    return ParamTable(rows)


def tied_parameters(module: nn.Module) -> list[list[str]]:
    """Groups of parameter names that are bound to one and the same ``nn.Parameter``.

    Only identity counts (``a is b``): two parameters with equal values, or a parameter and
    a fresh ``nn.Parameter`` wrapping the same storage, are *not* tied -- autograd gives them
    separate gradients. Groups and the names inside them come in registration order; names
    that are not shared do not appear.

    Example::

        >>> emb = nn.Embedding(10, 4)
        >>> dec = nn.Linear(4, 10, bias=False)
        >>> dec.weight = emb.weight
        >>> tied_parameters(nn.ModuleDict({"emb": emb, "dec": dec}))
        [['emb.weight', 'dec.weight']]
    """
    groups: dict[int, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def count_parameters(
    module: nn.Module, *, unique: bool = True, trainable_only: bool = False
) -> int:
    """Number of learnable scalars in ``module``.

    With ``unique=True`` (default) a tied parameter counts once; this equals
    ``sum(p.numel() for p in module.parameters())`` and is what an optimizer updates. With
    ``unique=False`` it counts once per name, as the entries of ``state_dict()`` do.
    ``trainable_only=True`` skips parameters with ``requires_grad=False``.

    Raises ``ValueError`` for a lazy module that has not run a forward pass yet: its
    parameters have no shape, so there is nothing to count.
    """
    lazy = [
        n
        for n, p in module.named_parameters(remove_duplicate=False)
        if isinstance(p, UninitializedTensorMixin)
    ]
    if lazy:
        raise ValueError(
            f"cannot count the parameters of {type(module).__name__}: {lazy} are "
            "uninitialized (lazy); run one forward pass first"
        )
    params = module.named_parameters(remove_duplicate=unique)
    return sum(p.numel() for _, p in params if p.requires_grad or not trainable_only)


# --------------------------------------------------------------------------------------------
# Gradient statistics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradRow:
    """Gradient statistics of one parameter; every statistic is ``None`` when ``.grad`` is."""

    name: str
    shape: tuple[int, ...] | None
    requires_grad: bool
    norm: float | None
    mean: float | None
    std: float | None
    max_abs: float | None
    shared_with: tuple[str, ...] = ()

    @property
    def has_grad(self) -> bool:
        return self.norm is not None


class GradTable(_Table):
    """What :func:`grad_stats` returns: one :class:`GradRow` per unique parameter."""

    columns = ("name", "shape", "grad norm", "mean", "std", "max |g|")
    _right = (False, False, True, True, True, True)

    def __init__(self, rows: Sequence[GradRow]):
        super().__init__(rows)

    _what = "parameter"

    def _matches(self, row: Any, name: str) -> bool:
        return row.name == name or name in row.shared_with

    def norms(self) -> dict[str, float | None]:
        """``{name: gradient norm or None}``, handy for a bar chart."""
        return {r.name: r.norm for r in self.rows}

    def footer(self) -> str:
        with_grad = [r for r in self.rows if r.has_grad]
        if not with_grad:
            return f"no gradients yet: all {len(self.rows)} parameters have .grad None"
        total = math.sqrt(sum(r.norm**2 for r in with_grad))
        missing = len(self.rows) - len(with_grad)
        return f"global grad norm {total:.3e} over {len(with_grad)} parameters" + (
            f"; {missing} with .grad None" if missing else ""
        )

    def _body(self) -> list[list[str]]:
        return [
            [
                r.name + (f" (= {', '.join(r.shared_with)})" if r.shared_with else ""),
                _fmt_shape(r.shape),
                _fmt_float(r.norm),
                _fmt_float(r.mean),
                _fmt_float(r.std),
                _fmt_float(r.max_abs),
            ]
            for r in self.rows
        ]


def grad_stats(module: nn.Module) -> GradTable:
    """Per-parameter gradient statistics: L2 norm, mean, std and max absolute value.

    A tied parameter has one ``.grad`` (the sum over its uses), so it is listed once, under
    its first name, with its other names in ``shared_with``. Parameters whose ``.grad`` is
    ``None`` -- before the first ``backward()``, after ``zero_grad(set_to_none=True)``, or
    frozen ones -- get ``None`` statistics, rendered as ``none``. The std is the population
    std (``correction=0``), defined for one-element gradients too.
    """
    aliases: dict[int, list[str]] = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(p), []).append(name)
    rows = []
    for name, p in module.named_parameters():
        others = tuple(n for n in aliases[id(p)] if n != name)
        shape = None if isinstance(p, UninitializedTensorMixin) else tuple(p.shape)
        g = p.grad
        if g is None:
            rows.append(GradRow(name, shape, p.requires_grad, None, None, None, None, others))
            continue
        g = g.detach().to(torch.float64)
        rows.append(
            GradRow(
                name=name,
                shape=shape,
                requires_grad=p.requires_grad,
                norm=g.norm().item(),
                mean=g.mean().item(),
                std=g.std(correction=0).item(),
                max_abs=g.abs().max().item(),
                shared_with=others,
            )
        )
    return GradTable(rows)


# --------------------------------------------------------------------------------------------
# Update:data ratio
# --------------------------------------------------------------------------------------------


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of every (unique) parameter, to compare with after an optimizer step."""
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def update_ratio(
    before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor] | nn.Module
) -> dict[str, float]:
    """Relative size of a parameter update, per parameter.

    .. math:: r = \\frac{\\lVert \\theta_{\\text{after}} - \\theta_{\\text{before}} \\rVert_2}
                        {\\lVert \\theta_{\\text{before}} \\rVert_2}

    ``before`` is a :func:`snapshot`; ``after`` is a later snapshot or the module itself.
    A ratio around ``1e-3`` per step is the usual rule of thumb for SGD-like training; far
    below, learning stalls, far above, it is unstable. A parameter that was exactly zero
    gives ``inf`` if it moved and ``0.0`` if it did not.
    """
    current = dict(after.named_parameters()) if isinstance(after, nn.Module) else dict(after)
    missing = sorted(set(before) - set(current))
    if missing:
        raise KeyError(f"update_ratio: {missing} are in `before` but not in `after`")
    out = {}
    for name, old in before.items():
        new = current[name].detach().to(old.device, torch.float64)
        old64 = old.detach().to(torch.float64)
        step = (new - old64).norm().item()
        base = old64.norm().item()
        out[name] = step / base if base > 0 else (math.inf if step > 0 else 0.0)
    return out


# --------------------------------------------------------------------------------------------
# Optimizer parameter groups: weight decay by name and by layer type
# --------------------------------------------------------------------------------------------

_NORM_TYPES: tuple[type[nn.Module], ...] = tuple(
    t
    for t in (
        nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*, lazy
        nn.LayerNorm,
        nn.GroupNorm,
        getattr(nn, "RMSNorm", None),  # torch >= 2.4
        nn.LocalResponseNorm,
        _nnorm.BatchNorm1d,
        _nnorm.BatchNorm2d,
        _nnorm.BatchNorm3d,
        _nnorm.LayerNorm,
        _nnorm.GroupNorm,
        _nnorm.RMSNorm,
    )
    if t is not None
)

DEFAULT_NO_DECAY: tuple[type[nn.Module] | str, ...] = ("bias", *_NORM_TYPES)
"""What :func:`param_groups` exempts from weight decay unless told otherwise: every parameter
named ``bias`` and every parameter of a normalization layer (torch's and normtut's batch,
instance, layer, group and RMS norms)."""


@dataclass(frozen=True)
class GroupRow:
    """Where one parameter went: its first name, the other names of the same tensor (tied),
    ``decay`` (``True``: the weight-decay group) and ``reason`` (the rule that exempted it,
    ``""`` when it decays)."""

    name: str
    shape: tuple[int, ...] | None
    numel: int
    decay: bool
    reason: str
    shared_with: tuple[str, ...] = field(default_factory=tuple)


class GroupTable(_Table):
    """What went where in :func:`param_groups`: one row per tensor, under its first name."""

    columns = ("name", "shape", "numel", "weight decay", "why")
    _right = (False, False, True, True, False)
    _what = "parameter"

    def __init__(self, rows: Sequence[GroupRow], weight_decay: float, skipped: Sequence[str]):
        super().__init__(rows)
        self.weight_decay = weight_decay
        self.skipped = list(skipped)  # names of frozen parameters left out

    def _body(self) -> list[list[str]]:
        out = []
        for r in self.rows:
            why = r.reason or "-"
            if r.shared_with:
                why += " (tied: " + ", ".join(r.shared_with) + ")"
            wd = f"{self.weight_decay:g}" if r.decay else "0"
            out.append([r.name, _fmt_shape(r.shape), f"{r.numel:,}", wd, why])
        return out

    def numel(self, decay: bool) -> int:
        """Scalars in the decay group (``True``) or in the no-decay group (``False``)."""
        return sum(r.numel for r in self.rows if r.decay == decay)

    def footer(self) -> str:
        n_dec = sum(r.decay for r in self.rows)
        text = (
            f"decay: {n_dec} tensors, {self.numel(True):,} scalars; "
            f"no decay: {len(self.rows) - n_dec} tensors, {self.numel(False):,} scalars"
        )
        if self.skipped:
            text += f"; {len(self.skipped)} frozen left out"
        return text


class ParamGroups(list):
    """The list of group dicts that :func:`param_groups` returns, with its :attr:`table`.

    It *is* a ``list`` of two dicts (decay group first), so it goes straight into any
    ``torch.optim`` optimizer; ``print(groups.table)`` (or ``groups.table`` in a notebook)
    shows where each parameter went.
    """

    table: GroupTable


def _check_no_decay(no_decay: Any) -> tuple[list[type[nn.Module]], list[str]]:
    if no_decay is None:
        no_decay = DEFAULT_NO_DECAY
    if isinstance(no_decay, (str, type)):
        no_decay = (no_decay,)
    try:
        entries = list(no_decay)
    except TypeError:
        raise TypeError(
            f"no_decay must be an iterable of layer types and name patterns, got {no_decay!r}"
        ) from None
    types, names = [], []
    for e in entries:
        if isinstance(e, str):
            names.append(e)
        elif isinstance(e, type) and issubclass(e, nn.Module):
            types.append(e)
        else:
            raise TypeError(
                "no_decay entries must be nn.Module subclasses or parameter-name patterns "
                f"(str), got {e!r}"
            )
    return types, names


def _owner_and_leaf(model: nn.Module, name: str) -> tuple[nn.Module, str, str]:
    """The layer that holds parameter ``name``, the tensor's attribute name, and its logical
    name: for ``0.parametrizations.weight.original`` that is layer ``0``, ``weight`` and
    ``0.weight`` (a parametrized tensor belongs to the layer it parametrizes)."""
    parts = name.split(".")
    for i in range(len(parts) - 3, -1, -1):
        if parts[i] == "parametrizations":
            plist = model.get_submodule(".".join(parts[: i + 2]))
            if isinstance(plist, ParametrizationList):
                owner_path = ".".join(parts[:i])
                logical = f"{owner_path}.{parts[i + 1]}" if owner_path else parts[i + 1]
                return model.get_submodule(owner_path), parts[i + 1], logical
    return model.get_submodule(".".join(parts[:-1])), parts[-1], name


def _exemption(
    model: nn.Module, name: str, types: Sequence[type[nn.Module]], patterns: Sequence[str]
) -> str:
    owner, leaf, logical = _owner_and_leaf(model, name)
    for t in types:
        if isinstance(owner, t):
            return f"in {type(owner).__name__}"
    for pat in patterns:
        if any(fnmatch.fnmatchcase(s, pat) for s in (leaf, logical, name)):
            return f"name {pat!r}"
    return ""


def param_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay: Sequence[type[nn.Module] | str] | None = DEFAULT_NO_DECAY,
    *,
    include_frozen: bool = False,
    **options: Any,
) -> ParamGroups:
    r"""Optimizer parameter groups: decay ``weight_decay`` for weights, none for the exempt.

    Returns a list of two group dicts, ``[{"params": decay, "weight_decay": weight_decay},
    {"params": exempt, "weight_decay": 0.0}]``, each also holding ``"param_names"`` and the
    extra ``options`` (``lr=...``, ``betas=...``), ready for ``torch.optim.AdamW(groups)``.
    A parameter is exempt when

    - the layer that holds it is an instance of a type in ``no_decay`` (default: every
      normalization layer, torch's and normtut's, :data:`DEFAULT_NO_DECAY`), or
    - its name matches a string in ``no_decay``: the attribute name (``"bias"``), the full
      name (``"encoder.pos_embed"``) or a glob pattern (``"*.norm*.weight"``).

    A parametrized tensor (``0.parametrizations.weight.original``) belongs to the layer it
    parametrizes and is matched under its logical name (``0.weight``). A tied tensor is listed
    once, under its first name, and is exempt if any of its names is. Parameters with
    ``requires_grad=False`` are left out unless ``include_frozen=True``. The result's
    ``.table`` shows what went where (:class:`GroupTable`).

    Weight decay :math:`\theta \leftarrow \theta - \eta\lambda\theta` (decoupled, Loshchilov &
    Hutter, 2019) pulls every decayed tensor toward 0; exempting biases and the
    :math:`\gamma, \beta` of normalization layers is the "no bias decay" of He et al. (2019,
    *Bag of Tricks*).

    Example::

        >>> net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
        >>> groups = param_groups(net, weight_decay=0.1)
        >>> [len(g["params"]) for g in groups]
        [2, 4]
        >>> opt = torch.optim.AdamW(groups, lr=1e-3)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"param_groups expects an nn.Module, got {type(model).__name__}")
    if not isinstance(weight_decay, numbers.Real) or isinstance(weight_decay, bool):
        raise TypeError(f"weight_decay must be a number, got {weight_decay!r}")
    if not weight_decay >= 0.0:  # also rejects nan
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    reserved = {"params", "weight_decay", "param_names"} & set(options)
    if reserved:
        raise TypeError(f"param_groups sets {sorted(reserved)} itself; do not pass them")
    types, patterns = _check_no_decay(no_decay)

    names_of: dict[int, list[str]] = {}
    tensor_of: dict[int, nn.Parameter] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(p), []).append(name)
        tensor_of[id(p)] = p
    decay: list[tuple[str, nn.Parameter]] = []
    exempt: list[tuple[str, nn.Parameter]] = []
    rows, skipped = [], []
    for key, names in names_of.items():
        p = tensor_of[key]
        if not p.requires_grad and not include_frozen:
            skipped.append(names[0])
            continue
        reasons = [r for r in (_exemption(model, n, types, patterns) for n in names) if r]
        (exempt if reasons else decay).append((names[0], p))
        lazy = isinstance(p, UninitializedTensorMixin)
        rows.append(
            GroupRow(
                name=names[0],
                shape=None if lazy else tuple(p.shape),
                numel=0 if lazy else p.numel(),
                decay=not reasons,
                reason=reasons[0] if reasons else "",
                shared_with=tuple(names[1:]),
            )
        )
    if not rows:
        raise ValueError(
            f"param_groups: {type(model).__name__} has no trainable parameters"
            + (f" ({len(skipped)} frozen; pass include_frozen=True)" if skipped else "")
        )
    groups = ParamGroups(
        {
            "params": [p for _, p in members],
            "param_names": [n for n, _ in members],
            "weight_decay": wd,
            **options,
        }
        for members, wd in ((decay, float(weight_decay)), (exempt, 0.0))
    )
    groups.table = GroupTable(rows, float(weight_decay), skipped)
    return groups
