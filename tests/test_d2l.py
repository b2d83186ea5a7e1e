"""normtut beside d2l 1.0.3: d2l's own code meets normtut's layers, data and helpers.

These tests need ``d2l`` and ``torchvision`` (and what ``d2l.torch`` imports: pandas, scipy,
requests, IPython, matplotlib_inline). ``make d2l-check`` builds that environment in
``.venv-d2l`` and runs them with ``NORMTUT_D2L_CHECK=1``, which turns a missing package or a
missing copy of Fashion-MNIST into a failure; elsewhere (``make test``) they are skipped with a
message that names what is missing.

Fashion-MNIST comes from the local copy (the Debian package), never from the network: d2l's
own loader reads it after :func:`normtut.data.prepare_torchvision_fashion_mnist` has put the
raw files where torchvision looks.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import itertools
import os
import re

import pytest
import torch
from torch import nn

from normtut import data
from normtut import normalization as nnorm
from normtut import train as ntrain

pytestmark = pytest.mark.d2l

CHECK = bool(os.environ.get("NORMTUT_D2L_CHECK"))  # set by `make d2l-check`
HOW = "`make d2l-check` installs them in .venv-d2l"


def _unavailable(message: str) -> None:
    if CHECK:
        pytest.fail(f"{message} (NORMTUT_D2L_CHECK is set, so this is an error)")
    pytest.skip(message)


def what_is_missing(find_spec=importlib.util.find_spec) -> str | None:
    """Which of d2l and torchvision is not installed, as a sentence; ``None`` if both are."""
    missing = [name for name in ("d2l", "torchvision") if find_spec(name) is None]
    return f"needs {' and '.join(missing)}, not installed here; {HOW}" if missing else None


@pytest.fixture(scope="module")
def d2l():
    """``d2l.torch``, or a skip (a failure under ``make d2l-check``) naming what is missing."""
    missing = what_is_missing()
    if missing:
        _unavailable(missing)
    try:
        return importlib.import_module("d2l.torch")
    except ImportError as err:  # d2l and torchvision are there, one of d2l's imports is not
        _unavailable(f"d2l.torch does not import: {err}; {HOW}")


@pytest.fixture(scope="module")
def fashion_dir():
    folder = data.locate_fashion_mnist()
    if folder is None:
        _unavailable(
            "no local copy of Fashion-MNIST (sudo apt-get install dataset-fashion-mnist); "
            "these tests never download it"
        )
    return folder


class DownloadAttempt(AssertionError):
    pass


def _no_download(url, *args, **kwargs):
    raise DownloadAttempt(f"torchvision tried to download {url}")


def _tv_mnist():
    return importlib.import_module("torchvision.datasets.mnist")  # where FashionMNIST downloads


@pytest.fixture
def offline_d2l(d2l, fashion_dir, tmp_path, monkeypatch):
    """d2l with its loader reading ``../data`` prepared from the local copy; no download."""
    monkeypatch.setattr(_tv_mnist(), "download_and_extract_archive", _no_download)
    monkeypatch.setattr(d2l, "get_dataloader_workers", lambda: 0)  # d2l's 4 workers: slow here
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # d2l's root "../data" is then tmp_path / "data"
    data.prepare_torchvision_fashion_mnist("../data", source=fashion_dir, download=False)
    return d2l


def first_batches(loader, n: int, dtype: torch.dtype = torch.float32) -> list:
    return [(X.to(dtype), y) for X, y in itertools.islice(loader, n)]


def train_with_d2l(d2l, bn2d, bn1d, batches, tests, seed=0, dtype=torch.float32):
    """BN-LeNet with the given batch norms, trained by ``d2l.train_ch6`` (one epoch)."""
    torch.manual_seed(seed)
    net = nnorm.lenet(bn2d, bn1d).to(dtype)
    torch.manual_seed(seed)  # d2l's Xavier init draws from the global generator
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        d2l.train_ch6(net, batches, tests, 1, 1.0, d2l.cpu())
    return net, out.getvalue()


def max_state_gap(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


# --- the environment ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("absent", "named"),
    [({"d2l"}, "needs d2l,"), ({"torchvision"}, "needs torchvision,"),
     ({"d2l", "torchvision"}, "needs d2l and torchvision,"), (set(), None)],
)  # fmt: skip
def test_skip_message_names_what_is_missing(absent, named):
    message = what_is_missing(lambda name: None if name in absent else object())
    assert (message is None) if named is None else message.startswith(named)


def test_versions_are_the_ones_checked(d2l):
    from importlib.metadata import version

    assert version("d2l") == "1.0.3"
    assert version("numpy") == "1.23.5"  # d2l's pin, inside normtut's bounds
    major, minor = (int(p) for p in version("matplotlib").split(".")[:2])
    assert (major, minor) >= (3, 6)


def test_device_helpers(d2l):
    assert not hasattr(d2l, "try_cpu")  # used by some copies of d2l's text, gone in 1.0.3
    assert d2l.cpu() == torch.device("cpu")
    assert d2l.try_gpu() == ntrain.try_gpu() or torch.backends.mps.is_available()


# --- normtut's batch norm inside d2l's training loop ------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "steps", "atol"), [(torch.float64, 16, 1e-9), (torch.float32, 5, 2e-4)]
)
def test_batch_norm_in_d2l_train_ch6_equals_torch(offline_d2l, dtype, steps, atol):
    """Same seed, same batches: normtut's and torch's BatchNorm train BN-LeNet alike.

    Measured here: after 16 steps in float64 the largest difference in the state_dict is about
    1e-12, after 5 steps in float32 about 3e-5 (the two backward passes round differently and
    learning rate 1.0 amplifies it step by step).
    """
    d2l = offline_d2l
    train_iter, test_iter = d2l.load_data_fashion_mnist(256)
    torch.manual_seed(0)
    batches = first_batches(train_iter, steps, dtype)
    tests = first_batches(test_iter, 2, dtype)
    ours, _ = train_with_d2l(d2l, nnorm.BatchNorm2d, nnorm.BatchNorm1d, batches, tests, dtype=dtype)
    theirs, _ = train_with_d2l(d2l, nn.BatchNorm2d, nn.BatchNorm1d, batches, tests, dtype=dtype)
    assert ours[1].num_batches_tracked.item() == theirs[1].num_batches_tracked.item() == steps
    assert not torch.equal(ours[1].running_mean, torch.zeros(6, dtype=dtype))  # it trained
    gap = max_state_gap(ours, theirs)
    assert gap < atol, f"largest state_dict difference {gap:.3g} after {steps} steps"
    # d2l's evaluation (net.eval(), running statistics) agrees as well
    assert d2l.evaluate_accuracy_gpu(ours, tests) == d2l.evaluate_accuracy_gpu(theirs, tests)
    # and a checkpoint moves from one to the other
    back = nnorm.lenet(nn.BatchNorm2d, nn.BatchNorm1d).to(dtype)
    back.load_state_dict(ours.state_dict())
    assert max_state_gap(back, ours) == 0


def test_normtut_train_ch6_equals_d2l_train_ch6(offline_d2l):
    """normtut.train.train_ch6 makes d2l's updates: the same weights, bit for bit."""
    d2l = offline_d2l
    train_iter, test_iter = d2l.load_data_fashion_mnist(256)
    torch.manual_seed(0)
    batches, tests = first_batches(train_iter, 5), first_batches(test_iter, 2)
    theirs, printed = train_with_d2l(d2l, nnorm.BatchNorm2d, nnorm.BatchNorm1d, batches, tests)
    torch.manual_seed(0)
    ours = nnorm.lenet(nnorm.BatchNorm2d, nnorm.BatchNorm1d)
    torch.manual_seed(0)
    history = ntrain.train_ch6(
        ours, batches, tests, 1, 1.0, torch.device("cpu"), progress=False, live_plot=False
    )
    assert max_state_gap(ours, theirs) == 0
    loss, train_acc, test_acc = (
        float(v) for v in re.search(r"loss ([\d.]+), train acc ([\d.]+), test acc ([\d.]+)",
                                    printed).groups()
    )  # fmt: skip
    assert f"loss {loss:.3f}, train acc {train_acc:.3f}, test acc {test_acc:.3f}" in str(history)


