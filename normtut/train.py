"""Training utilities: device choice, counters, accuracy and a training loop with a history.

The helpers follow d2l's (``try_gpu``, ``Timer``, ``Accumulator``, ``accuracy``,
``evaluate_accuracy``, ``train_ch6``) with three differences that the book relies on:

- train/eval behaviour (dropout, batch norm) is set with ``net.train()``/``net.eval()``, never
  inferred from ``torch.is_grad_enabled()``; :func:`evaluate_accuracy` restores every
  submodule's previous mode;
- the model and every batch go to one device (default :func:`try_gpu`: CUDA, then Apple's MPS,
  then the CPU), so the same call runs unchanged on a GPU;
- :func:`train` returns a :class:`History` (per-epoch loss, accuracies, throughput) instead of
  only drawing it, shows a tidy progress bar on *stdout* (never stderr, which the book build
  treats as an error) and, on request, a live figure.

Example::

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    history = train_ch6(net, train_iter, test_iter, num_epochs=10, lr=0.1)
    print(history)  # loss 0.447, train acc 0.846, test acc 0.832, 51234.5 examples/sec on cpu
"""

from __future__ import annotations

import io
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from tqdm.std import tqdm as _std_tqdm

__all__ = [
    "try_gpu",
    "try_all_gpus",
    "Timer",
    "Accumulator",
    "accuracy",
    "evaluate_accuracy",
    "History",
    "train",
    "train_ch6",
]

#: Width of the text progress bar (characters) and seconds between its redraws.
PROGRESS_NCOLS = 80  # the code column of the rendered book
PROGRESS_MININTERVAL = 1.0


# --- devices -------------------------------------------------------------------------------


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def try_gpu(i: int = 0) -> torch.device:
    """``cuda:i`` if CUDA has a device ``i``, else ``mps`` (for ``i = 0``), else ``cpu``."""
    if torch.cuda.is_available() and i < torch.cuda.device_count():
        return torch.device(f"cuda:{i}")
    if i == 0 and _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def try_all_gpus() -> list[torch.device]:
    """Every CUDA device, else ``[mps]`` where available, else ``[cpu]``."""
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    if _mps_available():
        return [torch.device("mps")]
    return [torch.device("cpu")]


# --- counters ------------------------------------------------------------------------------


class Timer:
    """Record several running times (d2l's ``Timer``); also a context manager.

    ``start()`` starts the clock, ``stop()`` records and returns the seconds since; ``avg()``,
    ``sum()`` and ``cumsum()`` summarize the records. ``with timer: ...`` times the block.
    """

    def __init__(self) -> None:
        self.times: list[float] = []
        self.start()

    def start(self) -> None:
        """Start (or restart) the clock."""
        self.tik = time.perf_counter()

    def stop(self) -> float:
        """Record the time since :meth:`start` and return it."""
        self.times.append(time.perf_counter() - self.tik)
        return self.times[-1]

    def avg(self) -> float:
        """Average of the recorded times (0.0 when there is none)."""
        return sum(self.times) / len(self.times) if self.times else 0.0

    def sum(self) -> float:
        """Sum of the recorded times."""
        return sum(self.times)

    def cumsum(self) -> list[float]:
        """Accumulated times."""
        return np.cumsum(self.times).tolist()

    def __enter__(self) -> Timer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Accumulator:
    """Sums over ``n`` variables (d2l): ``add(a, b, ...)`` adds elementwise, ``acc[i]`` reads."""

    def __init__(self, n: int) -> None:
        self.data = [0.0] * n

    def add(self, *args: float) -> None:
        """Add one value per variable."""
        if len(args) != len(self.data):
            raise ValueError(f"Accumulator of {len(self.data)} values got {len(args)}")
        self.data = [a + float(b) for a, b in zip(self.data, args, strict=True)]

    def reset(self) -> None:
        """Set every sum back to zero."""
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx: int) -> float:
        return self.data[idx]

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return f"Accumulator({self.data})"


# --- accuracy ------------------------------------------------------------------------------


