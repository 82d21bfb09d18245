"""What pyproject.toml declares: every third-party module the package imports, each with a lower bound that
`make minimums` can install (scripts/minimum_versions.py)."""

from __future__ import annotations

import ast
import importlib.util
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _minimum_versions():
    spec = importlib.util.spec_from_file_location("_minimum_versions", REPO / "scripts/minimum_versions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _declared() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in ("peers", "search")
                                              for r in project["optional-dependencies"][extra]]
    return _minimum_versions().floors(requirements)


def test_packaging__every_imported_distribution_is_declared():
    imported = set()
    for path in (REPO / "stef_ray").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m != "stef_ray"}
    distributions = packages_distributions()
    declared = {name.replace("_", "-") for name in _declared()}
    missing = [m for m in sorted(third_party)
               if not {d.lower().replace("_", "-") for d in distributions.get(m, [m])} & declared]
    assert not missing, f"imported by stef_ray but not declared in pyproject.toml: {missing}"
    assert {"fastapi", "ray", "mlflow", "torch"} <= declared


def test_packaging__every_dependency_has_a_floor_and_the_minimums_pin_it():
    floors = _declared()
    assert floors["ray"] and floors["mlflow"]
    script = _minimum_versions()
    with pytest.raises(SystemExit, match="no '>=' lower bound"):
        script.floors(["numpy"])
    assert script.floors(["ray[tune,serve]>=2.56  "]) == {"ray": "2.56"}