# --- data: d2l's loader against normtut's ---------------------------------------------------


def test_debian_gz_files_make_torchvision_download(d2l, fashion_dir, tmp_path, monkeypatch):
    """Why the helper exists: torchvision rejects Debian's re-compressed .gz (not its MD5)."""
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import check_integrity

    gz = [fashion_dir / f"{name}.gz" for name in data._ALL_NAMES]
    if not all(path.is_file() for path in gz):
        pytest.skip(f"{fashion_dir} holds no .gz files")
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for path in gz:
        (raw / path.name).write_bytes(path.read_bytes())
    md5_ok = [check_integrity(str(raw / f), md5) for f, md5 in FashionMNIST.resources]
    if all(md5_ok):
        pytest.skip("this copy has the official MD5s: torchvision accepts it as it is")
    monkeypatch.setattr(_tv_mnist(), "download_and_extract_archive", _no_download)
    with pytest.raises(DownloadAttempt):
        FashionMNIST(str(tmp_path), train=False, download=True)
    data.prepare_torchvision_fashion_mnist(tmp_path, source=fashion_dir, download=False)
    assert len(FashionMNIST(str(tmp_path), train=False, download=True)) == 10000



def test_same_data_as_d2l_loader(offline_d2l):
    d2l = offline_d2l
    theirs_train, theirs_test = d2l.load_data_fashion_mnist(256)
    ours_train, ours_test = data.load_data_fashion_mnist(256)
    assert len(theirs_train.dataset) == len(ours_train.dataset) == 60000
    assert len(theirs_test.dataset) == len(ours_test.dataset) == 10000
    assert len(theirs_train) == len(ours_train) and len(theirs_test) == len(ours_test)
    # the test loaders are in file order: the same batches, value for value
    for (X1, y1), (X2, y2) in zip(theirs_test, ours_test, strict=True):
        assert X1.dtype == X2.dtype == torch.float32 and y1.dtype == y2.dtype == torch.int64
        assert X1.shape == X2.shape and torch.equal(y1, y2)
        assert torch.equal(X1, X2)  # ToTensor's x / 255, exactly
    # the training loaders shuffle: the same shapes, and the same labels overall
    (X1, y1), (X2, y2) = next(iter(theirs_train)), next(iter(ours_train))
    assert X1.shape == X2.shape == (256, 1, 28, 28) and y1.shape == y2.shape == (256,)
    assert torch.equal(
        torch.as_tensor(theirs_train.dataset.targets).bincount(),
        ours_train.dataset.tensors[1].bincount(),
    )


