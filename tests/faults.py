"""Helpers for the fault-injection tests: a small aenet case on disk, the CLI as a real subprocess, checksums
of the inputs, and the process tree (to prove that no worker outlives an interrupted command)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pyita.architecture import ChebyshevSetup
from pyita.io.aenet_inputs import format_stp
from pyita.io.xsf_write import format_xsf
from pyita.structure import Structure

#: Rutile TiO2 (u = 0.3), fractional coordinates: no two atoms closer than 1.9 Å.
RUTILE_CELL = np.diag([4.6, 4.6, 2.96])
RUTILE_SYMBOLS = ["Ti", "Ti", "O", "O", "O", "O"]
RUTILE_FRACTIONAL = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.3, 0.3, 0], [0.7, 0.7, 0], [0.8, 0.2, 0.5],
                              [0.2, 0.8, 0.5]])


def rutile(k: int) -> Structure:
    """A rattled rutile cell with made-up but finite labels (seeded by ``k``)."""
    rng = np.random.default_rng(k)
    positions = RUTILE_FRACTIONAL @ RUTILE_CELL + rng.normal(0, 0.05, (6, 3))
    return Structure(symbols=list(RUTILE_SYMBOLS), positions=positions, cell=RUTILE_CELL.copy(),
                     energy=-4985.0 - 0.01 * k, forces=rng.normal(0, 0.5, (6, 3)))


def make_case(root: Path, n: int = 6) -> Path:
    """``root/generate.in`` listing ``root/xsf/sNN.xsf`` (relative paths) with its setup files beside it, as an
    aenet user keeps a data set."""
    (root / "xsf").mkdir(parents=True)
    for sym in ("Ti", "O"):
        (root / f"{sym}.stp").write_text(format_stp(sym, ["Ti", "O"], ChebyshevSetup()))
    names = []
    for k in range(n):
        name = f"xsf/s{k:02d}.xsf"
        (root / name).write_text(format_xsf(rutile(k)))
        names.append(name)
    (root / "generate.in").write_text(
        "OUTPUT  TiO.train\n\nTYPES\n2\nTi  -1626.66972707   | eV\nO    -433.23448532   | eV\n\n"
        "SETUPS\nTi   Ti.stp\nO    O.stp\n\n" + f"FILES\n{len(names)}\n" + "\n".join(names) + "\n")
    return root / "generate.in"


def cli_command(*args) -> list[str]:
    return [sys.executable, "-m", "pyita.cli", *map(str, args)]


def cli_env(**extra) -> dict:
    return {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1", **extra}


def run_cli(*args, cwd: Path, timeout: float = 300, **env) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, env=cli_env(**env))


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` (inclusive), with a checksum for files: any change shows."""
    root = Path(root)
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def error_line(result: subprocess.CompletedProcess, *words: str) -> str:
    """Assert exit status 2 and one ``error:`` line holding ``words``, no traceback; return the line."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def descendants(pid: int) -> set[int]:
    """All living descendants of ``pid`` (from /proc)."""
    parent_of = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parent_of[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parent_of.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """True for a process that exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def squeeze(xsf: Path, gap: float, atoms: tuple[int, int] = (2, 3)) -> None:
    """Rewrite the XSF file ``xsf`` with its atom ``atoms[1]`` (0-based) ``gap`` Å from atom ``atoms[0]``
    along x: near-coincident atoms (gap 0: coincident)."""
    from pyita.io.xsf import read_xsf

    structure = read_xsf(xsf)
    structure.positions[atoms[1]] = structure.positions[atoms[0]] + [gap, 0.0, 0.0]
    xsf.write_text(format_xsf(structure))


def warning_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]


def nothing_written(folder: Path, out: str) -> None:
    """Assert that neither the output ``folder/out`` nor a temporary sibling of it exists."""
    assert not (folder / out).exists()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(f".{out}.tmp-")]
