"""normtut.optim.Adam(fused=True) (compiled, normtut._compiled) vs torch.optim.Adam(fused=True).

Prints the first-step (compile) seconds and the median CPU ms per step of each, alternated
rounds, 1 thread. Usage: ``PYTHONPATH=. python benchmarks/fused_adam.py N NUMEL`` (N=1: one
tensor of NUMEL elements; N>1: N small tensors of the probe's shapes).
"""

import statistics
import sys
import time

import torch

import normtut.optim as no

SHAPES = [(16,), (64, 64), (32, 3, 3, 3), (128,), (256, 16)]


def cpu_ms(step, k: int = 10) -> float:
    start = time.process_time()
    for _ in range(k):
        step()
    return (time.process_time() - start) / k * 1e3


def main() -> None:
    torch.set_num_threads(1)
    n, numel = int(sys.argv[1]), int(sys.argv[2])
    shapes = [(numel,)] if n == 1 else [SHAPES[i % len(SHAPES)] for i in range(n)]
    g = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=g) for s in shapes]
    ours = [torch.nn.Parameter(p.clone()) for p in ps]
    theirs = [torch.nn.Parameter(p.clone()) for p in ps]
    for p, q in zip(ours, theirs, strict=True):
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
        q.grad = p.grad.clone()
    opt, ref = no.Adam(ours, fused=True), torch.optim.Adam(theirs, fused=True)
    start = time.perf_counter()
    opt.step()
    print("compile s", round(time.perf_counter() - start, 1), flush=True)
    ref.step()
    times: dict[str, list[float]] = {"torch": [], "ours": []}
    for r in range(7):
        for name in ("torch", "ours") if r % 2 == 0 else ("ours", "torch"):
            times[name].append(cpu_ms(ref.step if name == "torch" else opt.step))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(n, numel, {k: round(v, 3) for k, v in med.items()}, "ratio", med["ours"] / med["torch"])


if __name__ == "__main__":
    main()
