"""``pyita aenet run``: run generate.x, train.x and predict.x in a prepared folder under its lock, judge success
from their output (they exit 0 after most errors), and recognise an interrupted run of its own. Finding the
programs is ``executables``; reading the results, ``results``."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
import warnings
from pathlib import Path

from pyita import __version__
from pyita.backends.aenet.executables import find_executables
from pyita.backends.aenet.folder import read_record
from pyita.backends.aenet.results import collect_results
from pyita.backends.aenet.settings import (AENET_OUTPUT_PATTERNS, INITIAL_DIR, INPUTS, LOGS, PROGRAMS, RECORD,
                                           RESULT_FILES, RUN_LOCK, RUN_STATE, TRAINSET)
from pyita.errors import PyitaError
from pyita.io.aenet_outputs import EPOCH_ROW, fortran_float, read_predict_output, read_train_output, scan_output
from pyita.io.atomic import atomic_write_text
from pyita.io.locks import exclusive
from pyita.io.records import json_text
from pyita.parallel import die_with_parent
from pyita.progress import progress_bar, sig


def _read_state(rundir: Path) -> dict | None:
    path = rundir / RUN_STATE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_state(rundir: Path, state: dict) -> None:
    atomic_write_text(rundir / RUN_STATE, json_text(state, indent=2))


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
                        advance(1, **{"train MAE": f"{sig(mae)} meV/atom"})
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


def run_aenet_run(rundir: str | Path, aenet_bin: str | Path | None = None, overwrite: bool = False,
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
            if not failed:   # said by pyita.cli.entry.main after "interrupted by SIGTERM"
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


