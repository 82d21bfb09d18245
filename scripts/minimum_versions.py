"""Print a pip constraints file that pins every direct dependency of stef-ray (and its `peers` extra) to the
lower bound pyproject.toml declares, so that those floors can be installed and tested (`make minimums`).

torch is left out: `make minimums` installs it first from TORCH_SPEC, as `make install` does (on a CPU
machine the local CPU wheel; PyPI's torch is a CUDA build of some 3 GB). `make minimums
TORCH_SPEC=torch==2.2.0` tests torch's floor as well: the CUDA wheel runs on a CPU.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
FLOOR = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)")


def floors(requirements: list[str]) -> dict[str, str]:
    out = {}
    for requirement in requirements:
        match = FLOOR.match(requirement)
        if match is None:
            sys.exit(f"pyproject.toml: {requirement!r} has no '>=' lower bound; give it one")
        out[match.group(1).lower()] = match.group(3)
    return out


def main() -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    pins = floors(project["dependencies"]) | floors(project["optional-dependencies"]["peers"])
    pins.pop("torch", None)
    print("# The lower bounds of pyproject.toml (scripts/minimum_versions.py); torch: see that script.")
    for name, version in sorted(pins.items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
