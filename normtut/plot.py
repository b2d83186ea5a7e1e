"""The book's figures, in one style.

Every function here applies :func:`set_style` first, labels its axes, sets a title and adds
a legend whenever it draws more than one line, so that no chapter has to repeat plotting
boilerplate. Functions that draw into a single panel take an optional ``ax`` and return the
:class:`~matplotlib.axes.Axes`; functions that build a grid return the
:class:`~matplotlib.figure.Figure`. Figures are created through ``pyplot`` so that a notebook
shows each one exactly once with ``plt.show()``.

:class:`LivePlot` is the exception: it is a figure that a training loop updates in place. It
is *not* registered with ``pyplot`` (so the inline backend never shows it a second time) and,
inside a Jupyter kernel, it keeps a single display that each :meth:`LivePlot.add` replaces.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

__all__ = [
    "COLORS",
    "set_style",
    "LivePlot",
    "plot_curves",
    "plot_layer_histograms",
    "plot_layer_stats",
    "plot_trajectories",
]

#: The book's colour cycle (colour-blind friendly, after Okabe & Ito).
COLORS = [
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#F0E442",
    "#000000",
]

_STYLE: dict[str, Any] = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linestyle": "-",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.8,
    "legend.frameon": False,
    "axes.prop_cycle": mpl.cycler(color=COLORS),
}


def set_style() -> None:
    """Apply the book's figure style to ``matplotlib.rcParams``.

    Readable font sizes, a light grid, the :data:`COLORS` cycle, constrained layout
    (unlike ``figure.autolayout`` it handles colorbars without a warning) and
    100 dpi. Idempotent; every plotting function calls it.
    """
    mpl.rcParams.update(_STYLE)


def _as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=float)


def _as_list(values: Any) -> list[Any]:
    """A scalar becomes ``[value]``; a sequence, array or tensor becomes a list."""
    if isinstance(values, (list, tuple)):
        return list(values)
    if isinstance(values, (torch.Tensor, np.ndarray)):
        return values.tolist() if values.ndim > 0 else [values.item()]
    if isinstance(values, Sequence) and not isinstance(values, str):
        return list(values)
    return [values]


def _nonsingular(lim: tuple[float, float]) -> tuple[float, float]:
    """Widen identical limits (e.g. ``xlim=(1, 1)`` for a one-epoch run) without a warning."""
    lo, hi = lim
    if lo == hi:
        pad = 0.5 if lo == 0 else 0.05 * abs(lo)
        return lo - pad, hi + pad
    return lo, hi


def _in_kernel() -> bool:
    """True inside a Jupyter (or Colab) kernel, False in a script, a test or a terminal."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class LivePlot:
    """A figure that grows while a loop runs (d2l's ``Animator``, without the flicker).

    Each call to :meth:`add` appends one point per curve and redraws. Inside a Jupyter kernel
    the figure is shown once, as a PNG with a ``display_id``, and every later :meth:`add`
    *updates that same display*; an executed notebook therefore stores exactly one image, the
    final one. Outside a kernel the figure is drawn (``.figure`` is always current) but never
    displayed.

    Args:
        xlabel, ylabel, title: axis labels and title.
        legend: one name per curve; with ``legend=None`` a single unnamed curve is assumed.
        xlim, ylim: fixed axis limits (``None``: automatic).
        figsize: size in inches.
        logy: logarithmic y axis.
        fmts: matplotlib format strings, one per curve (default: solid lines with markers).

    Example::

        live = LivePlot(xlabel="epoch", ylabel="loss", legend=["train", "test"])
        for epoch in range(3):
            live.add(epoch + 1, [1.0 / (epoch + 1), None])  # None: no point for "test"
    """

    def __init__(
        self,
        xlabel: str | None = None,
        ylabel: str | None = None,
        legend: Sequence[str] | None = None,
        xlim: tuple[float, float] | None = None,
        ylim: tuple[float, float] | None = None,
        title: str | None = None,
        figsize: tuple[float, float] = (5, 3.5),
        *,
        logy: bool = False,
        fmts: Sequence[str] | None = None,
    ) -> None:
        set_style()
        self.legend = list(legend) if legend is not None else None
        self.figure = Figure(figsize=figsize)
        FigureCanvasAgg(self.figure)  # a canvas of its own: never managed by pyplot
        self.ax: Axes = self.figure.add_subplot()
        self.xlabel, self.ylabel, self.title = xlabel, ylabel, title
        self.xlim, self.ylim, self.logy = xlim, ylim, logy
        self.fmts = list(fmts) if fmts is not None else None
        n = len(self.legend) if self.legend is not None else 0
        self.X: list[list[float]] = [[] for _ in range(n)]
        self.Y: list[list[float]] = [[] for _ in range(n)]
        self._handle: Any = None
        self._configure()

    def _configure(self) -> None:
        ax = self.ax
        if self.xlabel is not None:
            ax.set_xlabel(self.xlabel)
        if self.ylabel is not None:
            ax.set_ylabel(self.ylabel)
        if self.title is not None:
            ax.set_title(self.title)
        if self.logy:
            ax.set_yscale("log")
        if self.xlim is not None:
            ax.set_xlim(*_nonsingular(self.xlim))
        if self.ylim is not None:
            ax.set_ylim(*_nonsingular(self.ylim))
        ax.grid(True)

    def add(self, x: float | Sequence[float], ys: float | Sequence[float | None]) -> None:
        """Append ``(x, ys[i])`` to curve ``i`` for every ``ys[i]`` that is not ``None``.

        ``ys`` is a sequence with one entry per legend name (a single number is accepted for
        a one-curve plot); ``x`` is one number shared by all curves or one per curve.
        """
        ys = _as_list(ys)
        xs = _as_list(x) if np.ndim(x) > 0 else [x] * len(ys)
        if len(xs) != len(ys):
            raise ValueError(f"add() got {len(xs)} x values for {len(ys)} y values")
        if self.legend is not None and len(ys) != len(self.legend):
            raise ValueError(
                f"add() got {len(ys)} y values but the plot has {len(self.legend)} curves "
                f"({self.legend})"
            )
        while len(self.X) < len(ys):  # no legend: grow as needed
            self.X.append([])
            self.Y.append([])
        for i, (xi, yi) in enumerate(zip(xs, ys, strict=True)):
            if yi is None:
                continue
            self.X[i].append(float(xi))
            self.Y[i].append(float(yi))
        self.redraw()

    def redraw(self) -> None:
        """Draw all curves again and refresh the notebook display (if any)."""
        ax = self.ax
        ax.cla()
        for i, (xs, ys) in enumerate(zip(self.X, self.Y, strict=True)):
            label = self.legend[i] if self.legend is not None else None
            fmt = self.fmts[i % len(self.fmts)] if self.fmts else "-"
            marker = "o" if not self.fmts and len(xs) <= 30 else None
            ax.plot(
                xs, ys, fmt, label=label, marker=marker, markersize=3, color=COLORS[i % len(COLORS)]
            )
        self._configure()
        if self.legend is not None:
            ax.legend()
        self.figure.canvas.draw()
        self._display()

    def _png(self) -> bytes:
        buf = io.BytesIO()
        self.figure.savefig(buf, format="png")
        return buf.getvalue()

    def _display(self) -> None:
        if not _in_kernel():
            return
        from IPython.display import Image, display

        image = Image(data=self._png(), format="png")
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)

    def close(self) -> None:
        """Release the figure's memory (its last image stays in the notebook)."""
        self.figure.clear()


