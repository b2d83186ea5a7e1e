"""Checks on the repository itself: configuration, notebooks, dependencies, lint."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

RUNTIME_DEPS = {"torch", "numpy", "matplotlib", "tqdm", "cloudpickle"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;@]", requirement.strip(), maxsplit=1)[0].lower()


def _toc_files(node) -> list[str]:
    files = []
    if isinstance(node, dict):
        if "file" in node:
            files.append(node["file"])
        if "root" in node:
            files.append(node["root"])
        for value in node.values():
            files.extend(_toc_files(value))
    elif isinstance(node, list):
        for item in node:
            files.extend(_toc_files(item))
    return files


def _notebook(path: Path) -> dict:
    return json.loads(path.read_text())


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def test_there_are_chapters():
    assert len(CHAPTERS) >= 3, "Part I has three chapters"


# --- dependencies ----------------------------------------------------------------------


def test_runtime_dependencies_are_only_these_five():
    names = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert names == RUNTIME_DEPS


def test_jupyter_book_is_pinned_below_2():
    book = PYPROJECT["project"]["optional-dependencies"]["book"]
    jb = [r for r in book if _name(r) == "jupyter-book"]
    assert jb and "<2" in jb[0] and ">=1.0.4.post1" in jb[0]


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_reqs = {r.replace(" ", "") for r in pip_section if not r.startswith("-")}
    # torch from PyTorch's CPU index, so that conda users get no multi-GB CUDA build by accident
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in pip_section
    project = PYPROJECT["project"]
    wanted = set(project["dependencies"])
    for extra in ("book", "test", "instructor"):
        wanted |= set(project["optional-dependencies"][extra])
    assert env_reqs == {r.replace(" ", "") for r in wanted}
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.replace("python", "") == project["requires-python"]


def _lower_bounds() -> dict[str, str]:
    """``{name: version}`` of the ``>=`` bounds of the runtime dependencies."""
    bounds = {}
    for req in PYPROJECT["project"]["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", req.replace(" ", ""))
        assert match, f"{req}: a runtime dependency has a lower bound and nothing else"
        bounds[match[1].lower()] = match[2]
    return bounds


def test_lower_bounds_job_installs_the_lower_bounds():
    """.ci/lower-bounds.txt pins exactly the bounds of numpy, matplotlib, tqdm and cloudpickle."""
    from packaging.version import Version

    pins = {}
    for line in (ROOT / ".ci" / "lower-bounds.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    bounds = _lower_bounds()
    assert set(pins) == set(bounds) - {"torch"}
    for name, version in pins.items():
        assert Version(version) == Version(bounds[name]), (name, version, bounds[name])


def test_numpy_bound_admits_d2l():
    """d2l 1.0.3 pins numpy==1.23.5 and matplotlib==3.7.2: both inside normtut's bounds."""
    from packaging.version import Version

    bounds = _lower_bounds()
    assert Version(bounds["numpy"]) <= Version("1.23.5")
    assert Version(bounds["matplotlib"]) <= Version("3.7.2")
    assert Version(bounds["torch"]) >= Version("2.4")  # nn.RMSNorm, F.rms_norm


def test_license_file_matches_metadata():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Permission is hereby granted, free of charge" in text
    assert "normtut contributors" in text


def test_no_reference_to_a_design_md_outside_the_repo():
    if (ROOT / "DESIGN.md").exists():
        return
    files = [*(ROOT / "normtut").glob("*.py"), *(ROOT / "benchmarks").glob("*")]
    files += [*(ROOT / "book").glob("*.md"), ROOT / "README.md"]
    offenders = [f.name for f in files if f.is_file() and "DESIGN.md" in f.read_text()]
    assert not offenders, f"{offenders} point to a DESIGN.md that is not in the repository"


def test_help_normtut_lists_every_module():
    import normtut

    doc = normtut.__doc__
    # private modules (``_clip``, ``_muon``) are documented through the module that exports them
    modules = sorted(
        p.stem for p in (ROOT / "normtut").glob("*.py") if not p.stem.startswith("_")
    )
    missing = [m for m in modules if f"``normtut.{m}``" not in doc]
    assert not missing, f"the docstring of normtut/__init__.py does not list {missing}"


