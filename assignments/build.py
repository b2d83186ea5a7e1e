"""Build the assignments: student notebooks and autograder zips from the master notebooks.

Usage (what ``make assignments`` runs)::

    python assignments/build.py                 # every assignment into _build/assignments
    python assignments/build.py --out DIR 02_batch_norm --no-run-tests

For each ``assignments/NN_name/name.ipynb`` (an otter-grader master notebook) this runs
``otter assign`` into a temporary folder next to ``DIR/NN_name/`` and then

* renames the autograder zip to ``autograder/autograder.zip`` (otter stamps the date into
  the name; graders and scripts want a fixed path);
* adds the grader to the zip as ``normtut_autograder/`` (``assignments/autograder/``: the
  sandbox, the checkers, the questions, and the public checks it reruns); the zip's hidden
  tests are stubs that fail unless that grader ran (``normtut.grading.SandboxPlugin``);
* fills ``PUBLIC_CHECKS`` in the student notebook's Colab cell with the notebook's own public
  checks, so that on Colab -- where otter-grader reads checks from ``./tests`` rather than
  from the notebook file, which Colab does not expose -- ``grader.check(...)`` works after
  the first cell has run. Hidden tests never enter the student notebook;
* unless ``--no-run-tests``: grades the solution notebook with the grader and requires full
  marks on every question.

Only then is the folder moved to ``DIR/NN_name/``: a master whose solution fails leaves the
previous build (if any) untouched and nothing new behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "_build" / "assignments"
PLACEHOLDER = "PUBLIC_CHECKS = {}"
GRADER = SOURCES / "autograder"
PACKAGE = "normtut_autograder"  # the grader's name inside the zip


def masters() -> dict[str, Path]:
    """``{"02_batch_norm": path to its master notebook, ...}`` in order."""
    found = {}
    for folder in sorted(p for p in SOURCES.iterdir() if p.is_dir() and p.name[:2].isdigit()):
        notebooks = sorted(folder.glob("*.ipynb"))
        if len(notebooks) != 1:
            raise SystemExit(f"{folder} must hold exactly one master notebook, found {notebooks}")
        found[folder.name] = notebooks[0]
    return found


def _otter() -> str:
    candidate = Path(sys.executable).with_name("otter")
    return str(candidate) if candidate.exists() else "otter"


def fill_public_checks(student_notebook: Path) -> int:
    """Write the notebook's public checks into its Colab cell; return how many."""
    nb = json.loads(student_notebook.read_text())
    checks = nb["metadata"]["otter"]["tests"]
    for cell in nb["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code" and PLACEHOLDER in source:
            filled = "PUBLIC_CHECKS = " + json.dumps(checks, indent=4)
            cell["source"] = source.replace(PLACEHOLDER, filled)
            break
    else:
        raise SystemExit(f"{student_notebook}: no cell holds {PLACEHOLDER!r}")
    student_notebook.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return len(checks)


def public_checks(master: Path) -> dict[str, list[str]]:
    """``{question: [source of each public test cell, without its config], ...}``."""
    checks: dict[str, list[str]] = {}
    question = None
    for cell in json.loads(master.read_text())["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "raw" and source.startswith("# BEGIN QUESTION"):
            question = next(
                line.split(":", 1)[1].strip()
                for line in source.splitlines()
                if line.startswith("name:")
            )
        elif cell["cell_type"] == "code" and "# END TEST CONFIG" in source:
            config, _, body = source.partition("# END TEST CONFIG")
            if "hidden: true" not in config and question is not None:
                checks.setdefault(question, []).append(body.lstrip("\n"))
    return checks


def add_grader(zip_path: Path, master: Path) -> None:
    """Put ``assignments/autograder`` and the public checks into the autograder zip."""
    with zipfile.ZipFile(zip_path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(GRADER.glob("*.py")):
            zf.write(path, f"{PACKAGE}/{path.name}")
        zf.writestr(f"{PACKAGE}/public_checks.json", json.dumps(public_checks(master), indent=1))


def verify(master: Path, solution: Path) -> None:
    """Grade the solution notebook with the sandboxed grader; every question must pass."""
    if str(SOURCES) not in sys.path:
        sys.path.insert(0, str(SOURCES))
    from autograder import supervisor

    config = next(
        "".join(c["source"])
        for c in json.loads(master.read_text())["cells"]
        if c["cell_type"] == "raw"
    )
    name = next(
        line.split(":", 1)[1].strip() for line in config.splitlines() if line.startswith("name:")
    )
    cells = supervisor.notebook_cells(json.loads(solution.read_text()))
    results = supervisor.grade(cells, name, public_checks=public_checks(master))
    failed = {
        q: r.message
        for q, r in results.items()
        if not r.passed or not all(ok for ok, _ in r.public)
    }
    if failed or not results:
        details = "\n".join(f"  {q}: {m} {results[q].public}" for q, m in failed.items())
        raise SystemExit(f"{master}: the solution does not pass its own grader:\n{details}")


def build(name: str, master: Path, out: Path, *, run_tests: bool = True) -> Path:
    """Run ``otter assign`` for one master notebook into ``out/name``; return that folder."""
    target = out.resolve() / name  # otter runs in the master's folder: no relative paths
    staging = out.resolve() / f".{name}.building"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    command = [_otter(), "assign", "--no-run-tests", str(master), str(staging)]
    try:
        subprocess.run(command, check=True, cwd=master.parent)
        zips = sorted((staging / "autograder").glob("*-autograder_*.zip"))
        if len(zips) != 1:
            raise SystemExit(f"expected one autograder zip in {staging / 'autograder'}, got {zips}")
        zip_path = staging / "autograder" / "autograder.zip"
        zips[0].rename(zip_path)
        add_grader(zip_path, master)
        fill_public_checks(staging / "student" / master.name)
        if run_tests:
            verify(master, staging / "autograder" / master.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="assignment folders (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument(
        "--no-run-tests", action="store_true", help="skip grading the solution before writing"
    )
    args = parser.parse_args(argv)
    available = masters()
    unknown = set(args.names) - set(available)
    if unknown:
        raise SystemExit(f"unknown assignment(s) {sorted(unknown)}; have {sorted(available)}")
    for name in args.names or available:
        target = build(name, available[name], args.out, run_tests=not args.no_run_tests)
        print(
            f"{name}: student notebook in {target / 'student'}, "
            f"autograder in {target / 'autograder' / 'autograder.zip'}"
        )


if __name__ == "__main__":
    main()
