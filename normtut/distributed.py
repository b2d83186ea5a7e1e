r"""Beyond one device, on PyTorch's own ``torch.distributed``: a launcher a notebook can call,
batch norm over a process group, and a sharded optimizer (ZeRO stage 1).

* :func:`run` starts ``world_size`` processes on this machine (gloo on the CPU, NCCL when there
  is a GPU per process), joins them into one process group over 127.0.0.1, runs
  ``fn(rank, world_size, *args)`` in each and returns their results in rank order;
  :func:`rank_device` is the device a rank computes on (its own GPU under NCCL, else the
  CPU). What the ranks print comes back prefixed with the rank; an exception in any rank is
  raised here with that rank's traceback; a rank that hangs is killed after ``timeout``
  seconds. No process outlives the call.
* :class:`SyncBatchNorm` normalizes with the statistics of the *global* batch: the sums and
  counts of every rank are all-reduced (a two-pass mean and variance), and so are the two sums
  that the hand-derived backward needs (Ioffe & Szegedy, 2015, for the batch norm; the
  synchronized form is the one used by Peng et al., 2018, "MegDet"). It works on the CPU with
  gloo, which ``torch.nn.SyncBatchNorm`` refuses.
* :class:`ZeroRedundancyOptimizer` keeps each parameter's optimizer state on one rank only
  (Rajbhandari et al., 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter
  Models", stage 1): every rank steps its own shard with the all-reduced gradients and then
  broadcasts the updated parameters, so the trajectory is the unsharded optimizer's.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from contextlib import redirect_stderr, redirect_stdout
from datetime import timedelta
from multiprocessing import resource_tracker
from typing import Any

import cloudpickle
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer

from normtut.normalization import _BatchNorm

__all__ = [
    "run",
    "default_backend",
    "rank_device",
    "synchronize",
    "SyncBatchNorm",
    "ZeroRedundancyOptimizer",
]

#: Environment variable that overrides the start method of :func:`run` (``fork`` or ``spawn``),
#: e.g. ``NORMTUT_DIST_START_METHOD=spawn`` to run a notebook's rank functions the way they run
#: on GPUs, through cloudpickle, on the CPU.
START_METHOD_ENV = "NORMTUT_DIST_START_METHOD"

# --- the launcher ------------------------------------------------------------


def default_backend(world_size: int) -> str:
    """``"nccl"`` when every rank can have a GPU of its own (NCCL is built and CUDA sees at least
    ``world_size`` devices), ``"gloo"`` otherwise, on CPU tensors: with one GPU and
    ``world_size=2`` the ranks run on the CPU (NCCL cannot run two ranks on one GPU)."""
    if dist.is_nccl_available() and torch.cuda.is_available():
        if torch.cuda.device_count() >= world_size:
            return "nccl"
    return "gloo"


def rank_device(rank: int | None = None) -> torch.device:
    """The device rank ``rank`` (default: this process's rank) computes on inside :func:`run`:
    ``cuda:rank`` under NCCL (as ``normtut.train.try_gpu(rank)``; :func:`run` has already made it
    the current device with ``torch.cuda.set_device``), the CPU under gloo or outside a process
    group. Put the model and the tensors of a rank function there, and move what it returns
    to the CPU."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        from normtut.train import try_gpu

        return try_gpu(dist.get_rank() if rank is None else rank)
    return torch.device("cpu")


def synchronize(device: torch.device | str) -> None:
    """Wait until ``device`` has finished the work queued on it: a GPU runs its kernels (and
    NCCL its collectives) asynchronously, so a timer must wait for it; on the CPU there is
    nothing to wait for."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _identity(value: Any) -> Any:
    return value


class _CPUPickler(pickle.Pickler):
    """Plain pickle, with tensors on a GPU sent as detached CPU copies, so the parent never
    touches CUDA (a parent that initializes CUDA could no longer fork)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, Tensor) and obj.device.type not in ("cpu", "meta"):
            return _identity, (obj.detach().cpu(),)
        return NotImplemented


def _dumps(value: Any) -> bytes:
    buffer = io.BytesIO()
    _CPUPickler(buffer).dump(value)
    return buffer.getvalue()


