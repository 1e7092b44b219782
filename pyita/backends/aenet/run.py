"""``pyita aenet run``: find aenet's executables, run them, judge success from their output (they exit 0
after most errors), and turn predict.x's results into error tables."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import Sequence

from pyita import __version__
from pyita.backends.aenet.settings import (AENET_OUTPUT_PATTERNS, ENV_VARS, INITIAL_DIR, INPUTS, LOGS, PROGRAMS, RECORD,
                                           RESULT_FILES, RUN_LOCK, RUN_STATE, STRUCTURES_CSV, TRAINSET)
from pyita.errors import PyitaError
from pyita.io.aenet_outputs import (EPOCH_ROW, fortran_float, read_energies_file, read_predict_output,
                                    read_train_output, scan_output)
from pyita.io.atomic import atomic_write, atomic_write_text
from pyita.io.locks import exclusive
from pyita.io.records import jsonable
from pyita.io.xsf import read_xsf
from pyita.parallel import die_with_parent
from pyita.progress import progress_bar
from pyita.train.metrics import summarize


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



def error_rows(predictions: Sequence[dict], references, sources: dict[str, str] | None = None) -> dict:
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






def read_record(rundir: Path) -> dict:
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
    """Remove outputs of an earlier ``pyita aenet run`` in this folder, or refuse. Returns removed names.

    Called with the folder's lock held, so a record that still says "running" is a run that was killed
    outright (SIGKILL, a crash): the aenet output written since its step started is its own, removed too."""
    state = _read_state(rundir)
    ours = set(state.get("outputs", [])) if state else set()
    inputs = set(record.get("inputs", []))
    pattern = re.compile("|".join(f"(?:{p})" for p in AENET_OUTPUT_PATTERNS))
    present = sorted(p.name for p in rundir.iterdir() if p.is_file() and p.name not in inputs
                     and pattern.fullmatch(p.name))
    killed = state is not None and state.get("status") == "running"
    if killed and isinstance(state.get("running"), dict):
        before = state["running"].get("before") or {}
        after = _listing(rundir)
        ours |= {n for n in present if n not in before or before[n] != after.get(n)}
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
        if name in inputs or name in (RECORD, RUN_STATE, RUN_LOCK) or not target.is_file():
            continue
        target.unlink()
        removed.append(name)
    if killed or (state and state.get("status") == "interrupted"):
        during = (state.get("running") or (state["steps"][-1] if state.get("steps") else {})).get("step")
        how = "killed" if killed else "interrupted"
        warnings.warn(f"{rundir}: an earlier `pyita aenet run` was {how}"
                      f"{f' during {PROGRAMS[during]}' if during in PROGRAMS else ''}; removed its partial "
                      f"output ({len(removed)} files) and starting again", stacklevel=3)
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
                                    errors="replace", bufsize=1, preexec_fn=die_with_parent)
        except OSError as exc:
            raise PyitaError(f"cannot start {exe}: {exc}") from None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                handle.write(line)
                if step == "generate" and _GENERATE_ROW.match(line):
                    advance(1)
                elif step == "train":
                    row = EPOCH_ROW.match(line)
                    if row:
                        mae = fortran_float(row.group(2)) * 1000
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
    record = read_record(rundir)
    exes = find_executables(aenet_bin)
    with exclusive(rundir / RUN_LOCK, f"run folder {rundir}"):
        return _run_locked(rundir, record, exes, overwrite, progress, keep_epoch_networks)


def _run_locked(rundir: Path, record: dict, exes: dict[str, Path], overwrite: bool, progress: bool,
                keep_epoch_networks: bool) -> dict:
    removed = _clear_previous(rundir, record, overwrite)
    state = {"pyita_version": __version__, "status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "executables": {k: str(v) for k, v in exes.items()}, "removed_before_run": removed,
             "steps": [], "outputs": []}
    _write_state(rundir, state)
    warns_all: list[str] = []
    networks = record["networks"]
    for step in PROGRAMS:
        before = _listing(rundir)
        state["running"] = {"step": step, "before": before}   # what a killed run leaves is told apart by it
        _write_state(rundir, state)
        if step == "train" and (rundir / INITIAL_DIR).is_dir():
            for nn in networks.values():
                shutil.copyfile(rundir / INITIAL_DIR / nn, rundir / nn)
        try:
            returncode, seconds = _run_step(step, exes[step], rundir, _progress_total(step, rundir, record),
                                            progress)
        except BaseException as exc:
            _record_outputs(rundir, state, before)
            failed = isinstance(exc, Exception)
            state["status"] = "failed" if failed else "interrupted"
            state["steps"].append({"step": step, "status": state["status"], "errors": [str(exc)]})
            del state["running"]
            _write_state(rundir, state)
            if not failed:   # said by pyita.cli.main after "interrupted by SIGTERM"
                exc.add_note(f"the partial aenet output in {rundir} is kept; rerun `pyita aenet run {rundir}` "
                             "to start again")
            raise
        _record_outputs(rundir, state, before)
        del state["running"]
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
    state["outputs"] = sorted(set(state["outputs"]) | {n for n in new if n not in (RUN_STATE, RUN_LOCK)})


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
    record = read_record(rundir)
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
    tables = error_rows(predictions, references, sources)
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
        "energy_error_meV_atom": summarize([r["error_meV_atom"] for r in tables["energy"]]),
        "force_error_eV_A": summarize([r["abs_error"] for r in tables["forces"]]),
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
        atomic_write_text(rundir / "results.json", json.dumps(jsonable(summary), indent=2) + "\n")
    return {"energy_errors": tables["energy"], "force_errors": tables["forces"], "history": history,
            "summary": summary, "train_energies": energies_train}


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fields)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.15g}" if isinstance(v, float) else v) for k, v in row.items()})

    atomic_write(path, write)
