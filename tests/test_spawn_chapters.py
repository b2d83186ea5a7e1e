"""The chapters that start processes (Part IV) with every rank spawned, as on GPUs (NCCL),
but on the CPU with gloo.

On a machine with a GPU per rank, ``normtut.distributed.run`` spawns its ranks and sends the
notebook's rank functions to them with cloudpickle; no GPU is needed to exercise that path:
``NORMTUT_DIST_START_METHOD=spawn`` forces it on gloo. Each chapter runs in quick mode in a
Jupyter kernel; after every cell, an injected check asserts that no process the cell started
is still alive (a spawned rank, or multiprocessing's resource tracker); the executed pages
must pass the page rules (no stderr, no warnings from the ranks).

Slow (each run() call starts fresh interpreters that import torch): marked ``spawn``, run by
``make spawn-check``, not by ``make test``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The chapters that start processes (Part IV's 14 and 15; 16, mixed precision, runs in one
# process, so forcing spawn changes nothing there)
CHAPTERS = sorted(
    p.name
    for p in (ROOT / "chapters").glob("*.ipynb")
    if "ndist.run(" in p.read_text() or "distributed.run(" in p.read_text()
)


def test_the_part_iv_chapters_that_start_processes_are_checked():
    assert CHAPTERS[:2] == ["14_data_parallel_batch_norm.ipynb", "15_sharded_optimizer.ipynb"]


CHECK_SETUP = """
import os as _os
from pathlib import Path as _Path

def _normtut_children():
    me, found = str(_os.getpid()), []
    for status in _Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("PPid:") and line.split()[1] == me:
                found.append(status.parent.name + " " + (status.parent / "cmdline")
                             .read_bytes().replace(b"\\0", b" ").decode()[:120])
    return found

_normtut_before = _normtut_children()
"""
CHECK_CELL = "assert _normtut_children() == _normtut_before, _normtut_children()"


def _code(source: str, index: int = 0) -> dict:
    return {
        "id": f"normtut-spawn-check-{index}",
        "cell_type": "code",
        "metadata": {},
        "source": source,
        "outputs": [],
        "execution_count": None,
    }


@pytest.mark.spawn
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("name", CHAPTERS, ids=lambda n: n[:2])
def test_chapter_runs_with_spawned_ranks(name, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    sys.path.insert(0, str(ROOT / "tests"))
    from test_pages import page_problems

    monkeypatch.setenv("NORMTUT_DIST_START_METHOD", "spawn")
    monkeypatch.setenv("NORMTUT_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    original = json.loads((ROOT / "chapters" / name).read_text())
    cells = [_code(CHECK_SETUP)]
    for index, cell in enumerate(original["cells"], start=1):
        cells.append(cell)
        if cell["cell_type"] == "code":
            cells.append(_code(CHECK_CELL, index))
    nb = nbformat.reads(json.dumps({**original, "cells": cells}), as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError on a failed cell or check
    executed = [c for c in nb["cells"][1:] if c["source"] != CHECK_CELL]
    assert len(executed) == len(original["cells"])
    problems = page_problems({"cells": executed})
    assert not problems, problems
