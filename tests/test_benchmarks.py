"""The benchmark scripts run end to end (tiny settings: these check the script, not speed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
bn_lenet = pytest.importorskip("bn_lenet")


def test_bn_lenet_compile_options_choose_the_variants():
    assert bn_lenet.parse_args([]).compile == "tuned"
    assert bn_lenet.parse_args(["--no-compile"]).compile == "none"
    assert bn_lenet.parse_args(["--compile-options", "both"]).compile == "both"
    suffix, options = bn_lenet.COMPILE_OPTIONS["tuned"]
    assert suffix == "+compile" and options == {"layout_optimization": False}
    assert bn_lenet.COMPILE_OPTIONS["defaults"][1] is None


def test_bn_lenet_throughput_runs_and_saves_its_table(tmp_path, capsys):
    out = tmp_path / "speed.json"
    argv = ["--no-compile", "--rounds", "2", "--batches", "2", "--variants", "normtut"]
    bn_lenet.main([*argv, "--json", str(out)])
    result = json.loads(out.read_text())
    assert set(result["median"]["cpu"]) == {"torch", "normtut"}
    assert len(result["examples_per_sec"]["wall"]["normtut"]) == 2
    assert result["ratios"]["wall"]["torch / torch"] == 1.0
    assert result["ratios"]["cpu"]["normtut / torch"] > 0
    assert result["compile_options"] == {} and result["compile_error"] is None
    table = capsys.readouterr().out
    assert "normtut" in table and "vs torch" in table


def test_bn_lenet_reports_a_failed_compile_once_and_keeps_the_eager_numbers(tmp_path, monkeypatch):
    calls = []

    def failing_compile(model, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(bn_lenet.torch, "compile", failing_compile)
    out = tmp_path / "speed.json"
    argv = ["--compile-options", "both", "--rounds", "1", "--batches", "2"]
    bn_lenet.main([*argv, "--variants", "normtut", "--json", str(out)])
    result = json.loads(out.read_text())
    assert len(calls) == 1  # the defaults are not tried after the tuned compile failed
    assert result["compile_error"] == "RuntimeError: no C++ compiler"
    assert set(result["median"]["wall"]) == {"torch", "normtut"}
