"""Fashion-MNIST without torchvision, and the small synthetic data sets of the book.

Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017) is four IDX files::

    train-images-idx3-ubyte   60000 x 28 x 28 uint8     train-labels-idx1-ubyte   60000 uint8
    t10k-images-idx3-ubyte    10000 x 28 x 28 uint8     t10k-labels-idx1-ubyte    10000 uint8

each of which may be stored gzip-compressed (``NAME.gz``) or raw (``NAME``); compression is
recognised by the gzip magic bytes, not by the file name.

**Where the files are looked for** (the book's setup appendix, "Fashion-MNIST without
internet"): a folder named by ``$NORMTUT_DATA`` is the only one used, exactly like ``root=``:
if it lacks a file, the file is downloaded into it, and where that is impossible (no network,
``download=False``) loading fails with a :class:`DataNotFoundError` that names the folder and
the missing files; normtut never falls back to another copy behind the user's back. Without
the variable, the folders ``~/.cache/normtut/fashion-mnist`` and
``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``) are searched
in this order and the first that holds all four files is used. If there is none, the files are
downloaded from :data:`MIRRORS` into :func:`normtut.config.cache_dir`, atomically: each file is
written to a temporary file in the same folder and renamed only after its checksum passed, so
an interrupted or corrupt download leaves nothing behind.

**d2l and torchvision offline.** ``torchvision.datasets.FashionMNIST(root, download=True)``
(what ``d2l.load_data_fashion_mnist`` calls with ``root="../data"``) looks for the four raw
files in ``root/FashionMNIST/raw/`` and otherwise downloads the ``.gz`` files and checks their
official MD5, which Debian's re-compressed copies fail. :func:`prepare_torchvision_fashion_mnist`
writes verified raw copies there from the local copy, so torchvision finds them and downloads
nothing.

**Checksums.** A file is accepted when

- its gzip-compressed bytes have the official MD5 from the dataset's README (:data:`MD5_GZ`), or
- its decompressed content has the SHA-256 in :data:`SHA256` (raw files: always this check).

The second rule exists because the Debian package ships *re-compressed* ``.gz`` files: their
MD5 differs from the official one while their content is the dataset, byte for byte. The
SHA-256 digests were measured on that content. Any other file raises :class:`ChecksumError`,
which names the file, the expected and the actual digest and what to do; nothing corrupt or
truncated is ever used. A verified file is remembered per (path, size, mtime) for the rest of
the process, so repeated loads do not hash it again.

**Loading.** :func:`load_data_fashion_mnist` has the signature and return value of d2l's
function of the same name: two ``DataLoader`` s yielding ``float32`` images of shape
``(batch, 1, H, W)`` in ``[0, 1]`` (as torchvision's ``ToTensor``) and ``int64`` labels. The
loaders index in-memory tensors one whole batch at a time (no per-example Python work). In
quick mode (``NORMTUT_QUICK=1``) they hold a deterministic, class-balanced subset of
:data:`QUICK_TRAIN_SIZE` training and :data:`QUICK_TEST_SIZE` test examples.

Example::

    train_iter, test_iter = load_data_fashion_mnist(256)
    X, y = next(iter(train_iter))      # X: (256, 1, 28, 28) float32, y: (256,) int64
    get_fashion_mnist_labels(y[:3])    # e.g. ['ankle boot', 't-shirt', 'dress']
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

from normtut import config

__all__ = [
    "IDXFormatError",
    "ChecksumError",
    "DataNotFoundError",
    "FILE_NAMES",
    "MD5_GZ",
    "SHA256",
    "MIRRORS",
    "DOWNLOAD_TIMEOUT",
    "QUICK_TRAIN_SIZE",
    "QUICK_TEST_SIZE",
    "TEXT_LABELS",
    "read_idx",
    "verify_file",
    "locate_fashion_mnist",
    "download_fashion_mnist",
    "fashion_mnist_dir",
    "prepare_torchvision_fashion_mnist",
    "load_fashion_mnist_arrays",
    "FashionMNIST",
    "load_data_fashion_mnist",
    "get_fashion_mnist_labels",
    "synthetic_data",
    "load_array",
    "clear_cache",
]

# --- constants -----------------------------------------------------------------------------

#: The two files of each split: (images, labels).
FILE_NAMES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_ALL_NAMES = FILE_NAMES["train"] + FILE_NAMES["test"]

#: Official MD5 of each ``NAME.gz`` (github.com/zalandoresearch/fashion-mnist, README).
MD5_GZ: dict[str, str] = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}

#: SHA-256 of each file's decompressed (raw IDX) content.
SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

#: Official mirrors, tried in order; ``MIRROR + NAME + ".gz"`` is a file's URL.
MIRRORS: list[str] = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
]

#: Seconds to wait for a mirror to answer (per connection attempt and per read).
DOWNLOAD_TIMEOUT = 30.0

#: Examples kept in quick mode (``NORMTUT_QUICK=1``): the first examples of each class, in
#: dataset order, as evenly spread over the 10 classes as the size allows.
QUICK_TRAIN_SIZE = 2048
QUICK_TEST_SIZE = 512

#: d2l's names of the 10 classes, indexed by label.
TEXT_LABELS: tuple[str, ...] = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_APT_HINT = "sudo apt-get install dataset-fashion-mnist"
_CHUNK = 1 << 20

# Per-process caches: verified files and loaded arrays (see clear_cache).
_VERIFIED: dict[tuple, str] = {}
_ARRAYS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


# --- errors --------------------------------------------------------------------------------


class IDXFormatError(ValueError):
    """A file is not a well-formed IDX file (bad magic, dimensions, payload or gzip stream)."""


class ChecksumError(ValueError):
    """A Fashion-MNIST file does not have the known checksum: it is corrupt or not the dataset."""


class DataNotFoundError(FileNotFoundError):
    """No copy of Fashion-MNIST was found and none could be downloaded."""


# --- IDX files -----------------------------------------------------------------------------


def _decompress(raw: bytes, source: str) -> bytes:
    """Decompress a gzip stream, turning every failure into an :class:`IDXFormatError`."""
    try:
        return gzip.decompress(raw)
    except EOFError as err:
        raise IDXFormatError(f"{source}: truncated gzip stream ({len(raw)} bytes; {err})") from err
    except (OSError, zlib.error) as err:
        raise IDXFormatError(f"{source}: corrupt gzip stream ({err})") from err


def _parse_idx(content: bytes, source: str) -> np.ndarray:
    """Parse decompressed IDX bytes into a native-endian, writable array."""
    if len(content) < 4:
        raise IDXFormatError(
            f"{source}: {len(content)} bytes is too short for an IDX header (needs at least 4)"
        )
    zero, code, ndim = content[:2], content[2], content[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES:
        raise IDXFormatError(
            f"{source}: bad IDX magic number 0x{content[:4].hex()}; expected 0x0000 followed by "
            f"a type code in {{{', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}}} and the number "
            f"of dimensions (is this an IDX file?)"
        )
    header = 4 + 4 * ndim
    if len(content) < header:
        raise IDXFormatError(
            f"{source}: header declares {ndim} dimensions ({header} header bytes) but the file "
            f"has only {len(content)} bytes"
        )
    dims = struct.unpack(f">{ndim}I", content[4:header])
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    got = len(content) - header
    if got != expected:
        problem = "truncated payload" if got < expected else "trailing bytes after the payload"
        raise IDXFormatError(
            f"{source}: {problem}: dimensions {dims} of {dtype.name} need {expected} bytes, "
            f"the file has {got}"
        )
    array = np.frombuffer(content, dtype=dtype, offset=header).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a NumPy array.

    The format (LeCun et al., MNIST): a magic number ``0x00 0x00 <type> <ndim>``, ``ndim``
    big-endian ``uint32`` dimensions, then ``prod(dims)`` big-endian values. Compression is
    detected from the gzip magic bytes, not the file name. No checksum is checked here (see
    :func:`verify_file`).

    Raises:
        IDXFormatError: bad magic number or type code, truncated header, a payload whose length
            is not exactly ``prod(dims) * itemsize``, or a truncated/corrupt gzip stream.
    """
    path = Path(path)
    raw = path.read_bytes()
    content = _decompress(raw, str(path)) if raw[:2] == _GZIP_MAGIC else raw
    return _parse_idx(content, str(path))


