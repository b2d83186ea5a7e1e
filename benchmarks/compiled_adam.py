"""Probe: Adam's from-scratch step compiled with ``torch.compile`` against ``fused=True``.

Evidence for issue 16 ("optimizers at fused speed"), not a finished fast path. The
from-scratch update (:func:`adam_step`, a loop over the tensors, or :func:`adam_step_foreach`,
the same lines as ``torch._foreach_*`` calls) is compiled once with ``fullgraph=True`` and timed
against ``torch.optim.Adam(fused=True)`` on the same parameters and gradients. It reports the
compile seconds, whether a changed ``lr`` recompiled (dynamo's ``unique_graphs``), the largest
difference from torch's fused parameters after the first step, and the median CPU time per
step of each (alternated rounds; CPU time because the machine is shared).

Examples::

    PYTHONPATH=. python benchmarks/compiled_adam.py --tensors 1 --numel 10000000
    PYTHONPATH=. python benchmarks/compiled_adam.py --tensors 40 --form foreach
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch._dynamo.utils import counters

SMALL_SHAPES = [(16,), (64, 64), (32, 3, 3, 3), (128,), (256, 16)]


def adam_step(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay):
    """Adam, one tensor at a time (dynamo unrolls the loop: one kernel per tensor).

    The bias corrections come in precomputed (``lr`` holds a float64 tensor of
    ``step_size`` and ``bias_correction2_sqrt`` per tensor, see :func:`main`): computed inside,
    inductor evaluates the two ``pow`` in double once per 8-float vector of the loop, which
    made the step 8-9x slower than torch's fused kernel on one 10M-element tensor."""
    step_sizes, bias_correction2_sqrts = lr
    for p, g, m, v, t, step_size, bc2_sqrt in zip(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        steps,
        step_sizes,
        bias_correction2_sqrts,
        strict=True,
    ):
        t += 1
        g = g + weight_decay * p
        m.lerp_(g, 1 - beta1)  # m_t
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v_t
        p.sub_(step_size * m / (v.sqrt() / bc2_sqrt + eps))


def adam_step_foreach(
    params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay
):
    """The same update as ``torch._foreach_*`` calls (inductor's foreach lowering)."""
    torch._foreach_add_(steps, 1)
    grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    t64 = [t.double() for t in steps]
    step_size = [lr / (1 - beta1**t) for t in t64]
    bias_correction2_sqrt = [(1 - beta2**t).sqrt() for t in t64]
    denom = torch._foreach_div(torch._foreach_sqrt(exp_avg_sqs), bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    update = torch._foreach_div(torch._foreach_mul(exp_avgs, step_size), denom)
    torch._foreach_sub_(params, update)


def shapes(tensors: int, numel: int) -> list[tuple[int, ...]]:
    if tensors == 1:
        return [(numel,)]
    return [SMALL_SHAPES[i % len(SMALL_SHAPES)] for i in range(tensors)]


def cpu_ms(step, steps: int) -> float:
    start = time.process_time()
    for _ in range(steps):
        step()
    return 1e3 * (time.process_time() - start) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tensors", type=int, default=1, help="1: one large tensor; N: N small")
    parser.add_argument("--numel", type=int, default=10_000_000, help="elements of the large one")
    parser.add_argument("--form", choices=["loop", "foreach"], default="loop")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    ours = [torch.randn(s, generator=g) for s in shapes(args.tensors, args.numel)]
    grads = [torch.randn(p.shape, generator=g) * 1e-3 for p in ours]
    theirs = [torch.nn.Parameter(p.clone()) for p in ours]
    for p, grad in zip(theirs, grads, strict=True):
        p.grad = grad.clone()
    fused = torch.optim.Adam(theirs, lr=1e-3, fused=True)
    state = ([torch.zeros_like(p) for p in ours], [torch.zeros_like(p) for p in ours])
    steps = [torch.zeros((), dtype=torch.float32) for _ in ours]
    fn = torch.compile(adam_step if args.form == "loop" else adam_step_foreach, fullgraph=True)

    def ours_step(lr: float = 1e-3) -> None:
        if args.form == "loop":  # bias corrections in Python doubles, as the for-loop path
            ts = [t.item() + 1 for t in steps]
            scalars = torch.tensor(
                [[lr / (1 - 0.9**t) for t in ts], [(1 - 0.999**t) ** 0.5 for t in ts]],
                dtype=torch.float64,
            )
            fn(ours, grads, *state, steps, scalars, 0.9, 0.999, 1e-8, 0.0)
        else:
            fn(ours, grads, *state, steps, lr, 0.9, 0.999, 1e-8, 0.0)

    start = time.perf_counter()
    ours_step()
    compile_s = time.perf_counter() - start
    fused.step()
    diff = max((a - b).abs().max().item() for a, b in zip(ours, theirs, strict=True))
    ours_step(2e-3)  # a scheduler's new lr
    ours_step(3e-3)
    graphs = counters["stats"]["unique_graphs"]
    times: dict[str, list[float]] = {"torch fused": [], "compiled": []}
    for r in range(args.rounds):
        order = ("torch fused", "compiled") if r % 2 == 0 else ("compiled", "torch fused")
        for name in order:
            step = fused.step if name == "torch fused" else ours_step
            times[name].append(cpu_ms(step, args.steps))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.tensors} tensor(s), form {args.form}, {args.threads} thread(s)")
    print(f"compile: {compile_s:.1f} s; graphs after two lr changes: {graphs}")
    print(f"max |ours - torch fused| after step 1: {diff:.3g}")
    for name, t in times.items():
        print(f"{name:<12} median {med[name]:.3f} ms  min {min(t):.3f} ms (CPU time per step)")
    print(f"ratio compiled / torch fused (medians): {med['compiled'] / med['torch fused']:.2f}x")


if __name__ == "__main__":
    main()