FAKE_PYTHON = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/../calls.log"
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_torch_spec_is_split_into_pip_arguments_and_part_of_the_stamp(tmp_path):
    """TORCH_SPEC reaches pip as separate arguments; changing it reinstalls, keeping it not."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON)  # records what make asks pip to do
    python.chmod(0o755)
    log = venv / "calls.log"

    def install(spec: str) -> list[str]:
        log.write_text("")
        result = subprocess.run(
            ["make", "-s", "install", f"VENV={venv}", f"TORCH_SPEC={spec}"],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return log.read_text().splitlines()

    cpu = "torch --index-url https://download.pytorch.org/whl/cpu"
    calls = install(cpu)
    assert calls[0] == f"-m pip install --quiet {cpu}"  # the shell split it: not one argument
    assert calls[1].startswith("-m pip install --quiet -e .")
    assert install(cpu) == []  # nothing changed: nothing to do
    assert install("torch==2.13.0")[0] == "-m pip install --quiet torch==2.13.0"
    kept = install("")  # keep the torch that is there
    assert len(kept) == 1 and kept[0].startswith("-m pip install --quiet -e .")


def test_package_imports_only_its_dependencies():
    """normtut imports nothing beyond the stdlib, its four dependencies and itself.

    Optional imports guarded by ``try/except ImportError`` (IPython, myst_nb, ipywidgets) are
    allowed; chapters, tests and ``normtut.grading`` are never imported by the package.
    """
    allowed = RUNTIME_DEPS | {"normtut"} | set(sys.stdlib_module_names)
    optional = {"IPython", "myst_nb", "ipywidgets"}
    for path in sorted((ROOT / "normtut").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                assert top in allowed | optional, f"{path.name} imports {mod}"
                assert mod != "normtut.grading" or path.name == "grading.py", path.name
                assert top not in {"tests", "chapters"}, f"{path.name} imports {mod}"


# --- book configuration ----------------------------------------------------------------


def test_toc_lists_every_chapter_and_every_file_exists():
    files = _toc_files(TOC)
    for f in files:
        assert (ROOT / f).with_suffix(".ipynb").exists() or (ROOT / f).with_suffix(
            ".md"
        ).exists(), f
    listed = {f for f in files if f.startswith("chapters/")}
    assert listed == {f"chapters/{p.stem}" for p in CHAPTERS}


def test_chapter_files_are_numbered_once_each():
    """The table of contents decides the reading order (and the numbers the reader sees); a
    file keeps the number it was created with, so later chapters can be placed earlier in a part
    without renaming every file after them. Each number is used once, with no gaps."""
    files = [f for f in _toc_files(TOC) if f.startswith("chapters/")]
    numbers = [int(Path(f).name.split("_")[0]) for f in files]
    assert sorted(numbers) == list(range(1, len(files) + 1)), numbers


def test_config_essentials():
    assert CONFIG["author"] == "normtut contributors"
    assert CONFIG["only_build_toc_files"] is True
    ex = CONFIG["execute"]
    assert ex["raise_on_error"] is True and ex["allow_errors"] is False
    assert ex["timeout"] > 0
    assert ex["execute_notebooks"] == "cache"
    assert "sphinx_exercise" in CONFIG["sphinx"]["extra_extensions"]
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    for excluded in ("_build", ".venv", "normtut"):
        assert excluded in CONFIG["exclude_patterns"]
    # MathJax served from the site itself
    sphinx = CONFIG["sphinx"]["config"]
    assert not sphinx["mathjax_path"].startswith(("http:", "https:", "//"))


REQUIRED_REFERENCES = [
    ("Ioffe", 2015), ("Santurkar", 2018), ("Ba", 2016), ("Wu", 2018), ("Zhang", 2019),
    ("Salimans", 2016), ("Miyato", 2018), ("Lezcano-Casado", 2019), ("Glorot", 2010),
    ("He", 2015), ("Duchi", 2011), ("Tieleman", 2012), ("Kingma", 2015), ("Loshchilov", 2019),
    ("Reddi", 2018), ("Sutskever", 2013),
]  # fmt: skip


def _bib_entries() -> dict[str, str]:
    text = (ROOT / "book" / "references.bib").read_text()
    entries = {}
    for m in re.finditer(r"@\w+\{([^,]+),(.*?)\n\}", text, flags=re.S):
        entries[m.group(1).strip()] = m.group(2)
    return entries


@pytest.mark.parametrize("author,year", REQUIRED_REFERENCES)
def test_references_bib_has_the_original_papers(author, year):
    entries = _bib_entries()
    hits = [
        key
        for key, body in entries.items()
        if re.search(r"author\s*=\s*\{\s*" + re.escape(author), body)
        and re.search(r"year\s*=\s*\{" + str(year), body)
    ]
    assert hits, f"no entry with first author {author} ({year})"


def test_every_citation_resolves():
    keys = set(_bib_entries())
    cited = set()
    for path in CHAPTERS + sorted((ROOT / "book").glob("*.md")):
        text = path.read_text()
        for m in re.finditer(r"\{cite(?::\w+)?\}`([^`]+)`", text):
            cited |= {k.strip() for k in m.group(1).split(",")}
    assert cited, "the chapters cite their papers"
    assert cited <= keys, f"unknown keys: {sorted(cited - keys)}"


# --- chapters --------------------------------------------------------------------------


def _colab_spec() -> str:
    repo = CONFIG["repository"]
    return f"normtut @ git+{repo['url']}@{repo['branch']}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_first_cell_installs_normtut_only_on_colab(path):
    first = _notebook(path)["cells"][0]
    src = _source(first)
    assert first["cell_type"] == "code"
    assert _colab_spec() in src, "the Colab cell must use the repository URL from _config.yml"
    assert 'if "google.colab" in sys.modules:' in src
    # the install is inside the Colab guard: executing the cell here installs nothing
    tree = ast.parse(src)
    guarded = [n for n in tree.body if isinstance(n, ast.If)]
    assert guarded and "pip" in ast.unparse(guarded[0].body[-1])
    assert all(not isinstance(n, ast.Expr) for n in tree.body), "no unguarded call"
    assert "remove-cell" in first.get("metadata", {}).get("tags", [])


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_carries_colab_gpu_metadata(path):
    meta = _notebook(path)["metadata"]
    assert meta.get("accelerator") == "GPU"
    assert meta.get("colab", {}).get("gpuType")
    assert meta["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_follows_the_checklist(path):
    cells = _notebook(path)["cells"]
    markdown = "\n".join(_source(c) for c in cells if c["cell_type"] == "markdown")
    code = "\n".join(_source(c) for c in cells if c["cell_type"] == "code")
    assert re.search(r"^# ", markdown, flags=re.M), "a title"
    assert "you will be able to" in markdown.lower(), "opens with learning goals"
    assert re.search(r"^## Summary", markdown, flags=re.M)
    assert re.search(r"^## Exercises", markdown, flags=re.M)
    exercises = re.findall(r"\{exercise\}", markdown)
    solutions = re.findall(r"\{solution(?:-start)?\}", markdown)
    assert len(exercises) >= 5 and len(solutions) >= len(exercises)
    assert "$$" in markdown, "states the math"
    assert "{cite:" in markdown, "cites its papers"
    assert re.search(r"```\{(warning|note|tip|important|caution)\}", markdown), "pitfalls"
    assert "set_seed(" in code and "try_gpu(" in code
    assert code.count("assert ") >= 5
    assert code.count("plt.show()") + code.count("nplot.") >= 2, "at least two figures"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_exercise_has_a_collapsed_solution_and_code_solutions_assert(path):
    """Each exercise label has one solution that names it and starts collapsed; a solution
    written as executed code (solution-start ... solution-end) checks its result."""
    cells = _notebook(path)["cells"]
    markdown = "\n".join(_source(c) for c in cells if c["cell_type"] == "markdown")
    labels = re.findall(r"```\{exercise\}.*?\n:label: (\S+)", markdown, re.S)
    solved = re.findall(r"```\{solution(?:-start)?\} (\S+)\n:class: dropdown", markdown)
    assert labels and sorted(labels) == sorted(solved), (labels, solved)
    executed, inside, code = 0, False, ""
    for cell in cells:
        text = _source(cell)
        if cell["cell_type"] == "code":
            code += text if inside else ""
            continue
        for marker in re.findall(r"\{solution-(start|end)\}", text):  # in their order
            if marker == "start":
                inside, code = True, ""
            else:
                assert inside and "assert" in code, f"a coding solution with no assert: {code}"
                inside, executed = False, executed + 1
    assert not inside and executed >= 2, "at least two coding solutions run with the book"


def test_exercise_labels_are_unique_across_the_book():
    labels = []
    for path in CHAPTERS:
        for cell in _notebook(path)["cells"]:
            if cell["cell_type"] == "markdown":
                labels += re.findall(r"\{exercise\}.*?\n:label: (\S+)", _source(cell), re.S)
    assert labels and len(labels) == len(set(labels))


def test_notebooks_in_git_have_no_outputs():
    notebooks = [p for p in ROOT.rglob("*.ipynb") if not {".venv", "_build"} & set(p.parts)]
    assert notebooks
    for path in notebooks:
        for cell in _notebook(path)["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [], f"{path.name} has outputs"
                assert cell["execution_count"] is None, f"{path.name} has execution counts"


def test_ruff_is_clean_on_package_tests_and_notebooks():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is part of the test extra"
    result = subprocess.run(
        [ruff, "check", "normtut", "tests", "chapters"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gitignore_keeps_build_products_out():
    ignored = (ROOT / ".gitignore").read_text().split()
    for entry in ("_build/", ".venv/", "book/_static/mathjax/", "build/", ".venv-d2l/",
                  ".venv-lower/"):
        assert entry in ignored


MAX_CODE_LINE = 80  # what the rendered book's content column shows without a scrollbar


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_code_fits_the_page(path):
    long = [
        line
        for cell in _notebook(path)["cells"]
        if cell["cell_type"] == "code" and "remove-cell" not in cell["metadata"].get("tags", [])
        for line in _source(cell).splitlines()
        if len(line) > MAX_CODE_LINE
    ]
    assert not long, f"{len(long)} code lines wider than {MAX_CODE_LINE}: {long[:3]}"


def _package_cache():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "package_cache", ROOT / "book" / "_ext" / "package_cache.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_book_cache_is_dropped_when_the_package_changes(tmp_path):
    """`make book` re-executes the chapters when normtut changes (the cache keys on cells)."""
    pc = _package_cache()
    root, build = tmp_path / "repo", tmp_path / "repo" / "_build"
    (root / "normtut").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\n")
    (root / "normtut" / "optim.py").write_text("LR = 0.1\n")
    cache = build / ".jupyter_cache"
    cache.mkdir(parents=True)
    assert pc.check(root, build) is True and not cache.exists(), "no stamp yet: start afresh"
    cache.mkdir()
    pc.stamp(root, build)
    assert pc.check(root, build) is False and cache.exists(), "unchanged package: keep it"
    (root / "normtut" / "optim.py").write_text("LR = 0.2\n")
    assert pc.check(root, build) is True and not cache.exists(), "changed package: drop it"
    cache.mkdir()
    pc.stamp(root, build)
    (root / "normtut" / "new.py").write_text("")
    assert pc.check(root, build) is True, "a new module counts too"


def test_make_book_checks_and_stamps_the_cache():
    recipe = (ROOT / "Makefile").read_text().split("\nbook:", 1)[1].split("\n\n", 1)[0]
    check, build, stamp = (
        recipe.index("package_cache.py check"),
        recipe.index("jupyter-book build"),
        recipe.index("package_cache.py stamp"),
    )
    assert check < build < stamp
