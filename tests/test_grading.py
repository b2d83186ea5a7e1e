"""The grading system's parts: ``normtut.grading`` (the public plugin entry point, nothing
secret), the checkers' comparisons and feedback, the safe decoding of what a student's process
sends back, the static rule check, and the sandbox's refusals (files, processes, imports,
signals, a loop) -- one zygote for the whole file."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import torch

import normtut.grading as public

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "assignments"))
from autograder import checks, child, questions, supervisor  # noqa: E402

# --- normtut.grading: only the entry point ----------------------------------------------


def test_public_module_imports_only_the_standard_library():
    tree = ast.parse((ROOT / "normtut" / "grading.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "level", 0) == 0:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                assert name.split(".")[0] in sys.stdlib_module_names | {"__future__"}, name
    assert public.__all__ == ["SandboxPlugin"]


def test_plugin_is_inert_while_otter_builds_the_zip():
    for path in (None, ""):
        plugin = public.SandboxPlugin(path, {}, {"assignment": "batch_norm"})
        assert not hasattr(plugin, "before_execution")
        assert not hasattr(plugin, "after_grading")


def test_plugin_says_where_the_grader_should_be(tmp_path):
    (tmp_path / "submission").mkdir()
    with pytest.raises(FileNotFoundError, match="normtut_autograder is missing"):
        public.SandboxPlugin(str(tmp_path / "submission" / "x.ipynb"), {}, {})


# --- comparing and feedback -------------------------------------------------------------


def test_compare_reports_shape_dtype_nan_and_none():
    t = torch.ones(2, 2, dtype=torch.float64)
    assert checks.compare(t, t) is None
    assert "expected shape (2, 2), got shape (4,)" in checks.compare(torch.ones(4), t)
    assert "did you finish" in checks.compare(None, t)
    nan = torch.tensor([1.0, float("nan")])
    assert checks.compare(nan.clone(), nan) is None
    assert "element (1,)" in checks.compare(torch.tensor([1.0, 2.0]), nan)
    assert checks.compare((1, 2), [1, 2]) is None and "expected (1, 2)" in checks.compare(1, (1, 2))
    assert "expected 2 values" in checks.compare(t, (t, t))
    assert checks.compare(1.0 + 1e-9, 1.0) is None and checks.compare(1.1, 1.0) is not None
    assert checks.compare(True, 1) is not None, "a bool is not a count"


def test_float32_answer_gets_the_precision_hint_and_wrong_values_do_not():
    expected = torch.randn(5, 3, dtype=torch.float64)
    close = checks.compare(expected.float(), expected)
    assert "expected dtype torch.float64, got torch.float32" in close
    assert "right to torch.float32 precision" in close
    far = checks.compare((expected + 1).float(), expected)
    assert "dtype" in far and "precision" not in far


def test_feedback_names_the_worst_element_expected_and_got():
    got = torch.zeros(2, 3, dtype=torch.float64)
    got[1, 2] = 1.0
    message = checks.compare(got, torch.zeros(2, 3, dtype=torch.float64))
    assert re.search(r"element \(1, 2\): expected 0, got 1", message)
    assert "1 of 6 elements" in message


def test_optimizer_outputs_are_compared_step_by_step():
    step = (torch.zeros(2), torch.ones(2))
    names = ("param", "exp_avg")
    assert (
        checks.compare_outputs([step, step], [step, step], names, 1e-9, 1e-12, "optimizer") is None
    )
    bad = (torch.zeros(2), torch.zeros(2))
    message = checks.compare_outputs([step, bad], [step, step], names, 1e-9, 1e-12, "optimizer")
    assert message.startswith("after step 2: exp_avg")


@pytest.mark.parametrize("assignment", questions.QUESTIONS)
def test_every_question_draws_fresh_inputs_and_its_mistakes_run(assignment):
    for question in questions.QUESTIONS[assignment].values():
        first = question.draw(torch.Generator().manual_seed(1))
        again = question.draw(torch.Generator().manual_seed(1))
        assert [c.description for c in first] == [c.description for c in again]
        for case in first:
            expected = supervisor._expected(question, case)
            for mistake in question.mistakes:
                args, kwargs = supervisor.copy.deepcopy((case.args, case.kwargs))
                wrong = child.run_case(mistake.func, question.driver, args, kwargs, case.seed)
                assert wrong is not None and expected is not None


# --- what the student's process sends back ------------------------------------------------


def test_results_round_trip_through_json():
    value = (torch.arange(6.0).reshape(2, 3), [1, 2.5, None, "x"], torch.tensor(True))
    back = child.decode(child.encode(value))
    assert torch.equal(back[0], value[0]) and back[1] == [1, 2.5, None, "x"]
    assert back[2].dtype == torch.bool
    assert child.decode(child.encode(torch.empty(0, 3))).shape == (0, 3)
    assert isinstance(child.decode(child.encode(object())), child.Opaque)


@pytest.mark.parametrize(
    "bad",
    [
        {"t": "float64", "s": [2], "b": "AAAA"},  # too few bytes
        {"t": "object", "s": [1], "b": ""},
        {"v": {"nested": 1}},
        {"pickle": "gASV"},
        [1, 2],
    ],
)
def test_malformed_results_are_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        child.decode(bad)


# --- the static check -------------------------------------------------------------------

BN = questions.BATCH_NORM["q1_forward"]


@pytest.mark.parametrize(
    "code",
    [
        "import torch.nn.functional as F\ndef f(x):\n    return F.batch_norm(x)\n",
        "def f(x):\n    return getattr(torch, 'batch_norm')(x)\n",
        "from normtut.normalization import batch_norm as b\ndef f(x):\n    return b(x)\n",
        "def helper(x):\n    return torch.nn.BatchNorm1d(3)(x)\ndef f(x):\n    return helper(x)\n",
    ],
)
def test_static_check_names_the_rule(code):
    found = supervisor.static_findings([code], "f", BN)
    assert found and ("implement batch norm" in found[0] or "normtut" in found[0]), found


def test_static_check_ignores_what_the_function_does_not_reach():
    code = (
        "import torch.nn.functional as F\n"
        "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
        "    '''batch_norm with the batch's statistics'''\n"
        "    return x\n"
        "check = F.batch_norm  # the student's own comparison, at top level\n"
    )
    assert supervisor.static_findings([code], "batch_norm_train", BN) == []


# --- the sandbox ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zygote():
    z = supervisor.Zygote()
    yield z
    z.close()


def _run(zygote, body: str, *, rules=(), time_limit=10.0):
    cells = [
        "import torch\n",
        "def answer(x):\n" + "".join(f"    {ln}\n" for ln in body.splitlines()),
    ]
    job = {
        "cells": cells,
        "function": "answer",
        "driver": "call",
        "cases": [((torch.ones(2),), {}, 0)],
        "rules": {"rules": [r.to_job() for r in rules], "autograd": any(r.autograd for r in rules)},
        "public_checks": [],
        "time_limit": time_limit,
        "cell_time_limit": 5.0,
    }
    header, payload = zygote.run(job)
    return header, supervisor._parse(payload)


def _outcome(messages):
    return next(m for m in messages if m["kind"] in ("result", "error"))


def test_sandbox_returns_a_plain_answer(zygote):
    header, messages = _run(zygote, "return x * 2")
    assert header["status"] == "finished"
    assert torch.equal(child.decode(_outcome(messages)["value"]), torch.full((2,), 2.0))
    assert messages[-1]["kind"] == "done"


@pytest.mark.parametrize(
    "body, refused",
    [
        ("return open('/etc/hostname').read()", "open"),
        ("import os\nreturn os.listdir('/')", "os.listdir"),
        ("import os\nreturn os.fork()", "os.fork"),
        ("import subprocess\nreturn subprocess.run(['true'])", "subprocess.Popen"),
        ("import os\nreturn os.system('true')", "os.system"),
        ("import os\nos.kill(os.getppid(), 9)", "os.kill"),
        ("import sqlite3\nreturn 1", "import"),
        ("import normtut\nreturn 1", "import"),
        ("import ctypes\nreturn ctypes.CDLL(None).getpid()", "ctypes"),
        ("import gc\nreturn len(gc.get_objects())", "gc.get_objects"),
    ],
)
def test_sandbox_refuses_files_processes_imports_and_signals(zygote, body, refused):
    _, messages = _run(zygote, body)
    outcome = _outcome(messages)
    assert outcome["kind"] == "error" and "not available while grading" in outcome["error"]
    assert refused in outcome["error"]


def test_sandbox_cannot_write_files(zygote, tmp_path):
    target = tmp_path / "written"
    _run(zygote, f"import io\nreturn io.FileIO({str(target)!r}, 'w').write(b'x')")
    assert not target.exists()


def test_sandbox_stops_a_loop_at_the_time_limit(zygote):
    header, messages = _run(zygote, "while True:\n    pass", time_limit=2.0)
    assert header["status"] == "timeout" and 2.0 <= header["seconds"] < 6.0
    header, _ = _run(zygote, "return x")  # the zygote still serves the next question
    assert header["status"] == "finished"


def test_sandbox_tripwires_hold_no_original(zygote):
    body = (
        "f = torch.nn.functional.batch_norm\nreturn [c.cell_contents for c in f.__closure__ or ()]"
    )
    _, messages = _run(zygote, body, rules=[questions.BATCH_NORM_BUILTIN])
    value = child.decode(_outcome(messages)["value"])
    assert all(isinstance(v, (str, child.Opaque)) for v in value), value


@pytest.mark.parametrize(
    "feedback, show_hidden, show_all_public",
    [("after_published", True, False), ("immediately", True, True), ("hidden", False, False)],
)
def test_the_one_feedback_setting_sets_otters_visibility(feedback, show_hidden, show_all_public):
    from types import SimpleNamespace

    from autograder import plugin

    real = plugin.SandboxPlugin("x.ipynb", {}, {"assignment": "batch_norm", "feedback": feedback})
    config = SimpleNamespace(show_hidden=None, show_all_public=None)
    real.before_grading(config)
    assert (config.show_hidden, config.show_all_public) == (show_hidden, show_all_public)
    with pytest.raises(ValueError, match="feedback must be one of"):
        plugin.SandboxPlugin("x.ipynb", {}, {"assignment": "batch_norm", "feedback": "soon"})


def test_a_submitted_otter_log_is_deleted_before_otter_unpickles_it(tmp_path):
    from types import SimpleNamespace

    from autograder import plugin

    (tmp_path / ".OTTER_LOG").write_bytes(b"not a pickle you want to load")
    real = plugin.SandboxPlugin(str(tmp_path / "x.ipynb"), {}, {"assignment": "batch_norm"})
    real.before_grading(SimpleNamespace(show_hidden=None, show_all_public=None))
    assert not (tmp_path / ".OTTER_LOG").exists()
