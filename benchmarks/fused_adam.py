"""normtut's fastest Adam, AdamW (``fused=True``, compiled: normtut._compiled) and Muon against
torch's ``fused=True`` Adam/AdamW and ``torch.optim.Muon``.

Prints the first-step (compile) seconds and the median CPU ms per step of each, alternated
rounds, 1 thread. Usage: ``PYTHONPATH=. python benchmarks/fused_adam.py N NUMEL [OPT]`` with
OPT one of adam (default), adamw, muon. N=1: one tensor of NUMEL elements (a square matrix of
about NUMEL elements for Muon); N>1: N small tensors of the probe's shapes (2-D ones for Muon).
"""

import math
import statistics
import sys
import time

import torch

import normtut.optim as no

SHAPES = [(16,), (64, 64), (32, 3, 3, 3), (128,), (256, 16)]
MATRICES = [(64, 64), (256, 16), (32, 27), (128, 128), (10, 64)]  # Muon: 2-D only
OPTIMIZERS = {  # name -> (ours, torch's, keyword arguments)
    "adam": (no.Adam, torch.optim.Adam, {"fused": True}),
    "adamw": (no.AdamW, torch.optim.AdamW, {"fused": True}),
    "muon": (no.Muon, torch.optim.Muon, {}),
}


def cpu_ms(step, k: int = 10) -> float:
    start = time.process_time()
    for _ in range(k):
        step()
    return (time.process_time() - start) / k * 1e3


def main() -> None:
    torch.set_num_threads(1)
    n, numel = int(sys.argv[1]), int(sys.argv[2])
    name = sys.argv[3] if len(sys.argv) > 3 else "adam"
    ours_cls, torch_cls, kwargs = OPTIMIZERS[name]
    if n == 1:
        side = math.isqrt(numel)
        shapes = [(side, side)] if name == "muon" else [(numel,)]
    else:
        pool = MATRICES if name == "muon" else SHAPES
        shapes = [pool[i % len(pool)] for i in range(n)]
    g = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=g) for s in shapes]
    ours = [torch.nn.Parameter(p.clone()) for p in ps]
    theirs = [torch.nn.Parameter(p.clone()) for p in ps]
    for p, q in zip(ours, theirs, strict=True):
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
        q.grad = p.grad.clone()
    opt, ref = ours_cls(ours, **kwargs), torch_cls(theirs, **kwargs)
    start = time.perf_counter()
    opt.step()
    print("first step s", round(time.perf_counter() - start, 1), flush=True)
    ref.step()
    times: dict[str, list[float]] = {"torch": [], "ours": []}
    for r in range(9):
        for who in ("torch", "ours") if r % 2 == 0 else ("ours", "torch"):
            times[who].append(cpu_ms(ref.step if who == "torch" else opt.step))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(name, n, numel, {k: round(v, 3) for k, v in med.items()},
          "ratio", round(med["ours"] / med["torch"], 3))  # fmt: skip


if __name__ == "__main__":
    main()