def _num_correct(y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Number of correct predictions as a 0-d tensor on ``y_hat``'s device (no sync)."""
    if y_hat.ndim > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(dim=1)
    return (y_hat.to(y.dtype) == y).sum()


def accuracy(y_hat: torch.Tensor, y: torch.Tensor) -> float:
    """Number of correct predictions (d2l semantics: a count, not a fraction).

    ``y_hat`` holds class scores ``(batch, classes)`` (the arg-max is taken) or predicted
    labels; ``y`` holds the true labels.
    """
    return float(_num_correct(y_hat, y))


def _module_device(net: Any) -> torch.device | None:
    if isinstance(net, nn.Module):
        for tensor in net.parameters():
            return tensor.device
        for tensor in net.buffers():
            return tensor.device
    return None


def _to(x: Any, device: torch.device | None) -> Any:
    if device is None:
        return x
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (list, tuple)):
        return type(x)(_to(item, device) for item in x)
    return x


def evaluate_accuracy(
    net: Callable[[torch.Tensor], torch.Tensor],
    data_iter: Iterable,
    device: torch.device | str | None = None,
) -> float:
    """Fraction of correct predictions of ``net`` over ``data_iter``.

    Runs in eval mode under ``torch.no_grad()`` and afterwards restores the mode each submodule
    had. Batches go to ``device``, by default the device of the net's parameters.
    """
    device = torch.device(device) if device is not None else _module_device(net)
    modes = [(m, m.training) for m in net.modules()] if isinstance(net, nn.Module) else []
    if isinstance(net, nn.Module):
        net.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    total = 0
    try:
        with torch.no_grad():
            for X, y in data_iter:
                X, y = _to(X, device), _to(y, device)
                correct += _num_correct(net(X), y).to(correct.device)
                total += y.numel()
    finally:
        for module, mode in modes:
            module.training = mode
    return float(correct) / total if total else float("nan")


# --- training ------------------------------------------------------------------------------


@dataclass
class History:
    """What :func:`train` measured, one entry per epoch, plus totals.

    ``examples_per_sec`` and ``epoch_time`` count the training pass only (not the evaluation).
    ``str(history)`` is the one-line summary of :meth:`summary`.
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    examples_per_sec: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    device: str = "cpu"
    num_examples: int = 0  #: training examples processed over all epochs
    total_time: float = 0.0  #: seconds spent in the training passes
    figure: Any = field(default=None, repr=False, compare=False)  #: the live figure, if any

    @property
    def num_epochs(self) -> int:
        return len(self.train_loss)

    def summary(self) -> str:
        """``loss 0.245, train acc 0.910, test acc 0.880, 35000.0 examples/sec on cpu``."""
        if not self.num_epochs:
            return f"no epoch trained on {self.device}"
        rate = self.num_examples / self.total_time if self.total_time > 0 else float("inf")
        return (
            f"loss {self.train_loss[-1]:.3f}, train acc {self.train_acc[-1]:.3f}, "
            f"test acc {self.test_acc[-1]:.3f}, {rate:.1f} examples/sec on {self.device}"
        )

    def __str__(self) -> str:
        return self.summary()


class _Bar(_std_tqdm):
    """tqdm's text bar without the monitor thread (whose failures would warn on stderr)."""

    monitor_interval = 0