# --- checksums -----------------------------------------------------------------------------


def _dataset_name(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if name not in _ALL_NAMES:
        raise ValueError(
            f"{path}: not a Fashion-MNIST file name; expected one of {', '.join(_ALL_NAMES)} "
            f"(optionally with .gz)"
        )
    return name


def _remedy(path: Path) -> str:
    if path.parent == config.SYSTEM_DATA_DIR:
        return (
            "Reinstall the Debian package: sudo apt-get install --reinstall dataset-fashion-mnist."
        )
    return (
        f"Delete {path} and run again to download a fresh copy, or reinstall the Debian package "
        f"({_APT_HINT})."
    )


def _checked_content(path: Path, name: str | None = None, url: str | None = None) -> bytes:
    """Read ``path``, verify it against the known digests and return its decompressed bytes.

    ``url``: the file is a fresh download from there (the messages name the URL instead).
    """
    name = name or _dataset_name(path)
    where = url or str(path)
    remedy = "The mirror served a damaged or different file." if url else _remedy(path)
    stat = path.stat()
    md5_expected, sha_expected = MD5_GZ.get(name), SHA256.get(name)
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, md5_expected, sha_expected)
    raw = path.read_bytes()
    compressed = raw[:2] == _GZIP_MAGIC
    verified = key in _VERIFIED
    md5_got = None
    if compressed and not verified:
        md5_got = hashlib.md5(raw, usedforsecurity=False).hexdigest()
        verified = md5_got == md5_expected
    if compressed:
        try:
            content = _decompress(raw, where)
        except IDXFormatError as err:
            raise ChecksumError(
                f"{err}; so it is not a valid copy of {name} (MD5 of the .gz: expected "
                f"{md5_expected}, got {md5_got}). {remedy}"
            ) from err
    else:
        content = raw
    if not verified:
        sha_got = hashlib.sha256(content).hexdigest()
        if sha_got != sha_expected:
            md5_note = (
                f"MD5 of the .gz: expected {md5_expected}, got {md5_got}; " if compressed else ""
            )
            raise ChecksumError(
                f"Checksum mismatch for {where} ({name}): {md5_note}SHA-256 of the "
                f"{'decompressed ' if compressed else ''}content: expected {sha_expected}, got "
                f"{sha_got}. The file is corrupt, truncated or not Fashion-MNIST. {remedy}"
            )
    _VERIFIED[key] = name
    return content


