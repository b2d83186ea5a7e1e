"""Keep the book's execution cache honest: re-execute the chapters when `normtut` changes.

Jupyter Book's cache (``_build/.jupyter_cache``) keys each notebook on its own code cells only,
so editing ``normtut/*.py`` and rebuilding would serve the old outputs. ``make book`` calls

    python book/_ext/package_cache.py check   # before the build: drop a stale cache, and
                                              # record the key the new cache is built with
    python book/_ext/package_cache.py stamp   # after the build: the same key, again

The key hashes every file of the package plus ``pyproject.toml`` (dependency bounds) and the
versions of torch, numpy and matplotlib that execute the chapters.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "_build"
STAMP_NAME = ".normtut_cache_key"


def cache_key(root: Path = ROOT) -> str:
    """A hash of what the executed chapters depend on besides their own cells."""
    digest = hashlib.sha256()
    files = sorted((root / "normtut").rglob("*.py")) + [root / "pyproject.toml"]
    for path in files:
        if "__pycache__" in path.parts or not path.exists():
            continue
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    for dist in ("torch", "numpy", "matplotlib"):
        try:
            digest.update(f"{dist}=={metadata.version(dist)}\0".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{dist} missing\0".encode())
    return digest.hexdigest()


def check(root: Path = ROOT, build: Path = BUILD) -> bool:
    """Delete the execution cache when its key differs from the package's. True if deleted."""
    stamp = build / STAMP_NAME
    cache = build / ".jupyter_cache"
    current = cache_key(root)
    if stamp.exists() and stamp.read_text().strip() == current:
        return False
    dropped = cache.exists()
    if dropped:
        shutil.rmtree(cache)
        print("normtut changed since the last build: every chapter is executed again")
    # what is executed from now on belongs to this key, even if the build then fails
    build.mkdir(parents=True, exist_ok=True)
    stamp.write_text(current + "\n")
    return dropped


def stamp(root: Path = ROOT, build: Path = BUILD) -> None:
    """Record the key the cache was built with (after a successful build)."""
    build.mkdir(parents=True, exist_ok=True)
    (build / STAMP_NAME).write_text(cache_key(root) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in {"check", "stamp"}:
        sys.exit("usage: package_cache.py check|stamp")
    check() if sys.argv[1] == "check" else stamp()
