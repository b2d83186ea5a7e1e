"""normtut.distributed on gloo, with 2-3 processes on this CPU: the launcher, SyncBatchNorm
against one batch norm on the global batch, DDP, and ZeRO-1 against the unsharded optimizer."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from normtut import distributed as ndist
from normtut import normalization as nnorm

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing")


def _child_pids():
    """Processes whose parent is this one, from /proc (empty where there is no /proc)."""
    me, found = str(os.getpid()), []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
        except OSError:  # the process ended meanwhile
            continue
        if fields.get("PPid", "").strip() == me:
            found.append(int(status.parent.name))
    return found


def _no_children_left():
    assert mp.active_children() == [], "a rank outlived run()"
    assert _child_pids() == [], "a process (rank or helper) outlived run()"


# --- the launcher ------------------------------------------------------------


def _hello(rank, world_size, base):
    print(f"hello from {rank}")
    t = torch.tensor([float(rank + base)])
    dist.all_reduce(t)
    return rank, world_size, t.item()


def test_run_returns_results_in_rank_order_and_forwards_output(capsys):
    results = ndist.run(_hello, 3, args=(10,), timeout=60)
    assert results == [(r, 3, 10.0 + 11.0 + 12.0) for r in range(3)]
    out = capsys.readouterr().out.splitlines()
    assert out == [f"[rank {r}] hello from {r}" for r in range(3)]
    _no_children_left()


def _one_fails(rank, world_size):
    if rank == 1:
        raise ValueError("rank one is broken")
    dist.barrier()  # would wait forever for rank 1
    return rank


def test_a_failing_rank_is_reported_and_the_others_are_killed():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="rank 1 of 2 failed") as info:
        ndist.run(_one_fails, 2, timeout=60)
    assert "ValueError: rank one is broken" in str(info.value)
    assert time.monotonic() - start < 30, "the waiting rank was killed, not waited for"
    _no_children_left()
    assert ndist.run(_hello, 2, args=(0,), timeout=60)[0] == (0, 2, 1.0), "runs again after"


class _SlowToDescribe(Exception):
    def __str__(self):
        time.sleep(0.5)  # its report reaches the parent after the other rank's
        return "the first failure"


def _fails_first_reports_last(rank, world_size):
    if rank == 0:
        raise _SlowToDescribe()
    dist.barrier()  # fails once rank 0 has left the group


def test_the_rank_that_failed_first_is_reported_even_when_its_report_comes_last():
    with pytest.raises(RuntimeError, match="rank 0 of 2 failed") as info:
        ndist.run(_fails_first_reports_last, 2, timeout=60)
    message = str(info.value)
    assert message.index("the first failure") < message.index("rank 1 also failed")
    _no_children_left()


def _hangs(rank, world_size):
    if rank == 0:
        time.sleep(600)
    return rank


def test_a_hanging_rank_is_killed_after_the_timeout():
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"ranks \[0\] did not finish within 3 s"):
        ndist.run(_hangs, 2, timeout=3)
    assert time.monotonic() - start < 20
    _no_children_left()


# --- spawn: what runs on GPUs, checked on the CPU --------------------------------------

SPAWN_SCRIPT = """
import json
import multiprocessing as mp
import torch
import torch.distributed as dist
from normtut import distributed as ndist

class Scaled:  # a class of __main__, as a notebook cell defines it
    def __init__(self, k):
        self.k = k

def notebook_fn(rank, world_size, scaled):
    t = torch.tensor([float(rank + 1)], device=ndist.rank_device(rank))
    dist.all_reduce(t)
    print("spawned", rank)
    return {"sum": t.item() * scaled.k, "device": str(ndist.rank_device())}

if __name__ == "__main__":
    results = ndist.run(notebook_fn, 2, args=(Scaled(10),), start_method="spawn", timeout=120)
    print(json.dumps(results))
    print("children left:", len(mp.active_children()))