def verify_file(path: str | os.PathLike) -> None:
    """Check one Fashion-MNIST file (``NAME`` or ``NAME.gz``) against its known checksum.

    Accepted when the gzip bytes have the official MD5 (:data:`MD5_GZ`) or the decompressed
    content has the known SHA-256 (:data:`SHA256`). The result is cached per
    (path, size, mtime).

    Raises:
        ChecksumError: the file is corrupt, truncated or not the dataset.
        ValueError: the file name is not one of the four Fashion-MNIST names.
    """
    _checked_content(Path(path))


# --- finding and downloading ---------------------------------------------------------------


def _find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists (raw first)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing(folder: Path) -> list[str]:
    return [name for name in _ALL_NAMES if _find_file(folder, name) is None]


def _env_root() -> Path | None:
    """The folder named by ``$NORMTUT_DATA``, or ``None`` when the variable is unset or empty."""
    value = os.environ.get(config.DATA_ENV)
    return Path(value).expanduser() if value else None


def _search_paths(root: str | os.PathLike | None) -> list[Path]:
    """``[root]``, else ``[$NORMTUT_DATA]`` when it is set, else the default folders."""
    if root is not None:
        return [Path(root).expanduser()]
    env = _env_root()
    return [env] if env is not None else config.data_search_paths()


def locate_fashion_mnist(root: str | os.PathLike | None = None) -> Path | None:
    """Return the first folder that holds all four Fashion-MNIST files, or ``None``.

    Searches ``root`` alone when it is given, else ``$NORMTUT_DATA`` alone when it is set, else
    ``~/.cache/normtut/fashion-mnist`` and ``/usr/share/datasets/fashion-mnist``, in this order.
    A ``$NORMTUT_DATA`` folder that is missing or incomplete gives ``None``: the other folders
    are not used in its place. Files are not verified here; they are when they are loaded.
    """
    for folder in _search_paths(root):
        if folder.is_dir() and not _missing(folder):
            return folder
    return None


