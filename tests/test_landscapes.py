"""Tests for normtut.landscapes: known minima, autograd gradients, optimizer paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from normtut import landscapes as L

SURFACES = [L.ill_conditioned_quadratic(), L.rosenbrock(), L.beale(), L.saddle()]


@pytest.mark.parametrize("land", SURFACES, ids=lambda s: s.name)
def test_works_on_floats_arrays_and_tensors(land):
    x, y = 0.3, -0.7
    as_float = land(x, y)
    as_array = land(np.array([x]), np.array([y]))[0]
    as_tensor = land(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
    assert as_float == pytest.approx(float(as_array)) == pytest.approx(float(as_tensor))


@pytest.mark.parametrize("land", SURFACES[:3], ids=lambda s: s.name)
def test_minimum_is_a_zero_of_value_and_gradient(land):
    point = torch.tensor(land.minimum, dtype=torch.float64, requires_grad=True)
    value = land(point[0], point[1])
    (grad,) = torch.autograd.grad(value, point)
    assert float(value.detach()) == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(grad, torch.zeros(2, dtype=torch.float64), atol=1e-12)
    x_grid, _, z_grid = land.grid(101)
    assert z_grid.min() >= -1e-12 and x_grid.shape == (101, 101)


def test_known_values():
    assert L.rosenbrock()(0.0, 0.0) == 1.0
    assert L.beale()(0.0, 0.0) == pytest.approx(1.5**2 + 2.25**2 + 2.625**2)
    assert L.ill_conditioned_quadratic(10)(1.0, 1.0) == 5.5
    assert L.saddle()(1.0, 2.0) == -3.0
    assert L.saddle().minimum is None
    with pytest.raises(ValueError):
        L.ill_conditioned_quadratic(0.5)


def test_gradient_descent_path_matches_the_closed_form_on_the_quadratic():
    """On 0.5 (x^2 + k y^2), GD multiplies x by (1 - lr) and y by (1 - lr k) each step."""
    kappa, lr, steps = 4.0, 0.1, 20
    path = L.trajectory(
        L.ill_conditioned_quadratic(kappa), torch.optim.SGD, (2.0, 1.0), steps, lr=lr
    )
    assert path.shape == (steps + 1, 2)
    k = np.arange(steps + 1)
    np.testing.assert_allclose(path[:, 0], 2.0 * (1 - lr) ** k, rtol=1e-12)
    np.testing.assert_allclose(path[:, 1], 1.0 * (1 - lr * kappa) ** k, rtol=1e-12)


def test_adam_reaches_the_rosenbrock_minimum():
    path = L.trajectory(L.rosenbrock(), torch.optim.Adam, (-1.5, 2.0), 3000, lr=0.02)
    assert np.linalg.norm(path[-1] - np.array([1.0, 1.0])) < 0.05


def test_a_diverging_path_stops_at_the_last_finite_point():
    path = L.trajectory(L.saddle(), torch.optim.SGD, (0.0, 1.0), 2000, lr=0.9)
    assert len(path) < 2001
    assert all(math.isfinite(v) for v in path[-1])
    with pytest.raises(ValueError):
        L.trajectory(L.saddle(), torch.optim.SGD, (0.0, 1.0), -1, lr=0.1)
