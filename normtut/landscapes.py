"""Two-dimensional loss surfaces for watching optimizers move.

Each :class:`Landscape` is a function :math:`f(x, y)` that works on Python floats, NumPy
arrays and torch tensors alike (so autograd gives its gradient), together with the plotting
window and the location of its minimum. :func:`trajectory` runs any ``torch.optim``-style
optimizer class on it and returns the path, which :func:`normtut.plot.plot_trajectories`
draws over the contours.

The surfaces are the classic ones:

* :func:`ill_conditioned_quadratic` -- :math:`f = \\tfrac12 (x^2 + \\kappa y^2)`: one steep and
  one flat direction, the case momentum was made for (Polyak, 1964).
* :func:`rosenbrock` -- :math:`f = (a - x)^2 + b (y - x^2)^2`, a curved, flat-bottomed valley
  with its minimum at :math:`(a, a^2)` (Rosenbrock, 1960).
* :func:`beale` -- :math:`f = (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2`,
  minimum at :math:`(3, 0.5)`, with plateaus and sharp ridges.
* :func:`saddle` -- :math:`f = x^2 - y^2`: the gradient vanishes at the origin, which is not a
  minimum (Dauphin et al., 2014).

Example::

    >>> import torch
    >>> from normtut.landscapes import rosenbrock, trajectory
    >>> path = trajectory(rosenbrock(), torch.optim.Adam, (-1.5, 2.0), steps=100, lr=0.05)
    >>> path.shape
    (101, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "Landscape",
    "ill_conditioned_quadratic",
    "rosenbrock",
    "beale",
    "saddle",
    "trajectory",
]


@dataclass(frozen=True)
class Landscape:
    """A 2-D function with the window to draw it in.

    Attributes:
        name: a label for titles and legends.
        func: ``func(x, y)``; must accept floats, NumPy arrays and tensors.
        xlim, ylim: the plotting window.
        minimum: the global minimizer ``(x*, y*)``, or ``None`` when there is none.
        log_levels: draw contours at log-spaced levels (for surfaces whose values span
            many orders of magnitude, such as Rosenbrock's and Beale's).
    """

    name: str
    func: Callable[[Any, Any], Any]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    minimum: tuple[float, float] | None = None
    log_levels: bool = False

    def __call__(self, x: Any, y: Any) -> Any:
        return self.func(x, y)

    def grid(self, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X, Y, Z)`` on an ``n x n`` grid over the window, ready for ``contour``."""
        xs = np.linspace(*self.xlim, n)
        ys = np.linspace(*self.ylim, n)
        grid_x, grid_y = np.meshgrid(xs, ys)
        return grid_x, grid_y, np.asarray(self.func(grid_x, grid_y), dtype=float)


def ill_conditioned_quadratic(condition: float = 20.0) -> Landscape:
    """:math:`f(x, y) = \\tfrac12 (x^2 + \\kappa y^2)` with condition number :math:`\\kappa`.

    Gradient descent is stable for :math:`\\eta < 2/\\kappa` and then crawls along :math:`x`
    at rate :math:`1 - \\eta`; this is the surface on which momentum shines.
    """
    if condition < 1:
        raise ValueError(f"condition must be >= 1, got {condition}")

    def func(x: Any, y: Any) -> Any:
        return 0.5 * (x * x + condition * y * y)

    return Landscape(
        name=f"quadratic (κ = {condition:g})",
        func=func,
        xlim=(-6.0, 6.0),
        ylim=(-3.0, 3.0),
        minimum=(0.0, 0.0),
    )


def rosenbrock(a: float = 1.0, b: float = 100.0) -> Landscape:
    """Rosenbrock's banana :math:`(a - x)^2 + b (y - x^2)^2`, minimum :math:`(a, a^2)`."""

    def func(x: Any, y: Any) -> Any:
        return (a - x) ** 2 + b * (y - x * x) ** 2

    return Landscape(
        name="Rosenbrock",
        func=func,
        xlim=(-2.0, 2.0),
        ylim=(-1.0, 3.0),
        minimum=(a, a * a),
        log_levels=True,
    )


def beale() -> Landscape:
    """Beale's function, minimum 0 at :math:`(3, 0.5)`."""

    def func(x: Any, y: Any) -> Any:
        return (
            (1.5 - x + x * y) ** 2 + (2.25 - x + x * y * y) ** 2 + (2.625 - x + x * y * y * y) ** 2
        )

    return Landscape(
        name="Beale",
        func=func,
        xlim=(-4.5, 4.5),
        ylim=(-4.5, 4.5),
        minimum=(3.0, 0.5),
        log_levels=True,
    )


def saddle() -> Landscape:
    """:math:`x^2 - y^2`: a saddle at the origin, unbounded below along :math:`y`."""

    def func(x: Any, y: Any) -> Any:
        return x * x - y * y

    return Landscape(name="saddle", func=func, xlim=(-2.0, 2.0), ylim=(-2.0, 2.0))


def trajectory(
    landscape: Landscape | Callable[[Any, Any], Any],
    optimizer_cls: Callable[..., torch.optim.Optimizer],
    start: tuple[float, float],
    steps: int,
    **hyperparameters: Any,
) -> np.ndarray:
    """Run ``optimizer_cls`` for ``steps`` steps on ``landscape`` from ``start``.

    The point is a float64 parameter of shape ``(2,)``; each step computes
    ``f(x, y)``, backpropagates and calls ``optimizer.step()``. Returns the path as an
    array of shape ``(steps + 1, 2)`` whose first row is ``start``. A path that leaves
    the finite numbers (divergence) is returned up to the last finite point, so its
    length tells how long it lasted.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    point = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = optimizer_cls([point], **hyperparameters)
    path = [point.detach().clone()]
    for _ in range(steps):
        optimizer.zero_grad()
        loss = landscape(point[0], point[1])
        loss.backward()
        optimizer.step()
        current = point.detach().clone()
        if not all(math.isfinite(v) for v in current.tolist()):
            break
        path.append(current)
    return torch.stack(path).numpy()
