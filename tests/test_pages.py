"""The page rules: chapters read like a textbook, in their sources and in the executed book.

Source rules (run by ``make test``):
- a visible code cell (not tagged ``remove-input``, ``remove-cell``, ``hide-input`` or
  ``hide-cell``) has at most ``MAX_VISIBLE_LINES`` lines: one idea per cell.

Executed-notebook rules (run by ``make browser``, after ``make book``, over
``_build/jupyter_execute/chapters/*.ipynb``, which is also what a reader downloads):
- no output line wider than the rendered code column (``MAX_OUTPUT_WIDTH`` characters);
- no raw reprs (``np.float64(...)``, tuple-keyed dicts, floats with a dozen digits, object
  addresses) and no stray values (``None``, a glue call's value);
- no duplicated stream output (a later stream of a cell repeating an earlier one's lines);
- progress bars: one labelled line each.

The rules live here as plain functions so that the unit tests below can show that each one
fails on a page that breaks it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
EXECUTED = ROOT / "_build" / "jupyter_execute" / "chapters"

MAX_VISIBLE_LINES = 15
MAX_OUTPUT_WIDTH = 80
HIDDEN_INPUT_TAGS = {"remove-input", "remove-cell", "hide-input", "hide-cell"}
HIDDEN_OUTPUT_TAGS = {"remove-output", "remove-cell", "hide-output", "hide-cell"}

# What a reader should never see in an output.
RAW_REPRS = {
    "a NumPy scalar repr": re.compile(r"\bnp\.(float|int|uint|bool|complex)\w*\("),
    "a tuple-keyed dict": re.compile(r"\{\(\s*['\"\w]"),
    "a float with a dozen digits": re.compile(r"\d\.\d{11,}"),
    "an object address": re.compile(r" at 0x[0-9a-f]{6,}>"),
}
# tqdm's bar: "<label>: 100%|████| 235/235 [...]"; a bar with no label starts with the percent.
PROGRESS = re.compile(r"\d{1,3}%\|")
LABELLED_PROGRESS = re.compile(r"^\S.*?: +\d{1,3}%\|")


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _tags(cell: dict) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


# --- the rules -------------------------------------------------------------------------------


def long_visible_cells(nb: dict, limit: int = MAX_VISIBLE_LINES) -> list[str]:
    """The visible code cells longer than ``limit`` lines, as short descriptions."""
    found = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code" or _tags(cell) & HIDDEN_INPUT_TAGS:
            continue
        lines = _source(cell).rstrip().splitlines()
        if len(lines) > limit:
            found.append(f"cell {index} ({len(lines)} lines): {lines[0][:50]!r}")
    return found


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def shown_text(output: dict) -> str:
    """The text a reader sees for one output ('' for images, HTML and other rich outputs)."""
    if output["output_type"] == "stream":
        return _text(output["text"])
    if output["output_type"] == "error":
        return "\n".join(output.get("traceback", []))
    data = output.get("data", {})
    rich = {"text/html", "image/png", "image/svg+xml", "image/jpeg", "text/latex"}
    rich |= {"text/markdown", "application/vnd.jupyter.widget-view+json"}
    if rich & data.keys():
        return ""
    return _text(data.get("text/plain", ""))


def page_problems(nb: dict) -> list[str]:
    """Every breach of the executed-page rules in one executed notebook."""
    problems = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code" or _tags(cell) & HIDDEN_OUTPUT_TAGS:
            continue
        where = f"cell {index}"
        streams: dict[str, list[str]] = {}
        for output in cell.get("outputs", []):
            kind = output["output_type"]
            text = shown_text(output)
            if kind == "error":
                problems.append(f"{where}: an error is shown")
            if kind == "stream" and output.get("name") == "stderr":
                problems.append(f"{where}: stderr is shown: {text[:60]!r}")
            if kind == "execute_result" and text.strip() == "None":
                problems.append(f"{where}: a stray value {text.strip()!r}")
            if kind == "execute_result" and re.match(r"\s*glue\(", _last_line(cell)):
                problems.append(f"{where}: the value of a trailing glue(...) call")
            for line in text.splitlines():
                line = line.rstrip()
                if len(line) > MAX_OUTPUT_WIDTH:
                    problems.append(f"{where}: a {len(line)}-character line {line[:40]!r}")
                for what, pattern in RAW_REPRS.items():
                    if pattern.search(line):
                        problems.append(f"{where}: {what}: {line[:60]!r}")
                if PROGRESS.search(line) and not LABELLED_PROGRESS.search(line):
                    problems.append(f"{where}: an unlabelled progress bar {line[:40]!r}")
            if "\r" in text.replace("\r\n", "\n"):
                problems.append(f"{where}: carriage returns (a redrawn bar stored every time)")
            if kind == "stream":
                name = output.get("name", "stdout")
                earlier = streams.setdefault(name, [])
                lines = [line for line in text.splitlines() if line.strip()]
                if lines and earlier and all(line in earlier for line in lines):
                    problems.append(f"{where}: {name} repeats lines shown before: {lines[0]!r}")
                earlier.extend(lines)
    return problems


def _last_line(cell: dict) -> str:
    lines = [line for line in _source(cell).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- the rules fail where they should ----------------------------------------------------------


def _code(source: str, outputs=(), tags=()) -> dict:
    return {"cell_type": "code", "source": source, "outputs": list(outputs),
            "metadata": {"tags": list(tags)}}


def _stream(text: str, name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def _result(text: str) -> dict:
    return {"output_type": "execute_result", "data": {"text/plain": text}}


def test_long_visible_cells_rule_flags_walls_and_spares_hidden_cells():
    wall = "\n".join(f"x{i} = {i}" for i in range(16))
    nb = {"cells": [_code(wall), _code(wall, tags=["remove-input"]),
                    _code(wall, tags=["hide-input"]), _code("\n".join(wall.split("\n")[:15]))]}
    found = long_visible_cells(nb)
    assert len(found) == 1 and found[0].startswith("cell 0 (16 lines)")


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        (_stream("x" * 81 + "\n"), "81-character line"),
        (_result("np.float64(0.123)"), "NumPy scalar"),
        (_result("{('a', 1): 0.5}"), "tuple-keyed dict"),
        (_stream("0.123456789012345\n"), "dozen digits"),
        (_result("<Foo object at 0x7f3a2b1c>"), "object address"),
        (_stream(" 40%|████      | 4/10\n"), "unlabelled progress bar"),
        (_stream("a\rb\rc\n"), "carriage returns"),
        (_stream("warning!\n", name="stderr"), "stderr is shown"),
        (_result("None"), "stray value"),
    ],
)
def test_page_rules_flag_what_a_reader_should_not_see(output, problem):
    problems = page_problems({"cells": [_code("f()", [output])]})
    assert any(problem in p for p in problems), problems


def test_page_rules_flag_trailing_glue_values_and_duplicated_streams():
    glued = _code('x = 1\nglue("x", x, display=False)', [_result("1")])
    assert any("glue" in p for p in page_problems({"cells": [glued]}))
    twice = _code("train()", [_stream("epoch 1\nepoch 2\n"), _stream("epoch 2\n")])
    assert any("repeats" in p for p in page_problems({"cells": [twice]}))


def test_page_rules_accept_a_clean_page():
    clean = _code(
        "train()",
        [
            _stream("epoch 1: loss 0.512\n"),
            {"output_type": "display_data",
             "data": {"text/plain": "<Figure size 640x480 with 1 Axes>", "image/png": "..."}},
            _stream("epoch 2: loss 0.401\n"),
            {"output_type": "display_data",
             "data": {"text/plain": "BN-LeNet: 100%|████████████████████| 235/235"}},
        ],
    )
    hidden = _code("f()", [_stream("y" * 200)], tags=["remove-output"])
    assert page_problems({"cells": [clean, hidden]}) == []


# --- the book's own pages ----------------------------------------------------------------------


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_visible_code_cells_make_one_point(path):
    long = long_visible_cells(json.loads(path.read_text()))
    assert not long, (
        f"{len(long)} visible code cells longer than {MAX_VISIBLE_LINES} lines (move bookkeeping "
        f"to a remove-input cell or normtut, plotting to hide-input): {long[:4]}"
    )


@pytest.mark.browser
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_executed_chapter_outputs_read_cleanly(path):
    executed = EXECUTED / path.name
    if not executed.exists():
        pytest.fail(f"{executed} is missing: run `make book` first")
    problems = page_problems(json.loads(executed.read_text()))
    assert not problems, f"{len(problems)} problems, e.g. {problems[:6]}"


def test_the_book_merges_adjacent_streams_on_copies():
    """myst-nb merged every stream of a cell into its first one in place, so the executed
    notebook showed each line twice; our Sphinx extension merges adjacent runs on copies."""
    import importlib.util

    pytest.importorskip("myst_nb")
    spec = importlib.util.spec_from_file_location(
        "normtut_sphinx", ROOT / "book" / "_ext" / "normtut_sphinx.py"
    )
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    figure = {"output_type": "display_data", "data": {"image/png": "...", "text/plain": "F"}}
    outputs = [_stream("a\n"), _stream("b\n"), figure, _stream("c\n")]
    before = json.dumps(outputs)
    merged = ext.coalesce_adjacent_streams(outputs)
    assert json.dumps(outputs) == before, "the cell's own outputs are left as executed"
    assert [o.get("text") for o in merged] == ["a\nb\n", None, "c\n"], "text stays below figures"
    cell = _code("f()", outputs)
    assert page_problems({"cells": [cell]}) == []