def test_resized_data_close_to_d2l(offline_d2l):
    d2l = offline_d2l
    _, theirs = d2l.load_data_fashion_mnist(256, resize=64)
    _, ours = data.load_data_fashion_mnist(256, resize=64)
    (X1, y1), (X2, y2) = next(iter(theirs)), next(iter(ours))
    assert X1.shape == X2.shape == (256, 1, 64, 64) and X1.dtype == X2.dtype
    assert torch.equal(y1, y2)
    gap = (X1 - X2).abs()
    assert gap.mean() < 0.01 and gap.max() < 0.25  # PIL resizes uint8, we resize floats


def test_labels_accuracy_and_evaluation_agree(offline_d2l):
    d2l = offline_d2l
    labels = torch.arange(10)
    assert d2l.get_fashion_mnist_labels(labels) == data.get_fashion_mnist_labels(labels)
    gen = torch.Generator().manual_seed(0)
    y_hat, y = torch.randn(256, 10, generator=gen), torch.randint(0, 10, (256,), generator=gen)
    assert d2l.accuracy(y_hat, y) == ntrain.accuracy(y_hat, y)  # a count, in both
    assert d2l.accuracy(y_hat.argmax(1), y) == ntrain.accuracy(y_hat.argmax(1), y)
    _, test_iter = d2l.load_data_fashion_mnist(256)
    tests = first_batches(test_iter, 4)
    torch.manual_seed(0)
    net = nnorm.lenet(nnorm.BatchNorm2d, nnorm.BatchNorm1d)
    assert d2l.evaluate_accuracy_gpu(net, tests) == ntrain.evaluate_accuracy(net, tests)
    acc_d2l, acc_ours = d2l.Accumulator(2), ntrain.Accumulator(2)
    for a, b in ((1, 2.5), (3, 4)):
        acc_d2l.add(a, b)
        acc_ours.add(a, b)
    assert [acc_d2l[0], acc_d2l[1]] == [acc_ours[0], acc_ours[1]]


