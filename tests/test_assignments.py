"""The instructors' kit: assignments built, graded in the sandbox, cheats refused, no leaks.

One build of every assignment (``assignments/build.py``, what ``make assignments`` runs) into
a temporary folder. Then, through ``otter run`` (no Docker) as an instructor grades:

* the reference solution scores full marks, the blank student notebook 0, a plausible wrong
  answer loses exactly its question and the feedback names the mistake;
* the cheats that need otter's own machinery (patching the checker, rewriting the test files,
  patching otter's classes, reading the grader from disk, a detached process rewriting
  ``results.json``) and an infinite loop: each loses only the cheated question, the other
  scores and the result files stay as they were;

and straight through the sandbox (``assignments/autograder/supervisor.py``, the code otter's
plugin calls; faster, no kernel): the cheats that live inside the answer (normtut's
reference, torch's built-ins however they are reached, autograd, an explicit inverse, the
caller's stack frame), answers written differently, and the float32 hint.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip(
    "otter", reason="otter-grader is an instructor extra: pip install .[instructor]"
)

ROOT = Path(__file__).resolve().parents[1]
OTTER = str(Path(sys.executable).with_name("otter"))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

_spec = importlib.util.spec_from_file_location("assignments_build", ROOT / "assignments/build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)
MASTERS = build.masters()
NAMES = {"01_parameters": "parameters", "02_batch_norm": "batch_norm"}
NAMES |= {"03_parametrizations": "parametrizations", "04_optimizers": "optimizers"}
sys.path.insert(0, str(ROOT / "assignments"))
from autograder import supervisor  # noqa: E402

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

BN_WRONG = "def batch_norm_train(x, gamma, beta, eps=1e-5):\n    return x.clone()\n"


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _notebook(solution: Path, replace: dict[str, str], extra: str = "") -> dict:
    """The solution notebook with some functions' cells replaced and an extra top cell."""
    nb = json.loads(solution.read_text())
    for function, code in replace.items():
        cells = [c for c in nb["cells"] if _source(c).lstrip().startswith(f"def {function}(")]
        assert len(cells) == 1, f"one cell defines {function} in {solution}"
        cells[0]["source"] = code
    if extra:
        first = next(k for k, c in enumerate(nb["cells"]) if "import torch" in _source(c))
        cell = {"cell_type": "code", "metadata": {}, "outputs": [], "source": extra}
        nb["cells"].insert(first + 1, cell | {"execution_count": None, "id": "cheat000"})
    return nb


def _write(nb: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))
    return path


def _grade(submission: Path, autograder: Path, out: Path) -> dict:
    """``otter run`` one submission: per-question results, the raw results.json, the time."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    proc = subprocess.run(
        [OTTER, "run", "--no-logo", "-a", str(autograder), "-o", str(out), str(submission)],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV | {"NORMTUT_GRADING_SEED": "12345"},
    )
    seconds = time.monotonic() - start
    assert proc.returncode == 0, f"otter run crashed on {submission}:\n{proc.stderr[-3000:]}"
    raw = (out / "results.json").read_bytes()
    results = json.loads(raw)
    tests = {t["name"]: t for t in results["tests"] if t["name"] != "Public Tests"}
    return {"tests": tests, "raw": raw, "seconds": seconds, "path": out / "results.json"}


def _direct(nb: dict, assignment: str) -> dict[str, supervisor.Result]:
    public = build.public_checks(MASTERS[assignment])
    cells = supervisor.notebook_cells(nb)
    return supervisor.grade(cells, NAMES[assignment], seed=4321, public_checks=public)


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("assignments")
    build.main(["--out", str(out), "--no-run-tests"])
    return out


def _paths(built: Path, name: str) -> tuple[Path, Path, Path]:
    master = MASTERS[name]
    return (
        built / name / "autograder" / "autograder.zip",
        built / name / "autograder" / master.name,
        built / name / "student" / master.name,
    )


# --- cheats that go through otter -------------------------------------------------------

PATCH_CHECKER = """\
try:  # the old kit's checker was importable from the public package
    import normtut.grading as G
    G.check_function = lambda *args, **kwargs: None
    G.compare = lambda *args, **kwargs: None
    G.check_batch_norm_train = lambda *args, **kwargs: None
