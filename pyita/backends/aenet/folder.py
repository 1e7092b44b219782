"""Writing an aenet run folder: generate.in, .stp files, train.in, predict.in, run.sh, the structures and
PyITA's record of them."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from pyita import __version__
from pyita.backends.aenet.settings import (INITIAL_DIR, RECORD, STRUCTURES_CSV, TEST_PARENTS, TRAINSET, XSF_NAME,
                                           AenetSettings)
from pyita.errors import InputError, PyitaError
from pyita.io.aenet_inputs import PredictIn, TrainIn, arch_tag, format_predict_in, format_train_in, write_stp_files
from pyita.io.generate_in import GenerateIn, format_generate_in
from pyita.io.tables import write_csv
from pyita.io.xsf import aenet_text
from pyita.io.xsf_write import format_xsf
from pyita.io.records import json_text
from pyita.structure import Structure


@dataclass
class Entry:
    structure: Structure
    name: str = ""                   # path inside the run folder (FILES line)
    copy_from: Path | None = None    # an existing aenet XSF file to copy (respaced if aenet needs it)
    placeholder: np.ndarray | None = None
    role: str = "train"
    source: str = ""
    parent: str = ""


def _safe_stem(text: str) -> str:
    base = Path(text.split("[")[0]).stem if text else "structure"
    if "[" in text:
        base += "-" + re.sub(r"\D", "", text.split("[", 1)[1]).zfill(5)
    return XSF_NAME.sub("_", base).strip("._") or "structure"


def _display(name: str) -> str:
    """A path as users should read it ("aug/../data/x.xsf" → "data/x.xsf"); other names unchanged."""
    return os.path.normpath(name) if name and not name.endswith("]") else name


def assign_names(entries: list[Entry], folder: str) -> None:
    used: set[str] = set()
    for k, entry in enumerate(entries):
        stem = _safe_stem(entry.source or f"structure{k + 1:05d}")
        name = f"{folder}/{stem}.xsf"
        if name in used:
            name = f"{folder}/{stem}-{k + 1:05d}.xsf"
        used.add(name)
        entry.name = name


def _xsf_text(entry: Entry) -> str:
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


def write_run_folder(folder: Path, train: list[Entry], test: list[Entry], species: list[str],
                     refs: dict[str, float], settings: AenetSettings, record: dict,
                     test_label: str = "held-out test parents") -> dict:
    """Write every input file of a run into ``folder`` (an empty, usually temporary, folder)."""
    setup = settings.setup
    networks = {s: f"{s}.{arch_tag(settings.hidden)}.nn" for s in species}
    (folder / "xsf").mkdir(parents=True, exist_ok=True)
    for entry in train + test:
        target = folder / entry.name
        target.parent.mkdir(parents=True, exist_ok=True)
        respaced = aenet_text(entry.copy_from) if entry.copy_from is not None else None
        if respaced is not None:
            target.write_text(respaced)
        elif entry.copy_from is not None:
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
                     setups=write_stp_files(folder, species, setup), files=[e.name for e in train],
                     options=gen_comments)
    (folder / "generate.in").write_text(format_generate_in(gen))
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
    write_csv(folder / STRUCTURES_CSV, [
        {"file": e.name, "role": e.role, "kind": "derived" if e.structure.is_derived else "original",
         "source": _display(e.source), "parent": _display(e.parent), "n_atoms": len(e.structure),
         "energy_eV": f"{e.structure.energy:.10f}", "energy_kind": e.structure.energy_kind} for e in train + test])
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
    (folder / RECORD).write_text(json_text(record, indent=2))
    return record


def read_record(rundir: Path) -> dict:
    path = rundir / RECORD
    if not path.is_file():
        raise PyitaError(f"{rundir} is not a run folder of `pyita aenet prepare` (no {RECORD})")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PyitaError(f"cannot read {path}: {exc}") from None