def test_synthetic_data_and_load_array_agree(d2l):
    w, b = torch.tensor([2.0, -3.4]), 4.2
    torch.manual_seed(0)
    X1, y1 = d2l.synthetic_data(w, b, 100)
    torch.manual_seed(0)
    X2, y2 = data.synthetic_data(w, b, 100)
    assert torch.equal(X1, X2)
    torch.testing.assert_close(y1, y2)
    theirs = list(d2l.load_array((X1, y1), 10, is_train=False))
    ours = list(data.load_array((X1, y1), 10, is_train=False))
    assert len(theirs) == len(ours) == 10
    for (Xa, ya), (Xb, yb) in zip(theirs, ours, strict=True):
        assert torch.equal(Xa, Xb) and torch.equal(ya, yb) and Xa.shape == (10, 2)


# --- the seed post's two BN-LeNet programs, run as written with normtut's layers -------------
#
# The from-scratch program as d2l's text (the seed post) gives it, with one comma the post lost
# after the first MaxPool2d restored. `BatchNorm(num_features, num_dims)` is d2l's from-scratch
# layer; here it is normtut's drop-in of the same shape, whose gamma and beta are called weight
# and bias (PyTorch's names).

FROM_SCRATCH = """
net = nn.Sequential(
	nn.Conv2d(1, 6, kernel_size = 5), BatchNorm(6, num_dims=4), nn.Sigmoid(),
	nn.MaxPool2d(kernel_size=2, stride=2),
	nn.Conv2d(6, 16, kernel_size=5), BatchNorm(16, num_dims=4), nn.Sigmoid(),
	nn.MaxPool2d(kernel_size=2, stride=2), nn.Flatten(),
	nn.Linear(16*4*4, 120), BatchNorm(120, num_dims=2), nn.Sigmoid(),
	nn.Linear(120, 84), BatchNorm(84, num_dims=2), nn.Sigmoid(),
	nn.Linear(84, 10)
)
lr, num_epochs, batch_size = 1.0, 10, 256
train_iter, test_iter = d2l.load_data_fashion_mnist(batch_size)
d2l.train_ch6(net, train_iter, test_iter, num_epochs, lr, d2l.try_gpu())
result = net[1].weight.reshape((-1,)), net[1].bias.reshape((-1,))
"""

CONCISE = """
net = nn.Sequential(
nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), nn.Sigmoid(),
nn.MaxPool2d(kernel_size=2, stride=2),
nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), nn.Sigmoid(),
nn.MaxPool2d(kernel_size=2, stride=2), nn.Flatten(),
nn.Linear(256, 120), nn.BatchNorm1d(120), nn.Sigmoid(),
nn.Linear(120, 84), nn.BatchNorm1d(84), nn.Sigmoid(),
nn.Linear(84, 10))
d2l.train_ch6(net, train_iter, test_iter, num_epochs, lr, d2l.try_gpu())
"""