except Exception:
    pass
"""

REWRITE_TESTS = """\
import glob
PASSING = '''from otter.test_files import test_case
OK_FORMAT = False
name = "q1_forward"
points = 3
@test_case(points=3, hidden=True)
def test_pass():
    pass
'''
for path in glob.glob("tests/*.py") + glob.glob("../source/tests/*.py"):
    if path.endswith("q1_forward.py"):
        with open(path, "w") as f:
            f.write(PASSING)
"""

PATCH_OTTER = """\
import otter.test_files.abstract_test as abstract_test
abstract_test.TestFile.score = property(lambda self: self.possible)
abstract_test.TestFile.passed_all = property(lambda self: True)
import otter.test_files.exception_test as exception_test
exception_test.ExceptionTestFile.run = lambda self, env: None
"""

READ_DISK = """\
import glob
import json


def batch_norm_train(x, gamma, beta, eps=1e-5):
    # the hidden tests and the grader, found on disk during grading ...
    found = glob.glob("../source/**/*.py", recursive=True) + glob.glob("tests/*.py")
    # ... and the instructor's solution, at a path the student guessed
    with open({solution!r}) as f:
        cells = json.load(f)["cells"]
    for cell in cells:
        source = "".join(cell["source"])
        if source.startswith("def batch_norm_train("):
            scope = {{"torch": torch}}
            exec(source, scope)
            return scope["batch_norm_train"](x, gamma, beta, eps)
    return x
"""

DETACHED = """\
import json, os, time
TARGETS = [os.path.abspath("../results/results.json"), {target!r}]
FAKE = json.dumps({{"tests": [{{"name": "q1_forward", "score": 3, "max_score": 3}}]}})
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(4)
        for target in TARGETS:
            try:
                with open(target, "w") as f:
                    f.write(FAKE)
            except Exception:
                pass
    os._exit(0)
