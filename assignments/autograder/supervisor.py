"""Grade a notebook's answers, each question in its own sandboxed process.

:func:`grade` is the whole autograder: for each question it draws the inputs (seeded at
grading time), sends them with the notebook's code cells to a fresh process forked from the
zygote (:mod:`.child`), waits at most the question's time limit, decodes what came back as
untrusted JSON, and compares it here with the reference, naming known mistakes and the rules
broken. Nothing the student's code runs can see the expected values, this module or its
result; a question that loops, crashes or cheats loses only its own points.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import pickle
import re
import secrets
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import child
from .checks import arg_summary, compare_outputs, describe
from .questions import QUESTIONS, Question

CHILD_SOURCE = Path(child.__file__).read_text() + "\nzygote_main()\n"
CELL_TIME_LIMIT = 10.0


@dataclass
class Result:
    """One question's grade: score out of points, and the feedback shown to the student."""

    name: str
    passed: bool
    message: str
    public: list[tuple[bool, str]] = field(default_factory=list)
    seconds: float = 0.0


class Zygote:
    """The process that imports torch once and forks one sandboxed child per question."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.folder = tempfile.mkdtemp(prefix="normtut-sandbox-")
        os.chmod(self.folder, 0o755)

    def start(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", CHILD_SOURCE],
            cwd=self.folder,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_drop_privileges if _can_drop_privileges() else None,
        )
        ready = self._read(120.0)
        if ready is None:
            self.stop()
            raise RuntimeError("the sandbox process did not start")

    def _read(self, timeout: float) -> bytes | None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        header = _read_exact(fd, 4, deadline)
        if header is None:
            return None
        return _read_exact(fd, struct.unpack(">I", header)[0], deadline)

    def run(self, job: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """Run one job; restart the zygote when it died (then the job failed)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        payload = pickle.dumps(job)
        try:
            self.proc.stdin.write(struct.pack(">I", len(payload)) + payload)
            self.proc.stdin.flush()
            header = self._read(job["time_limit"] + 30.0)
            body = self._read(10.0) if header is not None else None
        except (BrokenPipeError, OSError):
            header = body = None
        if header is None or body is None:
            self.stop()
            return {"status": "grader_killed", "seconds": job["time_limit"]}, b""
        return json.loads(header), body

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()
            self.proc = None

    def close(self) -> None:
        self.stop()
        try:
            os.rmdir(self.folder)
        except OSError:
            pass


def _can_drop_privileges() -> bool:
    """Root, and the interpreter and torch readable by others (not under a private home)."""
    if os.geteuid() != 0 or os.environ.get("NORMTUT_SANDBOX_KEEP_USER"):
        return False
    for path in (Path(sys.executable).resolve(), Path(torch.__file__).resolve()):
        for folder in path.parents:
            if not os.stat(folder).st_mode & 0o001:
                return False
    return True


def _drop_privileges() -> None:
    """Graded as root (Gradescope, ``otter grade``): run the student's code as nobody."""
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def _read_exact(fd: int, n: int, deadline: float) -> bytes | None:
    import select

    chunks, got = [], 0
    while got < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return None
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# --- the static check ---------------------------------------------------------------------


def _strip_magics(source: str) -> str:
    return child._strip_magics(source)


def static_findings(cells: list[str], function: str, question: Question) -> list[str]:
    """Forbidden names that the graded function (or a notebook function it calls) spells out:
    attributes (``F.batch_norm``), imported names, and strings that name them (``getattr``).
    The notebook's own variables and functions are never flagged, whatever their names.

    For the feedback: the run-time tripwires are what makes a cheat fail; this names the rule
    even when the cheat was written so that the tripwire could not fire.
    """
    trees = []
    for source in cells:
        try:
            trees.append(ast.parse(_strip_magics(source)))
        except SyntaxError:
            continue
    defs: dict[str, list[ast.AST]] = {}
    imports: dict[str, str] = {}
    for tree in trees:
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defs.setdefault(node.name, []).append(node)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name):
                        defs.setdefault(t.id, []).append(node)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    full = (
                        f"{node.module}.{alias.name}"
                        if isinstance(node, ast.ImportFrom)
                        else alias.name
                    )
                    imports[alias.asname or alias.name.split(".")[0]] = full
    patterns = [(re.compile(p), r.name) for r in question.rules for p in (r.attrs, r.static) if p]
    found: list[str] = []

    def flag(text: str) -> None:
        if text not in found:
            found.append(text)

    def check_name(name: str, where: str) -> None:
        if name.split(".")[0] == "normtut" or ".normtut" in name:
            flag(f"{where} uses normtut (the reference): write the answer yourself")
        for part in name.split("."):
            for pattern, rule in patterns:
                if pattern.match(part):
                    flag(f"{where} uses {name}: {rule}")

    seen: set[str] = set()
    todo = [function]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in defs.get(name, []):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name):  # the notebook's own names are its own
                    if sub.id in defs and sub.id not in seen:
                        todo.append(sub.id)
                    if sub.id in imports and sub.id not in defs:
                        check_name(imports[sub.id], function)
                elif isinstance(sub, ast.Attribute):
                    check_name(sub.attr, function)
                elif isinstance(sub, (ast.Import, ast.ImportFrom)):
                    module = sub.module if isinstance(sub, ast.ImportFrom) else ""
                    for alias in sub.names:
                        check_name(f"{module}.{alias.name}" if module else alias.name, function)
                elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    if re.fullmatch(r"[\w.]+", sub.value):
                        check_name(sub.value, function)
    return found


# --- grading ------------------------------------------------------------------------------


