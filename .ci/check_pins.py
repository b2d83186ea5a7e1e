"""Fail unless the installed versions are exactly the pins of a constraints file.

Usage: python .ci/check_pins.py .ci/lower-bounds.txt (run by `make lower-bounds`, so that the
unit tests are known to have run on the lower bounds and not on whatever pip chose).
"""

import sys
from importlib.metadata import version
from pathlib import Path

pins = {}
for line in Path(sys.argv[1]).read_text().splitlines():
    line = line.split("#", 1)[0].strip()
    if line:
        name, _, wanted = line.partition("==")
        pins[name.strip()] = wanted.strip()
wrong = {name: (wanted, version(name)) for name, wanted in pins.items() if version(name) != wanted}
if wrong:
    sys.exit(f"installed versions are not the pins of {sys.argv[1]}: {wrong}")
print("lower bounds installed:", ", ".join(f"{n}=={v}" for n, v in pins.items()))