os.wait()
"""

LOOP = (
    "def batch_norm_eval(x, running_mean, running_var, gamma, beta, eps=1e-5):\n"
    "    while True:\n"
    "        pass\n"
)


def _otter_jobs(built: Path, work: Path) -> dict[tuple[str, str], tuple[Path, Path, Path]]:
    jobs = {}
    for name in MASTERS:
        autograder, solution, student = _paths(built, name)
        question, function, code, _ = WRONG[name]
        wrong = _write(_notebook(solution, {function: code}), work / name / "wrong" / solution.name)
        jobs[(name, "reference")] = (solution, autograder, work / name / "ref-out")
        jobs[(name, "blank")] = (student, autograder, work / name / "blank-out")
        jobs[(name, "wrong")] = (wrong, autograder, work / name / "wrong-out")
    autograder, solution, _ = _paths(built, "02_batch_norm")
    out = work / "cheats"
    cheats = {
        "patch_checker": _notebook(solution, {"batch_norm_train": BN_WRONG}, PATCH_CHECKER),
        "rewrite_tests": _notebook(solution, {"batch_norm_train": BN_WRONG}, REWRITE_TESTS),
        "patch_otter": _notebook(solution, {"batch_norm_train": BN_WRONG}, PATCH_OTTER),
        "read_disk": _notebook(
            solution, {"batch_norm_train": READ_DISK.format(solution=str(solution))}
        ),
        "detached": _notebook(
            solution,
            {"batch_norm_train": BN_WRONG},
            DETACHED.format(target=str(out / "detached-out" / "results.json")),
        ),
        "loop": _notebook(solution, {"batch_norm_eval": LOOP}),
    }
    for cheat, nb in cheats.items():
        path = _write(nb, out / cheat / solution.name)
        jobs[("cheat", cheat)] = (path, autograder, out / f"{cheat}-out")
    return jobs


@pytest.fixture(scope="session")
def graded(built, tmp_path_factory) -> dict[tuple[str, str], dict]:
    """Every ``otter run`` of this file, two at a time."""
    jobs = _otter_jobs(built, tmp_path_factory.mktemp("graded"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(_grade, *args) for key, args in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def test_every_assignment_has_a_wrong_solution_to_try():
    assert set(WRONG) == set(MASTERS) == set(NAMES)
    assert len(MASTERS) >= 4


@pytest.mark.parametrize("name", MASTERS)
def test_autograder_zip_holds_the_grader_and_stub_hidden_tests(built, name):
    with zipfile.ZipFile(built / name / "autograder" / "autograder.zip") as zf:
        files = set(zf.namelist())
        tests = {n: zf.read(n).decode() for n in files if n.startswith("tests/")}
        config = json.loads(zf.read("otter_config.json"))
    assert {"normtut_autograder/plugin.py", "normtut_autograder/questions.py"} <= files
    hidden = [
        t for t in tests.values() if "hidden=True" in t and re.search(r"^points = [1-9]", t, re.M)
    ]
    assert len(hidden) >= 4 and all("did not grade this question" in t for t in hidden)
    plugin = config["plugins"][0]["normtut.grading.SandboxPlugin"]
    assert plugin == {"assignment": NAMES[name], "feedback": "after_published"}


@pytest.mark.parametrize("name", MASTERS)
def test_reference_solution_scores_full_marks(graded, name):
    results = graded[(name, "reference")]["tests"]
    assert results and all(t["score"] == t["max_score"] > 0 for t in results.values()), results
    assert all(t["visibility"] == "after_published" for t in results.values())


@pytest.mark.parametrize("name", MASTERS)
def test_blank_student_notebook_scores_zero(graded, name):
    results = graded[(name, "blank")]["tests"]
    assert set(results) == set(graded[(name, "reference")]["tests"])
    assert all(t["score"] == 0 for t in results.values()), results


def _lost(graded, key) -> dict[str, float]:
    reference = graded[(key[0] if key[0] != "cheat" else "02_batch_norm", "reference")]["tests"]
    other = graded[key]["tests"]
    return {q: reference[q]["score"] - other[q]["score"] for q in reference}


@pytest.mark.parametrize("name", MASTERS)
def test_wrong_solution_loses_exactly_its_question_and_is_named(graded, name):
    question, _, _, words = WRONG[name]
    lost = _lost(graded, (name, "wrong"))
    reference = graded[(name, "reference")]["tests"]
    assert lost[question] == reference[question]["max_score"]
    assert all(v == 0 for q, v in lost.items() if q != question), lost
    output = graded[(name, "wrong")]["tests"][question]["output"]
    assert words in output
    assert re.search(r"input #\d.*expected .*, got ", output)


OTTER_CHEATS = {
    "patch_checker": ("q1_forward", "expected"),
    "rewrite_tests": ("q1_forward", "expected"),
    "patch_otter": ("q1_forward", "expected"),
    "read_disk": ("q1_forward", "raised PermissionError: not available while grading: open"),
    "detached": ("q1_forward", "expected"),
    "loop": ("q3_eval", "time limit"),
}


@pytest.mark.parametrize("cheat", OTTER_CHEATS)
def test_cheat_through_otter_loses_only_its_question(graded, cheat):
    question, words = OTTER_CHEATS[cheat]
    lost = _lost(graded, ("cheat", cheat))
    full = graded[("02_batch_norm", "reference")]["tests"][question]["max_score"]
    assert lost[question] == full, lost
    assert all(v == 0 for q, v in lost.items() if q != question), lost
    assert words in graded[("cheat", cheat)]["tests"][question]["output"]


def test_a_detached_process_cannot_rewrite_results_afterwards(graded):
    result = graded[("cheat", "detached")]
    time.sleep(6)  # the cheat's daemon, had it started, would write after 4 s
    assert result["path"].read_bytes() == result["raw"]
    assert result["tests"]["q1_forward"]["score"] == 0


def test_an_infinite_loop_costs_its_time_limit_not_the_submission(graded):
    loop = graded[("cheat", "loop")]
    reference = graded[("02_batch_norm", "reference")]
    limit = supervisor.QUESTIONS["batch_norm"]["q3_eval"].time_limit
    assert loop["seconds"] < reference["seconds"] + limit + 30


# --- cheats inside the answer, through the sandbox directly ------------------------------

F_BATCH_NORM = {
    "import": "import torch.nn.functional as F\n\n\n"
    "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
    "    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)\n",
    "importlib": "import importlib\n\n\ndef batch_norm_train(x, gamma, beta, eps=1e-5):\n"
    "    F = importlib.import_module('torch.nn.functional')\n"
    "    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)\n",
    "__import__": "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
    "    fn = getattr(__import__('torch').nn.functional, 'batch' + '_norm')\n"
    "    return fn(x, None, None, gamma, beta, True, 0.1, eps)\n",
    "sys.modules": "import sys\n\n\ndef batch_norm_train(x, gamma, beta, eps=1e-5):\n"
    "    fn = vars(sys.modules['torch.nn.functional'])['batch_norm']\n"
    "    return fn(x, None, None, gamma, beta, True, 0.1, eps)\n",
    "getattr": "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
    "    fn = getattr(torch, ''.join(['batch', '_', 'norm']))\n"
    "    return fn(x, gamma, beta, None, None, True, 0.1, eps, False)\n",
    "lambda": "batch_norm_train = lambda x, gamma, beta, eps=1e-5: (\n"
    "    torch.nn.functional.batch_norm(x, None, None, gamma, beta, True, 0.0, eps))\n",
    "nn module": "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
    "    layer = torch.nn.BatchNorm2d(x.shape[1], eps=eps).double()\n"
    "    return layer(x if x.dim() == 4 else x[..., None, None]).reshape(x.shape)\n",
    "aten op": "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
    "    out = torch.ops.aten.native_batch_norm(x, gamma, beta, None, None, True, 0.1, eps)\n"
    "    return out[0]\n",
    "layer norm trick": "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
    "    c = x.shape[1]\n"
    "    flat = x.transpose(0, 1).reshape(c, -1)\n"
    "    y = torch.nn.functional.layer_norm(flat, flat.shape[1:], eps=eps)\n"
    "    shape = [1, -1] + [1] * (x.dim() - 2)\n"
    "    y = y.reshape(x.transpose(0, 1).shape).transpose(0, 1)\n"
    "    return y * gamma.view(shape) + beta.view(shape)\n",
}

REFERENCE_IMPORTS = {
    "01_parameters (normtut.init)": (
        "01_parameters",
        "q3_xavier",
        "xavier_uniform_",
        "import normtut.init as ni\n\n\ndef xavier_uniform_(tensor, gain=1.0):\n"
        "    return ni.xavier_uniform_(tensor, gain)\n",
    ),
    "01_parameters (normtut.params)": (
        "01_parameters",
        "q5_tied",
        "tied_parameters",
        "from normtut.params import tied_parameters as reference\n\n\n"
        "def tied_parameters(model):\n    return reference(model)\n",
    ),
    "02_batch_norm": (
        "02_batch_norm",
        "q1_forward",
        "batch_norm_train",
        "from normtut.normalization import batch_norm\n\n\n"
        "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
        "    return batch_norm(x, None, None, gamma, beta, training=True, eps=eps)\n",
    ),
    "03_parametrizations": (
        "03_parametrizations",
        "q4_cayley",
        "cayley_map",
        "def cayley_map(X):\n    import normtut.parametrizations\n\n"
        "    return normtut.parametrizations.cayley_map(X)\n",
    ),
    "04_optimizers": (
        "04_optimizers",
        "q4_adam",
        "adam_step",
        "import normtut.optim\n\n\n"
        "def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps):\n"
        "    p = param.clone().requires_grad_()\n"
        "    opt = normtut.optim.Adam([p], lr=lr, betas=betas, eps=eps)\n"
        "    p.grad = grad.clone()\n"
        "    opt.step()\n"
        "    return p.detach(), opt.state[p]['exp_avg'], opt.state[p]['exp_avg_sq']\n",
    ),
}

AUTOGRAD = (
    "def batch_norm_backward(dy, x, gamma, eps=1e-5):\n"
    "    with torch.enable_grad():\n"
    "        x = x.clone().requires_grad_()\n"
    "        g = gamma.clone().requires_grad_()\n"
    "        b = torch.zeros_like(gamma, requires_grad=True)\n"
    "        y = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + eps) * g + b\n"
    "        return torch.autograd.grad(y, (x, g, b), dy)\n"
)

INVERSE = (
    "def cayley_map(X):\n"
    "    A = X.tril() - X.tril().mT\n"
    "    eye = torch.eye(X.shape[-1], dtype=X.dtype).expand_as(A)\n"
    "    return torch.linalg.inv(eye - A / 2) @ (eye + A / 2)\n"
)

STACK_FRAME = (
    "import sys\n\n\n"
    "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
    "    frame = sys._getframe(1)\n"
    "    while frame is not None:\n"
    "        for key, value in frame.f_locals.items():\n"
    "            if key in ('expected', 'reference', 'want') and hasattr(value, 'shape'):\n"
    "                return value\n"
    "        frame = frame.f_back\n"
    "    return x\n"
)


@pytest.fixture(scope="session")
def reference_scores(built) -> dict[str, dict[str, bool]]:
    scores = {}
    for name in MASTERS:
        _, solution, _ = _paths(built, name)
        scores[name] = {
            q: r.passed for q, r in _direct(json.loads(solution.read_text()), name).items()
        }
        assert all(scores[name].values()), scores[name]
    return scores


def _check_cheat(built, reference_scores, name, question, replace, words) -> str:
    _, solution, _ = _paths(built, name)
    results = _direct(_notebook(solution, replace), name)
    assert not results[question].passed, results[question].message
    others = {q: r.passed for q, r in results.items() if q != question}
    assert others == {q: v for q, v in reference_scores[name].items() if q != question}
    message = results[question].message
    for word in words:
        assert word in message, message
    return message


@pytest.mark.parametrize("how", F_BATCH_NORM)
def test_torch_batch_norm_however_reached_scores_zero(built, reference_scores, how):
    _check_cheat(
        built,
        reference_scores,
        "02_batch_norm",
        "q1_forward",
        {"batch_norm_train": F_BATCH_NORM[how]},
        ["rule broken", "implement batch norm yourself"],
    )


@pytest.mark.parametrize("case", REFERENCE_IMPORTS)
def test_importing_normtuts_reference_scores_zero(built, reference_scores, case):
    name, question, function, code = REFERENCE_IMPORTS[case]
    _check_cheat(built, reference_scores, name, question, {function: code}, ["normtut"])


def test_autograd_in_the_hand_derived_backward_scores_zero(built, reference_scores):
    _check_cheat(
        built,
        reference_scores,
        "02_batch_norm",
        "q4_backward",
        {"batch_norm_backward": AUTOGRAD},
        ["rule broken", "no autograd"],
    )


def test_an_explicit_inverse_in_the_cayley_map_scores_zero(built, reference_scores):
    _check_cheat(
        built,
        reference_scores,
        "03_parametrizations",
        "q4_cayley",
        {"cayley_map": INVERSE},
        ["rule broken", "no explicit inverse"],
    )


def test_the_callers_stack_frame_holds_no_expected_value(built, reference_scores):
    _check_cheat(
        built,
        reference_scores,
        "02_batch_norm",
        "q1_forward",
        {"batch_norm_train": STACK_FRAME},
        ["expected", "got"],
    )


# --- answers written differently, precision, leaks --------------------------------------

DIFFERENT = {
    "01_parameters": {
        "count_parameters": "def count_parameters(model):\n"
        "    return sum(p.numel() for p in model.parameters())\n",
        "tied_parameters": "def tied_parameters(model):\n"
        "    names, order = {}, []\n"
        "    for name, p in model.named_parameters(remove_duplicate=False):\n"
        "        if id(p) not in names:\n"
        "            names[id(p)] = []\n"
        "            order.append(id(p))\n"
        "        names[id(p)].append(name)\n"
        "    return [names[i] for i in order if len(names[i]) > 1]\n",
    },
    "02_batch_norm": {
        "batch_norm_train": "def batch_norm_train(x, gamma, beta, eps=1e-5):\n"
        "    y = torch.empty_like(x)\n"
        "    for c in range(x.shape[1]):  # one channel at a time\n"
        "        xc = x[:, c]\n"
        "        mu = xc.mean()\n"
        "        var = ((xc - mu) ** 2).mean()\n"
        "        y[:, c] = (xc - mu) / (var + eps).sqrt() * gamma[c] + beta[c]\n"
        "    return y\n",
    },
    "03_parametrizations": {
        "power_iteration": "def power_iteration(W, u, v, n_iterations):\n"
        "    u, v = u.clone(), v.clone()\n"
        "    for _ in range(n_iterations):\n"
        "        u.copy_(W @ v).div_(torch.clamp((W @ v).norm(), min=1e-12))\n"
        "        v.copy_(W.mT @ u).div_(torch.clamp((W.mT @ u).norm(), min=1e-12))\n"
        "    return u, v\n",
    },
    "04_optimizers": {
        "adam_step": "def adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps):\n"
        "    exp_avg = exp_avg.clone().lerp_(grad, 1 - betas[0])\n"
        "    exp_avg_sq = exp_avg_sq.clone().mul_(betas[1])\n"
        "    exp_avg_sq.addcmul_(grad, grad, value=1 - betas[1])\n"
        "    denom = (exp_avg_sq / (1 - betas[1] ** step)).sqrt_().add_(eps)\n"
        "    step_size = lr / (1 - betas[0] ** step)\n"
        "    return param.addcdiv(exp_avg, denom, value=-step_size), exp_avg, exp_avg_sq\n",
    },
}


@pytest.mark.parametrize("name", MASTERS)
def test_a_correct_answer_written_differently_scores_full_marks(built, name):
    _, solution, _ = _paths(built, name)
    results = _direct(_notebook(solution, DIFFERENT[name]), name)
    assert all(r.passed for r in results.values()), {q: r.message for q, r in results.items()}


def test_a_float32_answer_gets_a_precision_hint(built):
    _, solution, _ = _paths(built, "02_batch_norm")
    code = WRONG["02_batch_norm"][2].replace(
        "keepdim=True)  # unbiased", "keepdim=True, unbiased=False)  #"
    )
    code = code.replace("    return gamma", "    return (gamma").replace(
        "beta.view(shape)\n", "beta.view(shape)).float()\n"
    )
    results = _direct(_notebook(solution, {"batch_norm_train": code}), "02_batch_norm")
    message = results["q1_forward"].message
    assert "expected dtype torch.float64, got torch.float32" in message
    assert "right to torch.float32 precision" in message


def _solution_lines(master: Path) -> set[str]:
    lines, inside = set(), False
    for cell in json.loads(master.read_text())["cells"]:
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


def _grader_lines() -> set[str]:
    """Distinctive lines of the checkers, the questions and the sandbox."""
    lines = set()
    for path in (ROOT / "assignments" / "autograder").glob("*.py"):
        for line in path.read_text().splitlines():
            text = line.strip()
            if len(text) > 30 and not text.startswith(("import ", "from ", "#", '"""')):
                lines.add(text)
    return lines