def _expected(question: Question, case: Any) -> Any:
    if question.expected is not None:
        return question.expected(copy.deepcopy(case))
    args, kwargs = copy.deepcopy((case.args, case.kwargs))
    return child.run_case(question.reference, question.driver, args, kwargs, case.seed)


def _parse(payload: bytes) -> list[dict[str, Any]]:
    messages = []
    for line in payload.decode("utf-8", errors="replace").splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and isinstance(message.get("kind"), str):
            messages.append(message)
    return messages


def grade_question(
    zygote: Zygote,
    cells: list[str],
    name: str,
    question: Question,
    seed: int,
    public_checks: list[str] = (),
) -> Result:
    gen = torch.Generator().manual_seed(seed)
    cases = question.draw(gen)
    rule_flags = {"rules": [r.to_job() for r in question.rules]}
    rule_flags["autograd"] = any(r.autograd for r in question.rules)
    job = {
        "cells": cells,
        "function": question.function,
        "driver": question.driver,
        "cases": [(c.args, c.kwargs, c.seed) for c in cases],
        "rules": rule_flags,
        "public_checks": list(public_checks),
        "time_limit": question.time_limit,
        "cell_time_limit": CELL_TIME_LIMIT,
    }
    header, payload = zygote.run(job)
    messages = _parse(payload)
    public = [
        (bool(m.get("passed")), str(m.get("message", ""))[:500])
        for m in messages
        if m["kind"] == "public"
    ]
    result = Result(name, False, "", public, float(header.get("seconds", 0.0)))
    label = question.function
    violations, inside = [], False  # a tripwire hit by the notebook's own cells is no cheat
    for m in messages:
        if m["kind"] in ("call", "called"):
            inside = m["kind"] == "call"
        elif m["kind"] == "violation" and inside:
            violations.append(str(m.get("rule", ""))[:300])
    violations += static_findings(cells, question.function, question)
    if violations:
        unique = list(dict.fromkeys(violations))
        result.message = f"{label}: rule broken -- " + "; ".join(unique[:3]) + ". Score 0."
        return result
    status = header.get("status")
    if status == "timeout":
        result.message = (
            f"{label}: stopped after the time limit of {question.time_limit:g} s "
            "(an infinite loop, or far too slow); the other questions are graded separately."
        )
        return result
    if status in ("too_large", "grader_killed"):
        what = "its output was too large" if status == "too_large" else "the sandbox died"
        result.message = f"{label}: grading stopped: {what}."
        return result
    cell_errors = [m for m in messages if m["kind"] == "cell_error"]
    if any(m["kind"] == "missing" for m in messages):
        result.message = f"{label} is not defined: did the cell that defines it run without errors?"
        if cell_errors:
            result.message += " Errors: " + "; ".join(
                f"cell {m.get('cell')}: {str(m.get('error'))[:200]}" for m in cell_errors[:3]
            )
        return result
    by_case = {m.get("case"): m for m in messages if m["kind"] in ("result", "error")}
    for k, case in enumerate(cases):
        where = f"{label} on input #{k + 1} ({case.description}; arguments: "
        where += arg_summary(
            case.args[:2] if question.driver == "optimizer" else case.args, case.kwargs
        )
        where += ")"
        message = by_case.get(k)
        if message is None:
            result.message = f"{where}: no result (your code stopped or exited)."
            return result
        if message["kind"] == "error":
            result.message = f"{where} raised {str(message.get('error'))[:500]}"
            return result
        try:
            got = child.decode(message.get("value"))
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            result.message = f"{where}: the result could not be read ({exc})."
            return result
        expected = _expected(question, case)
        names = question.output_names
        problem = compare_outputs(
            got, expected, names, question.rtol, question.atol, question.driver
        )
        if problem is None:
            continue
        feedback = f"{where}: {problem}."
        for mistake in question.mistakes:
            args, kwargs = copy.deepcopy((case.args, case.kwargs))
            try:
                wrong = child.run_case(mistake.func, question.driver, args, kwargs, case.seed)
            except Exception:  # noqa: BLE001 - a mistake that does not apply to this input
                continue
            if (
                compare_outputs(got, wrong, names, question.rtol, question.atol, question.driver)
                is None
            ):
                feedback += f" Your result matches a known mistake: {mistake.description}."
                break
        result.message = feedback
        return result
    result.passed = True
    result.message = f"{label}: all {len(cases)} inputs agree with the reference."
    return result


def new_seed() -> int:
    """A fresh seed for the inputs (``NORMTUT_GRADING_SEED`` fixes it, for tests)."""
    return int(os.environ.get("NORMTUT_GRADING_SEED", secrets.randbits(31)))


def grade(
    cells: list[str],
    assignment: str,
    *,
    seed: int | None = None,
    public_checks: dict[str, list[str]] | None = None,
    questions: list[str] | None = None,
) -> dict[str, Result]:
    """Grade every question of ``assignment`` against the notebook's ``cells``."""
    if seed is None:
        seed = new_seed()
    zygote = Zygote()
    results = {}
    try:
        for name, question in QUESTIONS[assignment].items():
            if questions is not None and name not in questions:
                continue
            checks = (public_checks or {}).get(name, [])
            results[name] = grade_question(zygote, cells, name, question, seed, checks)
    finally:
        zygote.close()
    return results


def notebook_cells(nb: Any) -> list[str]:
    """The code cells of a notebook (nbformat node or dict), as the student wrote them."""
    cells = []
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        cells.append("".join(source) if isinstance(source, list) else str(source))
    return cells


def describe_result(result: Result) -> str:
    return describe(result.message)
