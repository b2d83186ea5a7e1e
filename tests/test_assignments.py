"""The instructors' kit: otter-grader assignments built, graded and checked for leaks.

One build of every assignment (``assignments/build.py``, what ``make assignments`` runs)
into a temporary folder; then, for each assignment, ``otter run`` (no docker) grades

* the reference solution (the autograder notebook): full marks;
* the blank student notebook: zero, and the grader does not crash;
* a plausible wrong solution: it loses exactly that question's points and the feedback
  names the mistake.

The student folders must hold no solution code and no hidden-test text.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import types
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip(
    "otter", reason="otter-grader is an instructor extra: pip install .[instructor]"
)

ROOT = Path(__file__).resolve().parents[1]
OTTER = str(Path(sys.executable).with_name("otter"))

_spec = importlib.util.spec_from_file_location("assignments_build", ROOT / "assignments/build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)
MASTERS = build.masters()

#: A plausible wrong answer per assignment: (question, function, wrong code, words the
#: feedback must contain).
WRONG = {
    "01_parameters": (
        "q1_count",
        "count_parameters",
        "def count_parameters(model):\n"
        "    return sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))\n",
        "tied parameters counted once per module",
    ),
    "02_batch_norm": (
        "q1_forward",
        "batch_norm_train",
        "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
        "    dims = [0] + list(range(2, x.dim()))\n"
        "    shape = [1, -1] + [1] * (x.dim() - 2)\n"
        "    mean = x.mean(dim=dims, keepdim=True)\n"
        "    var = x.var(dim=dims, keepdim=True)  # unbiased: divides by m - 1\n"
        "    x_hat = (x - mean) / torch.sqrt(var + eps)\n"
        "    return gamma.view(shape) * x_hat + beta.view(shape)\n",
        "the unbiased variance (dividing by m - 1)",
    ),
    "03_parametrizations": (
        "q4_cayley",
        "cayley_map",
        "def cayley_map(X):\n"
        "    A = X.tril() - X.tril().mT\n"
        "    eye = torch.eye(X.shape[-1], dtype=X.dtype).expand_as(A)\n"
        "    return torch.linalg.solve(eye + A / 2, eye - A / 2)\n",
        "the signs are swapped",
    ),
    "04_optimizers": (
        "q4_adam",
        "adam_step",
        "def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps):\n"
        "    beta1, beta2 = betas\n"
        "    exp_avg = beta1 * exp_avg + (1 - beta1) * grad\n"
        "    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad\n"
        "    m_hat = exp_avg / (1 - beta1**step)\n"
        "    v_hat = exp_avg_sq / (1 - beta2**step)\n"
        "    return param - lr * m_hat / torch.sqrt(v_hat + eps), exp_avg, exp_avg_sq\n",
        "eps is added inside the square root",
    ),
}


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _wrong_notebook(solution: Path, function: str, code: str, target: Path) -> Path:
    nb = json.loads(solution.read_text())
    cells = [c for c in nb["cells"] if _source(c).lstrip().startswith(f"def {function}(")]
    assert len(cells) == 1, f"one cell defines {function} in {solution}"
    cells[0]["source"] = code
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(nb))
    return target


def _grade(submission: Path, autograder: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [OTTER, "run", "--no-logo", "-a", str(autograder), "-o", str(out), str(submission)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"otter run crashed on {submission}:\n{proc.stderr[-3000:]}"
    results = json.loads((out / "results.json").read_text())
    return {t["name"]: t for t in results["tests"] if t["name"] != "Public Tests"}


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("assignments")
    build.main(["--out", str(out), "--no-run-tests"])
    return out


@pytest.fixture(scope="session")
def graded(built, tmp_path_factory) -> dict[tuple[str, str], dict]:
    """``(assignment, "reference" | "blank" | "wrong") -> {question: result}``, two at a time."""
    work = tmp_path_factory.mktemp("graded")
    jobs = {}
    for name, master in MASTERS.items():
        autograder = built / name / "autograder" / "autograder.zip"
        solution = built / name / "autograder" / master.name
        question, function, code, _ = WRONG[name]
        wrong = _wrong_notebook(solution, function, code, work / name / "wrong" / master.name)
        jobs[(name, "reference")] = (solution, autograder, work / name / "ref-out")
        jobs[(name, "blank")] = (
            built / name / "student" / master.name,
            autograder,
            work / name / "blank-out",
        )
        jobs[(name, "wrong")] = (wrong, autograder, work / name / "wrong-out")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(_grade, *args) for key, args in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def test_every_assignment_has_a_wrong_solution_to_try():
    assert set(WRONG) == set(MASTERS)
    assert len(MASTERS) >= 4


@pytest.mark.parametrize("name", MASTERS)
def test_at_least_four_autograded_questions_with_hidden_tests(built, name):
    with zipfile.ZipFile(built / name / "autograder" / "autograder.zip") as zf:
        tests = {n: zf.read(n).decode() for n in zf.namelist() if n.startswith("tests/")}
    graded_questions = [
        text
        for text in tests.values()
        if re.search(r"hidden=True", text) and re.search(r"^points = [1-9]", text, re.M)
    ]
    assert len(graded_questions) >= 4, sorted(tests)


@pytest.mark.parametrize("name", MASTERS)
def test_reference_solution_scores_full_marks(graded, name):
    results = graded[(name, "reference")]
    assert results and all(t["score"] == t["max_score"] > 0 for t in results.values()), results


@pytest.mark.parametrize("name", MASTERS)
def test_blank_student_notebook_scores_zero(graded, name):
    results = graded[(name, "blank")]
    assert set(results) == set(graded[(name, "reference")])
    assert all(t["score"] == 0 for t in results.values()), results


@pytest.mark.parametrize("name", MASTERS)
def test_wrong_solution_loses_exactly_its_question_and_is_named(graded, name):
    question, _, _, words = WRONG[name]
    reference, wrong = graded[(name, "reference")], graded[(name, "wrong")]
    lost = {q: reference[q]["score"] - wrong[q]["score"] for q in reference}
    assert lost[question] == reference[question]["max_score"]
    assert all(v == 0 for q, v in lost.items() if q != question), lost
    assert words in wrong[question]["output"]
    assert re.search(r"input #\d.*expected .*, got ", wrong[question]["output"])


def _solution_lines(master: Path) -> set[str]:
    lines, inside = set(), False
    for cell in _cells(master):
        if cell["cell_type"] != "code":  # the raw "# BEGIN SOLUTION" cells frame a block
            continue
        for line in _source(cell).splitlines():
            if line.strip() == "# BEGIN SOLUTION":
                inside = True
            elif line.strip() == "# END SOLUTION":
                inside = False
            elif inside and len(line.strip()) > 12:
                lines.add(line.strip())
    return lines


def _hidden_test_lines(autograder_zip: Path) -> set[str]:
    lines = set()
    with zipfile.ZipFile(autograder_zip) as zf:
        for name in zf.namelist():
            if not name.startswith("tests/"):
                continue
            for block in zf.read(name).decode().split("@test_case(")[1:]:
                if block.startswith("points") and "hidden=True" in block.split("\n")[0]:
                    lines |= {ln.strip() for ln in block.split("\n")[1:] if len(ln.strip()) > 12}
    return lines


@pytest.mark.parametrize("name", MASTERS)
def test_student_files_hold_no_solution_and_no_hidden_test(built, name):
    secrets = _solution_lines(MASTERS[name])
    hidden = _hidden_test_lines(built / name / "autograder" / "autograder.zip")
    assert secrets and hidden, "the leak check must have something to look for"
    student_files = [p for p in (built / name / "student").rglob("*") if p.is_file()]
    assert student_files
    for path in student_files:
        text = path.read_text(errors="replace")
        leaked = sorted(s for s in secrets | hidden if s in text)
        assert not leaked, f"{path.name} leaks: {leaked[:5]}"
    names = {p.name for p in student_files}
    assert not any(n.endswith(".zip") for n in names)


@pytest.mark.parametrize("name", MASTERS)
def test_colab_cell_writes_the_public_checks_for_otter(built, name, tmp_path, monkeypatch):
    """On Colab (faked here) the first cell installs the packages and writes ./tests."""
    student = built / name / "student" / MASTERS[name].name
    nb = json.loads(student.read_text())
    colab_cell = next(_source(c) for c in nb["cells"] if "google.colab" in _source(c))
    installs = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: installs.append(cmd))
    exec(compile(colab_cell, "colab-cell", "exec"), {})
    assert any("otter-grader>=7" in cmd for cmd in installs)
    assert any(any(str(a).startswith("normtut @ git+") for a in cmd) for cmd in installs)
    public = nb["metadata"]["otter"]["tests"]
    written = {p.stem: p.read_text() for p in (tmp_path / "tests").glob("*.py")}
    assert written == public and len(written) >= 4
    assert not any("hidden=True" in text for text in written.values())


def test_make_assignments_accepts_a_relative_output_folder(tmp_path, monkeypatch):
    """`make assignments` passes `--out _build/assignments`; otter runs in the master's folder,
    so a relative path must be resolved against the caller's folder first."""
    monkeypatch.chdir(tmp_path)
    build.main(["--out", "out", "--no-run-tests", "02_batch_norm"])
    assert (tmp_path / "out/02_batch_norm/autograder/autograder.zip").is_file()
    assert (tmp_path / "out/02_batch_norm/student/batch_norm.ipynb").is_file()
    assert not list((ROOT / "assignments").glob("*/out"))