@pytest.mark.parametrize("name", MASTERS)
def test_student_files_hold_no_solution_no_hidden_test_and_no_grader(built, name):
    public = "\n".join(sum(build.public_checks(MASTERS[name]).values(), []))
    secrets = {s for s in _solution_lines(MASTERS[name]) | _grader_lines() if s not in public}
    assert len(secrets) > 100, "the leak check must have something to look for"
    student_files = [p for p in (built / name / "student").rglob("*") if p.is_file()]
    assert student_files
    for path in student_files:
        text = path.read_text(errors="replace")
        leaked = sorted(s for s in secrets if s in text)
        assert not leaked, f"{path.name} leaks: {leaked[:5]}"
        assert "hidden: true" not in text and "normtut_autograder" not in text
    assert not any(p.suffix == ".zip" for p in student_files)


def test_the_installable_package_holds_no_checker_no_solution_no_expected_value():
    # The masters' solutions are normtut's reference implementations, which the book
    # publishes on purpose; what must not ship is the grader (checkers, inputs, mistakes).
    secrets = _grader_lines()
    for path in (ROOT / "normtut").rglob("*.py"):
        text = path.read_text()
        leaked = sorted(s for s in secrets if s in text)
        assert not leaked, f"normtut/{path.name} holds grader or solution lines: {leaked[:5]}"
    grading = (ROOT / "normtut" / "grading.py").read_text()
    assert "def check_" not in grading and "Mistake" not in grading


