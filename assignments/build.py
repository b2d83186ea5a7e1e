"""Build the assignments: student notebooks and autograder zips from the master notebooks.

Usage (what ``make assignments`` runs)::

    python assignments/build.py                 # every assignment into _build/assignments
    python assignments/build.py --out DIR 02_batch_norm --no-run-tests

For each ``assignments/NN_name/name.ipynb`` (an otter-grader master notebook) this runs
``otter assign`` into ``DIR/NN_name/`` and then

* renames the autograder zip to ``autograder/autograder.zip`` (otter stamps the date into
  the name; graders and scripts want a fixed path);
* fills ``PUBLIC_CHECKS`` in the student notebook's Colab cell with the notebook's own public
  checks, so that on Colab -- where otter-grader reads checks from ``./tests`` rather than
  from the notebook file, which Colab does not expose -- ``grader.check(...)`` works after
  the first cell has run. Hidden tests never enter the student notebook.

``otter assign`` runs every test against the solutions unless ``--no-run-tests`` is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "_build" / "assignments"
PLACEHOLDER = "PUBLIC_CHECKS = {}"


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


def build(name: str, master: Path, out: Path, *, run_tests: bool = True) -> Path:
    """Run ``otter assign`` for one master notebook into ``out/name``; return that folder."""
    target = out.resolve() / name  # otter runs in the master's folder: no relative paths
    shutil.rmtree(target, ignore_errors=True)
    command = [_otter(), "assign", str(master), str(target)]
    if not run_tests:
        command.append("--no-run-tests")
    subprocess.run(command, check=True, cwd=master.parent)
    zips = sorted((target / "autograder").glob("*-autograder_*.zip"))
    if len(zips) != 1:
        raise SystemExit(f"expected one autograder zip in {target / 'autograder'}, got {zips}")
    zips[0].rename(target / "autograder" / "autograder.zip")
    fill_public_checks(target / "student" / master.name)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="assignment folders (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--no-run-tests", action="store_true", help="skip otter's own check")
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