def _how_to_get(searched: Sequence[Path], reasons: Sequence[str]) -> str:
    lines = ["Fashion-MNIST was not found. Searched, in order:"]
    for folder in searched:
        if not folder.is_dir():
            state = "does not exist"
        else:
            state = "missing " + ", ".join(f"{n}[.gz]" for n in _missing(folder))
        lines.append(f"  - {folder} ({state})")
    env = _env_root()
    if env is not None and list(searched) == [env]:
        lines.append(
            f"{config.DATA_ENV} is set, so no other folder is used: complete {env}, point "
            f"{config.DATA_ENV} at a folder with all four files, or unset it to use the "
            f"default folders."
        )
    lines.extend(reasons)
    urls = "\n".join(f"        {MIRRORS[0] if MIRRORS else ''}{n}.gz" for n in _ALL_NAMES)
    lines += [
        "To get the files, do one of:",
        f"  - install the Debian package: {_APT_HINT}",
        f"  - download the four files into {config.cache_dir()}:",
        urls,
        "    (other mirrors: " + ", ".join(MIRRORS[1:]) + ")" if len(MIRRORS) > 1 else "",
        f"  - or put them in any folder and set {config.DATA_ENV}=/path/to/that/folder",
    ]
    return "\n".join(line for line in lines if line)


def _download_one(
    name: str, dest: Path, mirrors: Sequence[str], timeout: float, unreachable: set[str]
) -> list[tuple[str, Exception]]:
    """Fetch ``name.gz`` into ``dest``; return the failed ``(url, error)`` (none on success).

    A mirror that cannot be reached at all is added to ``unreachable`` and not tried again
    for the other files (so no network costs one timeout per mirror, not per file).
    """
    failures: list[tuple[str, Exception]] = []
    target = dest / f"{name}.gz"
    for mirror in mirrors:
        if mirror in unreachable:
            continue
        url = f"{mirror}{name}.gz"
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                size = 0
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    size += len(chunk)
                promised = resp.headers.get("Content-Length")
                if promised is not None and promised.isdigit() and int(promised) != size:
                    raise ConnectionError(f"download interrupted after {size} of {promised} bytes")
            _checked_content(tmp, name, url)
            os.replace(tmp, target)
            _checked_content(target, name)  # remember the verdict under the final name
            return []
        # URLError/HTTPError/timeouts are OSErrors, a short read is an HTTPException, a bad URL
        # a ValueError, a corrupt file a ChecksumError (a ValueError too)
        except (OSError, ValueError, http.client.HTTPException) as err:
            failures.append((url, err))
            if isinstance(err, urllib.error.URLError) and not isinstance(
                err, urllib.error.HTTPError
            ):
                unreachable.add(mirror)
        finally:
            tmp.unlink(missing_ok=True)
    return failures


def _download(
    dest: Path, mirrors: Sequence[str] | None, timeout: float | None
) -> list[tuple[str, Exception]]:
    """Download what ``dest`` lacks; return the failed ``(url, error)`` (none on success)."""
    mirrors = list(MIRRORS if mirrors is None else mirrors)
    timeout = DOWNLOAD_TIMEOUT if timeout is None else timeout
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    failures: list[tuple[str, Exception]] = []
    unreachable: set[str] = set()
    for name in _missing(dest):
        print(f"Downloading {name}.gz into {dest}", flush=True)
        failures += _download_one(name, dest, mirrors, timeout, unreachable)
    if failures and created and not any(dest.iterdir()):
        dest.rmdir()
    return failures


def _raise_download_failure(
    searched: Sequence[Path], dest: Path, failures: list[tuple[str, Exception]]
) -> None:
    details = "\n".join(
        f"  - {url}: {err}"
        if isinstance(err, ChecksumError)
        else f"  - {url}: {type(err).__name__}: {err}"
        for url, err in failures
    )
    if any(isinstance(err, ChecksumError) for _, err in failures):
        raise ChecksumError(
            f"Downloading Fashion-MNIST into {dest} failed; nothing was kept:\n{details}"
        )
    raise DataNotFoundError(_how_to_get(searched, [f"Downloading into {dest} failed:", details]))