def _worker(
    rank: int,
    world_size: int,
    backend: str,
    job: tuple[Callable[..., Any], tuple] | bytes,
    conn: Any,
    timeout: float,
    threads: int,
) -> None:
    """One rank: join the group through the parent's store, run ``fn``, send back the result,
    what it printed and any traceback. ``job`` is ``(fn, args)``; under spawn it arrives as
    cloudpickle's bytes (a function defined in a notebook cell travels by value), unpickled here
    so that a failure to unpickle is reported like any other."""
    torch.set_num_threads(threads)
    out = io.StringIO()
    status, value, failed_at = "ok", None, 0.0
    # everything this rank writes goes back to the parent: a forked child must not write to
    # the notebook kernel's output streams
    with redirect_stdout(out), redirect_stderr(out):
        try:
            fn, args = pickle.loads(job) if isinstance(job, bytes) else job
            port = conn.recv()
            store = dist.TCPStore(
                "127.0.0.1",
                port,
                world_size + 1,
                is_master=False,
                timeout=timedelta(seconds=timeout),
            )
            if backend == "nccl":
                torch.cuda.set_device(rank)
            dist.init_process_group(
                backend,
                store=store,
                rank=rank,
                world_size=world_size,
                timeout=timedelta(seconds=timeout),
            )
            try:
                value = fn(rank, world_size, *args)
            except BaseException:
                failed_at = time.time()  # before leaving the group makes the others fail
                raise
            finally:
                dist.destroy_process_group()
        except BaseException:  # noqa: BLE001 - every failure goes back to the parent
            status, value = "error", traceback.format_exc()
            failed_at = failed_at or time.time()
    # plain pickle, by value: torch's shared-memory reductions would need this process alive
    # until the parent has read the tensors
    try:
        payload = _dumps((status, value, out.getvalue(), failed_at))
    except Exception:  # noqa: BLE001 - an unpicklable result: say so instead
        message = (
            f"rank {rank}: its result cannot be pickled (return plain values and detached "
            f"tensors):\n{traceback.format_exc()}"
        )
        payload = pickle.dumps(("error", message, out.getvalue(), time.time()))
    try:
        conn.send_bytes(payload)
    finally:
        conn.close()


def _start_method(backend: str) -> str:
    # fork is fast and keeps everything the notebook defined; CUDA cannot run in a child forked
    # after the parent initialized it, and NCCL needs CUDA: spawn for NCCL
    chosen = os.environ.get(START_METHOD_ENV, "").strip()
    if chosen:
        if chosen not in ("fork", "spawn"):
            raise ValueError(f"{START_METHOD_ENV} must be 'fork' or 'spawn', got {chosen!r}")
        return chosen
    if backend == "gloo" and sys.platform.startswith("linux") and not torch.cuda.is_initialized():
        return "fork"
    return "spawn"


