"""Tests for normtut.grading: references pass, wrong answers fail with feedback that says
which input, which element, expected vs got, and names the known mistake."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from normtut import grading as G
from normtut import init as nt_init
from normtut import normalization as nt_norm
from normtut import parametrizations as nt_param
from normtut import params as nt_params


def _bn(x, gamma, beta, eps=1e-5, unbiased=False):
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    var = x.var(dims, unbiased=unbiased, keepdim=True)
    return (x - x.mean(dims, keepdim=True)) / torch.sqrt(var + eps) * gamma.view(shape) + beta.view(
        shape
    )


def _adam(p, g, m, v, t, lr, betas, eps, *, inside=False):
    m = betas[0] * m + (1 - betas[0]) * g
    v = betas[1] * v + (1 - betas[1]) * g * g
    v_hat = v / (1 - betas[1] ** t)
    denom = torch.sqrt(v_hat + eps) if inside else torch.sqrt(v_hat) + eps
    return p - lr / (1 - betas[0] ** t) * m / denom, m, v


def _cayley(x, sign=1.0):
    a = x.tril() - x.tril().mT
    eye = torch.eye(x.shape[-1], dtype=x.dtype).expand_as(x)
    return torch.linalg.solve(eye - sign * a / 2, eye + sign * a / 2)


# (checker, a correct from-scratch answer, a wrong answer, words the feedback must contain)
CASES = {
    "count_parameters": (
        G.check_count_parameters,
        lambda m: sum(p.numel() for p in m.parameters()),
        lambda m: sum(p.numel() for _, p in m.named_parameters(remove_duplicate=False)),
        "tied parameters counted once per module",
    ),
    "fan": (
        G.check_fan_in_and_fan_out,
        lambda w: (w.shape[1] * w[0][0].numel(), w.shape[0] * w[0][0].numel()),
        lambda w: (w.shape[1], w.shape[0]),
        "receptive field",
    ),
    "tied": (
        G.check_tied_parameters,
        nt_params.tied_parameters,
        lambda m: [[n for n, _ in m.named_parameters(remove_duplicate=False)][:2]],
        "expected [['emb.weight', 'out.weight']]",
    ),
    "bn_train": (
        G.check_batch_norm_train,
        _bn,
        lambda x, g, b, eps=1e-5: _bn(x, g, b, eps, unbiased=True),
        "unbiased variance",
    ),
    "adam": (
        G.check_adam_step,
        _adam,
        lambda *a, **k: _adam(*a, **k, inside=True),
        "eps is added inside the square root",
    ),
    "cayley": (
        G.check_cayley_map,
        _cayley,
        lambda x: _cayley(x, sign=-1.0),
        "signs are swapped",
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_a_correct_from_scratch_answer_passes(name):
    check, correct, _, _ = CASES[name]
    check(correct)


@pytest.mark.parametrize("name", CASES)
def test_a_wrong_answer_fails_and_the_feedback_names_the_mistake(name):
    check, _, wrong, words = CASES[name]
    with pytest.raises(G.GradingError) as info:
        check(wrong)
    message = str(info.value)
    assert words in message
    assert "input #" in message


REFERENCES = [
    (G.check_xavier_uniform, nt_init.xavier_uniform_),
    (G.check_kaiming_normal, nt_init.kaiming_normal_),
    (
        G.check_running_stats,
        lambda x, m, v, mom: (
            (1 - mom) * m + mom * x.mean([0, *range(2, x.dim())]),
            (1 - mom) * v + mom * x.var([0, *range(2, x.dim())], unbiased=True),
        ),
    ),
    (
        G.check_batch_norm_eval,
        lambda x, m, v, g, b, eps=1e-5: nt_norm.batch_norm(x, m, v, g, b, eps=eps),
    ),
    (G.check_weight_norm, lambda g, v, dim: nt_param.WeightNorm(dim)(g, v)),
    (
        G.check_power_iteration,
        lambda w, u, v, n: nt_param.power_iteration(w, u, v, n_power_iterations=n),
    ),
    (G.check_spectral_normalize, lambda w, u, v: w / (u @ w @ v)),
    (G.check_matrix_exp_map, lambda x: torch.linalg.matrix_exp(x.tril() - x.tril().mT)),
]


@pytest.mark.parametrize("check, answer", REFERENCES, ids=lambda c: getattr(c, "__name__", ""))
def test_more_checkers_accept_right_answers(check, answer):
    check(answer)


CHECKERS = [name for name in G.__all__ if name.startswith("check_") and name != "check_function"]


@pytest.mark.parametrize("name", CHECKERS)
def test_an_unfinished_function_scores_zero_without_crashing(name):
    """A blank student function (body `...`) returns None: a GradingError, never a crash."""

    def unfinished(*args, **kwargs): ...

    with pytest.raises(G.GradingError):
        getattr(G, name)(unfinished)


@pytest.mark.parametrize("name", ["check_batch_norm_train", "check_adam_step"])
def test_an_exception_in_the_learners_code_is_reported(name):
    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch in my code")

    with pytest.raises(G.GradingError, match="raised RuntimeError: shape mismatch in my code"):
        getattr(G, name)(broken)


def test_feedback_names_input_element_expected_and_got():
    cases = [G.Case("a 2x3 matrix", lambda: (torch.zeros(2, 3),))]

    def off_by_one(x):
        y = x.clone()
        y[1, 2] = 1.0
        return y

    with pytest.raises(G.GradingError) as info:
        G.check_function(off_by_one, lambda x: x, cases, name="identity")
    message = str(info.value)
    assert "identity on input #1 (a 2x3 matrix" in message
    assert re.search(r"element \(1, 2\): expected 0, got 1", message)


def test_compare_reports_shape_dtype_nan_and_none():
    t = torch.ones(2, 2)
    assert G.compare(t, t) is None
    assert "expected shape (2, 2), got shape (4,)" in G.compare(torch.ones(4), t)
    assert "did you finish" in G.compare(None, t)
    nan = torch.tensor([1.0, float("nan")])
    assert G.compare(nan.clone(), nan) is None
    assert "element (1,)" in G.compare(torch.tensor([1.0, 2.0]), nan)
    assert G.compare((1, 2), [1, 2]) is None and "expected (1, 2)" in G.compare(1, (1, 2))
    assert "expected 2 values" in G.compare(t, (t, t))
    assert G.compare(1.0 + 1e-9, 1.0) is None and G.compare(1.1, 1.0) is not None


def test_a_known_mistake_is_named_only_when_it_reproduces_the_result():
    cases = [G.Case("x", lambda: (torch.arange(3.0),))]
    mistake = G.Mistake("squared instead of doubled", lambda x: x * x)
    with pytest.raises(G.GradingError) as info:
        G.check_function(lambda x: x + 7, lambda x: 2 * x, cases, mistakes=[mistake])
    assert "known mistake" not in str(info.value)
    with pytest.raises(G.GradingError, match="known mistake: squared instead of doubled"):
        G.check_function(lambda x: x**2, lambda x: 2 * x, cases, mistakes=[mistake])


def test_inputs_are_rebuilt_so_in_place_changes_cannot_leak():
    def in_place(tensor, gain=1.0):
        nt_init.xavier_uniform_(tensor, gain)
        return tensor

    G.check_xavier_uniform(in_place)
    model = nn.Linear(3, 3)
    assert G.compare(nt_params.count_parameters(model), 12) is None
