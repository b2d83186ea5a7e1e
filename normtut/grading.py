"""The entry point otter-grader loads for normtut's assignments -- and nothing secret.

The checkers, their inputs, the references and the expected values are not in this package:
they live in each assignment's autograder zip (``normtut_autograder/``, built from
``assignments/autograder/`` in the book's repository), which students never receive.

This module only holds :class:`SandboxPlugin`, the name listed in an assignment's otter
configuration (``plugins: [normtut.grading.SandboxPlugin]``). otter imports plugins by name
in the grading process, and under ``otter run`` the zip's folder is not importable, so this
small class finds the zip's ``normtut_autograder`` package next to the submission
(``<autograder>/source/normtut_autograder``) and hands every plugin event to it. Nothing in
normtut imports this module, and it imports nothing beyond the standard library.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

__all__ = ["SandboxPlugin"]


class SandboxPlugin:
    """Forward otter's plugin events to the autograder zip's ``normtut_autograder.plugin``.

    otter creates plugins with ``(submission_path, submission_metadata, plugin_config)``;
    while it builds the zip (``otter assign``/``otter generate``) the path is ``None`` or
    empty, and then this object answers no event.
    """

    def __init__(
        self,
        submission_path: str | None,
        submission_metadata: dict[str, Any] | None = None,
        plugin_config: dict[str, Any] | None = None,
    ) -> None:
        self._real = None
        if not submission_path:
            return
        source = Path(submission_path).resolve().parent.parent / "source"
        if not (source / "normtut_autograder" / "plugin.py").is_file():
            raise FileNotFoundError(
                f"{source / 'normtut_autograder'} is missing: grade with the autograder zip "
                "that assignments/build.py wrote"
            )
        if str(source) not in sys.path:
            sys.path.insert(0, str(source))
        plugin = importlib.import_module("normtut_autograder.plugin")
        self._real = plugin.SandboxPlugin(submission_path, submission_metadata or {}, plugin_config)

    def __getattr__(self, name: str) -> Any:
        real = self.__dict__.get("_real")
        if real is None:
            raise AttributeError(name)
        return getattr(real, name)
