"""BN-LeNet on Fashion-MNIST: normtut's batch norm against PyTorch's, speed and accuracy.

Throughput (default mode): training steps per second of the BN-LeNet of
:func:`normtut.normalization.lenet` on the CPU, batch 256, with

- ``torch``     ``torch.nn.BatchNorm2d``/``BatchNorm1d`` (eager),
- ``normtut``   ``normtut.normalization.BatchNorm2d``/``BatchNorm1d`` (eager),
- ``naive``     a d2l-style batch norm written from scratch with autograd (reference only),
- ``torch+compile`` and ``normtut+compile``: the first two under ``torch.compile`` with
  ``options={"layout_optimization": False}`` (``--compile-options tuned``, the default), and
  ``...+compile[defaults]`` under inductor's defaults (``--compile-options defaults`` or
  ``both``). On the CPU inductor stores every convolution output channels-last by default,
  which costs more than it saves for BN-LeNet's 6 and 16 channels.

The variants run *alternated* (torch, normtut, naive, ..., then again) for ``--rounds``
rounds of ``--batches`` training steps on the same batches, and the median examples/s of each
is reported with its ratio to eager torch (and, for compiled normtut, to compiled torch).

Accuracy (``--accuracy``): 10 epochs (``--epochs``) of full Fashion-MNIST, batch 256, SGD,
for each seed and each learning rate given, normtut's batch norm against PyTorch's.

Examples::

    python benchmarks/bn_lenet.py --rounds 7 --batches 20 --json bench.json
    python benchmarks/bn_lenet.py --accuracy --lr 0.1 --lr 1.0 --seeds 0 1 2
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
from torch import Tensor, nn

from normtut import normalization as nnorm
from normtut.config import set_seed

BATCH_SIZE = 256
CLOCKS = ("wall", "cpu")
# torch.compile's options per --compile-options choice: (variant suffix, inductor options)
COMPILE_OPTIONS: dict[str, tuple[str, dict | None]] = {
    "tuned": ("+compile", {"layout_optimization": False}),
    "defaults": ("+compile[defaults]", None),
}


# --- a naive, d2l-style batch norm (for reference) -----------------------------------------


class NaiveBatchNorm(nn.Module):
    """Batch norm as a first from-scratch version would write it: the formula with autograd.

    Statistics with ``mean`` and a second pass for the variance, running estimates replaced
    by new tensors every step, ``gamma``/``beta`` shaped like the broadcast. Train or eval
    comes from ``self.training`` (not from grad mode, d2l's pitfall).
    """

    def __init__(self, num_features: int, num_dims: int, momentum: float = 0.1) -> None:
        super().__init__()
        shape = (1, num_features) if num_dims == 2 else (1, num_features, 1, 1)
        self.gamma = nn.Parameter(torch.ones(shape))
        self.beta = nn.Parameter(torch.zeros(shape))
        self.register_buffer("moving_mean", torch.zeros(shape))
        self.register_buffer("moving_var", torch.ones(shape))
        self.momentum = momentum
        self.eps = 1e-5

    def forward(self, X: Tensor) -> Tensor:
        if not self.training:
            X_hat = (X - self.moving_mean) / torch.sqrt(self.moving_var + self.eps)
        else:
            dims = (0,) if X.dim() == 2 else (0, 2, 3)
            mean = X.mean(dim=dims, keepdim=True)
            var = ((X - mean) ** 2).mean(dim=dims, keepdim=True)
            X_hat = (X - mean) / torch.sqrt(var + self.eps)
            m = self.momentum
            self.moving_mean = (1.0 - m) * self.moving_mean + m * mean.detach()
            self.moving_var = (1.0 - m) * self.moving_var + m * var.detach()
        return self.gamma * X_hat + self.beta


def naive_bn2d(n: int) -> nn.Module:
    return NaiveBatchNorm(n, num_dims=4)


def naive_bn1d(n: int) -> nn.Module:
    return NaiveBatchNorm(n, num_dims=2)


BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "torch": lambda: nnorm.lenet(nn.BatchNorm2d, nn.BatchNorm1d),
    "normtut": lambda: nnorm.lenet(nnorm.BatchNorm2d, nnorm.BatchNorm1d),
    "naive": lambda: nnorm.lenet(naive_bn2d, naive_bn1d),
}


# --- data ----------------------------------------------------------------------------------


def fixed_batches(num_batches: int, batch_size: int = BATCH_SIZE) -> tuple[list, str]:
    """The first ``num_batches`` batches of Fashion-MNIST's training set (random if absent)."""
    try:
        from normtut.data import load_fashion_mnist_arrays

        images, labels = load_fashion_mnist_arrays(train=True, download=False)
        X = torch.tensor(images[: num_batches * batch_size]).unsqueeze(1).float().div_(255)
        y = torch.tensor(labels[: num_batches * batch_size])
        source = "Fashion-MNIST"
    except Exception as exc:  # no local copy: the speed does not depend on the pixels
        print(f"(Fashion-MNIST not found: {exc}; using random images)", file=sys.stderr)
        gen = torch.Generator().manual_seed(0)
        X = torch.rand(num_batches * batch_size, 1, 28, 28, generator=gen)
        y = torch.randint(0, 10, (num_batches * batch_size,), generator=gen)
        source = "random"
    batches = [(X[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(X), batch_size)]
    return batches, source


# --- throughput ----------------------------------------------------------------------------


def make_step(net: nn.Module, lr: float = 0.1) -> Callable[[Tensor, Tensor], None]:
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()

    def step(X: Tensor, y: Tensor) -> None:
        optimizer.zero_grad()
        loss_fn(net(X), y).backward()
        optimizer.step()

    return step


def run_steps(step: Callable[[Tensor, Tensor], None], batches: list) -> tuple[float, float]:
    """Examples per second over one pass through ``batches``: by the wall clock, and by this
    process's CPU time (which a busy machine's other processes do not inflate)."""
    n = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for X, y in batches:
        step(X, y)
        n += X.shape[0]
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def throughput(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    batches, source = fixed_batches(args.batches)
    variants = [v for v in ("torch", "normtut", "naive") if v in args.variants]
    nets: dict[str, nn.Module] = {}
    reference = BUILDERS["torch"]()
    for name in variants:
        net = BUILDERS[name]()
        if name != "naive":  # same starting weights (identical state_dict keys)
            net.load_state_dict(reference.state_dict())
        nets[name] = net.train()
    steps = {name: make_step(net) for name, net in nets.items()}
    compile_error = None
    kinds = {"none": [], "both": ["tuned", "defaults"]}.get(args.compile, [args.compile])
    for kind in kinds:
        if compile_error is not None:  # one failure is enough: report it, time eager only
            break
        suffix, options = COMPILE_OPTIONS[kind]
        for name in ("torch", "normtut"):
            if name not in variants:
                continue
            net = BUILDERS[name]()
            net.load_state_dict(reference.state_dict())
            try:
                compiled = torch.compile(net.train(), options=options)
                step = make_step(compiled)
                start = time.perf_counter()
                for X, y in batches[:3]:  # compile (forward and backward) before timing
                    step(X, y)
                print(f"compiled {name}{suffix} in {time.perf_counter() - start:.1f} s", flush=True)
            except Exception as exc:  # report the exact error, keep the eager numbers
                compile_error = f"{type(exc).__name__}: {exc}"
                print(f"torch.compile failed: {compile_error}", file=sys.stderr)
                break
            steps[name + suffix] = step

    for step in steps.values():  # warm-up: allocator, caches, first-call overheads
        run_steps(step, batches[: max(2, len(batches) // 4)])

    rates: dict[str, dict[str, list[float]]] = {
        clock: {name: [] for name in steps} for clock in CLOCKS
    }
    for r in range(args.rounds):
        for name, step in steps.items():
            for clock, rate in zip(CLOCKS, run_steps(step, batches), strict=True):
                rates[clock][name].append(rate)
        line = ", ".join(f"{name} {rates['cpu'][name][-1]:6.0f}" for name in steps)
        print(f"round {r + 1}/{args.rounds} (ex/CPU-s): {line}", flush=True)

    median = {
        clock: {name: statistics.median(v) for name, v in rates[clock].items()} for clock in CLOCKS
    }
    ratios = {}
    for clock in CLOCKS:
        m = median[clock]
        ratios[clock] = {f"{name} / torch": m[name] / m["torch"] for name in m}
        for suffix, _ in COMPILE_OPTIONS.values():
            if f"normtut{suffix}" in m and f"torch{suffix}" in m:
                ratios[clock][f"normtut{suffix} / torch{suffix}"] = (
                    m[f"normtut{suffix}"] / m[f"torch{suffix}"]
                )
    return {
        "mode": "throughput",
        "data": source,
        "batch_size": BATCH_SIZE,
        "batches_per_round": len(batches),
        "rounds": args.rounds,
        "threads": torch.get_num_threads(),
        "examples_per_sec": rates,
        "median": median,
        "ratios": ratios,
        "compile_options": {COMPILE_OPTIONS[k][0]: COMPILE_OPTIONS[k][1] for k in kinds},
        "compile_error": compile_error,
    }


def print_throughput(result: dict) -> None:
    print(
        f"\nBN-LeNet training throughput, CPU, {result['threads']} thread(s), batch "
        f"{result['batch_size']}, {result['rounds']} alternated rounds x "
        f"{result['batches_per_round']} batches ({result['data']}); medians"
    )
    header = f"{'variant':<26}{'ex/s (wall)':>12}{'vs torch':>10}{'ex/CPU-s':>12}{'vs torch':>10}"
    print(header)
    wall, cpu = result["median"]["wall"], result["median"]["cpu"]
    for name in wall:
        print(
            f"{name:<26}{wall[name]:>12.0f}{wall[name] / wall['torch']:>9.2f}x"
            f"{cpu[name]:>12.0f}{cpu[name] / cpu['torch']:>9.2f}x"
        )
    for key in result["ratios"]["cpu"]:
        if key.startswith("normtut+") and "/ torch+" in key:
            print(
                f"{key}: {result['ratios']['wall'][key]:.2f}x (wall), "
                f"{result['ratios']['cpu'][key]:.2f}x (CPU time)"
            )
    for suffix, options in result["compile_options"].items():
        print(f"*{suffix}: torch.compile(model, options={options})")
    if result["compile_error"]:
        print(f"torch.compile failed: {result['compile_error']}")


# --- accuracy ------------------------------------------------------------------------------


def accuracy(args: argparse.Namespace) -> dict:
    from normtut.data import load_data_fashion_mnist
    from normtut.train import evaluate_accuracy, train, train_ch6

    runs = []
    for lr in args.lr:
        for seed in args.seeds:
            for name in ("normtut", "torch"):
                set_seed(seed)  # same weights, same Xavier draws, same shuffling
                train_iter, test_iter = load_data_fashion_mnist(BATCH_SIZE)
                net = BUILDERS[name]()
                start = time.perf_counter()
                if args.optimizer == "sgd" and args.momentum == 0:  # exactly d2l's train_ch6
                    history = train_ch6(
                        net, train_iter, test_iter, args.epochs, lr, device="cpu", progress=False
                    )
                else:
                    if args.optimizer == "sgd":
                        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=args.momentum)
                    else:
                        opt = torch.optim.Adam(net.parameters(), lr=lr)
                    history = train(
                        net, train_iter, test_iter, args.epochs, optimizer=opt,
                        device="cpu", progress=False, init=xavier_init,
                    )  # fmt: skip
                seconds = time.perf_counter() - start
                recalibrated = None
                if args.recalibrate:
                    nnorm.update_bn(train_iter, net)  # running stats for the final weights
                    recalibrated = evaluate_accuracy(net, test_iter)
                run = {
                    "optimizer": args.optimizer,
                    "momentum": args.momentum,
                    "lr": lr,
                    "seed": seed,
                    "variant": name,
                    "test_acc": history.test_acc,
                    "train_acc": history.train_acc,
                    "train_loss": history.train_loss,
                    "final_test_acc": history.test_acc[-1],
                    "recalibrated_test_acc": recalibrated,
                    "seconds": seconds,
                }
                runs.append(run)
                print(
                    f"{args.optimizer} lr {lr:<6g} seed {seed} {name:<8} test acc per epoch "
                    + " ".join(f"{a:.3f}" for a in history.test_acc)
                    + ("" if recalibrated is None else f"; recalibrated {recalibrated:.3f}")
                    + f"  ({seconds:.0f} s)",
                    flush=True,
                )
    return {
        "mode": "accuracy",
        "recalibrated": args.recalibrate,
        "optimizer": args.optimizer,
        "momentum": args.momentum,
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "runs": runs,
    }


def xavier_init(module: nn.Module) -> None:
    """d2l's init for train_ch6: Xavier-uniform weights of every Linear and Conv2d."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_uniform_(module.weight)


def print_accuracy(result: dict) -> None:
    optimizer = "SGD" if result["optimizer"] == "sgd" else "Adam"
    if result["optimizer"] == "sgd" and result["momentum"]:
        optimizer += f" (momentum {result['momentum']})"
    print(
        f"\nBN-LeNet, Fashion-MNIST, {result['epochs']} epochs, batch {result['batch_size']}, "
        f"{optimizer}: test accuracy after the last epoch (running statistics as trained"
        + ("; then recalibrated over the training set)" if result["recalibrated"] else ")")
    )
    header = f"{'lr':>7}{'seed':>5}{'normtut':>9}{'torch':>8}{'diff':>7}{'min last 3':>13}"
    if result["recalibrated"]:
        header += f"{'recal. n/t':>13}{'diff':>7}"
    print(header + f"{'ok':>5}")
    by_key: dict[tuple[float, int], dict[str, dict]] = {}
    for run in result["runs"]:
        by_key.setdefault((run["lr"], run["seed"]), {})[run["variant"]] = run
    for (lr, seed), pair in by_key.items():
        ours, theirs = pair["normtut"], pair["torch"]
        key = "recalibrated_test_acc" if result["recalibrated"] else "final_test_acc"
        a, b = ours["final_test_acc"], theirs["final_test_acc"]
        low = f"{min(ours['test_acc'][-3:]):.3f}/{min(theirs['test_acc'][-3:]):.3f}"
        line = f"{lr:>7g}{seed:>5}{a:>9.3f}{b:>8.3f}{100 * (a - b):>+7.2f}{low:>13}"
        if result["recalibrated"]:
            ra, rb = ours[key], theirs[key]
            line += f"{f'{ra:.3f}/{rb:.3f}':>13}{100 * (ra - rb):>+7.2f}"
        a, b = ours[key], theirs[key]
        ok = "yes" if min(a, b) >= 0.88 and abs(a - b) <= 0.005 else "no"
        print(line + f"{ok:>5}")
    print("ok: both >= 0.88 and within 0.5 points (after recalibration when it was asked for)")


# --- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds (default 5)")
    parser.add_argument("--batches", type=int, default=20, help="training steps per round")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["torch", "normtut", "naive"],
        choices=["torch", "normtut", "naive"],
        help="eager variants to time (torch is always the reference)",
    )
    parser.add_argument(
        "--compile-options",
        dest="compile",
        choices=["tuned", "defaults", "both", "none"],
        default="tuned",
        help="torch.compile variants: tuned (layout_optimization=False, the default), "
        "inductor's defaults, both, or none",
    )
    parser.add_argument(
        "--no-compile",
        dest="compile",
        action="store_const",
        const="none",
        help="skip torch.compile (same as --compile-options none)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--accuracy", action="store_true", help="accuracy mode (slow)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--lr", type=float, action="append", help="learning rate (repeat for several)"
    )
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (default 0)")
    parser.add_argument(
        "--recalibrate",
        action="store_true",
        help="after training, recompute the running statistics over the training set "
        "(normtut.normalization.update_bn) and report that test accuracy too",
    )
    parser.add_argument("--json", type=Path, default=None, help="save the results here")
    args = parser.parse_args(argv)
    if "torch" not in args.variants:
        args.variants.insert(0, "torch")
    args.lr = args.lr or ([0.1] if args.optimizer == "sgd" else [1e-3])
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.accuracy:
        result = accuracy(args)
        print_accuracy(result)
    else:
        result = throughput(args)
        print_throughput(result)
    save(result, args.json)


if __name__ == "__main__":
    main()