def batch_norm_like_d2l(num_features: int, num_dims: int) -> nn.Module:
    """d2l's ``BatchNorm(num_features, num_dims)`` signature, built from normtut's layers."""
    return (nnorm.BatchNorm2d if num_dims == 4 else nnorm.BatchNorm1d)(num_features)


class _NormtutNN:
    """``nn`` for the concise program: torch.nn, with normtut's BatchNorm1d/2d."""

    def __getattr__(self, name):
        return getattr(nnorm, name) if name in ("BatchNorm1d", "BatchNorm2d") else getattr(nn, name)


def test_seed_programs_run_with_normtut(offline_d2l, monkeypatch):
    d2l = offline_d2l
    real_loader = d2l.load_data_fashion_mnist

    def few_batches(batch_size, resize=None):  # d2l's own loader, cut to a quick run
        train_iter, test_iter = real_loader(batch_size, resize)
        return first_batches(train_iter, 5), first_batches(test_iter, 2)

    monkeypatch.setattr(d2l, "load_data_fashion_mnist", few_batches)
    torch.manual_seed(0)
    scope = {"nn": nn, "d2l": d2l, "BatchNorm": batch_norm_like_d2l}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(FROM_SCRATCH, scope)
    net = scope["net"]
    assert isinstance(net[1], nnorm.BatchNorm2d) and isinstance(net[10], nnorm.BatchNorm1d)
    assert net[1].num_batches_tracked.item() == 10 * 5  # 10 epochs of 5 batches
    gamma, beta = scope["result"]
    assert gamma.shape == beta.shape == (6,) and not torch.equal(gamma, torch.ones(6))
    scope["nn"] = _NormtutNN()
    with contextlib.redirect_stdout(out):
        exec(CONCISE, scope)
    concise = scope["net"]
    assert isinstance(concise[1], nnorm.BatchNorm2d) and isinstance(concise[13], nnorm.BatchNorm1d)
    assert concise[13].num_batches_tracked.item() == 50
    printed = out.getvalue()
    assert printed.count("training on cpu") == 2
    assert len(re.findall(r"loss [\d.]+, train acc [\d.]+, test acc [\d.]+", printed)) == 2


# --- gradient clipping ----------------------------------------------------------------------


def _grads_after(clip, theta: float, scale: float) -> list[torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    (net(torch.randn(32, 8)).pow(2).sum() * scale).backward()
    clip(net, theta)
    return [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_grad_clipping_equals_clip_grad_norm_up_to_eps(d2l, scale):
    """``d2l.grad_clipping(net, theta)`` rescales by ``theta / norm`` only when ``norm > theta``;
    ``clip_grad_norm_`` always multiplies by ``min(1, theta / (norm + 1e-6))`` (torch's source
    and normtut's). Below the threshold both leave the gradient alone; above it they agree to
    a relative 1e-6 / norm."""
    from normtut.optim import clip_grad_norm_

    theta = 1.0
    ours = _grads_after(lambda net, t: clip_grad_norm_(net.parameters(), t), theta, scale)
    theirs = _grads_after(d2l.grad_clipping, theta, scale)
    unclipped = _grads_after(lambda net, t: None, theta, scale)
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in unclipped])).item()
    for a, b, g in zip(ours, theirs, unclipped, strict=True):
        if norm <= theta:
            assert torch.equal(a, g) and torch.equal(b, g)
        else:
            torch.testing.assert_close(a, b, rtol=2e-6 / norm + 1e-6, atol=0)
            assert not torch.equal(b, g)
    clipped = torch.linalg.vector_norm(torch.stack([g.norm() for g in theirs])).item()
    assert clipped == pytest.approx(min(norm, theta), rel=1e-5)
