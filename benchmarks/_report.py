"""What every benchmark script records next to its numbers, and where it saves them."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch


def save(result: dict, path: Path | None) -> dict:
    """Add the torch version, the machine and the command line to ``result``; write it as
    JSON to ``path`` when one is given. Returns ``result``."""
    result["torch"] = torch.__version__
    result["machine"] = f"{platform.machine()}, {platform.processor() or platform.system()}"
    result["command"] = " ".join(sys.argv)
    if path:
        path.write_text(json.dumps(result, indent=2))
        print(f"saved {path}")
    return result
