"""Tests of normtut.data: IDX reader, checksums, search order, download, loaders.

Every test builds its own small IDX files under tmp_path and patches the checksum tables and
mirror list for them. The only network used is a local http.server on 127.0.0.1. Two tests
read the real data of the Debian package (skipped where it is missing, except under CI).
"""

from __future__ import annotations

import collections
import functools
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from normtut import config, data

REAL_DIR = config.SYSTEM_DATA_DIR  # captured before any test patches it
NAMES = data.FILE_NAMES["train"] + data.FILE_NAMES["test"]
IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C,
    np.dtype(">f4"): 0x0D,
    np.dtype(">f8"): 0x0E,
}


# --- helpers -------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as an IDX file (big-endian)."""
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    header = bytes([0, 0, IDX_CODES[dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(dtype).tobytes()


def fake_fashion(n_train: int = 60, n_test: int = 20) -> dict[str, np.ndarray]:
    """Deterministic stand-in for the four files: random images, labels cycling over 0..9."""
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": ((np.arange(n_test) * 7) % 10).astype(np.uint8),
    }


def write_fashion(
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    gz: bool = True,
    arrays: dict[str, np.ndarray] | None = None,
    official_md5: bool = False,
    skip: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Write the four files into ``folder`` and make the checksum tables accept them.

    The SHA-256 table always gets the content's digest; with ``official_md5`` the MD5 table
    gets the .gz file's digest (as for an official download) instead, and SHA-256 a wrong one.
    """
    arrays = arrays if arrays is not None else fake_fashion()
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        content = idx_bytes(array)
        if official_md5:
            packed = gzip.compress(content, mtime=0)
            monkeypatch.setitem(data.MD5_GZ, name, hashlib.md5(packed).hexdigest())
            monkeypatch.setitem(data.SHA256, name, "0" * 64)
        else:
            monkeypatch.setitem(data.MD5_GZ, name, "0" * 32)
            monkeypatch.setitem(data.SHA256, name, hashlib.sha256(content).hexdigest())
        if name in skip:
            continue
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content, mtime=0))
        else:
            (folder / name).write_bytes(content)
    return arrays


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No real data folder, no network, no stale caches, full mode."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(config.DATA_ENV, raising=False)
    monkeypatch.delenv(config.QUICK_ENV, raising=False)
    monkeypatch.setattr(config, "SYSTEM_DATA_DIR", tmp_path / "system")
    monkeypatch.setattr(data, "MIRRORS", [closed_port_url()])
    monkeypatch.setattr(data, "DOWNLOAD_TIMEOUT", 5.0)
    data.clear_cache()
    yield
    data.clear_cache()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # the default writes every request to stderr
        pass

    def do_GET(self):
        if self.path.startswith("/short/"):  # promise 100000 bytes, send 10, hang up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + b"\x00" * 8)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A local HTTP server with a good mirror under /good/ and a corrupt one under /bad/."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = tmp_path / "www"
    arrays = write_fashion(root / "good", monkeypatch)
    (root / "bad").mkdir()
    for name in NAMES:  # valid gzip, wrong content
        (root / "bad" / f"{name}.gz").write_bytes(gzip.compress(b"not fashion-mnist" * 50))
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield base, arrays
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- IDX reader ----------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_round_trip(tmp_path, gz, dtype):
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    content = idx_bytes(array)
    path = tmp_path / "file.idx"
    path.write_bytes(gzip.compress(content) if gz else content)
    got = data.read_idx(path)
    np.testing.assert_array_equal(got, array)
    assert got.dtype == array.dtype.newbyteorder("=")
    assert got.flags.writeable


def test_read_idx_detects_gzip_by_magic_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    fake_gz = tmp_path / "raw-but-named.gz"
    fake_gz.write_bytes(idx_bytes(array))
    fake_raw = tmp_path / "gzip-but-named-raw"
    fake_raw.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(data.read_idx(fake_gz), array)
    np.testing.assert_array_equal(data.read_idx(fake_raw), array)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    array=hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    ),
    gz=st.booleans(),
)
def test_read_idx_property_round_trip(tmp_path_factory, array, gz):
    content = idx_bytes(array)
    path = tmp_path_factory.mktemp("idx") / "a.idx"
    path.write_bytes(gzip.compress(content) if gz else content)
    got = data.read_idx(path)
    assert got.shape == array.shape
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize(
    "header",
    [b"\x01\x00\x08\x01", b"\x00\x01\x08\x01", b"\x00\x00\x07\x01", b"PK\x03\x04"],
    ids=["byte0", "byte1", "unknown-type", "zip-file"],
)
def test_read_idx_wrong_magic(tmp_path, header):
    path = tmp_path / "bad-magic"
    path.write_bytes(header + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(data.IDXFormatError, match="magic") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize(
    ("delta", "problem"), [(-1, "truncated payload"), (-40, "truncated payload"), (3, "trailing")]
)
def test_read_idx_wrong_payload_length(tmp_path, gz, delta, problem):
    content = idx_bytes(np.zeros((4, 28), dtype=np.uint8))
    content = content[:delta] if delta < 0 else content + b"\x00" * delta
    path = tmp_path / "payload"
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(data.IDXFormatError, match=problem) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)
    assert "(4, 28)" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"\x00\x00", b"\x00\x00\x08\x03\x00\x00\x00\x02"])
def test_read_idx_truncated_header(tmp_path, content):
    path = tmp_path / "header"
    path.write_bytes(content)
    with pytest.raises(data.IDXFormatError, match="header") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_read_idx_truncated_gzip(tmp_path, keep):
    rng = np.random.default_rng(2)
    packed = gzip.compress(idx_bytes(rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: int(len(packed) * keep)])
    with pytest.raises(data.IDXFormatError, match="truncated gzip stream") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_corrupt_gzip(tmp_path):
    packed = bytearray(gzip.compress(idx_bytes(np.arange(4000, dtype=">i4"))))
    packed[len(packed) // 2] ^= 0xFF
    path = tmp_path / "flipped.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(data.IDXFormatError, match="corrupt gzip stream") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


# --- checksums -----------------------------------------------------------------------------


def test_verify_accepts_official_md5_or_content_sha256(tmp_path, monkeypatch):
    official = tmp_path / "official"
    write_fashion(official, monkeypatch, official_md5=True)  # MD5 right, SHA-256 table wrong
    for name in NAMES:
        data.verify_file(official / f"{name}.gz")
    recompressed = tmp_path / "debian"
    write_fashion(recompressed, monkeypatch)  # MD5 table wrong, SHA-256 right
    for name in NAMES:
        path = recompressed / f"{name}.gz"
        assert hashlib.md5(path.read_bytes()).hexdigest() != data.MD5_GZ[name]
        data.verify_file(path)
    raw = tmp_path / "raw"
    write_fashion(raw, monkeypatch, gz=False)
    for name in NAMES:
        data.verify_file(raw / name)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_checksum_mismatch_names_file_digests_and_remedy(tmp_path, monkeypatch, gz):
    arrays = write_fashion(tmp_path, monkeypatch, gz=gz)
    name = "t10k-labels-idx1-ubyte"
    bad = arrays[name].copy()
    bad[3] = (bad[3] + 1) % 10  # a wrong label: still a well-formed IDX file
    content = idx_bytes(bad)
    path = tmp_path / (f"{name}.gz" if gz else name)
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(data.ChecksumError) as info:
        data.verify_file(path)
    message = str(info.value)
    assert str(path) in message
    assert data.SHA256[name] in message  # expected
    assert hashlib.sha256(content).hexdigest() in message  # got
    assert "Delete" in message and "apt-get" in message
    with pytest.raises(data.ChecksumError):  # loading refuses the file too
        data.load_fashion_mnist_arrays(train=False, root=tmp_path, download=False)


def test_checksum_cached_per_path_size_mtime(tmp_path, monkeypatch):
    write_fashion(tmp_path, monkeypatch)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    calls = collections.Counter()
    real_sha256 = hashlib.sha256

    def counting_sha256(*args, **kwargs):
        calls["sha256"] += 1
        return real_sha256(*args, **kwargs)

    monkeypatch.setattr(data.hashlib, "sha256", counting_sha256)
    data.verify_file(path)
    data.verify_file(path)
    assert calls["sha256"] == 1
    os.utime(path, ns=(1, 1))  # a changed mtime is checked again
    data.verify_file(path)
    assert calls["sha256"] == 2


def test_truncated_dataset_gzip_is_a_checksum_error(tmp_path, monkeypatch):
    write_fashion(tmp_path, monkeypatch)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(data.ChecksumError, match="truncated gzip stream") as info:
        data.load_fashion_mnist_arrays(train=True, root=tmp_path, download=False)
    assert str(path) in str(info.value)


def test_verify_rejects_unknown_file_name(tmp_path):
    path = tmp_path / "something-else.gz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="not a Fashion-MNIST file name"):
        data.verify_file(path)


# --- locating ------------------------------------------------------------------------------


def test_search_order(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    home_dir = Path(os.environ["HOME"]) / ".cache" / "normtut" / "fashion-mnist"
    system_dir = config.SYSTEM_DATA_DIR
    for folder in (env_dir, home_dir, system_dir):
        write_fashion(folder, monkeypatch)
    monkeypatch.setenv(config.DATA_ENV, str(env_dir))
    assert data.locate_fashion_mnist() == env_dir
    monkeypatch.delenv(config.DATA_ENV)
    assert data.locate_fashion_mnist() == home_dir
    shutil.rmtree(home_dir)
    assert data.locate_fashion_mnist() == system_dir
    shutil.rmtree(system_dir)
    assert data.locate_fashion_mnist() is None


@pytest.mark.parametrize("state", ["incomplete", "missing"])
def test_normtut_data_is_the_only_folder_used(tmp_path, monkeypatch, state):
    """A $NORMTUT_DATA folder without all four files fails; no other copy is used instead."""
    env_dir = tmp_path / "env"
    if state == "incomplete":
        write_fashion(env_dir, monkeypatch, skip=("t10k-labels-idx1-ubyte",))
    write_fashion(config.SYSTEM_DATA_DIR, monkeypatch, gz=False)  # a complete copy elsewhere
    home_cache = Path(os.environ["HOME"]) / ".cache" / "normtut" / "fashion-mnist"
    write_fashion(home_cache, monkeypatch)  # and another one
    monkeypatch.setenv(config.DATA_ENV, str(env_dir))
    assert data.locate_fashion_mnist() is None
    for load in (
        lambda: data.load_data_fashion_mnist(32, download=False),
        lambda: data.load_fashion_mnist_arrays(train=False, download=False),
        lambda: data.load_fashion_mnist_arrays(train=False),  # download fails: no network
    ):
        with pytest.raises(data.DataNotFoundError) as info:
            load()
        message = str(info.value)
        assert f"{env_dir} (" in message
        if state == "incomplete":
            assert "missing t10k-labels-idx1-ubyte[.gz]" in message
            assert "train-images" not in message.split(f"{env_dir} (")[1].split(")")[0]
        else:
            assert f"{env_dir} (does not exist)" in message
        assert f"NORMTUT_DATA is set, so no other folder is used: complete {env_dir}" in message
        assert str(config.SYSTEM_DATA_DIR) not in message and str(home_cache) not in message
    if state == "missing":
        assert not env_dir.exists()  # the failed download left no folder behind
    monkeypatch.delenv(config.DATA_ENV)  # unset: the default folders again
    assert data.locate_fashion_mnist() == home_cache


def test_empty_normtut_data_means_unset(tmp_path, monkeypatch):
    write_fashion(config.SYSTEM_DATA_DIR, monkeypatch)
    monkeypatch.setenv(config.DATA_ENV, "")
    assert data.locate_fashion_mnist() == config.SYSTEM_DATA_DIR


def test_incomplete_root_is_none(tmp_path, monkeypatch):
    write_fashion(tmp_path / "part", monkeypatch, skip=("t10k-labels-idx1-ubyte",))
    write_fashion(config.SYSTEM_DATA_DIR, monkeypatch)
    assert data.locate_fashion_mnist(root=tmp_path / "part") is None
    assert data.locate_fashion_mnist() == config.SYSTEM_DATA_DIR


def test_missing_data_without_download_lists_paths_and_hints(tmp_path, monkeypatch):
    write_fashion(config.SYSTEM_DATA_DIR, monkeypatch, skip=("train-images-idx3-ubyte",))
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_data_fashion_mnist(32, download=False)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for folder in config.data_search_paths():
        assert str(folder) in message
    home = str(config.data_search_paths()[0])
    assert message.index(home) < message.index(str(config.SYSTEM_DATA_DIR))
    assert "missing train-images-idx3-ubyte" in message
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert "NORMTUT_DATA=" in message
    assert "NORMTUT_DATA is set" not in message
    assert f"{data.MIRRORS[0]}train-images-idx3-ubyte.gz" in message
    assert "disabled" in message


def test_missing_data_and_no_network(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MIRRORS", [closed_port_url(), closed_port_url()])
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_fashion_mnist_arrays(train=False)
    message = str(info.value)
    for folder in config.data_search_paths():
        assert str(folder) in message
    for mirror in data.MIRRORS:
        assert f"{mirror}train-images-idx3-ubyte.gz: URLError" in message
    assert message.count(": URLError") == 2  # an unreachable mirror is not tried again
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert not config.cache_dir().exists()  # the failed download left no folder behind


# --- torchvision's layout (d2l's loader offline) -------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["debian-gz", "raw"])
def test_prepare_torchvision_layout(tmp_path, monkeypatch, gz):
    source = tmp_path / "source"
    arrays = write_fashion(source, monkeypatch, gz=gz)  # .gz: MD5 not the official one
    root = tmp_path / "data"
    raw = data.prepare_torchvision_fashion_mnist(root, source=source, download=False)
    assert raw == root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(NAMES)  # no .gz, no temp files
    for name in NAMES:
        assert (raw / name).read_bytes() == idx_bytes(arrays[name])
    # the prepared folder is a valid source for normtut itself
    images, labels = data.load_fashion_mnist_arrays(train=False, root=raw, download=False)
    np.testing.assert_array_equal(images, arrays["t10k-images-idx3-ubyte"])


def test_prepare_torchvision_keeps_good_files_and_replaces_bad_ones(tmp_path, monkeypatch):
    source = tmp_path / "source"
    arrays = write_fashion(source, monkeypatch)
    root = tmp_path / "data"
    raw = data.prepare_torchvision_fashion_mnist(root, source=source)
    good, bad = raw / "train-labels-idx1-ubyte", raw / "t10k-labels-idx1-ubyte"
    os.utime(good, ns=(1, 1))
    bad.write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 4)  # a stale, wrong file
    data.clear_cache()
    data.prepare_torchvision_fashion_mnist(root, source=source)
    assert good.stat().st_mtime_ns == 1  # left alone
    assert bad.read_bytes() == idx_bytes(arrays["t10k-labels-idx1-ubyte"])


def test_prepare_torchvision_uses_the_search_order(tmp_path, monkeypatch):
    arrays = write_fashion(config.SYSTEM_DATA_DIR, monkeypatch)
    monkeypatch.chdir(tmp_path / "home")
    raw = data.prepare_torchvision_fashion_mnist()  # d2l's default root "../data"
    assert raw == Path("../data/FashionMNIST/raw")
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / NAMES[0]).read_bytes() == idx_bytes(
        arrays[NAMES[0]]
    )
    monkeypatch.setenv(config.DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(data.DataNotFoundError, match="NORMTUT_DATA is set"):
        data.prepare_torchvision_fashion_mnist(tmp_path / "other", download=False)


def test_prepare_torchvision_refuses_a_corrupt_source(tmp_path, monkeypatch):
    source = tmp_path / "source"
    write_fashion(source, monkeypatch, gz=False)
    (source / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(20, np.uint8)))
    with pytest.raises(data.ChecksumError):
        data.prepare_torchvision_fashion_mnist(tmp_path / "data", source=source)
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert "t10k-labels-idx1-ubyte" not in {p.name for p in raw.iterdir()}


# --- download ------------------------------------------------------------------------------


def test_download_uses_second_mirror_when_first_fails(mirror, monkeypatch, capfd):
    base, arrays = mirror
    monkeypatch.setattr(data, "MIRRORS", [base + "missing/", closed_port_url(), base + "good/"])
    images, labels = data.load_fashion_mnist_arrays(train=False)
    np.testing.assert_array_equal(images, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(labels, arrays["t10k-labels-idx1-ubyte"])
    cache = config.cache_dir()
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    assert capfd.readouterr().err == ""


def test_download_into_normtut_data(mirror, tmp_path, monkeypatch):
    base, _ = mirror
    target = tmp_path / "chosen"
    monkeypatch.setenv(config.DATA_ENV, str(target))
    monkeypatch.setattr(data, "MIRRORS", [base + "good/"])
    assert data.fashion_mnist_dir() == target
    assert all((target / f"{n}.gz").is_file() for n in NAMES)


def test_corrupt_download_leaves_nothing(mirror, monkeypatch):
    base, _ = mirror
    monkeypatch.setattr(data, "MIRRORS", [base + "bad/"])
    with pytest.raises(data.ChecksumError) as info:
        data.load_data_fashion_mnist(16)
    assert f"{base}bad/train-images-idx3-ubyte.gz" in str(info.value)
    assert "nothing was kept" in str(info.value)
    cache = config.cache_dir()
    assert not cache.exists() or list(cache.iterdir()) == []


def test_interrupted_download_leaves_nothing_and_next_mirror_is_used(mirror, monkeypatch):
    base, arrays = mirror
    monkeypatch.setattr(data, "MIRRORS", [base + "short/"])
    with pytest.raises(data.DataNotFoundError, match="interrupted after 10 of 100000 bytes"):
        data.fashion_mnist_dir()
    cache = config.cache_dir()
    assert not cache.exists() or list(cache.iterdir()) == []
    monkeypatch.setattr(data, "MIRRORS", [base + "short/", base + "good/"])
    assert data.fashion_mnist_dir() == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in NAMES)


def test_corrupt_mirror_then_good_mirror(mirror, monkeypatch):
    base, arrays = mirror
    dest = data.download_fashion_mnist(mirrors=[base + "bad/", base + "good/"])
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    images, _ = data.load_fashion_mnist_arrays(train=True)
    np.testing.assert_array_equal(images, arrays["train-images-idx3-ubyte"])


def test_download_fetches_only_missing_files(mirror, tmp_path, monkeypatch):
    base, _ = mirror
    dest = tmp_path / "partial"
    write_fashion(dest, monkeypatch, skip=("train-labels-idx1-ubyte",))
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    data.download_fashion_mnist(dest, mirrors=[base + "good/"])
    after = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    assert set(after) == set(before) | {"train-labels-idx1-ubyte.gz"}
    assert all(after[name] == mtime for name, mtime in before.items())


# --- arrays, datasets, loaders -------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_load_arrays_and_cache(tmp_path, monkeypatch, gz):
    arrays = write_fashion(tmp_path, monkeypatch, gz=gz)
    images, labels = data.load_fashion_mnist_arrays(train=True, root=tmp_path)
    assert images.dtype == np.uint8 and images.shape == (60, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (60,)
    np.testing.assert_array_equal(images, arrays["train-images-idx3-ubyte"])
    images[:] = 0  # the caller's copy, not the cache
    monkeypatch.setattr(data, "_parse_idx", None)  # a second load must not parse again
    images2, _ = data.load_fashion_mnist_arrays(train=True, root=tmp_path)
    np.testing.assert_array_equal(images2, arrays["train-images-idx3-ubyte"])


def test_labels_out_of_range_rejected(tmp_path, monkeypatch):
    arrays = fake_fashion()
    arrays["t10k-labels-idx1-ubyte"][0] = 10
    write_fashion(tmp_path, monkeypatch, arrays=arrays)
    with pytest.raises(data.IDXFormatError, match="out of range"):
        data.load_fashion_mnist_arrays(train=False, root=tmp_path)


def test_dataset_items_like_to_tensor(tmp_path, monkeypatch):
    arrays = write_fashion(tmp_path, monkeypatch)
    dataset = data.FashionMNIST(root=tmp_path, train=False)
    assert len(dataset) == 20
    image, label = dataset[5]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert isinstance(label, int) and label == int(arrays["t10k-labels-idx1-ubyte"][5])
    expected = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][5].astype(np.float32) / 255)
    torch.testing.assert_close(image[0], expected, rtol=0, atol=1e-7)
    assert "test" in repr(dataset)


@pytest.mark.parametrize(
    ("resize", "shape"), [(None, (28, 28)), (28, (28, 28)), (14, (14, 14)), ((32, 20), (32, 20))]
)
def test_resize_shape_and_range(tmp_path, monkeypatch, resize, shape):
    write_fashion(tmp_path, monkeypatch)
    dataset = data.FashionMNIST(root=tmp_path, train=False, resize=resize)
    assert dataset.images.shape == (20, 1, *shape)
    assert 0.0 <= dataset.images.min() and dataset.images.max() <= 1.0
    train_iter, test_iter = data.load_data_fashion_mnist(8, resize=resize, root=tmp_path)
    X, _ = next(iter(test_iter))
    assert X.shape == (8, 1, *shape)


def test_resize_preserves_constant_image_and_mean(tmp_path, monkeypatch):
    arrays = fake_fashion()
    arrays["t10k-images-idx3-ubyte"][0] = 200
    write_fashion(tmp_path, monkeypatch, arrays=arrays)
    small = data.FashionMNIST(root=tmp_path, train=False, resize=14).images
    torch.testing.assert_close(small[0], torch.full((1, 14, 14), 200 / 255))
    full = data.FashionMNIST(root=tmp_path, train=False).images
    # antialiased 2x downsampling averages: the mean brightness barely moves
    torch.testing.assert_close(small.mean(), full.mean(), atol=2e-3, rtol=0)


@pytest.mark.parametrize("bad", [0, -3, (5,), (5, 0), 2.5, True, "28"])
def test_bad_resize_rejected(tmp_path, monkeypatch, bad):
    write_fashion(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="resize"):
        data.FashionMNIST(root=tmp_path, train=False, resize=bad)


def test_loaders_batches(tmp_path, monkeypatch):
    arrays = write_fashion(tmp_path, monkeypatch)
    train_iter, test_iter = data.load_data_fashion_mnist(16, root=tmp_path)
    batches = list(train_iter)
    assert [len(y) for _, y in batches] == [16, 16, 16, 12]
    for X, y in batches:
        assert X.dtype == torch.float32 and X.shape[1:] == (1, 28, 28)
        assert y.dtype == torch.int64
        assert 0.0 <= X.min() and X.max() <= 1.0
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == sorted(arrays["train-labels-idx1-ubyte"].tolist())
    assert seen.tolist() != arrays["train-labels-idx1-ubyte"].tolist()  # shuffled
    test_labels = torch.cat([y for _, y in test_iter])  # test loader keeps the order
    assert test_labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    X0, _ = next(iter(test_iter))
    expected = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][:16].astype(np.float32) / 255)
    torch.testing.assert_close(X0[:, 0], expected)
    assert len(train_iter) == 4 and len(test_iter) == 2


def test_quick_mode_subset(tmp_path, monkeypatch):
    write_fashion(tmp_path, monkeypatch)
    monkeypatch.setattr(data, "QUICK_TRAIN_SIZE", 23)
    monkeypatch.setattr(data, "QUICK_TEST_SIZE", 10)
    monkeypatch.setenv(config.QUICK_ENV, "1")
    train_iter, test_iter = data.load_data_fashion_mnist(100, root=tmp_path)
    assert len(train_iter.dataset) == 23 and len(test_iter.dataset) == 10
    counts = np.bincount(train_iter.dataset.tensors[1].numpy(), minlength=10)
    assert set(counts.tolist()) == {2, 3}  # balanced over the 10 classes
    again, _ = data.load_data_fashion_mnist(100, root=tmp_path)
    assert torch.equal(again.dataset.tensors[0], train_iter.dataset.tensors[0])  # deterministic
    monkeypatch.setenv(config.QUICK_ENV, "0")
    train_iter, test_iter = data.load_data_fashion_mnist(100, root=tmp_path)
    assert len(train_iter.dataset) == 60 and len(test_iter.dataset) == 20


def test_quick_sizes_are_documented_constants():
    assert (data.QUICK_TRAIN_SIZE, data.QUICK_TEST_SIZE) == (2048, 512)


def test_get_fashion_mnist_labels():
    assert data.get_fashion_mnist_labels([0, 9, 3]) == ["t-shirt", "ankle boot", "dress"]
    assert data.get_fashion_mnist_labels(torch.tensor([[1], [8]])) == ["trouser", "bag"]
    assert data.get_fashion_mnist_labels(np.arange(10)) == list(data.TEXT_LABELS)
    assert len(set(data.TEXT_LABELS)) == 10
    with pytest.raises(IndexError):
        data.get_fashion_mnist_labels([10])


# --- synthetic data ------------------------------------------------------------------------


def test_synthetic_data_is_linear_plus_noise():
    w, b = torch.tensor([2.0, -3.4]), 4.2
    X, y = data.synthetic_data(w, b, 2000, generator=torch.Generator().manual_seed(0))
    assert X.shape == (2000, 2) and y.shape == (2000, 1) and X.dtype == torch.float32
    residual = y[:, 0] - (X @ w + b)
    assert abs(float(residual.std()) - 0.01) < 0.001
    X2, y2 = data.synthetic_data(w, b, 2000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(X, X2) and torch.equal(y, y2)
    Xd, _ = data.synthetic_data(torch.tensor([1.0], dtype=torch.float64), 0.0, 3, noise=0.0)
    assert Xd.dtype == torch.float64


@pytest.mark.parametrize("is_train", [True, False])
def test_load_array(is_train):
    torch.manual_seed(0)
    X, y = torch.arange(50.0).reshape(25, 2), torch.arange(25)
    loader = data.load_array((X, y), 10, is_train=is_train)
    batches = list(loader)
    assert [len(yb) for _, yb in batches] == [10, 10, 5]
    order = torch.cat([yb for _, yb in batches])
    assert sorted(order.tolist()) == list(range(25))
    assert (order.tolist() == list(range(25))) is (not is_train)
    for Xb, yb in batches:
        assert torch.equal(Xb, X[yb])


@pytest.mark.parametrize("batch_size", [0, -1, 2.0])
def test_load_array_rejects_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        data.load_array((torch.zeros(4),), batch_size)


# --- the real data (Debian package dataset-fashion-mnist) ----------------------------------


def require_real_data() -> None:
    if all(data._find_file(REAL_DIR, name) is not None for name in NAMES):
        return
    message = f"Fashion-MNIST not installed in {REAL_DIR} (apt-get install dataset-fashion-mnist)"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI installs it, so this is an error")
    pytest.skip(message)


def test_real_fashion_mnist(monkeypatch):
    require_real_data()
    for name in NAMES:
        data.verify_file(data._find_file(REAL_DIR, name))
    for train, n in ((True, 60000), (False, 10000)):
        images, labels = data.load_fashion_mnist_arrays(train=train, root=REAL_DIR)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert set(np.unique(labels).tolist()) == set(range(10))
        assert np.bincount(labels).tolist() == [n // 10] * 10
    monkeypatch.setenv(config.QUICK_ENV, "1")
    train_iter, test_iter = data.load_data_fashion_mnist(256, root=REAL_DIR)
    assert len(train_iter.dataset) == 2048 and len(test_iter.dataset) == 512
    counts = np.bincount(train_iter.dataset.tensors[1].numpy(), minlength=10)
    assert counts.min() >= 204 and counts.max() <= 205


def test_prepare_torchvision_from_the_real_data(tmp_path):
    require_real_data()
    raw = data.prepare_torchvision_fashion_mnist(tmp_path, source=REAL_DIR, download=False)
    for name in NAMES:  # torchvision's file names, the dataset's content
        assert hashlib.sha256((raw / name).read_bytes()).hexdigest() == data.SHA256[name]


@pytest.mark.parametrize("how", ["flip-compressed", "flip-content-raw", "flip-content-regzip"])
def test_corrupted_copy_of_real_file(tmp_path, how):
    require_real_data()
    name = "t10k-labels-idx1-ubyte"
    source = data._find_file(REAL_DIR, name)
    raw = source.read_bytes()
    content = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    if how == "flip-compressed":
        corrupt = bytearray(raw if raw[:2] == b"\x1f\x8b" else gzip.compress(content))
        corrupt[len(corrupt) // 2] ^= 0xFF
        path = tmp_path / f"{name}.gz"
    else:
        flipped = bytearray(content)
        flipped[100] = (flipped[100] + 1) % 10  # still a valid label
        corrupt = flipped if how == "flip-content-raw" else gzip.compress(bytes(flipped))
        path = tmp_path / (name if how == "flip-content-raw" else f"{name}.gz")
    path.write_bytes(bytes(corrupt))
    with pytest.raises(data.ChecksumError) as info:
        data.verify_file(path)
    assert str(path) in str(info.value)
    assert "expected" in str(info.value)