def _finish(
    ax: Axes, xlabel: str, ylabel: str, title: str | None, logy: bool, *, legend: bool
) -> Axes:
    """Labels, title, log scale and legend: what every line plot of the book sets."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    if legend:
        ax.legend()
    return ax


def plot_curves(
    x: Sequence[float] | np.ndarray | torch.Tensor,
    ys: Mapping[str, Sequence[float] | np.ndarray | torch.Tensor],
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logy: bool = False,
    ax: Axes | None = None,
) -> Axes:
    """Plot several curves ``name -> values`` against a shared ``x``; return the Axes.

    A legend is drawn when there is more than one curve. With ``ax=None`` a new
    ``pyplot`` figure is created (show it with ``plt.show()``).
    """
    set_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    x_np = _as_numpy(x)
    for name, values in ys.items():
        ax.plot(x_np, _as_numpy(values), label=name)
    return _finish(ax, xlabel, ylabel, title, logy, legend=len(ys) > 1)


def plot_layer_histograms(
    tensors: Mapping[str, torch.Tensor | np.ndarray],
    *,
    bins: int = 50,
    ncols: int = 4,
    title: str | None = None,
    xlabel: str = "value",
    sharex: bool = False,
) -> Figure:
    """One histogram per entry of ``tensors`` (e.g. per layer), in a grid; return the Figure.

    Each panel is titled with its name and the standard deviation of its values; every panel
    on the bottom row of the grid gets ``xlabel`` and the first column gets "density".
    Unused panels of the last row are hidden.
    """
    set_style()
    n = len(tensors)
    if n == 0:
        raise ValueError("plot_layer_histograms needs at least one tensor")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.6 * ncols, 2.2 * nrows + 0.4), sharex=sharex, squeeze=False
    )
    for k, (name, tensor) in enumerate(tensors.items()):
        ax = axes[k // ncols][k % ncols]
        values = _as_numpy(tensor).ravel()
        ax.hist(values, bins=bins, density=True, color=COLORS[k % len(COLORS)], alpha=0.85)
        std = float(values.std()) if values.size else float("nan")
        ax.set_title(f"{name}\nstd={std:.3g}", fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("density")
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    if title is not None:
        fig.suptitle(title)
    return fig


def plot_layer_stats(
    stats: Mapping[str, Sequence[float] | np.ndarray | torch.Tensor],
    *,
    ylabel: str,
    title: str,
    logy: bool = True,
    ax: Axes | None = None,
    xlabel: str = "layer",
) -> Axes:
    """Per-layer statistics (e.g. activation std) of several configurations, one curve each.

    ``stats`` maps a configuration name to one value per layer; layer ``i`` is drawn at
    ``x = i + 1``. A logarithmic y axis (the default) shows vanishing and exploding signals
    as straight lines. Non-positive values cannot be drawn on a log axis and are left out.
    """
    set_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, values in stats.items():
        v = _as_numpy(values)
        if logy:
            v = np.where(v > 0, v, np.nan)
        ax.plot(np.arange(1, len(v) + 1), v, label=name, marker="o", markersize=2.5)
    return _finish(ax, xlabel, ylabel, title, logy, legend=len(stats) > 1)


def plot_trajectories(
    landscape: Any,
    paths: Mapping[str, np.ndarray | torch.Tensor | Sequence[Sequence[float]]],
    *,
    title: str | None = None,
    levels: int = 30,
    ax: Axes | None = None,
    markers: bool = True,
) -> Axes:
    """Draw optimizer paths over the contours of a 2-D landscape; return the Axes.

    ``landscape`` is a :class:`normtut.landscapes.Landscape` (its window, minimum and level
    spacing are used); ``paths`` maps a label to an array of points of shape ``(T, 2)``, as
    returned by :func:`normtut.landscapes.trajectory`. Each path starts with a circle and
    ends with a cross; the minimum, when the landscape has one, is a star. Points outside
    the window are clipped by the axes, not dropped, so a diverging path still leaves the
    frame where it diverged.
    """
    set_style()
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.2))
    grid_x, grid_y, grid_z = landscape.grid()
    if landscape.log_levels:
        shift = 1e-3 - min(float(grid_z.min()), 0.0)
        z = grid_z + shift
        lv = np.geomspace(float(z.min()), float(z.max()), levels)
        ax.contour(grid_x, grid_y, z, levels=lv, norm=LogNorm(), cmap="Greys", linewidths=0.6)
    else:
        ax.contour(grid_x, grid_y, grid_z, levels=levels, cmap="Greys", linewidths=0.6)
    for k, (name, path) in enumerate(paths.items()):
        pts = _as_numpy(path).reshape(-1, 2)
        color = COLORS[k % len(COLORS)]
        ax.plot(
            pts[:, 0],
            pts[:, 1],
            color=color,
            label=name,
            marker="." if markers else None,
            markersize=3,
            linewidth=1.2,
        )
        ax.plot(pts[0, 0], pts[0, 1], "o", color=color, markersize=6)
        ax.plot(pts[-1, 0], pts[-1, 1], "x", color=color, markersize=8, mew=2)
    if landscape.minimum is not None:
        ax.plot(*landscape.minimum, "*", color="black", markersize=12, label="minimum")
    ax.set_xlim(*landscape.xlim)
    ax.set_ylim(*landscape.ylim)
    ax.grid(False)
    n_entries = len(paths) + (landscape.minimum is not None)
    return _finish(
        ax,
        "$x$",
        "$y$",
        title if title is not None else landscape.name,
        False,
        legend=n_entries > 1,
    )
