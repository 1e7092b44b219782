"""Run every (trial, condition) of an experiment: locally in a process pool or on a Dask cluster.

Each finished task is saved at once (atomically) under ``results/``; a rerun with ``resume`` skips what
is there, so a killed experiment loses at most the tasks that were running.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import shutil
import time
import warnings
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pyita import __version__
from pyita.errors import PyitaError
from pyita.experiment.config import (ExperimentConfig, backend_of, first_difference, parse_config, parse_toml,
                                     read_config_text)
from pyita.experiment.protocol import derived_for, load_pool, taylor_signal, trial_split
from pyita.experiment.results import (KEPT_RUNS, RESULTS, SCRATCH, DamagedResult, TaskResult, kept_run_folder,
                                      result_paths)
from pyita.io.atomic import TMP_MARK, atomic_write, atomic_write_text
from pyita.io.locks import exclusive
from pyita.io import open_source
from pyita.io.outputs import data_inputs, listing, refuse_overlap
from pyita.parallel import plan_workers, usable_cores, worker_pool
from pyita.progress import progress_bar


#: The lock file of a running experiment, inside its folder.
LOCK = ".pyita.lock"


def run_task(config_dict: dict, out: str, trial: int, condition_index: int, threads: int = 0) -> dict:
    """Train and evaluate one condition of one trial; saves and returns its summary (runs in a worker)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from pyita.backends import get_backend

    config = parse_config(config_dict["raw"], config_dict["path"], config_dict["overrides"])
    condition = config.conditions[condition_index]
    pool, reference = load_pool(config)
    split = trial_split(pool, config, trial)
    parents = [pool[i] for i in split.train]
    test = [pool[i] for i in split.test]
    derived = derived_for(condition, parents, seed=split.model_seed)
    signal = taylor_signal(derived)
    if condition.augment and condition.augment.get("on_the_fly"):
        derived = []   # the trainer draws its own every epoch
    trainer = {**config.trainer, **condition.trainer}
    # other initial weights only (an A/A check); the backend gets the option only when it is set
    extra = {"init_seed_offset": condition.init_seed_offset} if condition.init_seed_offset else {}
    json_path, npz_path = result_paths(Path(out), trial, condition.name)
    backend = backend_of(config, condition)
    keep_runs = trainer.pop("keep_runs", False)
    if backend == "embedded" and config.max_memory is not None:
        trainer["max_memory"] = config.max_memory
    if backend == "aenet":
        if config.aenet_bin:
            trainer["aenet_bin"] = config.aenet_bin
        if keep_runs:
            extra["workdir"] = kept_run_folder(Path(out), trial, condition.name)
            shutil.rmtree(extra["workdir"], ignore_errors=True)   # an interrupted attempt's folder, ours
        else:
            extra["scratch"] = Path(out) / SCRATCH
    start = time.perf_counter()
    result = get_backend(backend)(parents=parents, derived=derived, test=test, trainer=trainer,
                                  augment=condition.augment, seed=split.model_seed,
                                  reference_energies=reference, **extra)
    seconds = time.perf_counter() - start
    summary = {
        "trial": trial, "condition": condition.name, "backend": backend, "seed": split.model_seed,
        **({"init_seed": split.model_seed + condition.init_seed_offset} if extra else {}),
        "n_train_parents": len(parents), "n_derived": len(derived), "n_test": len(test),
        "test_sources": [s.source for s in test], "seconds": seconds, "history": result.history,
        "taylor_signal_meV_atom": signal,
        "train_energy_mae": result.train_energy_mae, "train_energy_rmse": result.train_energy_rmse,
        **({"aenet_run": os.path.relpath(result.rundir, json_path.parent)} if result.rundir else {}),
        "pyita_version": __version__,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(npz_path, lambda tmp: np.savez_compressed(
        tmp, energy_ref=result.energy_ref, energy_pred=result.energy_pred, n_atoms=result.n_atoms,
        force_errors=result.force_errors))
    atomic_write_text(json_path, json.dumps(summary, indent=1) + "\n")   # written last: marks completion
    return summary


@dataclass
class PreparedExperiment:
    """An experiment checked to start: its settings, the config it came from, and the inputs it reads."""

    config: ExperimentConfig
    raw: dict
    path: Path
    text: str
    overrides: dict
    inputs: list[Path] = field(default_factory=list)

    @property
    def task_config(self) -> dict:
        """What each task (a worker process) rebuilds the config from."""
        return {"raw": self.raw, "path": str(self.path), "overrides": self.overrides}


def prepare_experiment(config_file: str | Path | None, preset: str | None, overrides: dict | None = None,
                       for_run: bool = True) -> PreparedExperiment:
    """Everything `pyita experiment` checks before its output folder exists: the config's every setting,
    and, ``for_run``, that its data can be opened and the trainers and scheduler it asks for are there. A
    mistake raises PyitaError (one line), so a failed start leaves nothing behind."""
    text, path = read_config_text(config_file, preset)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    raw = parse_toml(text, path)
    config = parse_config(raw, path, overrides)
    prepared = PreparedExperiment(config, raw, path, text, overrides)
    if for_run:
        prepared.inputs = data_inputs(config.data, open_source(config.data)) + ([path] if config_file else [])
        check_backends(config)
    return prepared


def check_backends(config: ExperimentConfig) -> None:
    """Fail before anything is written or trained when a condition needs aenet and none is usable, or a Dask
    scheduler is given without Dask."""
    if config.scheduler:
        _dask_client()
    needing = [c.name for c in config.conditions if backend_of(config, c) == "aenet"]
    if needing:
        from pyita.backends.aenet import find_executables

        try:
            find_executables(config.aenet_bin)
        except PyitaError as exc:
            raise PyitaError(f"conditions {', '.join(map(repr, needing))} need aenet: {exc}") from None


def pending_tasks(config: ExperimentConfig, out: Path) -> list[tuple[int, int]]:
    """Tasks without a valid saved result. A damaged result is removed (and said so), to be run again."""
    pending = []
    for t in range(config.trials):
        for c, condition in enumerate(config.conditions):
            json_path, npz_path = result_paths(out, t, condition.name)
            if json_path.exists():
                try:
                    TaskResult.load(json_path, npz_path, t, condition.name)
                    continue
                except DamagedResult as exc:
                    warnings.warn(f"{exc}; running that task again", stacklevel=2)
                    json_path.unlink(missing_ok=True)
                    npz_path.unlink(missing_ok=True)
            pending.append((t, c))
    return pending


def _dask_client():
    try:
        from distributed import Client
    except ImportError:
        raise PyitaError("a Dask scheduler was given but dask.distributed is not installed "
                         "(pip install pyita[dask])") from None
    return Client


@contextmanager
def _executor(config: ExperimentConfig, n_tasks: int):
    if config.scheduler:
        with _dask_client()(config.scheduler) as client:
            yield client.get_executor(), 0
        return
    workers = plan_workers(config.workers, n_tasks, "workers")
    threads = max(1, usable_cores() // workers)
    with worker_pool(workers, "spawn") as pool:
        yield pool, threads


#: Settings that say where tasks run, not what they compute: free to differ between a run and its resume.
_WHERE = ("workers", "scheduler", "max_memory")


def _what_results_depend_on(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in _WHERE}


def _read_record(saved: Path) -> dict:
    try:
        record = json.loads(saved.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        raise PyitaError(f"{saved} is damaged; cannot tell which experiment {saved.parent} holds") from None
    if not isinstance(record, dict):
        raise PyitaError(f"{saved} is not an experiment record; cannot tell which experiment {saved.parent} holds")
    return record


def rebuild_report(out: Path, given: ExperimentConfig | None = None) -> dict:
    """Rebuild the report of the experiment in ``out`` from its results, with the settings stored with them.

    Acts only on a folder its own experiment.json identifies as an experiment, while no experiment runs in
    it (the lock); ``given`` (a config named on the command line) must describe that same experiment.
    """
    from pyita.experiment.report import write_report

    out = Path(out)
    saved = out / "experiment.json"
    if not saved.is_file():
        raise PyitaError(f"--report-only: {out} holds no experiment.json, so it is not an experiment folder "
                         "of `pyita experiment`; nothing was written")
    with exclusive(out / LOCK, f"experiment folder {out}"):
        record = _read_record(saved)
        stored = ExperimentConfig.from_record(record, saved)
        if given is not None:
            differs = first_difference(_what_results_depend_on(record),
                                       _what_results_depend_on(json.loads(json.dumps(given.as_dict(), default=str))))
            if differs:
                raise PyitaError(f"--report-only: the config given is not the experiment in {out} ({differs}); "
                                 "give the same config, or none to report the stored one")
        return write_report(stored, out)


#: What `pyita experiment` writes in its folder, as paths relative to it; anything else there is not its own.
_OWN = re.compile(r"experiment\.json|config\.toml|summary\.json|report\.(md|html)|"
                  r"(per_trial|conditions|comparisons)\.csv|(energy|force)_errors\.csv\.gz|"
                  rf"{re.escape(LOCK)}|{RESULTS}(/trial-\d+(/[^/]+\.(json|npz))?)?|figures(/[^/]+\.(png|svg))?|"
                  rf"({re.escape(SCRATCH)}|{KEPT_RUNS})(/.*)?")


def not_written_by_experiment(out: Path) -> list[str]:
    """The files and folders in ``out`` that `pyita experiment` did not write (temporary files of an
    interrupted write, ``.NAME.tmp-XXXX``, are its own)."""
    return [name for name in listing(out)
            if not _OWN.fullmatch(name) and TMP_MARK not in name.rsplit("/", 1)[-1]]


@contextmanager
def experiment_output(out: Path, config: ExperimentConfig, config_text: str, resume: bool,
                      inputs: list[Path] = (), overwrite: bool = False):
    """Claim ``out`` for this experiment for the duration of the block.

    Refuses an ``out`` that overlaps an input or the current folder, a non-empty folder unless resuming the
    same experiment (same effective settings) or starting an earlier one again (``overwrite``: only a folder
    that holds nothing but what `pyita experiment` wrote, which is then removed), and a folder another living
    pyita process is running in (``LOCK`` holds its pid). Clears the temporary aenet run folders an
    interrupted attempt left.
    """
    out = Path(out)
    refuse_overlap(out, inputs)
    saved = out / "experiment.json"
    settings = json.dumps(config.as_dict(), indent=1, default=str, ensure_ascii=False)
    if resume and overwrite:
        raise PyitaError("--resume continues an experiment and --overwrite starts it again; give one of them")
    if out.exists() and not out.is_dir():
        raise PyitaError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not (resume or overwrite):
            raise PyitaError(f"{out} is not empty; pass --resume to continue that experiment, --overwrite to "
                             "start it again, or choose another --out")
        if not saved.exists():
            raise PyitaError(f"--{'resume' if resume else 'overwrite'}: {out} holds no experiment.json, so it is "
                             "not an experiment folder; it was left untouched: choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PyitaError(f"cannot create {out}: {exc.strerror}") from None
    with exclusive(out / LOCK, f"experiment folder {out}"):
        if overwrite and saved.exists():
            _clear_earlier_experiment(out)
        elif saved.exists():
            differs = first_difference(_what_results_depend_on(_read_record(saved)),
                                       _what_results_depend_on(json.loads(settings)))
            if differs:
                raise PyitaError(f"{out} holds a different experiment ({saved.name} differs in {differs}); "
                                 "refusing to mix (--overwrite starts it again)")
        atomic_write_text(out / "config.toml", config_text)
        atomic_write_text(saved, settings + "\n")
        shutil.rmtree(out / SCRATCH, ignore_errors=True)   # run folders of a killed attempt: the lock is ours
        try:
            yield
        finally:
            with suppress(OSError):
                (out / SCRATCH).rmdir()   # only when empty: a failed run's folder stays, to be read


def _clear_earlier_experiment(out: Path) -> None:
    """Remove an earlier experiment's files from ``out`` (its lock held), or refuse naming what is not its own."""
    foreign = not_written_by_experiment(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise PyitaError(f"--overwrite replaces only what `pyita experiment` wrote, and {out} also holds {shown}; "
                         "it was left untouched: move those away or choose another --out")
    for entry in out.iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def run_experiment(config_file: str | Path | None, preset: str | None, overrides: dict, out: str | Path, *,
                   resume: bool = False, overwrite: bool = False, report_only: bool = False,
                   progress: bool = True) -> dict:
    """``pyita experiment``: check every setting, claim ``out``, run the pending tasks and write the report
    (or, ``report_only``, rebuild the report of the experiment stored in ``out``); returns the report's
    summary."""
    out = Path(out)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if report_only and config_file is None and preset is None:
        changed = sorted(set(overrides) - set(_WHERE) - {"aenet_bin"})
        if changed:
            raise PyitaError(f"--report-only reports the experiment stored in {out}; "
                             f"{', '.join('--' + k.replace('_', '-') for k in changed)} cannot change it")
        return rebuild_report(out)
    prepared = prepare_experiment(config_file, preset, overrides, for_run=not report_only)
    config = prepared.config
    for name, why in config.left_out.items():
        warnings.warn(f"backend {config.backend}: condition {name!r} left out: {why}", stacklevel=2)
    if config.max_memory is not None and any(backend_of(config, c) == "aenet" for c in config.conditions):
        warnings.warn("max_memory applies to the embedded trainer only: the aenet conditions ignore it", stacklevel=2)
    if report_only:
        return rebuild_report(out, config)
    with experiment_output(out, config, prepared.text, resume, prepared.inputs, overwrite=overwrite):
        run_trials(prepared.task_config, config, out, progress_enabled=progress)
        from pyita.experiment.report import write_report   # matplotlib: only once there are results

        return write_report(config, out)


def run_trials(config_dict: dict, config: ExperimentConfig, out: Path, progress_enabled: bool = True,
               inline: bool | None = None) -> list[dict]:
    """Run all pending tasks; returns the summaries of those run now (earlier ones are on disk)."""
    tasks = pending_tasks(config, out)
    done = []
    with progress_bar(len(tasks), "experiment", "tasks", enabled=progress_enabled) as advance:

        def finished(summary: dict) -> None:
            done.append(summary)
            advance(1, last=f"trial {summary['trial']} {summary['condition']}: {summary['seconds']:.0f} s")

        if inline if inline is not None else (config.workers == 1 and not config.scheduler):
            for trial, cond in tasks:
                finished(run_task(config_dict, str(out), trial, cond))
            return done
        with _executor(config, len(tasks)) as (executor, threads):
            futures = [executor.submit(run_task, config_dict, str(out), t, c, threads) for t, c in tasks]
            try:
                for future in cf.as_completed(futures):
                    finished(future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return done