def download_fashion_mnist(
    dest: str | os.PathLike | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float | None = None,
) -> Path:
    """Download the Fashion-MNIST files that ``dest`` lacks and return ``dest``.

    ``dest`` defaults to :func:`normtut.config.cache_dir`; ``mirrors`` to :data:`MIRRORS`, tried
    in order for each file; ``timeout`` to :data:`DOWNLOAD_TIMEOUT`. Each file is streamed into
    a temporary file in ``dest``, verified (see the module docstring) and only then renamed to
    ``NAME.gz``; a failed or interrupted download leaves nothing behind.

    Raises:
        ChecksumError: a mirror served a file that failed its checksum and no other mirror
            served a good one.
        DataNotFoundError: no mirror could be reached; the message says how else to get the
            files.
    """
    dest = Path(dest).expanduser() if dest is not None else config.cache_dir()
    failures = _download(dest, mirrors, timeout)
    if failures:
        _raise_download_failure([dest], dest, failures)
    return dest


def fashion_mnist_dir(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The folder to load Fashion-MNIST from: found (:func:`locate_fashion_mnist`) or downloaded.

    With ``root``, or else with ``$NORMTUT_DATA`` set, only that folder is searched (and
    downloaded into); otherwise ``~/.cache/normtut/fashion-mnist`` and
    ``/usr/share/datasets/fashion-mnist`` are, and a download goes to
    :func:`normtut.config.cache_dir`.

    Raises:
        DataNotFoundError: nothing found, and ``download`` is false or no mirror could be
            reached; the message lists every folder searched, the files each one lacks and how
            to get them.
        ChecksumError: a download arrived corrupt.
    """
    folder = locate_fashion_mnist(root)
    if folder is not None:
        return folder
    searched = _search_paths(root)
    if not download:
        raise DataNotFoundError(_how_to_get(searched, ["Downloading was disabled."]))
    dest = searched[0] if len(searched) == 1 else config.cache_dir()
    failures = _download(dest, None, None)
    if failures:
        _raise_download_failure(searched, dest, failures)
    return dest


def prepare_torchvision_fashion_mnist(
    root: str | os.PathLike = "../data",
    source: str | os.PathLike | None = None,
    download: bool = True,
) -> Path:
    """Put raw Fashion-MNIST files where torchvision (and so d2l) looks, and return that folder.

    ``torchvision.datasets.FashionMNIST(root, download=True)``, which
    ``d2l.load_data_fashion_mnist`` calls with ``root="../data"``, uses the four raw files in
    ``root/FashionMNIST/raw/`` when they are all there and otherwise downloads the ``.gz``
    files and checks their official MD5. Debian's re-compressed ``.gz`` files fail that check,
    so copying them there does not help; this function writes the verified, decompressed
    content instead, from the folder that :func:`fashion_mnist_dir` finds (``source`` alone,
    when given). Each file is written to a temporary file and renamed, and a file that is
    already there with the right content is left alone. Example (d2l, offline)::

        from normtut.data import prepare_torchvision_fashion_mnist
        prepare_torchvision_fashion_mnist("../data")   # once; relative to the working dir
        train_iter, test_iter = d2l.load_data_fashion_mnist(256)

    Raises:
        DataNotFoundError, ChecksumError: as :func:`fashion_mnist_dir` and the loaders.
    """
    folder = fashion_mnist_dir(source, download)
    raw = Path(root).expanduser() / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in _ALL_NAMES:
        target = raw / name
        if target.is_file():
            try:
                _checked_content(target, name)
                continue
            except (ChecksumError, IDXFormatError):
                pass  # a damaged or stale copy: replaced below
        path = _find_file(folder, name)
        if path is None:  # removed since it was located
            raise DataNotFoundError(f"{folder} has no {name} or {name}.gz")
        content = _checked_content(path, name)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=raw)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(content)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return raw


# --- arrays, datasets, loaders -------------------------------------------------------------


def _load_split(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Verified (images, labels) of one split, cached per process; arrays are read-only."""
    split = "train" if train else "test"
    paths = []
    for name in FILE_NAMES[split]:
        path = _find_file(folder, name)
        if path is None:
            raise DataNotFoundError(f"{folder} has no {name} or {name}.gz")
        paths.append(path)
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    if key in _ARRAYS:
        return _ARRAYS[key]
    images_path, labels_path = paths
    images = _parse_idx(_checked_content(images_path), str(images_path))
    labels = _parse_idx(_checked_content(labels_path), str(labels_path))
    if images.dtype != np.uint8 or images.ndim != 3:
        raise IDXFormatError(
            f"{images_path}: expected uint8 images of shape (N, H, W), got {images.dtype} "
            f"{images.shape}"
        )
    if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise IDXFormatError(
            f"{labels_path}: expected {images.shape[0]} uint8 labels to match {images_path}, "
            f"got {labels.dtype} {labels.shape}"
        )
    if labels.size and labels.max() >= len(TEXT_LABELS):
        raise IDXFormatError(f"{labels_path}: label {labels.max()} is out of range 0..9")
    labels = labels.astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    _ARRAYS[key] = (images, labels)
    return images, labels


def load_fashion_mnist_arrays(
    train: bool = True, root: str | os.PathLike | None = None, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST as NumPy arrays: ``uint8`` images ``(N, 28, 28)`` and ``int64`` labels.

    ``train=True`` gives the 60000 training examples, ``False`` the 10000 test examples. The
    files are located (or downloaded, see :func:`fashion_mnist_dir`), verified and parsed once
    per process; each call returns fresh copies, so changing them does not change the cache.
    """
    images, labels = _load_split(fashion_mnist_dir(root, download), train)
    return images.copy(), labels.copy()


def _size_pair(resize: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(resize, int):
        size: tuple = (resize, resize)
    elif isinstance(resize, Sequence) and not isinstance(resize, str):
        size = tuple(resize)
    else:
        size = ()
    if len(size) != 2 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size
    ):
        raise ValueError(f"resize must be a positive int or (height, width), got {resize!r}")
    return size


def _to_tensors(
    images: np.ndarray, labels: np.ndarray, resize: int | Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``(N, H, W)`` -> float32 ``(N, 1, H', W')`` in [0, 1] (``ToTensor``), int64 labels."""
    X = torch.tensor(images).unsqueeze(1).to(torch.float32).div_(255)
    if resize is not None:
        size = _size_pair(resize)
        if size != tuple(X.shape[-2:]):
            X = F.interpolate(X, size=size, mode="bilinear", antialias=True, align_corners=False)
            X.clamp_(0.0, 1.0)
    return X, torch.tensor(labels, dtype=torch.int64)


def _balanced_subset(labels: np.ndarray, size: int) -> np.ndarray:
    """Indices of the first examples of each class, ``size`` in all, in dataset order."""
    classes = np.unique(labels)
    if size >= len(labels):
        return np.arange(len(labels))
    quota = {c: size // len(classes) + (i < size % len(classes)) for i, c in enumerate(classes)}
    chosen = np.concatenate([np.flatnonzero(labels == c)[: quota[c]] for c in classes])
    if len(chosen) < size:  # some class is too small: fill up with the next unused examples
        rest = np.setdiff1d(np.arange(len(labels)), chosen)
        chosen = np.concatenate([chosen, rest[: size - len(chosen)]])
    return np.sort(chosen)


class FashionMNIST(Dataset):
    """Fashion-MNIST as a map-style ``Dataset`` of ``(image, label)`` pairs.

    Like torchvision's ``FashionMNIST`` with ``transforms.ToTensor()`` (and ``Resize``): each
    image is a ``float32`` tensor ``(1, H, W)`` in ``[0, 1]``, each label an ``int``. All images
    are converted (and resized, with antialiased bilinear interpolation) once, when the dataset
    is built, and kept in :attr:`images`; :attr:`targets` holds the ``int64`` labels. Memory:
    ``N * H * W * 4`` bytes (188 MB for the 60000 training images at 28x28).

    Args:
        root: folder holding the four files; ``None`` searches the default places.
        train: the 60000 training examples (``True``) or the 10000 test examples.
        resize: ``None``, an int (square) or ``(height, width)``.
        download: download into the cache when no copy is found.
    """

    classes = TEXT_LABELS

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train: bool = True,
        resize: int | Sequence[int] | None = None,
        download: bool = True,
    ) -> None:
        self.root = fashion_mnist_dir(root, download)
        self.train = train
        images, labels = _load_split(self.root, train)
        self.images, self.targets = _to_tensors(images, labels, resize)

    def __len__(self) -> int:
        return self.targets.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        shape = "x".join(map(str, self.images.shape[1:]))
        return f"FashionMNIST({split}, {len(self)} images of {shape}, root={self.root})"


def _tensor_loader(
    tensors: Sequence[torch.Tensor], batch_size: int, shuffle: bool, num_workers: int = 0
) -> DataLoader:
    """A ``DataLoader`` over in-memory tensors that fetches a whole batch with one index op.

    The sampler yields lists of indices and ``TensorDataset`` indexes every tensor with such a
    list, so no Python code runs per example. Because the batching is done by the sampler,
    ``loader.batch_size`` is ``None``; the batch size is ``loader.sampler.batch_size``.
    """
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    dataset = TensorDataset(*tensors)
    order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=BatchSampler(order, batch_size, drop_last=False),
        num_workers=num_workers,
    )


def load_data_fashion_mnist(
    batch_size: int,
    resize: int | Sequence[int] | None = None,
    *,
    root: str | os.PathLike | None = None,
    num_workers: int = 0,
    download: bool = True,
) -> tuple[DataLoader, DataLoader]:
    """Fashion-MNIST as d2l's ``(train_iter, test_iter)``: shuffled train, ordered test loader.

    Batches are ``(X, y)`` with ``X`` ``float32`` ``(batch, 1, H, W)`` in ``[0, 1]`` and ``y``
    ``int64`` ``(batch,)``; ``H = W = 28`` unless ``resize`` (an int or ``(height, width)``)
    asks for another size (antialiased bilinear, as torchvision's ``Resize``). The last batch
    may be smaller. Shuffling uses torch's global generator, so ``normtut.config.set_seed``
    makes the order reproducible.

    In quick mode (``NORMTUT_QUICK=1``) the loaders hold :data:`QUICK_TRAIN_SIZE` and
    :data:`QUICK_TEST_SIZE` examples: the first ones of each class, balanced over the classes.
    """
    folder = fashion_mnist_dir(root, download)
    loaders = []
    for train, quick_size in ((True, QUICK_TRAIN_SIZE), (False, QUICK_TEST_SIZE)):
        images, labels = _load_split(folder, train)
        if config.is_quick():
            keep = _balanced_subset(labels, quick_size)
            images, labels = images[keep], labels[keep]
        X, y = _to_tensors(images, labels, resize)
        loaders.append(_tensor_loader((X, y), batch_size, shuffle=train, num_workers=num_workers))
    return loaders[0], loaders[1]


def get_fashion_mnist_labels(labels: Iterable[int] | torch.Tensor | np.ndarray) -> list[str]:
    """Text labels (d2l's names, :data:`TEXT_LABELS`) of numeric Fashion-MNIST labels."""
    if isinstance(labels, (torch.Tensor, np.ndarray)):
        labels = labels.reshape(-1).tolist()
    return [TEXT_LABELS[int(i)] for i in labels]


def clear_cache() -> None:
    """Forget the verified files and loaded arrays of this process."""
    _VERIFIED.clear()
    _ARRAYS.clear()


# --- synthetic data ------------------------------------------------------------------------


def synthetic_data(
    w: torch.Tensor | Sequence[float],
    b: float,
    num_examples: int,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Linear-regression data (d2l): :math:`y = Xw + b + \epsilon` with Gaussian noise.

    ``X`` is ``(num_examples, len(w))`` with standard normal entries and ``y`` is
    ``(num_examples, 1)``; :math:`\epsilon \sim N(0, \sigma^2)` with :math:`\sigma` =
    ``noise``. Pass ``generator`` for a private random stream. The dtype is ``w``'s (the
    default float dtype for a list of numbers).
    """
    w = torch.as_tensor(w)
    if not w.is_floating_point():
        w = w.to(torch.get_default_dtype())
    X = torch.randn((num_examples, w.numel()), generator=generator, dtype=w.dtype)
    y = X @ w.reshape(-1) + b
    y = y + noise * torch.randn(y.shape, generator=generator, dtype=w.dtype)
    return X, y.reshape(-1, 1)


def load_array(
    data_arrays: Sequence[torch.Tensor], batch_size: int, is_train: bool = True
) -> DataLoader:
    """A ``DataLoader`` over in-memory tensors (d2l): shuffled when ``is_train``.

    Yields lists ``[t[batch] for t in data_arrays]``; each batch is fetched with one indexing
    operation per tensor.
    """
    return _tensor_loader(tuple(data_arrays), batch_size, shuffle=is_train)
