"""Where aenet's programs are: generate.x, train.x and predict.x, also under version-suffixed names such as
``generate.x-2.0.4-gfortran_serial``, from ``--aenet-bin``, the environment or PATH."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from pyita.backends.aenet.settings import ENV_VARS, PROGRAMS
from pyita.errors import PyitaError


def _version_key(name: str) -> tuple:
    match = re.search(r"(\d+(?:\.\d+)+)", name)
    return tuple(int(x) for x in match.group(1).split(".")) if match else ()


def _candidates(directory: Path, base: str) -> list[Path]:
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    pattern = re.compile(re.escape(base) + r"([-_.].+)?")
    hits = [p for p in entries if pattern.fullmatch(p.name) and p.is_file() and os.access(p, os.X_OK)
            and not p.name.endswith((".o", ".mod", ".f90", ".F90"))]
    # Exact name first; then serial builds before MPI builds (which need mpirun); then the newest version.
    return sorted(hits, key=lambda p: (p.name != base, "mpi" in p.name.lower(), "serial" not in p.name.lower(),
                                       tuple(-v for v in _version_key(p.name)), p.name))


def find_executables(aenet_bin: str | Path | None = None, environ: dict | None = None) -> dict[str, Path]:
    """Paths of generate.x, train.x and predict.x.

    Looked for, in order: ``aenet_bin`` (a folder; when given, only there), the per-program variables
    AENET_GENERATE / AENET_TRAIN / AENET_PREDICT (a path or a name on PATH), the folder in AENET_BIN, then
    PATH. Names may carry version suffixes (``train.x-2.0.4-gfortran_serial``).
    """
    env = os.environ if environ is None else environ
    path_dirs = [Path(p) for p in env.get("PATH", "").split(os.pathsep) if p]
    found: dict[str, Path] = {}
    looked: list[str] = []
    if aenet_bin is not None:
        folder = Path(aenet_bin)
        if not folder.is_dir():
            raise PyitaError(f"--aenet-bin {folder} is not a folder")
        dirs = [folder]
        looked.append(f"--aenet-bin {folder}")
    else:
        dirs = []
        if env.get("AENET_BIN"):
            dirs.append(Path(env["AENET_BIN"]))
            looked.append(f"AENET_BIN={env['AENET_BIN']}")
        dirs += path_dirs
        looked.append("PATH")
    for step, base in PROGRAMS.items():
        override = env.get(ENV_VARS[step]) if aenet_bin is None else None
        if override:
            candidate = Path(override)
            if os.sep in override or candidate.is_file():
                if not (candidate.is_file() and os.access(candidate, os.X_OK)):
                    raise PyitaError(f"{ENV_VARS[step]}={override} is not an executable file")
                found[step] = candidate
                continue
            which = shutil.which(override, path=env.get("PATH", ""))
            if which is None:
                raise PyitaError(f"{ENV_VARS[step]}={override}: no such program on PATH")
            found[step] = Path(which)
            continue
        for directory in dirs:
            hits = _candidates(directory, base)
            if hits:
                found[step] = hits[0]
                break
    found = {step: Path(os.path.abspath(path)) for step, path in found.items()}   # runs with cwd = run folder
    missing = [PROGRAMS[s] for s in PROGRAMS if s not in found]
    if missing:
        raise PyitaError(f"aenet not found: no {', '.join(missing)} (looked in {'; '.join(looked)}). Install "
                         "aenet (http://ann.atomistic.net) and give its bin folder with --aenet-bin or AENET_BIN, "
                         "or name each program with AENET_GENERATE / AENET_TRAIN / AENET_PREDICT")
    return found