def run(
    fn: Callable[..., Any],
    world_size: int = 2,
    *,
    args: tuple = (),
    backend: str | None = None,
    timeout: float = 120.0,
    threads_per_rank: int = 1,
    start_method: str | None = None,
    show_output: bool = True,
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` processes of one process group.

    Returns the ranks' return values in rank order. ``backend``: ``"gloo"`` or ``"nccl"``
    (default: :func:`default_backend`: NCCL with one GPU per rank, else gloo on the CPU). Inside
    ``fn``, :func:`rank_device` is the rank's device; tensors that ``fn`` returns on a GPU come
    back detached, on the CPU.

    How the ranks start (``start_method``, else the environment variable
    ``NORMTUT_DIST_START_METHOD``, else the default): with gloo on Linux they are *forked*
    (fast: the children inherit everything the notebook defined). Under NCCL they are
    *spawned*: CUDA cannot be used in a child forked from a parent that had initialized it
    (torch raises "Cannot re-initialize CUDA in forked subprocess"), and
    ``torch.cuda.is_available()`` itself initializes the CUDA driver (``cudaGetDeviceCount``)
    unless ``PYTORCH_NVML_BASED_CUDA_CHECK=1``. Spawned ranks are fresh interpreters, so ``fn``
    and ``args`` are sent with cloudpickle, which pickles functions and classes defined in
    ``__main__`` (a notebook cell, a script), lambdas and closures by value, with the globals
    they use; functions of importable modules travel by reference. Spawning costs each rank a
    fresh ``import torch``. ``fn`` should build its own model and data on
    :func:`rank_device`.

    ``timeout`` bounds the whole call: ranks still running then are killed and
    :class:`TimeoutError` is raised. If a rank raises, the others are killed and
    :class:`RuntimeError` carries that rank's traceback. What the ranks print is shown after
    they finish, each line prefixed with ``[rank r]`` (``show_output=False`` to drop it).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    backend = backend or default_backend(world_size)
    method = start_method or _start_method(backend)
    ctx = mp.get_context(method)
    job: tuple | bytes = (fn, args)
    if method != "fork":  # a fresh interpreter: send the function and its arguments by value
        job = cloudpickle.dumps((fn, args))
    # spawn starts multiprocessing's resource tracker, a helper process that would outlive
    # the call: stop it afterwards if this call started it
    tracker = resource_tracker._resource_tracker
    own_tracker = method != "fork" and getattr(tracker, "_fd", 0) is None
    pipes, procs = [], []
    store = None
    results: dict[int, tuple[str, Any, str, float]] = {}  # status, value, output, failed at
    give_up_at = time.monotonic() + timeout
    try:
        for rank in range(world_size):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=_worker,
                args=(rank, world_size, backend, job, child_end, timeout, threads_per_rank),
                daemon=True,
            )
            proc.start()
            child_end.close()
            pipes.append(parent_end)
            procs.append(proc)
        # the store lives in this process, on a port the OS picked: no race for a free port
        store = dist.TCPStore(
            "127.0.0.1",
            0,
            world_size + 1,
            is_master=True,
            wait_for_workers=False,
            timeout=timedelta(seconds=timeout),
        )
        for conn in pipes:
            conn.send(store.port)
        failed, grace = None, None
        while len(results) < world_size:
            if failed is not None and grace is None:
                grace = time.monotonic() + 1.0  # let the other ranks report their errors too
            if grace is not None and time.monotonic() > grace:
                break
            if time.monotonic() > give_up_at:
                missing = [r for r in range(world_size) if r not in results]
                raise TimeoutError(
                    f"ranks {missing} did not finish within {timeout:g} s; every rank was killed"
                )
            for rank, conn in enumerate(pipes):
                if rank in results or not conn.poll(0.02):
                    continue
                try:
                    results[rank] = pickle.loads(conn.recv_bytes())
                except EOFError:
                    code = procs[rank].exitcode
                    died = f"rank {rank} died (exit code {code})"
                    results[rank] = ("error", died, "", time.time())
                if results[rank][0] == "error" and failed is None:
                    failed = rank
            for rank, proc in enumerate(procs):
                if rank not in results and not proc.is_alive() and not pipes[rank].poll():
                    results[rank] = (
                        "error",
                        f"rank {rank} exited with code {proc.exitcode} without a result",
                        "",
                        time.time(),
                    )
                    failed = rank if failed is None else failed
        if show_output:
            for rank in sorted(results):
                for line in results[rank][2].splitlines():
                    print(f"[rank {rank}] {line}")
        if failed is not None:
            # the rank that failed first is the cause; the others mostly lost their peer
            failed = min(
                (r for r in results if results[r][0] == "error"), key=lambda r: results[r][3]
            )
            others = [
                f"rank {r} also failed:\n{results[r][1]}"
                for r in sorted(results)
                if r != failed and results[r][0] == "error"
            ]
            details = "\n".join([results[failed][1], *others])
            raise RuntimeError(f"rank {failed} of {world_size} failed:\n{details}")
        return [results[rank][1] for rank in range(world_size)]
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        for proc in procs:
            proc.join(timeout=10)
        for conn in pipes:
            conn.close()
        del store  # closes the listening socket: the port is free again
        if own_tracker and getattr(tracker, "_fd", None) is not None and hasattr(tracker, "_stop"):
            tracker._stop()


# --- batch norm over a process group --------------------------------------------------


def _all_reduce(tensor: Tensor, group: Any) -> Tensor:
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


class _SyncBatchNormFunction(torch.autograd.Function):
    r"""Training-mode batch norm whose statistics are those of the global batch.

    Forward, per channel over every rank's values (:math:`N` in all):
    :math:`\mu = \tfrac1N\sum x` (one all-reduce of the sums and counts), then
    :math:`\sigma^2 = \tfrac1N\sum (x-\mu)^2` (a second all-reduce: two passes, no cancellation),
    :math:`\hat x = (x-\mu)/\sqrt{\sigma^2+\epsilon}`, :math:`y = \gamma\hat x + \beta`.

    Backward: the batch-norm gradient needs two global sums,
    :math:`\sum \partial_y` and :math:`\sum \partial_y\,\hat x` (one all-reduce), then
    :math:`\partial_x = \tfrac{\gamma}{\sqrt{\sigma^2+\epsilon}}\bigl(\partial_y
    - \tfrac1N\sum\partial_y - \hat x\,\tfrac1N\sum\partial_y\hat x\bigr)`. The gradients of
    :math:`\gamma` and :math:`\beta` stay local sums; DDP all-reduces them with the others.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, group):
        C = x.size(1)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, C] + [1] * (x.dim() - 2)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        local = torch.cat([xf.sum(dims), xf.new_full((1,), xf.numel() // max(C, 1))])
        total = _all_reduce(local, group)
        count = total[-1]
        if count.item() <= 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {x.size()} "
                f"on this rank and {int(count.item())} in the whole group"
            )
        mean = total[:C] / count
        centered = xf - mean.view(shape)
        var = _all_reduce(centered.pow(2).sum(dims), group) / count  # biased: normalizes
        invstd = torch.rsqrt(var + eps)
        xhat = centered * invstd.view(shape)
        y = xhat
        if weight is not None:
            y = y * weight.view(shape)
        if bias is not None:
            y = y + bias.view(shape)
        if running_mean is not None:
            with torch.no_grad():
                unbiased = var * (count / (count - 1))
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        ctx.save_for_backward(xhat, invstd, weight, count)
        ctx.group, ctx.dims, ctx.shape = group, dims, shape
        ctx.has_bias, ctx.in_dtype = bias is not None, x.dtype
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        xhat, invstd, weight, count = ctx.saved_tensors
        dims, shape = ctx.dims, ctx.shape
        dyf = dy.float() if dy.dtype in (torch.float16, torch.bfloat16) else dy
        sum_dy = dyf.sum(dims)
        sum_dy_xhat = (dyf * xhat).sum(dims)
        C = sum_dy.numel()
        # the global sums of g and g * xhat, in one message
        both = _all_reduce(torch.cat([sum_dy, sum_dy_xhat]), ctx.group)
        mean_dy, mean_dy_xhat = both[:C] / count, both[C:] / count
        scale = invstd if weight is None else weight * invstd
        dx = scale.view(shape) * (dyf - mean_dy.view(shape) - xhat * mean_dy_xhat.view(shape))
        dweight = sum_dy_xhat.to(weight.dtype) if weight is not None else None
        dbias = (
            sum_dy.to(weight.dtype if weight is not None else dy.dtype) if ctx.has_bias else None
        )
        return dx.to(ctx.in_dtype), dweight, dbias, None, None, None, None, None


class SyncBatchNorm(_BatchNorm):
    r"""Batch normalization over the global batch of a process group; a drop-in for
    :class:`torch.nn.SyncBatchNorm` that also runs on the CPU (gloo).

    The same constructor, parameters, buffers and ``state_dict`` keys as torch's. In training,
    with more than one process in the group, the statistics (and the backward's two sums) are
    all-reduced (:class:`_SyncBatchNormFunction`); the running variance is updated with the
    unbiased estimate over the global count :math:`N`. In eval, or in a group of one, it is an
    ordinary batch norm. Outputs, gradients and running statistics equal those of one batch norm
    over the concatenated batches of all ranks, whatever each rank's batch size.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def _check_non_zero_input_channels(self, input: Tensor) -> None:
        if input.size(1) == 0:
            raise ValueError("SyncBatchNorm number of input channels should be non-zero")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        group = self.process_group or (dist.group.WORLD if dist.is_initialized() else None)
        sync = (
            self.training
            and dist.is_available()
            and dist.is_initialized()
            and dist.get_world_size(group) > 1
        )
        if not sync:  # eval, or a group of one: an ordinary batch norm
            return super().forward(input)
        factor = self._running_factor()
        track = self.track_running_stats
        return _SyncBatchNormFunction.apply(
            input,
            self.weight,
            self.bias,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.eps,
            factor,
            group,
        )

    @classmethod
    def convert_sync_batchnorm(
        cls, module: nn.Module, process_group: Any | None = None
    ) -> nn.Module:
        """Replace every batch norm in ``module`` (torch's or normtut's) by a
        :class:`SyncBatchNorm` with the same parameters, running statistics and mode."""
        converted = module
        if isinstance(module, (_BatchNorm, nn.modules.batchnorm._BatchNorm)) and not isinstance(
            module, cls
        ):
            converted = cls(
                module.num_features,
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
                process_group,
            )
            if module.affine:
                with torch.no_grad():
                    converted.weight = module.weight
                    converted.bias = module.bias
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
            converted.training = module.training
            if hasattr(module, "qconfig"):
                converted.qconfig = module.qconfig
        for name, child in module.named_children():
            converted.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        del module
        return converted


# --- ZeRO stage 1 ------------------------------------------------------------


class ZeroRedundancyOptimizer(Optimizer):
    r"""Shard the optimizer state over the ranks of a process group (ZeRO stage 1).

    The parameters of each group are assigned to ranks greedily, largest first, to the rank with
    the fewest elements so far (torch's partition). Rank :math:`r` builds
    ``optimizer_class`` over its shard only, so it holds roughly :math:`1/\text{world size}` of
    the state (Adam's two moments). :meth:`step`: each rank steps its shard (the gradients must
    already be all-reduced, as DDP leaves them), then every parameter is broadcast from the rank
    that owns it. The parameters after each step equal the unsharded optimizer's bitwise.
    :meth:`consolidate_state_dict` gathers the shards on one rank, on the CPU (as torch's does);
    :meth:`state_dict` there is then the unsharded optimizer's ``state_dict``. Implemented:
    ``parameters_as_bucket_view=False`` and ``overlap_with_ddp=False`` (torch's defaults).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        optimizer_class: type[Optimizer],
        process_group: Any | None = None,
        parameters_as_bucket_view: bool = False,
        overlap_with_ddp: bool = False,
        **defaults: Any,
    ) -> None:
        if parameters_as_bucket_view or overlap_with_ddp:
            raise NotImplementedError(
                "normtut's ZeroRedundancyOptimizer implements parameters_as_bucket_view=False "
                "and overlap_with_ddp=False; use torch.distributed.optim for the others"
            )
        super().__init__(params, defaults)
        self.process_group = process_group or dist.group.WORLD
        self.world_size = dist.get_world_size(self.process_group)
        self.rank = dist.get_rank(self.process_group)
        self.global_rank = dist.get_global_rank(self.process_group, self.rank)
        self._optimizer_class = optimizer_class
        self._owner: dict[Tensor, int] = {}
        sizes = [0] * self.world_size
        local_groups = []
        for group in self.param_groups:
            mine = []
            for p in sorted(group["params"], key=lambda t: t.numel(), reverse=True):
                owner = sizes.index(min(sizes))
                self._owner[p] = owner
                sizes[owner] += p.numel()
                if owner == self.rank:
                    mine.append(p)
            local = {k: v for k, v in group.items() if k != "params"}
            owned = {id(p) for p in mine}
            local["params"] = [p for p in group["params"] if id(p) in owned]  # group's order
            local_groups.append(local)
        self.optim = optimizer_class(local_groups, **defaults)
        self._consolidated: dict[str, Any] | None = None

    def _sync_hyperparameters(self) -> None:
        """A scheduler writes ``lr`` (and more) into our groups: pass it to the local optimizer."""
        for ours, local in zip(self.param_groups, self.optim.param_groups, strict=True):
            for key, value in ours.items():
                if key != "params":
                    local[key] = value

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        self._sync_hyperparameters()
        loss = self.optim.step(closure) if closure is not None else self.optim.step()
        for group in self.param_groups:
            for p in group["params"]:
                src = dist.get_global_rank(self.process_group, self._owner[p])
                dist.broadcast(p, src=src, group=self.process_group)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)

    def _global_index(self) -> dict[Tensor, int]:
        order = [p for group in self.param_groups for p in group["params"]]
        return {p: i for i, p in enumerate(order)}

    def consolidate_state_dict(self, to: int = 0) -> None:
        """Gather every rank's shard of the state on rank ``to`` (a collective: call it on every
        rank)."""
        index = self._global_index()
        # on the CPU, as torch's: pickled GPU tensors would be rebuilt on the sender's GPU
        local_state = {
            index[p]: {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in s.items()}
            for p, s in self.optim.state.items()
        }
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, local_state, group=self.process_group)
        if self.rank == to:
            merged: dict[int, Any] = {}
            for shard in gathered:
                merged.update(shard)
            groups = []
            for group, local in zip(self.param_groups, self.optim.param_groups, strict=True):
                saved = {k: v for k, v in local.items() if k != "params"}
                saved["params"] = [index[p] for p in group["params"]]
                groups.append(saved)
            self._consolidated = {"state": dict(sorted(merged.items())), "param_groups": groups}
        else:
            self._consolidated = None

    def state_dict(self) -> dict[str, Any]:
        if self._consolidated is None:
            raise RuntimeError(
                f"Optimizer state has not been consolidated on this rank. Please call "
                f"`consolidate_state_dict(to={self.rank})` on all ranks beforehand if you "
                "meant to save the global state."
            )
        return self._consolidated

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load an unsharded ``state_dict`` (from :meth:`state_dict` or from the unsharded
        optimizer): each rank keeps the state of the parameters it owns."""
        index = self._global_index()
        for group, saved in zip(self.param_groups, state_dict["param_groups"], strict=True):
            for key, value in saved.items():
                if key != "params":
                    group[key] = value
        self._sync_hyperparameters()
        for p, i in index.items():
            if self._owner[p] == self.rank and i in state_dict["state"]:
                self.optim.state[p] = {
                    k: v.clone().to(p.device)
                    if torch.is_tensor(v) and k != "step"
                    else (v.clone() if torch.is_tensor(v) else v)
                    for k, v in state_dict["state"][i].items()
                }