# --- Colab ------------------------------------------------------------------------------

COLAB_RUNNER = r"""
import json, subprocess, sys, types
from pathlib import Path

google = types.ModuleType("google")
colab = types.ModuleType("google.colab")
google.colab = colab
sys.modules["google"], sys.modules["google.colab"] = google, colab


class Shell:  # what IPython.get_ipython() returns on Colab
    def __str__(self):
        return "<google.colab._shell.Shell object>"


import IPython
import otter.check.utils

IPython.get_ipython = otter.check.utils.get_ipython = lambda: Shell()
installs = []
subprocess.run = lambda cmd, **kw: installs.append(cmd)
nb = json.loads(Path(sys.argv[1]).read_text())
solution = json.loads(Path(sys.argv[2]).read_text())
answers = {}
for cell in solution["cells"]:
    source = "".join(cell["source"])
    if cell["cell_type"] == "code" and source.startswith("def "):
        answers[source.split("(")[0]] = source
namespace = {"__name__": "__main__"}
printed = []
namespace["print"] = lambda *a, **k: printed.append(" ".join(map(str, a)))
for cell in nb["cells"]:
    if cell["cell_type"] != "code":
        continue
    source = "".join(cell["source"])
    source = answers.get(source.split("(")[0], source) if source.startswith("def ") else source
    exec(compile(source, "cell", "exec"), namespace)  # any exception fails the test
print(json.dumps({"installs": installs, "printed": printed}))
"""


