"""normtut.optim.Adam(fused=True) (compiled, normtut._compiled) vs torch.optim.Adam(fused=True):
first-step (compile) seconds and the median CPU ms per step, alternated rounds, 1 thread.

Usage: PYTHONPATH=. python benchmarks/fused_adam.py N NUMEL  (N=1: one tensor of NUMEL;
N>1: N small tensors of the probe shapes)."""

import statistics
import sys
import time

import torch

import normtut.optim as no

torch.set_num_threads(1)
n, numel = int(sys.argv[1]), int(sys.argv[2])
shapes = [(16,), (64, 64), (32, 3, 3, 3), (128,), (256, 16)]
sh = [(numel,)] if n == 1 else [shapes[i % 5] for i in range(n)]
g = torch.Generator().manual_seed(0)
ps = [torch.randn(s, generator=g) for s in sh]
a = [torch.nn.Parameter(p.clone()) for p in ps]
b = [torch.nn.Parameter(p.clone()) for p in ps]
for p, q in zip(a, b):
    p.grad = torch.randn(p.shape, generator=g) * 1e-3
    q.grad = p.grad.clone()
oa = no.Adam(a, fused=True)
ob = torch.optim.Adam(b, fused=True)
t = time.perf_counter()
oa.step()
print("compile s", round(time.perf_counter() - t, 1), flush=True)
ob.step()


def cpu(f, k=10):
    t = time.process_time()
    for _ in range(k):
        f()
    return (time.process_time() - t) / k * 1e3


T = {"torch": [], "ours": []}
for r in range(7):
    for nm in ("torch", "ours") if r % 2 == 0 else ("ours", "torch"):
        T[nm].append(cpu(ob.step if nm == "torch" else oa.step))
m = {k: statistics.median(v) for k, v in T.items()}
print(n, numel, {k: round(v, 3) for k, v in m.items()}, "ratio", round(m["ours"] / m["torch"], 2))
