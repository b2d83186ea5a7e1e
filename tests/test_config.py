"""Tests for normtut.config: quick mode, data folders, seeding, glue."""

from __future__ import annotations

import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from normtut import config


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_quick_mode_on(monkeypatch, value):
    monkeypatch.setenv(config.QUICK_ENV, value)
    assert config.is_quick() is True
    assert config.quick_or_full("q", "f") == "q"


@pytest.mark.parametrize("value", ["0", "false", "No", "off", ""])
def test_quick_mode_off(monkeypatch, value):
    monkeypatch.setenv(config.QUICK_ENV, value)
    assert config.is_quick() is False
    assert config.quick_or_full("q", "f") == "f"


def test_quick_mode_unset_is_full(monkeypatch):
    monkeypatch.delenv(config.QUICK_ENV, raising=False)
    assert config.is_quick() is False


def test_quick_mode_rejects_garbage(monkeypatch):
    monkeypatch.setenv(config.QUICK_ENV, "maybe")
    with pytest.raises(ValueError, match="NORMTUT_QUICK"):
        config.is_quick()


def test_search_order_with_env(monkeypatch, tmp_path):
    monkeypatch.setenv(config.DATA_ENV, str(tmp_path / "mine"))
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "home"))
    assert config.data_search_paths() == [
        tmp_path / "mine",
        tmp_path / "home" / ".cache" / "normtut" / "fashion-mnist",
        Path("/usr/share/datasets/fashion-mnist"),
    ]
    assert config.cache_dir() == tmp_path / "mine"


def test_search_order_without_env(monkeypatch, tmp_path):
    monkeypatch.delenv(config.DATA_ENV, raising=False)
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path))
    paths = config.data_search_paths()
    assert paths[0] == tmp_path / ".cache" / "normtut" / "fashion-mnist"
    assert paths[-1] == config.SYSTEM_DATA_DIR
    assert config.cache_dir() == paths[0]


def test_set_seed_makes_every_generator_repeat():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3)  # noqa: NPY002

    g1 = config.set_seed(123)
    a = draw()
    t1 = torch.rand(2, generator=g1)
    g2 = config.set_seed(123)
    b = draw()
    t2 = torch.rand(2, generator=g2)
    assert a[0] == b[0] and a[1] == b[1]
    assert torch.equal(a[2], b[2]) and torch.equal(t1, t2)
    config.set_seed(124)
    assert not torch.equal(torch.rand(3), a[2])


def test_glue_returns_nothing_and_prints_outside_the_book(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_myst_nb(name, *args, **kwargs):
        if name == "myst_nb":
            raise ImportError("pretend we are on Colab")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_myst_nb)
    assert config.glue("answer", 42) is None  # a trailing glue line shows no value
    assert "answer = 42" in capsys.readouterr().out
    assert config.glue("quiet", 1, display=False) is None
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "value", [np.float64(0.5), np.int64(3), torch.tensor(0.25), np.array(1.5)], ids=str
)
def test_glue_stores_numpy_and_tensor_scalars_as_python_numbers(value, monkeypatch):
    """myst-nb formats `{glue:text}`name:.3f`` from the text form: np.float64(0.5) breaks it."""
    glued = {}
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, v, display=True: glued.update({name: v})
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    assert config.glue("x", value, display=False) is None
    assert type(glued["x"]) in (float, int) and glued["x"] == value.item()
