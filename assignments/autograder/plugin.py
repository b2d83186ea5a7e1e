"""The otter-grader plugin that grades a submission in the sandbox.

otter loads it through ``normtut.grading.SandboxPlugin`` (listed under ``generate: plugins``
in each master notebook's assignment config), in the grading process itself:

* ``before_grading``: deletes a submitted ``.OTTER_LOG`` (otter would unpickle it in its own
  process), and applies the one feedback setting (``feedback:`` in the plugin's config,
  see the instructors' guide) to otter's Gradescope visibility;
* ``before_execution``: keeps a copy of the submitted notebook and hands otter's kernel an
  empty one -- no line of the student's code runs in otter's kernel or in this process;
* ``after_grading``: grades every question with :func:`.supervisor.grade` (one sandboxed
  process per question, killed with everything it started before this returns) and writes the
  scores and feedback into otter's results, which otter then saves as ``results.json``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import supervisor

HERE = Path(__file__).resolve().parent
FEEDBACK = ("after_published", "immediately", "hidden")


class SandboxPlugin:
    def __init__(
        self,
        submission_path: str,
        submission_metadata: dict[str, Any],
        plugin_config: dict[str, Any],
    ) -> None:
        self.submission_path = submission_path
        self.config = dict(plugin_config or {})
        self.feedback = self.config.get("feedback", "after_published")
        if self.feedback not in FEEDBACK:
            raise ValueError(f"feedback must be one of {FEEDBACK}, got {self.feedback!r}")
        self.notebook: Any = None
        self.graded: dict[str, supervisor.Result] = {}
        self.seed: int | None = None

    def before_grading(self, ag_config: Any) -> None:
        # otter unpickles (dill) a submitted .OTTER_LOG in its own process: never let it
        log = Path(self.submission_path).resolve().parent / ".OTTER_LOG"
        if log.is_file() or log.is_symlink():
            log.unlink()
        ag_config.grade_from_log = False
        ag_config.show_hidden = self.feedback != "hidden"
        ag_config.show_all_public = self.feedback == "immediately"

    def before_execution(self, submission: Any) -> Any:
        import nbformat

        self.notebook = copy.deepcopy(submission)
        if isinstance(submission, str):  # a .py submission
            self.notebook = {"cells": [{"cell_type": "code", "source": submission}]}
            return "# graded in the normtut sandbox\n"
        empty = nbformat.v4.new_notebook(metadata=copy.deepcopy(submission.get("metadata", {})))
        empty.cells = [nbformat.v4.new_code_cell("# graded in the normtut sandbox")]
        return empty

    def after_grading(self, results: Any) -> None:
        from otter.test_files.abstract_test import TestCaseResult

        cells = supervisor.notebook_cells(self.notebook or {"cells": []})
        public = json.loads((HERE / "public_checks.json").read_text())
        self.seed = supervisor.new_seed()
        self.graded = supervisor.grade(
            cells, self.config["assignment"], seed=self.seed, public_checks=public
        )
        for name, test_file in results.results.items():
            graded = self.graded.get(name)
            if graded is None:  # a test file this plugin does not know: fail closed
                graded = supervisor.Result(name, False, f"{name}: no sandboxed grader for it")
            publics = iter(graded.public)
            outcomes = []
            for case in test_file.test_cases:
                if case.hidden:
                    passed, message = graded.passed, graded.message
                else:
                    passed, message = next(publics, (False, "public check did not run"))
                if self.feedback == "immediately":
                    case = replace(case, hidden=False)
                outcomes.append(TestCaseResult(case, None if passed else message, passed))
            if graded.passed:  # say what passed, too
                hidden = [o for o in outcomes if o.test_case.points]
                for o in hidden:
                    o.message = graded.message
            test_file.test_cases = [o.test_case for o in outcomes]
            test_file.test_case_results = outcomes
            test_file._score = None
        results.set_output(
            f"Graded in a sandbox, one process per question; inputs drawn with seed {self.seed}."
        )

    def generate_report(self) -> str:
        lines = [f"inputs drawn with seed {self.seed}"]
        for name, r in self.graded.items():
            lines.append(f"{name}: {'passed' if r.passed else 'failed'} in {r.seconds:.1f} s")
        return "\n".join(lines)
