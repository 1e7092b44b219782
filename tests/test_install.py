"""Installing like the field: lower bounds only in pyproject.toml (so PyITA installs beside MACE or nequip), the
tested versions pinned in constraints.txt, a LICENSE that matches the metadata, and ``python -m pyita``.

The metadata is read from pyproject.toml itself: the installed package is editable, and its metadata may be
older than the file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

import pyita

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements() -> list[Requirement]:
    """Every dependency, the optional ones included."""
    found = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        found += [Requirement(r) for r in extra]
    return found


def pins() -> dict[str, str]:
    """constraints.txt as {normalised name: version}; every non-comment line must be an exact pin."""
    found = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version and " " not in version, f"constraints.txt: {line!r} is not name==version"
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def test_every_dependency_has_a_lower_bound_and_no_pin():
    for req in requirements():
        operators = {spec.operator for spec in req.specifier}
        assert ">=" in operators, f"{req} has no lower bound"
        assert not operators & {"==", "===", "~="}, f"{req} pins a version: a neighbour package could not upgrade"


def test_torch_lower_bound_is_the_tested_version():
    torch = next(r for r in requirements() if r.name == "torch")
    assert str(torch.specifier) == ">=2.13.0"
    assert "threadpoolctl" in {r.name for r in requirements()}


def test_constraints_pin_every_dependency():
    pinned = pins()
    assert pinned["torch"] == "2.13.0"      # matches the local CPU wheel 2.13.0+cpu too (PEP 440 local labels)
    for req in requirements():
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pinned, f"constraints.txt does not pin {req.name}"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} breaks {req}"
    assert "pyita" not in pinned


def test_ci_and_readme_install_through_the_constraints():
    assert "pip install -c constraints.txt -e '.[test]'" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "pip install -c constraints.txt -e '.[test]'" in readme
    assert "pip install -c constraints.txt -e . &&" in readme
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme


def test_license_file_matches_the_metadata():
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the PyITA developers" in text
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert any(Requirement(r).name == "setuptools" and Requirement(r).specifier.contains("77") for r in build)
    assert not any(Requirement(r).name == "setuptools" and Requirement(r).specifier.contains("76") for r in build)


def test_classifiers_name_the_python_versions_and_fields():
    classifiers = PROJECT["classifiers"]
    for wanted in ("Programming Language :: Python :: 3.11", "Topic :: Scientific/Engineering :: Physics",
                   "Topic :: Scientific/Engineering :: Chemistry", "Operating System :: OS Independent"):
        assert wanted in classifiers
    assert not any(c.startswith("License ::") for c in classifiers)   # SPDX license field instead (PEP 639)


def test_python_m_pyita_runs():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "pyita", "--version"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pyita {pyita.__version__}"
    assert PROJECT["version"] == pyita.__version__