"""


def test_a_function_defined_in_main_runs_under_spawn(tmp_path):
    script = tmp_path / "notebook_like.py"
    script.write_text(SPAWN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(ndist.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240, env=env
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["[rank 0] spawned 0", "[rank 1] spawned 1"]
    assert lines[2] == '[{"sum": 30.0, "device": "cpu"}, {"sum": 30.0, "device": "cpu"}]'
    assert lines[3] == "children left: 0"


def test_a_closure_over_a_local_tensor_and_a_lambda_run_under_spawn():
    base = torch.arange(3.0)

    def closure(rank, world_size):
        t = base + rank
        dist.all_reduce(t)
        return t

    sums = ndist.run(closure, 2, start_method="spawn", timeout=120)
    for t in sums:
        torch.testing.assert_close(t, 2 * base + 1)
    assert ndist.run(lambda r, w: (r, w), 2, start_method="spawn", timeout=120) == [(0, 2), (1, 2)]
    _no_children_left()


def test_an_error_in_a_spawned_rank_comes_back_with_its_traceback():
    def broken(rank, world_size):
        if rank == 0:
            raise KeyError("spawned rank zero is broken")
        dist.barrier()

    with pytest.raises(RuntimeError, match="rank 0 of 2 failed") as info:
        ndist.run(broken, 2, start_method="spawn", timeout=120)
    assert "Traceback" in str(info.value) and "in broken" in str(info.value)
    assert "KeyError: 'spawned rank zero is broken'" in str(info.value)
    _no_children_left()


def test_the_timeout_kills_spawned_ranks():
    def hangs(rank, world_size):
        time.sleep(600)

    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"ranks \[0, 1\] did not finish within 20 s"):
        ndist.run(hangs, 2, start_method="spawn", timeout=20)
    assert time.monotonic() - start < 60
    _no_children_left()


def test_the_environment_variable_chooses_the_start_method(monkeypatch):
    monkeypatch.setenv(ndist.START_METHOD_ENV, "spawn")
    assert ndist._start_method("gloo") == "spawn"
    monkeypatch.setenv(ndist.START_METHOD_ENV, "fork")
    assert ndist._start_method("gloo") == "fork"
    monkeypatch.setenv(ndist.START_METHOD_ENV, "forkserver")
    with pytest.raises(ValueError, match="must be 'fork' or 'spawn'"):
        ndist._start_method("gloo")
    monkeypatch.delenv(ndist.START_METHOD_ENV)
    assert ndist._start_method("nccl") == "spawn"
    if sys.platform.startswith("linux"):
        assert ndist._start_method("gloo") == "fork"


def _devices(rank, world_size):
    return str(ndist.rank_device()), str(ndist.rank_device(rank))


def test_rank_device_is_the_cpu_under_gloo_and_outside_a_group():
    assert ndist.rank_device() == torch.device("cpu")
    assert ndist.run(_devices, 2, backend="gloo", timeout=60) == [("cpu", "cpu")] * 2


@pytest.mark.parametrize(
    ("gpus", "world_size", "expected"),
    [
        (0, 2, "gloo"),
        (1, 2, "gloo"),
        (1, 1, "nccl"),
        (2, 2, "nccl"),
        (4, 2, "nccl"),
        (2, 3, "gloo"),
    ],
)
def test_default_backend_gives_nccl_only_with_a_gpu_per_rank(
    monkeypatch, gpus, world_size, expected
):
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert ndist.default_backend(world_size) == expected
    monkeypatch.setattr(dist, "is_nccl_available", lambda: False)
    assert ndist.default_backend(world_size) == "gloo"


def test_tensors_on_a_gpu_come_back_on_the_cpu(monkeypatch):
    """A rank's result is pickled with GPU tensors replaced by CPU copies: checked with the
    meta device standing in for a GPU (no GPU here)."""
    calls = []
    real_cpu = torch.Tensor.cpu

    class FakeGPU(torch.Tensor):
        @property
        def device(self):
            return torch.device("cuda", 0)

        def cpu(self):
            calls.append(1)
            return real_cpu(torch.Tensor._make_subclass(torch.Tensor, self))

    t = torch.Tensor._make_subclass(FakeGPU, torch.arange(3.0))
    back = __import__("pickle").loads(ndist._dumps({"x": [t]}))["x"][0]
    assert calls == [1] and type(back) is torch.Tensor and back.device.type == "cpu"
    torch.testing.assert_close(back, torch.arange(3.0))


def test_bad_world_size():
    with pytest.raises(ValueError, match="world_size"):
        ndist.run(_hello, 0)


# --- SyncBatchNorm ------------------------------------------------------------


def _global_batch(sizes, C=3, seed=0, dim=4):
    gen = torch.Generator().manual_seed(seed)
    shape = (sum(sizes), C, 5, 4) if dim == 4 else (sum(sizes), C)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 1
    w = torch.randn(shape, generator=gen, dtype=torch.float64)  # dL/dy
    return x, w


def _sync_bn_rank(rank, world_size, sizes, momentum, dim, steps):
    x, w = _global_batch(sizes, dim=dim)
    lo = sum(sizes[:rank])
    x_local = x[lo : lo + sizes[rank]].clone().requires_grad_()
    bn = ndist.SyncBatchNorm(3, momentum=momentum).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    for _ in range(steps):
        y = bn(x_local)
    (y * w[lo : lo + sizes[rank]]).sum().backward()
    bn.eval()
    y_eval = bn(x_local.detach())
    return {
        "y": y.detach(),
        "dx": x_local.grad,
        "dweight": bn.weight.grad,
        "dbias": bn.bias.grad,
        "mean": bn.running_mean,
        "var": bn.running_var,
        "n": bn.num_batches_tracked,
        "y_eval": y_eval,
    }


@pytest.mark.parametrize(
    ("sizes", "momentum", "dim"),
    [([4, 4], 0.1, 4), ([5, 2, 3], 0.3, 4), ([6, 0], None, 4), ([3, 5], 0.1, 2)],
    ids=["equal", "unequal-3-ranks", "empty-rank-cumulative", "1d"],
)
def test_sync_batch_norm_equals_one_batch_norm_on_the_global_batch(sizes, momentum, dim):
    steps = 2
    ranks = ndist.run(_sync_bn_rank, len(sizes), args=(sizes, momentum, dim, steps), timeout=90)
    x, w = _global_batch(sizes, dim=dim)
    x = x.clone().requires_grad_()
    ref = (nn.BatchNorm2d if dim == 4 else nn.BatchNorm1d)(3, momentum=momentum).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
        ref.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    for _ in range(steps):
        y = ref(x)
    (y * w).sum().backward()
    close = {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y.detach(), **close)
    torch.testing.assert_close(torch.cat([r["dx"] for r in ranks]), x.grad, **close)
    torch.testing.assert_close(sum(r["dweight"] for r in ranks), ref.weight.grad, **close)
    torch.testing.assert_close(sum(r["dbias"] for r in ranks), ref.bias.grad, **close)
    for r in ranks:
        torch.testing.assert_close(r["mean"], ref.running_mean, **close)
        torch.testing.assert_close(r["var"], ref.running_var, **close)
        assert r["n"].item() == steps
    ref.eval()
    torch.testing.assert_close(torch.cat([r["y_eval"] for r in ranks]), ref(x.detach()), **close)


def test_sync_batch_norm_is_a_drop_in_for_torchs():
    ours, theirs = ndist.SyncBatchNorm(4), nn.SyncBatchNorm(4)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    ours.load_state_dict(theirs.state_dict())
    for bad in (torch.randn(3), torch.randn(2, 0, 3)):
        errors = []
        for m in (ours, theirs):
            with pytest.raises(ValueError) as info:
                m(bad)
            errors.append(str(info.value))
        assert errors[0] == errors[1]
    # without a process group it is an ordinary batch norm, also in training
    x = torch.randn(8, 4, 3)
    torch.testing.assert_close(ours(x), nn.BatchNorm1d(4)(x))


def _torchs_refuses_the_cpu(rank, world_size):
    x = torch.randn(4, 3, 2)
    try:
        nn.SyncBatchNorm(3)(x)
    except ValueError as error:
        refused = str(error)
    return refused, ndist.SyncBatchNorm(3)(x).shape


def test_torchs_sync_batch_norm_refuses_the_cpu_and_ours_runs():
    for refused, shape in ndist.run(_torchs_refuses_the_cpu, 2, timeout=60):
        assert "SyncBatchNorm expected input tensor to be on GPU" in refused
        assert shape == (4, 3, 2)


def test_convert_sync_batchnorm_converts_torchs_and_ours_keeping_their_state():
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.BatchNorm2d(3, momentum=0.2),
        nn.Sequential(nnorm.BatchNorm1d(5)),
        nn.ReLU(),
    )
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
        model[2][0].weight.fill_(2.0)
    model[1].num_batches_tracked.fill_(7)
    model.eval()
    converted = ndist.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted[1], ndist.SyncBatchNorm)
    assert isinstance(converted[2][0], ndist.SyncBatchNorm)
    assert converted[1].momentum == 0.2 and converted[1].num_batches_tracked.item() == 7
    assert torch.all(converted[1].running_mean == 0.5) and torch.all(converted[2][0].weight == 2)
    assert not converted[1].training
    assert isinstance(converted[0], nn.Conv2d)


def _ddp_rank(rank, world_size, steps):
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), ndist.SyncBatchNorm(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        X = torch.randn(8, 1, 8, 8, generator=gen)
        y = torch.randint(0, 3, (8,), generator=gen)
        half = slice(4 * rank, 4 * rank + 4)
        opt.zero_grad()
        nn.functional.cross_entropy(ddp(X[half]), y[half]).backward()
        opt.step()
    return [p.detach() for p in model.parameters()] + [model[1].running_var]


def test_ddp_with_sync_batch_norm_trains_like_one_process_on_the_global_batch():
    steps = 3
    ranks = ndist.run(_ddp_rank, 2, args=(steps,), timeout=90)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        X = torch.randn(8, 1, 8, 8, generator=gen)
        y = torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    expected = [p.detach() for p in model.parameters()] + [model[1].running_var]
    for got in ranks:
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --- ZeRO stage 1 ------------------------------------------------------------


def _zero_problem():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(s)) for s in [(30, 20), (20,), (7, 7), (50,), (3,)]]
    targets = [torch.randn_like(p) for p in params]
    return params, targets


def _zero_rank(rank, world_size, steps, use_torch):
    from torch.distributed.optim import ZeroRedundancyOptimizer as TorchZero

    params, targets = _zero_problem()
    Zero = TorchZero if use_torch else ndist.ZeroRedundancyOptimizer
    groups = [{"params": params[:3]}, {"params": params[3:], "lr": 0.05, "weight_decay": 0.1}]
    opt = Zero(groups, torch.optim.Adam, lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        sum(((p - t) ** 2).sum() for p, t in zip(params, targets, strict=True)).backward()
        opt.step()
    local_state = len(opt.optim.state)
    opt.consolidate_state_dict(to=0)
    state = opt.state_dict() if rank == 0 else None
    return [p.detach() for p in params], local_state, state


@pytest.mark.parametrize("world_size", [2, 3])
def test_zero_trajectory_equals_the_unsharded_optimizer_bitwise(world_size):
    steps = 5
    ranks = ndist.run(_zero_rank, world_size, args=(steps, False), timeout=90)
    torch_ranks = ndist.run(_zero_rank, world_size, args=(steps, True), timeout=90)
    params, targets = _zero_problem()
    groups = [{"params": params[:3]}, {"params": params[3:], "lr": 0.05, "weight_decay": 0.1}]
    opt = torch.optim.Adam(groups, lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        sum(((p - t) ** 2).sum() for p, t in zip(params, targets, strict=True)).backward()
        opt.step()
    for (got, local, _), (theirs, torch_local, _) in zip(ranks, torch_ranks, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(got, params, strict=True))
        assert all(torch.equal(a, b) for a, b in zip(theirs, params, strict=True))
        assert local == torch_local < len(params), "each rank holds only its shard of the state"
    assert sum(local for _, local, _ in ranks) == len(params)
    consolidated, full = ranks[0][2], opt.state_dict()
    assert consolidated["param_groups"] == full["param_groups"]
    assert consolidated["state"].keys() == full["state"].keys()
    for i, s in full["state"].items():
        for key, value in s.items():
            assert torch.equal(consolidated["state"][i][key], value), (i, key)
    copies = [nn.Parameter(p.detach().clone()) for p in params]
    fresh = torch.optim.Adam(
        [{"params": copies[:3]}, {"params": copies[3:], "lr": 0.05, "weight_decay": 0.1}], lr=0.01
    )
    fresh.load_state_dict(consolidated)  # the unsharded optimizer takes the consolidated state
    assert torch.equal(fresh.state_dict()["state"][4]["exp_avg_sq"], full["state"][4]["exp_avg_sq"])


def _zero_not_consolidated(rank, world_size):
    params, _ = _zero_problem()
    opt = ndist.ZeroRedundancyOptimizer(params, torch.optim.SGD, lr=0.1)
    opt.state_dict()


def test_zero_state_dict_needs_consolidation_first():
    with pytest.raises(RuntimeError, match="has not been consolidated"):
        ndist.run(_zero_not_consolidated, 2, timeout=60)


def test_synchronize_waits_only_for_a_gpu(monkeypatch):
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    ndist.synchronize("cpu")
    ndist.synchronize(torch.device("cpu"))
    assert waited == []
    ndist.synchronize("cuda:1")
    assert waited == [torch.device("cuda:1")]
