"""The aenet backend: write complete aenet run folders, run aenet where it is installed, read its results.

``prepare_aenet`` (``pyita aenet prepare``) writes a self-contained folder: generate.in, one .stp per species,
train.in, predict.in, run.sh, the structures under ``xsf/``, and a record (``pyita-aenet.json``,
``structures.csv``, ``test-parents.txt``). Test parents are held out by PyITA, not by aenet: aenet's
TESTPERCENT picks test structures at random among everything in the training set file, so with augmented
data it would put derived structures of a test parent into training. The test parents and all their derived
structures are therefore left out of generate.in, TESTPERCENT is 0, and the test parents are predicted by
predict.x instead.

``run_aenet`` (``pyita aenet run``) finds generate.x, train.x and predict.x (version-suffixed names such as
``generate.x-2.0.4-gfortran_serial`` included), runs them with a progress display, keeps their output in
``generate.out``, ``train.out`` and ``predict.out``, and decides success from that output, because the
programs exit with status 0 after most errors. It then turns predict.x's output into the same error tables the
embedded trainer produces (per-structure per-atom energy errors in meV/atom, per-component force errors in
eV/Å). ``train_and_evaluate_aenet`` does all of it for the experiment runner.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import stat
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pyita import __version__
from pyita.errors import InputError, PyitaError
from pyita.io.aenet_inputs import (BehlerSetup, ChebyshevSetup, PredictIn, TrainIn, arch_tag, format_method_line,
                                   format_predict_in, format_stp, format_train_in,
                                   parse_hidden)
from pyita.io import read_name_list
from pyita.io.atomic import atomic_output_dir, atomic_write, atomic_write_text
from pyita.io.outputs import data_inputs, guard_output
from pyita.io.generate_in import GenerateIn, format_generate_in
from pyita.io.xsf import format_xsf, read_xsf
from pyita.progress import progress_bar
from pyita.structure import Structure

__all__ = ["AenetSettings", "prepare_aenet", "write_run_folder", "run_aenet", "collect_results",
           "find_executables", "read_train_output", "read_energies_file", "read_predict_output",
           "error_tables", "scan_output", "fit_reference_energies", "train_and_evaluate_aenet", "experiment_backend",
           "PROGRAMS", "ENV_VARS"]

#: File names inside a run folder. None of the single-token ones contains '/', so nothing needs quoting.
TRAINSET = "aenet.train"
RECORD = "pyita-aenet.json"
RUN_STATE = "pyita-aenet-run.json"
STRUCTURES_CSV = "structures.csv"
TEST_PARENTS = "test-parents.txt"
INITIAL_DIR = "initial-networks"
PROGRAMS = {"generate": "generate.x", "train": "train.x", "predict": "predict.x"}
ENV_VARS = {"generate": "AENET_GENERATE", "train": "AENET_TRAIN", "predict": "AENET_PREDICT"}
INPUTS = {"generate": "generate.in", "train": "train.in", "predict": "predict.in"}
LOGS = {"generate": "generate.out", "train": "train.out", "predict": "predict.out"}
RESULT_FILES = ("errors-energy.csv", "errors-force.csv", "results.json")
#: Names aenet (or a run of ``pyita aenet run``) may leave in a run folder; used to refuse a folder that
#: holds output PyITA did not write.
_AENET_OUTPUT_PATTERNS = (re.escape(TRAINSET) + r"(\.forces)?", r".+\.nn(-\d+)?", r"energies\.(train|test)\.\d+",
                          r"train\.rngstate", r"(TRAIN|TEST)\.\d+", r"(generate|train|predict)\.(time|debug\d*)",
                          r"(generate|train|predict)\.out", r"errors-(energy|force)\.csv", r"results\.json")
_XSF_NAME = re.compile(r"[^A-Za-z0-9._+-]+")


# =============================================================================================== settings

@dataclass
class AenetSettings:
    """Everything that decides an aenet run besides the data.

    ``hidden`` as ``"15:tanh,15:tanh"`` or a list; ``method`` one of bfgs, lm, adam, online_sd, ekf with
    ``method_params`` (aenet's names, e.g. ``{"mu": 0.001, "samplesize": 100}`` for adam); ``max_energy``
    is aenet's MAXENERGY in eV/atom above the atomic reference energies (None: keep all);
    ``reference_energies`` maps species to eV (missing ones are fitted); ``initial_networks`` is a folder
    with one ``<Sym>.nn`` / ``<Sym>.*.nn`` per species that train.x starts from (same initial weights
    across conditions; a finished run folder works).
    """

    hidden: list = field(default_factory=lambda: [(15, "tanh"), (15, "tanh")])
    iterations: int = 500
    method: str = "bfgs"
    method_params: dict = field(default_factory=dict)
    max_energy: float | None = None
    descriptor: str = "chebyshev"
    chebyshev: ChebyshevSetup = field(default_factory=ChebyshevSetup)
    behler: BehlerSetup = field(default_factory=BehlerSetup)
    forces: bool = True
    sampling: str | None = None
    reference_energies: dict | None = None
    initial_networks: str | None = None

    def __post_init__(self) -> None:
        try:
            self.hidden = parse_hidden(self.hidden)
            format_method_line(self.method, self.method_params)
        except ValueError as exc:
            raise PyitaError(str(exc)) from None
        self.method = self.method.lower()
        if self.descriptor not in ("chebyshev", "behler"):
            raise PyitaError(f"descriptor must be chebyshev or behler, not {self.descriptor!r}")
        if int(self.iterations) != self.iterations or self.iterations < 0:
            raise PyitaError(f"iterations must be an integer ≥ 0, got {self.iterations}")
        if isinstance(self.chebyshev, dict):
            self.chebyshev = ChebyshevSetup(**self.chebyshev)
        if isinstance(self.behler, dict):
            self.behler = BehlerSetup(**self.behler)

    @property
    def setup(self):
        return self.chebyshev if self.descriptor == "chebyshev" else self.behler

    _ALIASES = {"epochs": "iterations", "max_iterations": "iterations", "hidden_layers": "hidden",
                "architecture": "hidden", "maxenergy": "max_energy", "types": "reference_energies"}

    @classmethod
    def from_dict(cls, settings: dict | "AenetSettings" | None) -> "AenetSettings":
        """Build from an experiment's trainer table; keys aenet cannot honour raise or warn."""
        if isinstance(settings, AenetSettings):
            return settings
        known = set(cls.__dataclass_fields__)
        settings = dict(settings or {})
        activation = settings.pop("activation", None)
        kwargs, ignored = {}, []
        for key, value in settings.items():
            key = cls._ALIASES.get(key, key)
            if key in known:
                kwargs[key] = value
            elif key in ("force_weight", "parent_child_weight"):
                if value:
                    raise PyitaError(f"aenet's Fortran train.x fits energies only: {key} = {value} needs the "
                                     "embedded trainer (backend = \"embedded\")")
            else:
                ignored.append(key)
        if activation is not None:
            hidden = kwargs.get("hidden", [15, 15])
            if not isinstance(hidden, str):
                kwargs["hidden"] = [(n, activation) if isinstance(n, int) else n for n in hidden]
        if ignored:
            warnings.warn(f"aenet backend ignores trainer settings it has no equivalent for: {sorted(ignored)}",
                          stacklevel=2)
        return cls(**kwargs)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("chebyshev")
        d.pop("behler")
        d["descriptor_settings"] = self.setup.as_dict()
        d["hidden"] = [list(layer) for layer in self.hidden]
        return d


# ====================================================================================== reference energies

def fit_reference_energies(structures: Sequence[Structure], species: Sequence[str],
                           fixed: dict[str, float] | None = None) -> tuple[dict[str, float], dict]:
    """Least-squares atomic energies: E_total ≈ Σ_s n_s·e_s, with the species in ``fixed`` held at their values.

    Returns (energies of the fitted species, info). When the compositions do not determine every species
    (e.g. all structures TiO2), the minimum-norm solution is used and ``info["rank_deficient"]`` is set: the
    cohesive energies of structures with those compositions are unaffected, the split between species is not.
    """
    from pyita.reference import composition_matrix

    fixed = dict(fixed or {})
    free = [s for s in species if s not in fixed]
    used = [s for s in structures if s.energy is not None and s.energy_kind == "total"]
    if not free:
        return {}, {"n_structures": len(used)}
    if not used:
        raise PyitaError("cannot fit atomic reference energies: no structure has a total energy "
                         "(give them with --types Sym=E,…)")
    counts = composition_matrix(used, list(species))
    energies = np.array([s.energy for s in used], dtype=float)
    columns = {s: k for k, s in enumerate(species)}
    for sym, value in fixed.items():
        if sym in columns:
            energies = energies - counts[:, columns[sym]] * value
    a = counts[:, [columns[s] for s in free]]
    solution, *_ = np.linalg.lstsq(a, energies, rcond=None)
    rank = int(np.linalg.matrix_rank(a))
    n_atoms = counts.sum(axis=1)
    residual = (energies - a @ solution) / n_atoms
    info = {"n_structures": len(used), "rank": rank, "rank_deficient": rank < len(free),
            "residual_rms_eV_per_atom": float(np.sqrt(np.mean(residual ** 2)))}
    return {s: float(e) for s, e in zip(free, solution)}, info


def _is_derived(structure: Structure) -> bool:
    """A Taylor-derived structure: made by ``pyita.augment`` or read back from a PyITA file."""
    return bool(structure.info.get("derived"))


def _cohesive_per_atom(structure: Structure, refs: dict[str, float]) -> float:
    """What aenet compares with MAXENERGY: a non-zero cohesive energy as is, else total − Σ references."""
    if structure.energy_kind == "cohesive" and structure.energy != 0:
        return structure.energy / len(structure)
    return (structure.energy - sum(refs[s] for s in structure.symbols)) / len(structure)


def parse_types(text: str | None) -> dict[str, float]:
    """``"Ti=-1626.67,O=-433.23"`` → {"Ti": -1626.67, "O": -433.23}."""
    out: dict[str, float] = {}
    if not text:
        return out
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        sym, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[sym.strip()] = float(value.replace("d", "e").replace("D", "e"))
        except ValueError:
            raise InputError(f"--types entry {item!r} must look like Sym=energy (eV), e.g. Ti=-1626.67") from None
    return out


# ============================================================================================ run folders

@dataclass
class _Entry:
    structure: Structure
    name: str = ""                   # path inside the run folder (FILES line)
    copy_from: Path | None = None    # an existing aenet XSF file to copy byte for byte
    placeholder: np.ndarray | None = None
    role: str = "train"
    source: str = ""
    parent: str = ""


def _safe_stem(text: str) -> str:
    base = Path(text.split("[")[0]).stem if text else "structure"
    if "[" in text:
        base += "-" + re.sub(r"\D", "", text.split("[", 1)[1]).zfill(5)
    return _XSF_NAME.sub("_", base).strip("._") or "structure"


def _display(name: str) -> str:
    """A path as users should read it ("aug/../data/x.xsf" → "data/x.xsf"); other names unchanged."""
    return os.path.normpath(name) if name and not name.endswith("]") else name


def _assign_names(entries: list[_Entry], folder: str) -> None:
    used: set[str] = set()
    for k, entry in enumerate(entries):
        stem = _safe_stem(entry.source or f"structure{k + 1:05d}")
        name = f"{folder}/{stem}.xsf"
        if name in used:
            name = f"{folder}/{stem}-{k + 1:05d}.xsf"
        used.add(name)
        entry.name = name


def _xsf_text(entry: _Entry) -> str:
    s = entry.structure
    if s.forces is not None:
        return format_xsf(s)
    forces = s.info.get("placeholder_forces")
    if forces is None:
        forces = entry.placeholder if entry.placeholder is not None else np.zeros_like(s.positions)
    if not any("placeholder" in c for c in s.comments):
        s = s.copy(comments=s.comments + ["pyita note: force columns are placeholders (aenet's generate.x "
                                          "needs them; train.x does not fit forces); they are not labels"])
    return format_xsf(s, forces=forces)


def _find_initial_networks(folder: str | Path, species: Sequence[str]) -> dict[str, Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("initial-networks folder does not exist", folder)
    found = {}
    for sym in species:
        hits = sorted(p for p in folder.iterdir() if p.is_file() and
                      (p.name == f"{sym}.nn" or re.fullmatch(re.escape(sym) + r"\..+\.nn", p.name)))
        if len(hits) != 1:
            what = "no" if not hits else f"{len(hits)}"
            raise InputError(f"{what} network files for {sym} ({sym}.nn or {sym}.<arch>.nn) in the "
                             "initial-networks folder; exactly one is needed", folder)
        found[sym] = hits[0]
    return found


def _run_sh(networks: dict[str, str], initial: bool) -> str:
    lines = [
        "#!/bin/sh",
        f"# Written by PyITA {__version__}: runs aenet's generate.x, train.x and predict.x in this folder.",
        "# Executables: set AENET_GENERATE, AENET_TRAIN and AENET_PREDICT (paths or names); the defaults",
        "# are generate.x, train.x and predict.x on PATH. `pyita aenet run` does the same with progress",
        "# display, finds version-suffixed names, and turns predict.out into error tables.",
        "# aenet exits with status 0 after most errors, so every log is searched for 'Error'.",
        "set -u",
        'cd "$(dirname "$0")" || exit 1',
        'GENERATE="${AENET_GENERATE:-generate.x}"',
        'TRAIN="${AENET_TRAIN:-train.x}"',
        'PREDICT="${AENET_PREDICT:-predict.x}"',
        "",
        "# generate.x refuses to overwrite its output, and train.x would silently continue from old networks.",
        f"for f in {TRAINSET} {' '.join(networks.values())}; do",
        '  if [ -e "$f" ]; then echo "run.sh: $f exists from an earlier run; remove it (and the other outputs)'
        ' first" >&2; exit 1; fi',
        "done",
        'if [ -e STOP ]; then echo "run.sh: a STOP file would halt train.x at once; remove it" >&2; exit 1; fi',
    ]
    if initial:
        lines += ["", "# Start training from the given initial networks (train.x overwrites the files it starts "
                      "from)."]
        lines += [f"cp {INITIAL_DIR}/{nn} {nn} || exit 1" for nn in networks.values()]
    lines += [
        "",
        "step() {",
        '  name=$1; shift',
        '  echo "running $* > $name.out"',
        '  "$@" > "$name.out" 2>&1',
        '  status=$?',
        '  if [ $status -ne 0 ] || grep -q -E "Error|ERROR|Fortran runtime error" "$name.out"; then',
        '    echo "run.sh: $name failed (exit status $status); from $name.out:" >&2',
        '    grep -E -A2 "Error|ERROR|Fortran runtime error" "$name.out" | head -n 12 >&2',
        "    exit 1",
        "  fi",
        "}",
        "",
        'step generate "$GENERATE" generate.in',
        'step train "$TRAIN" train.in',
        'step predict "$PREDICT" predict.in',
        'echo "done: train.out (epochs), energies.train.0, predict.out (test predictions)"',
    ]
    return "\n".join(lines) + "\n"


def write_run_folder(folder: Path, train: list[_Entry], test: list[_Entry], species: list[str],
                     refs: dict[str, float], settings: AenetSettings, record: dict,
                     test_label: str = "held-out test parents") -> dict:
    """Write every input file of a run into ``folder`` (an empty, usually temporary, folder)."""
    setup = settings.setup
    networks = {s: f"{s}.{arch_tag(settings.hidden)}.nn" for s in species}
    (folder / "xsf").mkdir(parents=True, exist_ok=True)
    for entry in train + test:
        target = folder / entry.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.copy_from is not None:
            shutil.copyfile(entry.copy_from, target)
        else:
            target.write_text(_xsf_text(entry))
    origin = record["reference_energies_origin"]
    gen_comments = ["! Written by PyITA: training structures only (test parents and their derived structures "
                    "are left out)."]
    fitted = [s for s in species if origin.get(s) == "fitted"]
    if fitted:
        gen_comments.append(f"! TYPES energies of {', '.join(fitted)} fitted by least squares on composition "
                            "(training structures); see pyita-aenet.json")
    gen = GenerateIn(output=TRAINSET, types={s: refs[s] for s in species},
                     setups={s: f"{s}.stp" for s in species}, files=[e.name for e in train],
                     options=gen_comments)
    (folder / "generate.in").write_text(format_generate_in(gen))
    descr = [f"{settings.descriptor} descriptor for {{sym}}, written by PyITA {__version__}"]
    for sym in species:
        (folder / f"{sym}.stp").write_text(
            format_stp(sym, species, setup, [d.format(sym=sym) for d in descr]))
    train_in = TrainIn(
        trainingset=TRAINSET, networks=networks, hidden=settings.hidden, iterations=int(settings.iterations),
        method=settings.method, method_params=settings.method_params, testpercent=0,
        max_energy=settings.max_energy, sampling=settings.sampling, save_energies=True,
        comments=[f"Written by PyITA {__version__}."],
        testpercent_comments=[
            "TESTPERCENT 0 on purpose: aenet's TESTPERCENT draws test structures at random from the training",
            "set file, which would put derived (Taylor) structures of a test parent into training. PyITA",
            "holds the test parents out instead (not in generate.in) and predict.in evaluates them."])
    (folder / "train.in").write_text(format_train_in(train_in))
    predict_in = PredictIn(networks=networks, files=[e.name for e in test], forces=settings.forces,
                           comments=[f"Written by PyITA {__version__}: predicts the {test_label}."])
    (folder / "predict.in").write_text(format_predict_in(predict_in))
    initial = settings.initial_networks is not None
    if initial:
        (folder / INITIAL_DIR).mkdir()
        for sym, path in _find_initial_networks(settings.initial_networks, species).items():
            shutil.copyfile(path, folder / INITIAL_DIR / networks[sym])
    run_sh = folder / "run.sh"
    run_sh.write_text(_run_sh(networks, initial))
    run_sh.chmod(run_sh.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    with open(folder / STRUCTURES_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "role", "kind", "source", "parent", "n_atoms", "energy_eV", "energy_kind"])
        for e in train + test:
            s = e.structure
            writer.writerow([e.name, e.role, "derived" if _is_derived(s) else "original", _display(e.source),
                             _display(e.parent), len(s), f"{s.energy:.10f}", s.energy_kind])
    record.update({
        "pyita_version": __version__, "backend": "aenet", "species": species,
        "reference_energies": {s: refs[s] for s in species},
        "networks": networks, "trainingset": TRAINSET, "test_set": test_label,
        "feature_count": {s: setup.n_features(len(species)) for s in species},
        "settings": settings.as_dict(),
        "counts": {**record.get("counts", {}), "train_files": len(train), "test_files": len(test)},
        "inputs": sorted(["generate.in", "train.in", "predict.in", "run.sh", STRUCTURES_CSV, RECORD, "xsf"]
                         + [f"{s}.stp" for s in species] + ([INITIAL_DIR] if initial else [])
                         + ([TEST_PARENTS] if (folder / TEST_PARENTS).exists() else [])),
    })
    (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


# ----------------------------------------------------------------------------------- parents and the split

def _keys(name: str, folder: Path | None = None) -> set[str]:
    if not name:
        return set()
    keys = {name, Path(name).name}
    try:
        keys.add(str(Path(name).resolve()))
        if folder is not None and not Path(name).is_absolute():
            keys.add(str((folder / name).resolve()))
    except OSError:
        pass
    return keys


def _link_parents(structures: list[Structure], folder: Path | None,
                  aliases: list[str | None] | None = None) -> tuple[list[int], dict[int, str]]:
    """Original indices, and for every structure the key of the parent group it belongs to.

    ``aliases`` are other names of the structures (the ``source`` recorded in an extended-XYZ frame), which
    is what a derived frame's ``parent_source`` names when PyITA wrote the file."""
    originals = [k for k, s in enumerate(structures) if not _is_derived(s)]
    by_key: dict[str, int] = {}
    basenames: dict[str, list[int]] = {}
    for k in originals:
        names = [structures[k].source or "", structures[k].info.get("original_source") or ""] + \
            ([aliases[k] or ""] if aliases and k < len(aliases) else [])
        for src in filter(None, names):
            for key in _keys(src) - {Path(src).name}:
                by_key.setdefault(key, k)
            basenames.setdefault(Path(src).name, []).append(k)
    group: dict[int, str] = {k: f"#{k}" for k in originals}
    unmatched = 0
    for k, s in enumerate(structures):
        if k in group:
            continue
        ps = str(s.info.get("parent_source") or "")
        hit = next((by_key[key] for key in _keys(ps, folder) if key in by_key), None)
        if hit is None and len(basenames.get(Path(ps).name, [])) == 1:
            hit = basenames[Path(ps).name][0]
        if hit is None:
            unmatched += 1
            group[k] = f"?{ps}"
        else:
            group[k] = f"#{hit}"
    if unmatched:
        warnings.warn(f"{unmatched} derived structures name a parent that is not in the data; they can only "
                      "be held out if the test-parents list names that parent", stacklevel=3)
    return originals, group


def _frame_sources(path: Path) -> list[str | None]:
    """The ``source`` each frame of an ASE-readable file records (PyITA's augmented extxyz stores the
    parent's file name there; ``Structure.from_ase`` replaces it with ``file[index]``)."""
    import ase.io

    try:
        return [atoms.info.get("source") for atoms in ase.io.iread(str(path), index=":")]
    except Exception:   # unreadable a second time: fall back to the names alone
        return []


def _read_names(path: str | Path) -> list[str]:
    return read_name_list(path, "test-parents list")


def _match_test_parents(entries: list[str], structures: list[Structure], originals: list[int],
                        group: dict[int, str], path, aliases: list[str | None] | None = None) -> set[str]:
    """Parent-group keys named by a test-parents list (exact name, resolved path or bare file name)."""
    wanted = set(entries)
    resolved = {str(Path(e).resolve()) for e in wanted}
    plain = {e for e in wanted if "/" not in e}
    chosen, used = set(), set()
    candidates: dict[str, list[str]] = {}
    for k in originals:
        alias = aliases[k] if aliases and k < len(aliases) else None
        candidates[group[k]] = [n for n in (structures[k].source, alias) if n]
    for k, g in group.items():
        if g.startswith("?"):
            candidates.setdefault(g, [g[1:]])
    for key, names_of in candidates.items():
        names = set()
        for name in names_of:
            names |= {name, str(Path(name).resolve()), Path(name).name}
        bare = {Path(n).name for n in names_of}
        if (names & wanted) or (names & resolved) or (bare & plain):
            chosen.add(key)
            used |= names
    unmatched = [e for e in wanted if e not in used and str(Path(e).resolve()) not in used]
    if unmatched:
        warnings.warn(f"{len(unmatched)} of {len(wanted)} test-parent entries match no structure, "
                      f"e.g. {unmatched[0]!r}", stacklevel=3)
    if not chosen:
        raise InputError("no entry of the test-parents list matches a structure of the data", path)
    return chosen


def prepare_aenet(data: str | Path, out: str | Path, settings: AenetSettings | dict | None = None,
                  test_parents: str | Path | None = None, test_fraction: float = 0.1, seed: int = 0,
                  types: dict[str, float] | None = None, overwrite: bool = False,
                  progress: bool = True) -> dict:
    """Write an aenet run folder for ``data`` (anything ``pyita.io.open_source`` reads, including the
    augmented generate.in of ``pyita augment``). Returns the record also saved as pyita-aenet.json."""
    from pyita.io import open_source

    settings = AenetSettings.from_dict(settings)
    if test_parents is None and not 0 <= test_fraction < 1:
        raise PyitaError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    start = time.perf_counter()
    source = open_source(data)
    extra = [p for p in (test_parents, settings.initial_networks) if p is not None]
    guard_output(out, data_inputs(data, source) + extra, "aenet prepare", overwrite)
    structures: list[Structure] = []
    with progress_bar(len(source) if source.xsf_paths is not None else None, "read", "structures",
                      enabled=progress) as advance:
        for s in source:
            structures.append(s)
            advance(1)
    if not structures:
        raise InputError("no structures", data)
    folder = source.generate_in.folder if source.generate_in is not None else None
    aliases = _frame_sources(source.ase_path) if source.ase_path is not None else None
    originals, group = _link_parents(structures, folder, aliases)
    if not originals:
        raise InputError("the data holds only derived structures: PyITA needs the original (parent) "
                         "structures to hold out a test set and to predict", data)
    # ---- the split, by parent
    if test_parents is not None:
        test_groups = _match_test_parents(_read_names(test_parents), structures, originals, group, test_parents,
                                          aliases)
        how = f"listed in {test_parents}"
    elif test_fraction > 0:
        if len(originals) < 2:
            raise PyitaError("one original structure cannot be split into training and test sets")
        n_test = min(len(originals) - 1, max(1, round(test_fraction * len(originals))))
        rng = np.random.default_rng(seed)
        picked = sorted(rng.choice(len(originals), size=n_test, replace=False))
        test_groups = {f"#{originals[i]}" for i in picked}
        how = f"random {test_fraction:g} of the originals, seed {seed}"
    else:
        test_groups = set()
        how = "none"
    test_idx = [k for k in originals if group[k] in test_groups]
    if test_groups and not test_idx:
        raise PyitaError("the test parents are not in the data (at most their derived structures are), so "
                         "there is nothing to predict; give data that includes the original structures")
    train_idx = [k for k in range(len(structures)) if group[k] not in test_groups]
    dropped_derived = sum(1 for k in range(len(structures))
                          if group[k] in test_groups and _is_derived(structures[k]))
    # ---- species and reference energies (fitted on training structures only: no test information)
    species: list[str] = []
    if source.generate_in is not None:
        species = [s for s in source.generate_in.types]
    for s in structures:
        for sym in s.symbols:
            if sym not in species:
                species.append(sym)
    present = {sym for s in structures for sym in s.symbols}
    species = [s for s in species if s in present]
    refs, origin, fit_info = _reference_energies(
        [structures[k] for k in train_idx if not _is_derived(structures[k])] or
        [structures[k] for k in train_idx], species, {**(settings.reference_energies or {}), **(types or {})},
        source.generate_in.types if source.generate_in is not None else {})
    # ---- MAXENERGY, applied by PyITA to training and test structures alike (aenet would filter training only)
    removed = {"train": 0, "test": 0}
    if settings.max_energy is not None:
        keep = lambda k: _cohesive_per_atom(structures[k], refs) <= settings.max_energy  # noqa: E731
        removed["train"] = sum(1 for k in train_idx if not keep(k))
        removed["test"] = sum(1 for k in test_idx if not keep(k))
        train_idx = [k for k in train_idx if keep(k)]
        test_idx = [k for k in test_idx if keep(k)]
    if not train_idx:
        raise PyitaError("no training structures left (all are test parents, their derived structures, or "
                         "above --max-energy)")
    test_label = "held-out test parents"
    if not test_idx:
        if test_groups:
            raise PyitaError("every test parent is above --max-energy: no test set left")
        test_label = "training originals (no test set held out; these are NOT test errors)"
        test_idx = [k for k in train_idx if not _is_derived(structures[k])]

    def entry(k: int, role: str) -> _Entry:
        s = structures[k]
        src = s.source or ""
        has_forces = s.forces is not None or "placeholder_forces" in s.info
        copy = Path(src) if (source.xsf_paths is not None and has_forces and src.lower().endswith(".xsf")
                             and Path(src).is_file()) else None
        parent = group[k]
        parent_name = structures[int(parent[1:])].source if parent.startswith("#") else parent[1:]
        placeholder = structures[int(parent[1:])].forces if parent.startswith("#") else None
        return _Entry(s, copy_from=copy, placeholder=placeholder, role=role, source=src,
                      parent=parent_name if _is_derived(s) else "")

    train = [entry(k, "train") for k in train_idx]
    test = [entry(k, "test" if test_groups else "predicted-training-original") for k in test_idx]
    _assign_names(train, "xsf/train")
    _assign_names(test, "xsf/test")
    n_derived = sum(1 for s in structures if _is_derived(s))
    record = {
        "command": "aenet prepare", "data": str(data), "split": how, "seed": seed,
        "reference_energies_origin": origin, "reference_energy_fit": fit_info,
        "counts": {"structures": len(structures), "originals": len(originals), "derived": n_derived,
                   "test_parents": len([k for k in originals if group[k] in test_groups]),
                   "derived_of_test_parents_dropped": dropped_derived,
                   "above_max_energy_train": removed["train"], "above_max_energy_test": removed["test"]},
    }
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        if test_groups:
            names = [os.path.normpath(structures[k].source) if structures[k].source else f"structure {k}"
                     for k in originals if group[k] in test_groups]
            names += [g[1:] for g in sorted(test_groups) if g.startswith("?")]
            (tmp / TEST_PARENTS).write_text(
                "# Test parents held out of training by `pyita aenet prepare` (" + how + ").\n"
                "# Reuse with `pyita augment --exclude` so they are never augmented.\n" + "\n".join(names) + "\n")
        record = write_run_folder(tmp, train, test, species, refs, settings, record, test_label)
        record["seconds"] = round(time.perf_counter() - start, 3)
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _reference_energies(train: list[Structure], species: list[str], user: dict[str, float],
                        from_input: dict[str, float]):
    """Reference energies with their origin: user (--types / settings), the input generate.in, or fitted."""
    refs: dict[str, float] = {}
    origin: dict[str, str] = {}
    unknown = set(user) - set(species)
    if unknown:
        warnings.warn(f"reference energies given for species not in the data: {sorted(unknown)}", stacklevel=3)
    for s in species:
        if s in user:
            refs[s], origin[s] = float(user[s]), "user"
    # An all-zero TYPES block is what `pyita augment` writes as a placeholder; treat it as missing.
    placeholder = bool(from_input) and all(v == 0.0 for v in from_input.values())
    for s in species:
        if s not in refs and s in from_input and not placeholder:
            refs[s], origin[s] = float(from_input[s]), "generate.in"
    missing = [s for s in species if s not in refs]
    fit_info: dict = {}
    if missing:
        fitted, fit_info = fit_reference_energies(train, species, fixed=refs)
        for s in missing:
            refs[s], origin[s] = fitted[s], "fitted"
        note = (f"atomic reference energies of {', '.join(missing)} fitted by least squares on composition "
                f"({fit_info['n_structures']} training structures, residual "
                f"{1000 * fit_info['residual_rms_eV_per_atom']:.1f} meV/atom RMS)")
        if placeholder:
            note += "; the input generate.in had placeholder TYPES energies (all 0.0)"
        if fit_info.get("rank_deficient"):
            note += ("; the compositions do not separate the species, so the minimum-norm split is used "
                     "(cohesive energies of these compositions are unaffected)")
        fit_info["note"] = note
        warnings.warn(note, stacklevel=3)
    return refs, origin, fit_info


# ============================================================================================ executables

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


# =============================================================================================== parsing

_FLOAT_3DIGIT_EXP = re.compile(r"^([+-]?\d*\.\d*)([+-]\d{3})$")


def _fortran_float(token: str) -> float:
    """A number as Fortran prints it: D exponents, 3-digit exponents without 'E', NaN/Infinity, '****'."""
    t = token.strip()
    if not t or set(t) == {"*"}:
        return math.nan
    low = t.lower()
    if low in ("nan", "+nan", "-nan"):
        return math.nan
    if low.lstrip("+-") in ("infinity", "inf"):
        return -math.inf if low.startswith("-") else math.inf
    t = t.replace("D", "E").replace("d", "e")
    match = _FLOAT_3DIGIT_EXP.match(t)
    if match:
        t = f"{match.group(1)}E{match.group(2)}"
    return float(t)


_ERROR_LINE = re.compile(r"\bError\b|\bERROR\b|Fortran runtime error|Segmentation fault|"
                         r"Program received signal|Floating point exception|Killed")
_WARNING_LINE = re.compile(r"\bWarning\b|\bWARNING\b|^\s*Skipping ")


def scan_output(text: str) -> tuple[list[str], list[str]]:
    """(error messages, warnings) in an aenet program's output; an error keeps up to two following lines."""
    lines = text.splitlines()
    errors, warns = [], []
    skip_until = -1
    for i, line in enumerate(lines):
        if i <= skip_until:
            continue
        if _ERROR_LINE.search(line):
            block = [line.strip()]
            if i > 0 and lines[i - 1].strip().startswith("At line"):
                block.insert(0, lines[i - 1].strip())
            for nxt in lines[i + 1:i + 3]:
                if not nxt.strip() or _ERROR_LINE.search(nxt):
                    break
                block.append(nxt.strip())
                skip_until = i + len(block) - 1
            errors.append(" ".join(block))
        elif _WARNING_LINE.search(line):
            warns.append(line.strip())
    return errors, warns


_EPOCH_ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*<\s*$")
_FINAL = re.compile(r"Final (MAE|RMSE) of (training|testing) set\s*=\s*(\S+)\s*meV/atom")
_COUNT = re.compile(r"^\s*(Training|Testing)\s+structures\s*:\s*(\d+)")


def read_train_output(path: str | Path) -> dict:
    """train.x's output: ``epochs`` (one dict per table row ending in ``<``: epoch, MAE_train, RMSE_train,
    MAE_test, RMSE_test, all in eV/atom as aenet prints them; NaN where aenet prints NaN, e.g. the test
    columns with TESTPERCENT 0) and ``final`` (aenet's closing summary in meV/atom, or None when training did
    not finish), plus ``n_train``, ``n_test``, ``errors`` and ``warnings``."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read train.x output: {exc}", path) from None
    epochs, final, counts = [], {}, {}
    for line in text.splitlines():
        row = _EPOCH_ROW.match(line)
        if row:
            values = [_fortran_float(v) for v in row.groups()[1:]]
            epochs.append({"epoch": int(row.group(1)), "MAE_train": values[0], "RMSE_train": values[1],
                           "MAE_test": values[2], "RMSE_test": values[3]})
            continue
        m = _FINAL.search(line)
        if m:
            final[f"{m.group(1)}_{'train' if m.group(2) == 'training' else 'test'}_meV_atom"] = \
                _fortran_float(m.group(3))
            continue
        m = _COUNT.match(line)
        if m:
            counts[m.group(1).lower()] = int(m.group(2))
    errors, warns = scan_output(text)
    return {"epochs": epochs, "final": final or None, "n_train": counts.get("training"),
            "n_test": counts.get("testing"), "errors": errors, "warnings": warns}


def read_energies_file(path: str | Path) -> list[dict]:
    """energies.train.N / energies.test.N of train.x (SAVE_ENERGIES), one dict per structure.

    Columns: ``Ref(eV) ANN(eV) #atoms Ref(eV/atom) ANN(eV/atom) Ref-ANN(eV/atom) Cost-Func`` then one count
    per species (``#Ti #O`` in the header; how many depends on the data) and the structure's path. "Ref" is
    the reference energy minus the atomic reference energies (aenet's cohesive energy). Keys: E_ref, E_ann,
    n_atoms, E_ref_per_atom, E_ann_per_atom, diff_per_atom (Ref−ANN, eV/atom), cost, counts {Sym: n}, file.
    """
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read energies file: {exc}", path) from None
    species: list[str] | None = None
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if species is None and "Ref(eV)" in line:
            tokens = line.split()
            species = [t[1:] for t in tokens if t.startswith("#") and t != "#atoms"]
            continue
        tokens = line.split()
        try:
            numbers = [_fortran_float(t) for t in tokens[:7]]
            n_atoms = int(tokens[2])
        except (ValueError, IndexError):
            raise InputError(f"not an energies row: {line.strip()[:60]!r}", path, lineno) from None
        n_species = len(species) if species else None
        if n_species is None:   # no header: species counts are the integers before the path
            n_species = 0
            while 7 + n_species < len(tokens) - 1 and re.fullmatch(r"\d+", tokens[7 + n_species]):
                n_species += 1
        parts = line.split(None, 7 + n_species)
        if len(parts) < 8 + n_species:
            raise InputError(f"energies row has {len(tokens)} fields, expected {8 + n_species}", path, lineno)
        try:
            counts = [int(t) for t in parts[7:7 + n_species]]
        except ValueError:
            raise InputError("species count columns are not integers (header and rows disagree?)",
                             path, lineno) from None
        names = species or [f"type{i + 1}" for i in range(n_species)]
        rows.append({"E_ref": numbers[0], "E_ann": numbers[1], "n_atoms": n_atoms,
                     "E_ref_per_atom": numbers[3], "E_ann_per_atom": numbers[4], "diff_per_atom": numbers[5],
                     "cost": numbers[6], "counts": dict(zip(names, counts)), "file": parts[7 + n_species].strip()})
    return rows


_HEADER_VALUE = re.compile(r"^\s*(Structure number|File name|Number of atoms|Number of species)\s*:\s*(.*?)\s*$")
_ENERGY = re.compile(r"^\s*(Cohesive|Total) energy\s*:\s*(\S+)\s*eV")
_LATTICE = re.compile(r"^\s*([abc])\s*=\s*\(\s*(\S+)\s+(\S+)\s+(\S+)\s*\)")


def _is_separator(line: str) -> bool:
    s = line.strip()
    return len(s) >= 10 and set(s) == {"+"}


def read_predict_output(path: str | Path) -> list[dict]:
    """predict.x's output: one dict per structure with file, n_atoms, cohesive_energy and total_energy
    (eV), symbols, positions (N×3 Å, as predict.x prints them: wrapped into the cell), forces (N×3 eV/Å,
    or None without FORCES), lattice (3×3 or None), structure_number, relaxed."""
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read predict.x output: {exc}", path) from None
    blocks, current = [], []
    for line in lines:
        if _is_separator(line):
            blocks.append(current)
            current = []
        else:
            current.append(line)
    blocks.append(current)
    out = []
    for block in blocks:
        parsed = _parse_predict_block(block, path)
        if parsed is not None:
            out.append(parsed)
    return out


def _parse_predict_block(lines: list[str], path) -> dict | None:
    info: dict = {}
    lattice = {}
    symbols, positions, forces = [], [], []
    with_forces = False
    tables = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _HEADER_VALUE.match(line)
        if m:
            info[m.group(1)] = m.group(2)
            i += 1
            continue
        m = _LATTICE.match(line)
        if m:
            lattice[m.group(1)] = [_fortran_float(v) for v in m.groups()[1:]]
            i += 1
            continue
        m = _ENERGY.match(line)
        if m:
            info[m.group(1).lower()] = _fortran_float(m.group(2))
            i += 1
            continue
        if line.strip().startswith("Cartesian atomic coordinates"):
            tables += 1
            if tables > 1:     # the table after a relaxation; keep the input geometry's table
                i += 1
                continue
            with_forces = "forces" in line
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("---"):
                i += 1
            i += 1
            while i < len(lines) and lines[i].strip():
                tokens = lines[i].split()
                symbols.append(tokens[0])
                positions.append([_fortran_float(t) for t in tokens[1:4]])
                if with_forces:
                    if len(tokens) < 7:
                        raise InputError(f"atom line without forces: {lines[i].strip()!r}", path)
                    forces.append([_fortran_float(t) for t in tokens[4:7]])
                i += 1
            continue
        i += 1
    if "Structure number" not in info:
        return None
    n_atoms = int(info.get("Number of atoms", len(symbols)))
    if symbols and len(symbols) != n_atoms:
        raise InputError(f"structure {info['Structure number']}: {len(symbols)} atom lines but "
                         f"'Number of atoms : {n_atoms}'", path)
    return {
        "structure_number": int(info["Structure number"]), "file": info.get("File name", ""), "n_atoms": n_atoms,
        "cohesive_energy": info.get("cohesive", math.nan), "total_energy": info.get("total", math.nan),
        "symbols": symbols, "positions": np.array(positions, dtype=float).reshape(-1, 3),
        "forces": np.array(forces, dtype=float).reshape(-1, 3) if with_forces else None,
        "lattice": np.array([lattice[k] for k in "abc"]) if len(lattice) == 3 else None,
        "relaxed": tables > 1,
    }


def error_tables(predictions: Sequence[dict], references, sources: dict[str, str] | None = None) -> dict:
    """Per-structure and per-force-component error rows from predict.x results and reference structures.

    ``references``: a dict keyed by the predict.in file names, or a sequence aligned with ``predictions``.
    The reference energy is compared with predict.x's total energy (its cohesive energy when the reference
    is a cohesive energy). Energy rows: file, source, n_atoms, E_ref, E_pred (eV), error_meV_atom
    ((E_pred − E_ref)/N in meV/atom, signed). Force rows: file, atom (1-based), symbol, component, F_ref,
    F_pred, abs_error (|F_ref − F_pred|, eV/Å); none for references without forces.
    """
    if isinstance(references, dict):
        refs = []
        for p in predictions:
            if p["file"] not in references:
                raise PyitaError(f"predict.x result for {p['file']!r} has no reference structure")
            refs.append(references[p["file"]])
    else:
        refs = list(references)
        if len(refs) != len(predictions):
            raise PyitaError(f"{len(predictions)} predictions but {len(refs)} reference structures")
    energy_rows, force_rows = [], []
    for p, ref in zip(predictions, refs):
        n = len(ref)
        if p["n_atoms"] != n or (p["symbols"] and list(p["symbols"]) != list(ref.symbols)):
            raise PyitaError(f"{p['file']}: predict.x reports {p['n_atoms']} atoms ({''.join(p['symbols'][:6])}…) "
                             f"but the reference has {n} ({''.join(ref.symbols[:6])}…)")
        if ref.energy is not None:
            pred = p["cohesive_energy"] if ref.energy_kind == "cohesive" else p["total_energy"]
            energy_rows.append({"file": p["file"], "source": (sources or {}).get(p["file"], ref.source or ""),
                                "n_atoms": n, "E_ref": float(ref.energy), "E_pred": float(pred),
                                "error_meV_atom": 1000.0 * (pred - ref.energy) / n})
        if ref.forces is not None and p["forces"] is not None:
            for a in range(n):
                for c, comp in enumerate("xyz"):
                    fr, fp = float(ref.forces[a, c]), float(p["forces"][a, c])
                    force_rows.append({"file": p["file"], "atom": a + 1, "symbol": ref.symbols[a],
                                       "component": comp, "F_ref": fr, "F_pred": fp, "abs_error": abs(fr - fp)})
    return {"energy": energy_rows, "forces": force_rows}


def _summary(values) -> dict:
    from pyita.experiment.stats import summarize

    return summarize(values)


# ================================================================================================= running

def _read_record(rundir: Path) -> dict:
    path = rundir / RECORD
    if not path.is_file():
        raise PyitaError(f"{rundir} is not a run folder of `pyita aenet prepare` (no {RECORD})")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PyitaError(f"cannot read {path}: {exc}") from None


def _read_state(rundir: Path) -> dict | None:
    path = rundir / RUN_STATE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_state(rundir: Path, state: dict) -> None:
    atomic_write_text(rundir / RUN_STATE, json.dumps(state, indent=2) + "\n")


def _listing(rundir: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in rundir.iterdir() if p.is_file()}


def _clear_previous(rundir: Path, record: dict, overwrite: bool) -> list[str]:
    """Remove outputs of an earlier ``pyita aenet run`` in this folder, or refuse. Returns removed names."""
    state = _read_state(rundir)
    ours = set(state.get("outputs", [])) if state else set()
    inputs = set(record.get("inputs", []))
    pattern = re.compile("|".join(f"(?:{p})" for p in _AENET_OUTPUT_PATTERNS))
    present = sorted(p.name for p in rundir.iterdir() if p.is_file() and p.name not in inputs
                     and pattern.fullmatch(p.name))
    foreign = [n for n in present if n not in ours]
    if foreign:
        raise PyitaError(f"{rundir} holds aenet output that `pyita aenet run` did not write "
                         f"({', '.join(foreign[:4])}{'…' if len(foreign) > 4 else ''}), e.g. from run.sh; "
                         "generate.x refuses to overwrite its output and train.x would continue from old "
                         "networks. Move those files away, or prepare a new run folder")
    if (rundir / "STOP").exists():
        raise PyitaError(f"{rundir / 'STOP'} exists: train.x would stop at once. Remove it first")
    if state and state.get("status") == "done" and not overwrite:
        raise PyitaError(f"{rundir} already holds the results of a finished run; use --overwrite to replace "
                         "them")
    removed = []
    for name in sorted(ours):
        target = rundir / name
        if name in inputs or name in (RECORD, RUN_STATE) or not target.is_file():
            continue
        target.unlink()
        removed.append(name)
    return removed


def _progress_total(step: str, rundir: Path, record: dict) -> int | None:
    if step == "generate":
        return record.get("counts", {}).get("train_files")
    if step == "train":
        return int(record.get("settings", {}).get("iterations", 0)) + 1
    return record.get("counts", {}).get("test_files")


_GENERATE_ROW = re.compile(r"^\s*\d+\s+\d+\s+\d+\s+[-+]?\d\.\d+E[-+]\d+\s+\S")


def _run_step(step: str, exe: Path, rundir: Path, total: int | None, progress: bool) -> tuple[int, float]:
    log = rundir / LOGS[step]
    start = time.perf_counter()
    with open(log, "w") as handle, progress_bar(total, f"{step}.x", {"generate": "structures", "train": "epochs",
                                                                      "predict": "structures"}[step],
                                                 enabled=progress) as advance:
        try:
            proc = subprocess.Popen([str(exe), INPUTS[step]], cwd=rundir, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                    errors="replace", bufsize=1)
        except OSError as exc:
            raise PyitaError(f"cannot start {exe}: {exc}") from None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                handle.write(line)
                if step == "generate" and _GENERATE_ROW.match(line):
                    advance(1)
                elif step == "train":
                    row = _EPOCH_ROW.match(line)
                    if row:
                        mae = _fortran_float(row.group(2)) * 1000
                        advance(1, **{"train MAE": f"{mae:.1f} meV/atom"})
                elif step == "predict" and line.lstrip().startswith("Structure number"):
                    advance(1)
            returncode = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    return returncode, time.perf_counter() - start


def _check_step(step: str, rundir: Path, record: dict, returncode: int) -> tuple[list[str], list[str]]:
    """Problems (errors) and warnings of a finished step, from its output and the files it should leave."""
    text = (rundir / LOGS[step]).read_text(errors="replace")
    errors, warns = scan_output(text)
    if returncode != 0:
        errors.append(f"exit status {returncode}")
    if errors:
        return errors, warns
    counts = record.get("counts", {})
    if step == "generate":
        n = sum(1 for line in text.splitlines() if _GENERATE_ROW.match(line))
        if not (rundir / TRAINSET).is_file():
            errors.append(f"no training set file {TRAINSET} was written")
        elif n < counts.get("train_files", 0):
            errors.append(f"generate.x stopped after {n} of {counts['train_files']} structures")
    elif step == "train":
        result = read_train_output(rundir / LOGS[step])
        missing = [nn for nn in record["networks"].values() if not (rundir / nn).is_file()]
        if not result["epochs"]:
            errors.append("no training epochs in the output")
        elif not math.isfinite(result["epochs"][-1]["MAE_train"]):
            errors.append("training diverged (train MAE is not a number)")
        if missing:
            errors.append(f"network files missing: {', '.join(missing)}")
        if not (rundir / "energies.train.0").is_file():
            errors.append("energies.train.0 missing (SAVE_ENERGIES)")
    else:
        results = read_predict_output(rundir / LOGS[step])
        expected = counts.get("test_files", 0)
        if len(results) != expected:
            errors.append(f"predict.x reported {len(results)} of {expected} structures")
        elif any(not math.isfinite(r["total_energy"]) for r in results):
            errors.append("predict.x printed no energy (or NaN) for some structures")
    return errors, warns


def run_aenet(rundir: str | Path, aenet_bin: str | Path | None = None, overwrite: bool = False,
              progress: bool = True, keep_epoch_networks: bool = True) -> dict:
    """Run generate.x, train.x and predict.x in a run folder, then collect the results (see collect_results).

    Raises PyitaError with aenet's own message when a program fails (they exit with status 0 after most
    errors, so their output is searched). A re-run removes only the outputs a previous ``pyita aenet run``
    recorded, and refuses to touch aenet output it did not write.
    """
    rundir = Path(rundir)
    record = _read_record(rundir)
    exes = find_executables(aenet_bin)
    removed = _clear_previous(rundir, record, overwrite)
    state = {"pyita_version": __version__, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "executables": {k: str(v) for k, v in exes.items()}, "removed_before_run": removed,
             "steps": [], "outputs": []}
    _write_state(rundir, state)
    warns_all: list[str] = []
    networks = record["networks"]
    for step in PROGRAMS:
        before = _listing(rundir)
        if step == "train" and (rundir / INITIAL_DIR).is_dir():
            for nn in networks.values():
                shutil.copyfile(rundir / INITIAL_DIR / nn, rundir / nn)
        try:
            returncode, seconds = _run_step(step, exes[step], rundir, _progress_total(step, rundir, record),
                                            progress)
        except BaseException as exc:
            _record_outputs(rundir, state, before)
            state["status"] = "failed"
            state["steps"].append({"step": step, "status": "failed" if isinstance(exc, Exception) else
                                   "interrupted", "errors": [str(exc)]})
            _write_state(rundir, state)
            raise
        _record_outputs(rundir, state, before)
        errors, warns = _check_step(step, rundir, record, returncode)
        warns_all += [f"{PROGRAMS[step]}: {w}" for w in warns]
        state["steps"].append({"step": step, "executable": str(exes[step]), "returncode": returncode,
                               "seconds": round(seconds, 3), "status": "failed" if errors else "done",
                               "errors": errors, "warnings": warns[:20]})
        if errors:
            state["status"] = "failed"
            _write_state(rundir, state)
            raise PyitaError(f"aenet {PROGRAMS[step]} failed: {'; '.join(errors[:3])} "
                             f"(full output: {rundir / LOGS[step]})")
        _write_state(rundir, state)
    if not keep_epoch_networks:
        for p in rundir.iterdir():
            if re.fullmatch(r".+\.nn-\d+", p.name):
                p.unlink()
        state["outputs"] = [n for n in state["outputs"] if (rundir / n).exists()]
    if warns_all:
        unique = list(dict.fromkeys(warns_all))
        more = f" (and {len(unique) - 3} more; see the .out files)" if len(unique) > 3 else ""
        warnings.warn("aenet warned: " + " | ".join(unique[:3]) + more, stacklevel=2)
    results = collect_results(rundir)
    state["outputs"] = sorted(set(state["outputs"]) | set(RESULT_FILES))
    state["status"] = "done"
    state["seconds"] = {s["step"]: s["seconds"] for s in state["steps"]}
    _write_state(rundir, state)
    results["seconds"] = state["seconds"]
    return results


def _record_outputs(rundir: Path, state: dict, before: dict[str, float]) -> None:
    after = _listing(rundir)
    new = [n for n, t in after.items() if n not in before or before[n] != t]
    state["outputs"] = sorted(set(state["outputs"]) | {n for n in new if n != RUN_STATE})


def _predict_files(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    for k, line in enumerate(lines):
        if line.split()[:1] == ["FILES"]:
            count = int(lines[k + 1].split()[0])
            files = [f.strip() for f in lines[k + 2:] if f.strip() and f.strip()[0] not in "!#%"]
            return files[:count]
    raise PyitaError(f"{path} has no FILES section")


def collect_results(rundir: str | Path, write: bool = True) -> dict:
    """Parse train.out, energies.train.0 and predict.out of a finished run (also one made with run.sh) into
    error tables; writes errors-energy.csv, errors-force.csv and results.json unless ``write`` is False."""
    rundir = Path(rundir)
    record = _read_record(rundir)
    for name in (LOGS["train"], LOGS["predict"]):
        if not (rundir / name).is_file():
            raise PyitaError(f"{rundir / name} missing: run aenet first (`pyita aenet run {rundir}`)")
    train = read_train_output(rundir / LOGS["train"])
    predictions = read_predict_output(rundir / LOGS["predict"])
    files = _predict_files(rundir / "predict.in")
    references = {f: read_xsf(rundir / f) for f in files}
    sources = {}
    if (rundir / STRUCTURES_CSV).is_file():
        with open(rundir / STRUCTURES_CSV, newline="") as handle:
            sources = {row["file"]: row["source"] for row in csv.DictReader(handle)}
    tables = error_tables(predictions, references, sources)
    # Per epoch in meV/atom, with the experiment runner's key names. With TESTPERCENT 0 aenet has no test set
    # (it prints MAE 0 and RMSE NaN for it), so the test keys are left out rather than reported as 0.
    with_test = bool(train["n_test"])
    history = []
    for e in train["epochs"]:
        row = {"epoch": e["epoch"], "train_energy_mae": 1000 * e["MAE_train"],
               "train_energy_rmse": 1000 * e["RMSE_train"]}
        if with_test:
            row.update(test_energy_mae=1000 * e["MAE_test"], test_energy_rmse=1000 * e["RMSE_test"])
        history.append(row)
    energies_train = (read_energies_file(rundir / "energies.train.0")
                      if (rundir / "energies.train.0").is_file() else [])
    summary = {
        "test_set": record.get("test_set"),
        "energy_error_meV_atom": _summary([r["error_meV_atom"] for r in tables["energy"]]),
        "force_error_eV_A": _summary([r["abs_error"] for r in tables["forces"]]),
        "train_final": ({k: v for k, v in train["final"].items() if with_test or "_test_" not in k}
                        if train["final"] else None),
        "epochs": len(train["epochs"]) - 1 if train["epochs"] else 0,
        "n_train": train["n_train"], "n_train_energies": len(energies_train),
    }
    if write:
        _write_csv(rundir / "errors-energy.csv", tables["energy"],
                   ["file", "source", "n_atoms", "E_ref", "E_pred", "error_meV_atom"])
        _write_csv(rundir / "errors-force.csv", tables["forces"],
                   ["file", "atom", "symbol", "component", "F_ref", "F_pred", "abs_error"])
        atomic_write_text(rundir / "results.json", json.dumps(_jsonable(summary), indent=2) + "\n")
    return {"energy_errors": tables["energy"], "force_errors": tables["forces"], "history": history,
            "summary": summary, "train_energies": energies_train}


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fields)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.15g}" if isinstance(v, float) else v) for k, v in row.items()})

    atomic_write(path, write)


# =============================================================================================== experiment

def train_and_evaluate_aenet(train_structures: Sequence[Structure], test_structures: Sequence[Structure],
                             settings: AenetSettings | dict | None, workdir: str | Path,
                             aenet_bin: str | Path | None = None, progress: bool = False,
                             keep_epoch_networks: bool = False) -> dict:
    """Prepare, run and parse one aenet training for the experiment runner.

    ``train_structures`` may include derived structures (their placeholder forces are written for
    generate.x; train.x fits energies only); ``test_structures`` are predicted as given (no MAXENERGY
    filter: the runner owns the split). Reference energies come from ``settings["reference_energies"]`` or
    are fitted on the training originals. ``workdir`` becomes the run folder (must be new or empty). To start
    several conditions from the same initial weights, run once with ``iterations = 0`` and pass that
    folder as ``initial_networks``. Returns energy_errors, force_errors (rows as in ``error_tables``),
    history (per epoch: epoch, train_energy_mae, train_energy_rmse in meV/atom; aenet's own test columns only
    when it had a test set), seconds (wall time of prepare + aenet), and rundir.
    """
    start = time.perf_counter()
    settings = AenetSettings.from_dict(settings)
    train_structures, test_structures = list(train_structures), list(test_structures)
    if not train_structures or not test_structures:
        raise PyitaError("aenet needs at least one training and one test structure")
    find_executables(aenet_bin)     # fail before writing anything when aenet is absent
    species: list[str] = []
    for s in train_structures + test_structures:
        for sym in s.symbols:
            if sym not in species:
                species.append(sym)
    originals = [s for s in train_structures if not _is_derived(s)] or train_structures
    refs, origin, fit_info = _reference_energies(originals, species, settings.reference_energies or {}, {})
    by_source = {s.source: s for s in originals if s.source}
    train = []
    for k, s in enumerate(train_structures):
        parent = None
        if _is_derived(s):
            p = s.info.get("parent")
            parent = by_source.get(s.info.get("parent_source"))
            if parent is None and isinstance(p, int) and 0 <= p < len(train_structures) \
                    and train_structures[p].symbols == s.symbols:      # index into the list augment() saw
                parent = train_structures[p]
        train.append(_Entry(s, placeholder=None if parent is None else parent.forces, role="train",
                            source=s.source or f"train{k + 1:05d}",
                            parent=str(s.info.get("parent_source") or "")))
    test = [_Entry(s, role="test", source=s.source or f"test{k + 1:05d}") for k, s in enumerate(test_structures)]
    _assign_names(train, "xsf/train")
    _assign_names(test, "xsf/test")
    record = {"command": "train_and_evaluate_aenet", "split": "given by the caller",
              "reference_energies_origin": origin, "reference_energy_fit": fit_info,
              "counts": {"structures": len(train) + len(test),
                         "derived": sum(1 for s in train_structures if _is_derived(s))}}
    with atomic_output_dir(workdir) as tmp:
        write_run_folder(tmp, train, test, species, refs, settings, record)
    results = run_aenet(workdir, aenet_bin=aenet_bin, progress=progress, keep_epoch_networks=keep_epoch_networks)
    return {"energy_errors": results["energy_errors"], "force_errors": results["force_errors"],
            "history": results["history"], "seconds": time.perf_counter() - start,
            "step_seconds": results.get("seconds"), "summary": results["summary"],
            "reference_energies": refs, "rundir": str(workdir)}


def _initial_networks(parents: Sequence[Structure], test: Sequence[Structure], settings: AenetSettings,
                      seed: int, aenet_bin, cache: Path) -> Path:
    """Untrained networks shared by every condition of a trial (aenet seeds its weights from the clock).

    Made once per (seed, architecture, descriptor, species) by train.x with ITERATIONS 0 on two parents, and
    kept in ``cache`` (several worker processes may race: the first complete folder wins).
    """
    import hashlib
    import tempfile

    species = sorted({sym for s in list(parents) + list(test) for sym in s.symbols})
    key = json.dumps([seed, [list(x) for x in settings.hidden], settings.setup.as_dict(), species])
    target = cache / f"initial-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".initial-", dir=cache))
    try:
        init = AenetSettings(**{**{f: getattr(settings, f) for f in AenetSettings.__dataclass_fields__},
                                "iterations": 0, "initial_networks": None, "max_energy": None})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train_and_evaluate_aenet(list(parents[:2]), list(test[:1]), init, scratch / "run", aenet_bin=aenet_bin)
        nets = scratch / "networks"
        nets.mkdir()
        for nn in _read_record(scratch / "run")["networks"].values():
            shutil.copyfile(scratch / "run" / nn, nets / nn)
        (nets / "README.txt").write_text(f"Untrained aenet networks (ITERATIONS 0) for {key}\n")
        try:
            os.replace(nets, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def experiment_backend(parents: Sequence[Structure], derived: Sequence[Structure], test: Sequence[Structure],
                       trainer: dict | None = None, augment: dict | None = None, seed: int = 0,
                       reference_energies: dict | None = None, workdir: str | Path | None = None) -> dict:
    """The experiment runner's backend call for ``backend = "aenet"``.

    Trains on parents + derived, predicts ``test``; returns energy_ref, energy_pred (eV, as compared),
    n_atoms (arrays over the test structures, in order), force_errors (|F_ref − F_pred| per component,
    eV/Å), history and seconds. Every condition of a trial starts from the same untrained networks (made once
    per seed, cached under $PYITA_AENET_CACHE or ~/.cache/pyita/aenet). ``trainer`` may name ``aenet_bin``
    and ``keep_runs`` (keep the run folders; else they are removed after success). What aenet cannot do
    (per-structure weights, on-the-fly augmentation, force or parent–child losses) raises PyitaError.
    """
    import tempfile

    augment = dict(augment or {})
    if augment.get("on_the_fly"):
        raise PyitaError("aenet cannot draw fresh displacements every epoch (on_the_fly): use the embedded backend")
    if augment.get("parent_child_weight"):
        raise PyitaError("aenet has no parent–child loss (parent_child_weight): use the embedded backend")
    if augment.get("weight") not in (None, 1, 1.0):
        raise PyitaError("aenet's train.x has no per-structure weights (augment.weight): use the embedded backend")
    trainer = dict(trainer or {})
    aenet_bin = trainer.pop("aenet_bin", None)
    keep = bool(trainer.pop("keep_runs", False))
    settings = AenetSettings.from_dict(trainer)
    if reference_energies and not settings.reference_energies:
        settings.reference_energies = dict(reference_energies)
    start = time.perf_counter()
    if settings.initial_networks is None:
        cache = Path(os.environ.get("PYITA_AENET_CACHE", Path.home() / ".cache" / "pyita" / "aenet"))
        settings.initial_networks = str(_initial_networks(parents, test, settings, seed, aenet_bin, cache))
    base = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="pyita-aenet-"))
    run = base / f"run-seed{seed}" if workdir is not None else base / "run"
    result = train_and_evaluate_aenet(list(parents) + list(derived), list(test), settings, run,
                                      aenet_bin=aenet_bin)
    rows = result["energy_errors"]
    out = {"energy_ref": np.array([r["E_ref"] for r in rows]), "energy_pred": np.array([r["E_pred"] for r in rows]),
           "n_atoms": np.array([r["n_atoms"] for r in rows]),
           "force_errors": np.array([r["abs_error"] for r in result["force_errors"]]),
           "history": _jsonable(result["history"]), "seconds": time.perf_counter() - start, "rundir": str(run)}
    if not keep and workdir is None:
        shutil.rmtree(base, ignore_errors=True)
        out["rundir"] = None
    return out
