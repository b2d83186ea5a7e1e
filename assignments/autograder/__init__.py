"""The normtut autograder: what the autograder zip holds and a student never receives.

``build.py`` copies this folder into every autograder zip as ``normtut_autograder/``.

* :mod:`.plugin` -- the otter-grader plugin (loaded through ``normtut.grading.SandboxPlugin``):
  it keeps the student's code out of otter's kernel and grades every question in a sandbox;
* :mod:`.supervisor` -- runs each question in its own process with a time limit, draws the
  inputs, computes the expected values and compares (all in the grader's process);
* :mod:`.child` -- the code that runs in the student's process: executes the notebook's cells,
  removes the forbidden built-ins, blocks files, imports and processes, calls the answer;
* :mod:`.checks` -- comparing values and writing the feedback;
* :mod:`.questions` -- every question: inputs, reference, known mistakes, rules, time limit.
"""