def _in_jupyter_kernel() -> bool:
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython too broken to ask: treat as a plain terminal
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class _DisplayBar(_Bar):
    """A text bar that redraws one IPython display in place instead of printing ``\\r``.

    In a kernel (the book build, Jupyter, Colab) tqdm's ``\r`` redraws would all be stored
    in the notebook's output; an ``update_display_data`` message replaces the output, so the
    executed notebook keeps the final state only.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._handle = None
        kwargs["file"] = io.StringIO()  # tqdm's own writes go nowhere visible
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        from IPython.display import Pretty, display

        text = self.__str__() if msg is None else msg
        if self._handle is None:
            self._handle = display(Pretty(text), display_id=True)
        else:
            self._handle.update(Pretty(text))
        return True


def _progress_bar(total: int | None, desc: str) -> Any:
    """One text bar for a whole training run: in a Jupyter kernel it updates one display in
    place, elsewhere it redraws one line of stdout.

    Not tqdm's widget bar, even where ipywidgets is installed: an executed notebook keeps a
    widget only as its text fallback (the bar at 0 %) unless the widget state is saved, so the
    rendered book would show empty bars. The display-updating bar looks the same live and
    leaves its final state in the notebook: one labelled line, at most ``PROGRESS_NCOLS`` wide.
    """
    options: dict[str, Any] = {
        "total": total,
        "desc": desc,
        "leave": True,
        "unit": "batch",
    }
    bar_class: type[_Bar] = _DisplayBar if _in_jupyter_kernel() else _Bar
    known = "{desc}: {percentage:3.0f}%|{bar:10}| {elapsed}{postfix}"
    return bar_class(
        **options,
        file=sys.stdout,
        ncols=PROGRESS_NCOLS,
        mininterval=PROGRESS_MININTERVAL,
        miniters=1,
        bar_format=known if total else "{desc}: {elapsed}{postfix}",
    )


def _bar_text(epoch: str, loss: float, acc: float, test_acc: float | None = None) -> str:
    """The bar's postfix: the epoch and the training loss, then the test accuracy once known
    (the train accuracy while it is not), short enough for an 80-column line."""
    if test_acc is None:
        return f"{epoch}, loss {loss:.3f}, train acc {acc:.3f}"
    return f"{epoch}, loss {loss:.3f}, test acc {test_acc:.3f}"


def _train_epoch(
    net: nn.Module,
    train_iter: Iterable,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    bar: Any,
    epoch: str = "",
) -> tuple[float, float, int]:
    """One pass over ``train_iter`` in train mode: (mean loss, accuracy, number of examples).

    The sums stay on ``device``; they are read (which waits for the GPU) only at the end and
    when the progress bar is due for a redraw.
    """
    net.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = 0
    last_postfix = time.perf_counter()
    for X, y in train_iter:
        X, y = _to(X, device), _to(y, device)
        optimizer.zero_grad()
        y_hat = net(X)
        batch_loss = loss(y_hat, y)
        (batch_loss if batch_loss.ndim == 0 else batch_loss.mean()).backward()
        optimizer.step()
        with torch.no_grad():
            batch_loss = batch_loss.detach()
            loss_sum += batch_loss * y.shape[0] if batch_loss.ndim == 0 else batch_loss.sum()
            correct += _num_correct(y_hat, y)
            n += y.shape[0]
        if bar is not None:
            if time.perf_counter() - last_postfix >= PROGRESS_MININTERVAL:
                bar.set_postfix_str(
                    _bar_text(epoch, loss_sum.item() / n, correct.item() / n), refresh=False
                )
                last_postfix = time.perf_counter()
            bar.update(1)
    if not n:
        return float("nan"), float("nan"), 0
    return loss_sum.item() / n, correct.item() / n, n


def train(
    net: nn.Module,
    train_iter: Iterable,
    test_iter: Iterable | None,
    num_epochs: int,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float | None = None,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    live_plot: bool = False,
    progress: bool = True,
    init: Callable[[nn.Module], None] | None = None,
    label: str = "training",
) -> History:
    """Train a classifier for ``num_epochs`` epochs and return its :class:`History`.

    Each epoch: ``net.train()``, then for every batch ``(X, y)`` (moved to ``device``)
    ``optimizer.zero_grad(); loss(net(X), y).backward(); optimizer.step()``; then the test
    accuracy with :func:`evaluate_accuracy` (``nan`` when ``test_iter`` is ``None``).

    Args:
        optimizer: any ``torch.optim.Optimizer`` over ``net``'s parameters; or give ``lr`` for
            plain ``torch.optim.SGD(net.parameters(), lr)``.
        loss: default ``nn.CrossEntropyLoss()``; a loss with ``reduction="none"`` is averaged
            for the backward pass.
        device: default :func:`try_gpu`; the net is moved there.
        live_plot: draw train loss, train acc and test acc per epoch in a live figure (kept in
            ``history.figure``).
        progress: one progress bar for the whole run, labelled ``label`` (redrawn in place in
            Jupyter; it shows the epoch, the loss and the last test accuracy) and a summary line
            at the end; ``False`` prints nothing.
        init: applied with ``net.apply(init)`` before the net is moved to ``device`` (so a seed
            gives the same initial weights on every device).
    """
    if optimizer is None and lr is None:
        raise ValueError("train() needs an optimizer or a learning rate lr (for SGD)")
    if optimizer is not None and lr is not None:
        raise ValueError("give train() either optimizer or lr, not both")
    if not isinstance(num_epochs, int) or num_epochs < 0:
        raise ValueError(f"num_epochs must be a non-negative int, got {num_epochs!r}")
    if init is not None:
        net.apply(init)
    device = torch.device(device) if device is not None else try_gpu()
    net.to(device)
    if optimizer is None:
        optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss = loss if loss is not None else nn.CrossEntropyLoss()
    if isinstance(loss, nn.Module):
        loss.to(device)  # a loss with weights (class weights, ...) must live where the net does
    history = History(device=str(device))

    live = None
    if live_plot:
        from normtut.plot import LivePlot

        live = LivePlot(
            xlabel="epoch",
            legend=["train loss", "train acc", "test acc"],
            xlim=(1, num_epochs) if num_epochs > 1 else None,
            title=f"training on {device}",
        )
        history.figure = live.figure

    try:
        num_batches: int | None = len(train_iter)  # type: ignore[arg-type]
    except TypeError:
        num_batches = None
    width = len(str(num_epochs))
    total = num_batches * num_epochs if num_batches is not None else None
    # The bar is updated by hand (not wrapped around train_iter) so that it can show the test
    # accuracy of each epoch, and it stays open until the last one is known.
    bar = _progress_bar(total, label) if progress and num_epochs else None
    try:
        for epoch in range(num_epochs):
            epoch_text = f"epoch {epoch + 1:{width}d}/{num_epochs}"
            timer = Timer()
            train_loss, train_acc, n = _train_epoch(
                net, train_iter, loss, optimizer, device, bar, epoch_text
            )
            seconds = timer.stop()
            test_acc = math.nan if test_iter is None else evaluate_accuracy(net, test_iter, device)
            shown = None if test_iter is None else test_acc
            if bar is not None:
                bar.set_postfix_str(_bar_text(epoch_text, train_loss, train_acc, shown))
            history.train_loss.append(train_loss)
            history.train_acc.append(train_acc)
            history.test_acc.append(test_acc)
            history.epoch_time.append(seconds)
            history.examples_per_sec.append(n / seconds if seconds > 0 else float("inf"))
            history.num_examples += n
            history.total_time += seconds
            if live is not None:
                live.add(epoch + 1, [train_loss, train_acc, shown])
    finally:
        if bar is not None:
            bar.close()
    if progress:
        print(history.summary(), flush=True)
    return history


def _xavier_init(module: nn.Module) -> None:
    """d2l's ``init_weights``: Xavier-uniform weights of every ``Linear`` and ``Conv2d``.

    Modules whose ``weight`` is parametrized (weight norm, spectral norm, ...) are skipped, as
    d2l's ``type(m) == nn.Linear`` test skips them: their ``weight`` is computed, not stored.
    """
    if isinstance(module, (nn.Linear, nn.Conv2d)) and not parametrize.is_parametrized(
        module, "weight"
    ):
        nn.init.xavier_uniform_(module.weight)


def train_ch6(
    net: nn.Module,
    train_iter: Iterable,
    test_iter: Iterable | None,
    num_epochs: int,
    lr: float,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> History:
    """d2l's ``train_ch6``: Xavier-uniform init of ``Linear``/``Conv2d`` weights, SGD(``lr``),
    cross-entropy loss, on ``device`` (default :func:`try_gpu`).

    Extra keyword arguments (``live_plot``, ``progress``, ``loss``, ...) go to :func:`train`.
    """
    kwargs.setdefault("init", _xavier_init)
    return train(net, train_iter, test_iter, num_epochs, lr=lr, device=device, **kwargs)
