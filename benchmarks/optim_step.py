"""Optimizer step time: normtut.optim against torch.optim on the CPU.

For Adam and SGD (momentum 0.9) and two models,

- ``small``: 200 small tensors (biases, linear and conv weights of 16 to 4,096 elements),
  where the time goes to Python and per-op overhead;
- ``large``: one tensor of 10M elements, where it goes to memory bandwidth,

each path of ours is timed against the same path of torch: ``for-loop`` (``foreach=False``,
one parameter at a time) and ``foreach`` (``foreach=True``, ``torch._foreach_*`` ops on lists).
Gradients are fixed random tensors, so only ``optimizer.step()`` is timed.

Every configuration is built once; then, for ``--rounds`` rounds, every configuration runs
``--steps`` steps of torch and of normtut, alternating which goes first, so a busy machine
slows both alike. The table gives the median and the minimum time per step of each, and the
ratio normtut / torch (the target is at most 1.2x on both paths).

Examples::

    python benchmarks/optim_step.py --threads 1 --rounds 15 --steps 20 --json optim.json
    python benchmarks/optim_step.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _report import save  # benchmarks/_report.py (the script's own folder is on sys.path)
from torch import Tensor

from normtut import optim as nopt

OPTIMIZERS: dict[str, tuple[Callable, Callable, dict]] = {
    "Adam": (nopt.Adam, torch.optim.Adam, {"lr": 1e-3}),
    "SGD(momentum=0.9)": (nopt.SGD, torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9}),
}
SMALL_SHAPES = [(16,), (64, 64), (32, 3, 3, 3), (128,), (256, 16)]


def make_params(model: str, large_numel: int) -> list[Tensor]:
    """The parameters of ``model``, each with a fixed random gradient."""
    g = torch.Generator().manual_seed(0)
    if model == "small":
        shapes = [SMALL_SHAPES[i % len(SMALL_SHAPES)] for i in range(200)]
    else:
        shapes = [(large_numel,)]
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=g))
        p.grad = torch.randn(shape, generator=g) * 1e-3
        params.append(p)
    return params


def time_steps(opt: torch.optim.Optimizer, steps: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds per ``opt.step()``, averaged over ``steps`` steps."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def run(args: argparse.Namespace) -> dict:
    configs = []
    models = {"small": "200 small tensors", "large": f"1 tensor, {args.large / 1e6:g}M elements"}
    for model in models:
        for opt_name, (ours_cls, torch_cls, kwargs) in OPTIMIZERS.items():
            for path, foreach in (("for-loop", False), ("foreach", True)):
                pair = {}
                for impl, cls in (("torch", torch_cls), ("normtut", ours_cls)):
                    opt = cls(make_params(model, args.large), foreach=foreach, **kwargs)
                    time_steps(opt, 2)  # warm-up: creates the state
                    pair[impl] = opt
                configs.append(((model, opt_name, path), pair))
    times: dict[tuple, dict[str, list[float]]] = {}
    cpu_times: dict[tuple, dict[str, list[float]]] = {}
    for key, _ in configs:
        times[key], cpu_times[key] = {"torch": [], "normtut": []}, {"torch": [], "normtut": []}
    for r in range(args.rounds):
        order = ("torch", "normtut") if r % 2 == 0 else ("normtut", "torch")
        for key, pair in configs:
            for impl in order:
                wall, cpu = time_steps(pair[impl], args.steps)
                times[key][impl].append(wall)
                cpu_times[key][impl].append(cpu)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    rows = []
    for key, t in times.items():
        model, opt_name, path = key
        row = {"model": models[model], "optimizer": opt_name, "path": path}
        for impl in ("torch", "normtut"):
            row[f"{impl}_median_ms"] = 1e3 * statistics.median(t[impl])
            row[f"{impl}_min_ms"] = 1e3 * min(t[impl])
            row[f"{impl}_cpu_median_ms"] = 1e3 * statistics.median(cpu_times[key][impl])
        row["ratio_median"] = row["normtut_median_ms"] / row["torch_median_ms"]
        row["ratio_min"] = row["normtut_min_ms"] / row["torch_min_ms"]
        row["ratio_cpu_median"] = row["normtut_cpu_median_ms"] / row["torch_cpu_median_ms"]
        rows.append(row)
    return {
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }


def print_table(result: dict) -> None:
    print(
        f"\nOptimizer step time (ms per step), CPU, {result['threads']} thread(s), "
        f"{result['rounds']} alternated rounds x {result['steps_per_round']} steps"
    )
    header = (
        f"{'model':<26}{'optimizer':<19}{'path':<10}{'torch med':>10}{'min':>9}"
        f"{'normtut med':>12}{'min':>9}{'ratio med':>10}{'min':>7}{'CPU med':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in result["rows"]:
        print(
            f"{row['model']:<26}{row['optimizer']:<19}{row['path']:<10}"
            f"{row['torch_median_ms']:>10.3f}{row['torch_min_ms']:>9.3f}"
            f"{row['normtut_median_ms']:>12.3f}{row['normtut_min_ms']:>9.3f}"
            f"{row['ratio_median']:>9.2f}x{row['ratio_min']:>6.2f}x"
            f"{row['ratio_cpu_median']:>8.2f}x"
        )
    worst = max(row["ratio_median"] for row in result["rows"])
    print(f"worst median ratio normtut / torch: {worst:.2f}x (target <= 1.2x)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="alternated rounds (default 9)")
    parser.add_argument("--steps", type=int, default=10, help="steps per round (default 10)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--large", type=int, default=10_000_000, help="elements of the large tensor (10M)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds x 3 steps, large tensor of 1M (smoke)"
    )
    parser.add_argument("--json", type=Path, default=None, help="save the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.large = 3, 3, 1_000_000
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    print_table(result)
    save(result, args.json)


if __name__ == "__main__":
    main()