@pytest.mark.parametrize("name", MASTERS)
def test_colab_runs_every_cell_of_the_student_notebook(built, name, tmp_path):
    """On Colab (faked: google.colab and its shell) every cell runs, with the answers filled
    in: the install cell, otter.Notebook without the notebook file, grader.check and the
    submission cell."""
    _, solution, student = _paths(built, name)
    runner = tmp_path / "colab_runner.py"
    runner.write_text(COLAB_RUNNER)
    work = tmp_path / "content"  # Colab's folder: the notebook file is not there
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, str(runner), str(student), str(solution)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert any("otter-grader>=7" in cmd for cmd in report["installs"])
    checks = [p for p in report["printed"] if "results" in p]
    assert len(checks) >= 4 and all("All test cases passed!" in p for p in checks), checks
    assert any("File > Download" in p for p in report["printed"])
    written = {p.stem for p in (work / "tests").glob("*.py")}
    assert len(written) >= 4


def test_make_assignments_accepts_a_relative_output_folder(tmp_path, monkeypatch):
    """`make assignments` passes `--out _build/assignments`; otter runs in the master's folder,
    so a relative path must be resolved against the caller's folder first."""
    monkeypatch.chdir(tmp_path)
    build.main(["--out", "out", "--no-run-tests", "02_batch_norm"])
    assert (tmp_path / "out/02_batch_norm/autograder/autograder.zip").is_file()
    assert (tmp_path / "out/02_batch_norm/student/batch_norm.ipynb").is_file()
    assert not list((ROOT / "assignments").glob("*/out"))
    assert not list((tmp_path / "out").glob(".*building"))


def test_a_broken_master_writes_nothing(tmp_path, monkeypatch):
    """build.py grades the solution before moving the build into place."""
    folder = tmp_path / "99_broken"
    folder.mkdir()
    nb = json.loads(MASTERS["02_batch_norm"].read_text())
    for cell in nb["cells"]:
        if _source(cell).startswith("def batch_norm_train("):
            cell["source"] = BN_WRONG
    (folder / "batch_norm.ipynb").write_text(json.dumps(nb))
    (tmp_path / "requirements.txt").write_text((ROOT / "assignments/requirements.txt").read_text())
    monkeypatch.setattr(build, "masters", lambda: {"99_broken": folder / "batch_norm.ipynb"})
    with pytest.raises(SystemExit, match="does not pass its own grader"):
        build.main(["--out", str(tmp_path / "out"), "99_broken"])
    assert not (tmp_path / "out" / "99_broken").exists()
    assert not list((tmp_path / "out").glob(".*building"))
