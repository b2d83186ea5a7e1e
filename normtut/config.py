"""Run-time settings shared by the package and the chapters.

- quick mode: ``NORMTUT_QUICK=1`` shrinks epochs and data so that every chapter runs in
  under a minute (used by the notebook tests); the rendered book always runs in full mode;
- the data folders (``NORMTUT_DATA``, the cache, the Debian package), as ``normtut.data``
  documents;
- :func:`set_seed`, which seeds every random number generator a chapter touches;
- :func:`glue`, which hands a computed number to the book's prose (``{glue:text}`` in MyST)
  and simply displays it when the chapter runs outside the book build (Colab, Jupyter).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "QUICK_ENV",
    "DATA_ENV",
    "SYSTEM_DATA_DIR",
    "is_quick",
    "quick_or_full",
    "cache_dir",
    "data_search_paths",
    "set_seed",
    "glue",
]

QUICK_ENV = "NORMTUT_QUICK"
DATA_ENV = "NORMTUT_DATA"
SYSTEM_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def is_quick() -> bool:
    """Return True when ``NORMTUT_QUICK`` asks for quick mode.

    The variable is read on every call, so a test can switch modes with ``monkeypatch``.
    Accepted values: ``1/true/yes/on`` and ``0/false/no/off`` (any case) or unset.
    """
    value = os.environ.get(QUICK_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{QUICK_ENV}={value!r} is not understood; use 1 (quick) or 0 (full)")


def quick_or_full(quick: Any, full: Any) -> Any:
    """Pick ``quick`` in quick mode and ``full`` otherwise.

    Example: ``num_epochs = quick_or_full(1, 10)``.
    """
    return quick if is_quick() else full


def cache_dir() -> Path:
    """The folder where a downloaded copy of Fashion-MNIST is kept.

    ``$NORMTUT_DATA`` when it is set, else ``~/.cache/normtut/fashion-mnist``.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "normtut" / "fashion-mnist"


def data_search_paths() -> list[Path]:
    """Folders searched for Fashion-MNIST, in order.

    ``$NORMTUT_DATA`` (if set), ``~/.cache/normtut/fashion-mnist``, then the Debian package's
    ``/usr/share/datasets/fashion-mnist``.
    """
    paths = []
    env = os.environ.get(DATA_ENV)
    if env:
        paths.append(Path(env).expanduser())
    paths.append(Path.home() / ".cache" / "normtut" / "fashion-mnist")
    paths.append(SYSTEM_DATA_DIR)
    return paths


def set_seed(seed: int = 0, *, deterministic: bool = False) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device).

    With ``deterministic=True`` also ask torch for deterministic kernels (slower on GPU).
    Returns a ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - the global state chapters may use
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.Generator().manual_seed(seed)


def glue(name: str, value: Any, display: bool = True) -> None:
    """Make ``value`` available to the book's prose as ``{glue:text}`name```.

    Inside the book build (myst-nb installed) this is ``myst_nb.glue``; elsewhere (Colab,
    plain Jupyter) it just shows the value with its name. Returns ``None``, so that a cell
    whose last line is a ``glue(...)`` call shows no stray value in the page.

    NumPy scalars and one-element tensors are glued as Python numbers: myst-nb formats a
    glued value from its text form, and NumPy 2 writes ``np.float64(0.5)``, which a format
    such as ``{glue:text}`name:.3f``` cannot parse.
    """
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    try:
        from myst_nb import glue as _glue
    except ImportError:  # Colab or a plain Jupyter server: no myst-nb
        if display:
            print(f"{name} = {value}")
        return None
    _glue(name, value, display=display)
    return None
