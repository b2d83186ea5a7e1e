"""normtut: reference implementations for the normtut book.

How PyTorch models hold, initialize, share, normalize and update their parameters. Every
module is a drop-in for its PyTorch twin and is tested against it; the chapters of the book
import these modules instead of re-defining helpers.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("normtut")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
