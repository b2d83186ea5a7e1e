"""Tests of normtut.train on tiny synthetic data: two Gaussian blobs and a small MLP."""

from __future__ import annotations

import math
import re
import time
import warnings

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from normtut import data, train


@pytest.fixture
def blobs():
    """Two well-separated Gaussian blobs in 2-D: (train_iter, test_iter)."""
    g = torch.Generator().manual_seed(0)

    def sample(n):
        y = torch.arange(n) % 2
        centers = torch.tensor([[-2.0, -2.0], [2.0, 2.0]])[y]
        return centers + torch.randn(n, 2, generator=g), y

    torch.manual_seed(0)
    return data.load_array(sample(256), 32), data.load_array(sample(128), 64, is_train=False)


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))


class ModeRecorder(nn.Module):
    """Identity that records (training flag, grad mode, input requires grad) of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_grad_enabled()))
        return x


# --- devices -------------------------------------------------------------------------------


def test_try_gpu_without_accelerators_is_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train, "_mps_available", lambda: False)
    assert train.try_gpu() == torch.device("cpu")
    assert train.try_gpu(3) == torch.device("cpu")
    assert train.try_all_gpus() == [torch.device("cpu")]


def test_try_gpu_here_is_a_real_device():
    device = train.try_gpu()
    assert device.type in {"cuda", "mps", "cpu"}
    if not torch.cuda.is_available() and not train._mps_available():
        assert device == torch.device("cpu")


@pytest.mark.parametrize("count", [1, 2])
def test_try_gpu_with_mocked_cuda(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    assert train.try_gpu() == torch.device("cuda:0")
    assert train.try_gpu(1) == (torch.device("cuda:1") if count > 1 else torch.device("cpu"))
    assert train.try_all_gpus() == [torch.device(f"cuda:{i}") for i in range(count)]


def test_try_gpu_with_mocked_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train, "_mps_available", lambda: True)
    assert train.try_gpu() == torch.device("mps")
    assert train.try_all_gpus() == [torch.device("mps")]


# --- counters ------------------------------------------------------------------------------


def test_timer():
    timer = train.Timer()
    time.sleep(0.01)
    first = timer.stop()
    assert first >= 0.01
    with timer:
        time.sleep(0.02)
    assert len(timer.times) == 2 and timer.times[1] >= 0.02
    assert timer.sum() == pytest.approx(sum(timer.times))
    assert timer.avg() == pytest.approx(timer.sum() / 2)
    assert timer.cumsum() == pytest.approx([timer.times[0], timer.sum()])
    assert train.Timer().avg() == 0.0


def test_accumulator():
    acc = train.Accumulator(3)
    acc.add(1, 2.5, torch.tensor(3.0))
    acc.add(1, 0.5, 1)
    assert [acc[0], acc[1], acc[2]] == [2.0, 3.0, 4.0]
    assert len(acc) == 3 and isinstance(acc[2], float)
    acc.reset()
    assert acc.data == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="3 values got 2"):
        acc.add(1, 2)


# --- accuracy ------------------------------------------------------------------------------


def test_accuracy_counts_correct_predictions():
    y_hat = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    y = torch.tensor([1, 1, 1, 0])
    assert train.accuracy(y_hat, y) == 3.0
    assert isinstance(train.accuracy(y_hat, y), float)
    assert train.accuracy(torch.tensor([2, 0, 1]), torch.tensor([2, 1, 1])) == 2.0
    assert train.accuracy(y_hat, 1 - y) == 1.0


def test_evaluate_accuracy_known_answer():
    X = torch.tensor([[1.0], [-1.0], [2.0], [-3.0], [0.5]])
    y = torch.tensor([1, 0, 0, 0, 1])
    loader = data.load_array((X, y), 2, is_train=False)

    def net(x):  # predicts class 1 for x > 0
        return torch.cat([-x, x], dim=1)

    assert train.evaluate_accuracy(net, loader) == pytest.approx(4 / 5)


@pytest.mark.parametrize("start", ["train", "eval", "mixed"])
def test_evaluate_accuracy_restores_modes_and_builds_no_graph(blobs, start):
    _, test_iter = blobs
    recorder = ModeRecorder()
    net = nn.Sequential(recorder, mlp())
    net.train(start != "eval")
    if start == "mixed":
        net[1][2].eval()  # the dropout alone in eval mode
    before = {name: m.training for name, m in net.named_modules()}
    acc = train.evaluate_accuracy(net, test_iter)
    assert 0.0 <= acc <= 1.0
    assert {name: m.training for name, m in net.named_modules()} == before
    assert recorder.calls and all(call == (False, False) for call in recorder.calls)
    assert all(p.grad is None for p in net.parameters())


def test_evaluate_accuracy_restores_mode_after_an_error():
    net = mlp().train()

    def broken():
        yield torch.zeros(2, 2), torch.zeros(2, dtype=torch.int64)
        raise RuntimeError("loader failed")

    with pytest.raises(RuntimeError, match="loader failed"):
        train.evaluate_accuracy(net, broken())
    assert net.training and all(m.training for m in net.modules())


# --- training ------------------------------------------------------------------------------


def test_train_reduces_loss_and_fills_history(blobs):
    train_iter, test_iter = blobs
    recorder = ModeRecorder()
    net = nn.Sequential(recorder, mlp())
    history = train.train(net, train_iter, test_iter, 4, lr=0.2, device="cpu", progress=False)
    assert history.num_epochs == 4
    for values in (
        history.train_loss,
        history.train_acc,
        history.test_acc,
        history.examples_per_sec,
        history.epoch_time,
    ):
        assert len(values) == 4
    assert history.train_loss[-1] < history.train_loss[0]
    assert history.test_acc[-1] > 0.9 and history.train_acc[-1] > 0.9
    assert all(rate > 0 for rate in history.examples_per_sec)
    assert history.num_examples == 4 * 256
    assert history.total_time == pytest.approx(sum(history.epoch_time))
    assert history.device == "cpu"
    # training forward passes in train mode with grad, evaluation in eval mode without
    assert (True, True) in recorder.calls and (False, False) in recorder.calls
    assert set(recorder.calls) == {(True, True), (False, False)}
    assert net.training  # evaluate_accuracy restored the mode that training set
    summary = str(history)
    assert re.fullmatch(
        r"loss \d\.\d{3}, train acc \d\.\d{3}, test acc \d\.\d{3}, \d+\.\d examples/sec on cpu",
        summary,
    ), summary
    assert f"test acc {history.test_acc[-1]:.3f}" in summary


def test_train_with_optimizer_and_unreduced_loss(blobs):
    train_iter, test_iter = blobs
    net = mlp()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    history = train.train(
        net,
        train_iter,
        None,
        3,
        optimizer=optimizer,
        loss=nn.CrossEntropyLoss(reduction="none"),
        device=torch.device("cpu"),
        progress=False,
    )
    assert history.train_loss[-1] < history.train_loss[0]
    assert all(math.isnan(acc) for acc in history.test_acc)
    assert optimizer.state  # the given optimizer was the one stepping


def test_train_argument_errors(blobs):
    train_iter, test_iter = blobs
    net = mlp()
    with pytest.raises(ValueError, match="optimizer or a learning rate"):
        train.train(net, train_iter, test_iter, 1, progress=False)
    with pytest.raises(ValueError, match="not both"):
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        train.train(net, train_iter, test_iter, 1, optimizer=optimizer, lr=0.1, progress=False)
    with pytest.raises(ValueError, match="num_epochs"):
        train.train(net, train_iter, test_iter, -1, lr=0.1, progress=False)


def test_train_default_device_is_try_gpu(blobs, monkeypatch):
    train_iter, test_iter = blobs
    chosen = []
    monkeypatch.setattr(train, "try_gpu", lambda: chosen.append(1) or torch.device("cpu"))
    history = train.train(mlp(), train_iter, test_iter, 1, lr=0.1, progress=False)
    assert chosen == [1] and history.device == "cpu"


def test_train_ch6_applies_xavier_and_trains(blobs):
    train_iter, test_iter = blobs
    net = mlp()
    for layer in (net[0], net[3]):
        nn.init.zeros_(layer.weight)
    history = train.train_ch6(net, train_iter, test_iter, 0, lr=0.1, progress=False)
    assert history.num_epochs == 0 and "no epoch" in history.summary()
    for layer in (net[0], net[3]):
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.5 * bound
    history = train.train_ch6(net, train_iter, test_iter, 3, 0.3, "cpu", progress=False)
    assert history.num_epochs == 3 and history.test_acc[-1] > 0.9


def test_train_ch6_skips_parametrized_weights(blobs):
    train_iter, test_iter = blobs
    net = mlp()
    nn.utils.parametrizations.weight_norm(net[0])
    original = net[0].parametrizations.weight.original1.detach().clone()
    train.train_ch6(net, train_iter, test_iter, 0, lr=0.1, progress=False)
    assert torch.equal(net[0].parametrizations.weight.original1, original)


def test_progress_goes_to_stdout_only(blobs, capfd):
    train_iter, test_iter = blobs
    history = train.train(mlp(), train_iter, test_iter, 2, lr=0.2, device="cpu", label="MLP")
    out, err = capfd.readouterr()
    assert err == ""
    # what a stored notebook output keeps: the text after the last carriage return of a line
    lines = [line.rsplit("\r", 1)[-1] for line in out.rstrip("\n").split("\n")]
    assert len(lines) == 2, "one bar for the whole run, then the summary"
    bar = lines[0]
    assert bar.startswith("MLP: 100%|"), bar
    assert "epoch 2/2" in bar and f"test acc {history.test_acc[-1]:.3f}" in bar
    assert len(bar) <= train.PROGRESS_NCOLS <= 80
    assert lines[1] == history.summary()


def test_progress_false_prints_nothing(blobs, capfd):
    train_iter, test_iter = blobs
    train.train(mlp(), train_iter, test_iter, 1, lr=0.2, device="cpu", progress=False)
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize("num_epochs", [1, 2])
def test_live_plot(blobs, capfd, num_epochs):
    train_iter, test_iter = blobs
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. matplotlib's identical-xlim warning
        history = train.train(
            mlp(), train_iter, test_iter, num_epochs, lr=0.2, device="cpu", live_plot=True
        )
    assert isinstance(history.figure, Figure)
    ax = history.figure.axes[0]
    assert len(ax.lines) == 3
    assert list(ax.lines[2].get_ydata()) == pytest.approx(history.test_acc)
    assert capfd.readouterr().err == ""


def test_progress_bar_closed_when_training_fails(blobs, capfd):
    train_iter, _ = blobs

    def failing_loss(y_hat, y):
        raise RuntimeError("loss exploded")

    with pytest.raises(RuntimeError, match="loss exploded"):
        train.train(mlp(), train_iter, None, 2, lr=0.1, loss=failing_loss, device="cpu")
    out, err = capfd.readouterr()
    assert err == "" and out.count("training: ") >= 1 and out.endswith("\n")
    assert "epoch 2/2" not in out


def test_progress_in_an_executed_notebook_keeps_the_final_state_only(tmp_path):
    """In a kernel (the book build; ipywidgets installed or not) the bar updates one display in
    place: the executed notebook stores the final bar, no carriage returns, nothing on stderr."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    code = (
        "import torch\n"
        "from torch import nn\n"
        "from normtut import train\n"
        "train.PROGRESS_MININTERVAL = 0.0\n"  # redraw on every batch: the worst case
        "torch.manual_seed(0)\n"
        "X = torch.randn(512, 2); y = (X[:, 0] > 0).long()\n"
        "it = [(X[i:i + 32], y[i:i + 32]) for i in range(0, 512, 32)]\n"
        "net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))\n"
        "h = train.train(net, it, it, 2, lr=0.5, device='cpu')\n"
    )
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3")
    client.execute()
    outputs = nb.cells[0].outputs
    assert not [o for o in outputs if o.get("name") == "stderr"]
    bars = [o["data"]["text/plain"] for o in outputs if o["output_type"] == "display_data"]
    assert len(bars) == 1, "one bar per run"
    for bar in bars:
        assert "\r" not in bar and "100%" in bar and "epoch 2/2" in bar and len(bar) <= 80
        assert bar.startswith("training: ")
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert "\r" not in text and "examples/sec" in text
