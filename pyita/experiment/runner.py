"""Run every (trial, condition) of an experiment: locally in a process pool or on a Dask cluster.

Each finished task is saved at once (atomically) under ``results/``; a rerun with ``resume`` skips what
is there, so a killed experiment loses at most the tasks that were running.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pyita import __version__
from pyita.errors import PyitaError
from pyita.experiment.config import ExperimentConfig, parse_config
from pyita.experiment.protocol import derived_for, load_pool, taylor_signal, trial_split
from pyita.io.atomic import atomic_write, atomic_write_text

RESULTS = "results"


def slug(name: str) -> str:
    """A file-name form of a condition name, distinct for distinct names ("absolute δ=0.01 it=15" →
    "absolute_d=0.01_it=15")."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", name.replace("δ", "d")).strip("_") or "condition"


def result_paths(out: Path, trial: int, condition: str) -> tuple[Path, Path]:
    folder = out / RESULTS / f"trial-{trial:03d}"
    name = slug(condition)
    return folder / f"{name}.json", folder / f"{name}.npz"


def run_task(config_dict: dict, out: str, trial: int, condition_index: int, threads: int = 0) -> dict:
    """Train and evaluate one condition of one trial; saves and returns its summary (runs in a worker)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from pyita.backends import get_backend

    config = parse_config(config_dict["raw"], config_dict["path"], config_dict["overrides"])
    condition = config.conditions[condition_index]
    pool, reference = load_pool(config)
    split = trial_split(len(pool), config, trial)
    parents = [pool[i] for i in split.train]
    test = [pool[i] for i in split.test]
    derived = derived_for(condition, parents, seed=split.model_seed)
    signal = taylor_signal(derived)
    if condition.augment and condition.augment.get("on_the_fly"):
        derived = []   # the trainer draws its own every epoch
    trainer = {**config.trainer, **condition.trainer}
    start = time.perf_counter()
    result = get_backend(config.backend)(parents=parents, derived=derived, test=test, trainer=trainer,
                                         augment=condition.augment, seed=split.model_seed,
                                         reference_energies=reference)
    seconds = time.perf_counter() - start
    summary = {
        "trial": trial, "condition": condition.name, "seed": split.model_seed,
        "n_train_parents": len(parents), "n_derived": len(derived), "n_test": len(test),
        "test_sources": [s.source for s in test], "seconds": seconds, "history": result["history"],
        "taylor_signal_meV_atom": signal,
        "pyita_version": __version__,
    }
    json_path, npz_path = result_paths(Path(out), trial, condition.name)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(npz_path, lambda tmp: np.savez_compressed(
        tmp, energy_ref=result["energy_ref"], energy_pred=result["energy_pred"], n_atoms=result["n_atoms"],
        force_errors=result["force_errors"]))
    atomic_write_text(json_path, json.dumps(summary, indent=1) + "\n")   # written last: marks completion
    return summary


def pending_tasks(config: ExperimentConfig, out: Path) -> list[tuple[int, int]]:
    return [(t, c) for t in range(config.trials) for c, cond in enumerate(config.conditions)
            if not result_paths(out, t, cond.name)[0].exists()]


@contextmanager
def _executor(config: ExperimentConfig, n_tasks: int):
    if config.scheduler:
        try:
            from distributed import Client
        except ImportError:
            raise PyitaError("a Dask scheduler was given but dask.distributed is not installed "
                             "(pip install pyita[dask])") from None
        with Client(config.scheduler) as client:
            yield client.get_executor(), 0
        return
    workers = max(1, min(config.workers, n_tasks))
    threads = max(1, (os.cpu_count() or 1) // workers)
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool, threads


def prepare_output(out: Path, config: ExperimentConfig, config_text: str, resume: bool) -> None:
    """Refuse a non-empty folder unless resuming the same experiment (same effective settings)."""
    saved = out / "experiment.json"
    settings = json.dumps(config.as_dict(), indent=1, default=str, ensure_ascii=False)
    how = ("workers", "scheduler")   # where tasks run does not change their results
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise PyitaError(f"{out} is not empty; pass --resume to continue that experiment, or choose "
                             "another --out")
        before, now = json.loads(saved.read_text()) if saved.exists() else None, json.loads(settings)
        if before is not None and {k: v for k, v in before.items() if k not in how} != \
                {k: v for k, v in now.items() if k not in how}:
            raise PyitaError(f"{out} holds a different experiment (its experiment.json differs); refusing to mix")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.toml", config_text)
    atomic_write_text(saved, settings + "\n")


def run_experiment(config_dict: dict, config: ExperimentConfig, out: Path, progress_enabled: bool = True,
                   inline: bool | None = None) -> list[dict]:
    """Run all pending tasks; returns the summaries of those run now (earlier ones are on disk)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    tasks = pending_tasks(config, out)
    done = []
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
    with Progress(*columns, console=Console(stderr=True), disable=not progress_enabled) as progress:
        overall = progress.add_task("experiment", total=len(tasks), status="")
        per_trial = {t: progress.add_task(f"  trial {t}", total=sum(1 for tt, _ in tasks if tt == t),
                                          status="") for t in sorted({t for t, _ in tasks})}

        def finished(summary: dict) -> None:
            done.append(summary)
            status = f"{summary['condition']}: {summary['seconds']:.0f} s"
            progress.update(per_trial[summary["trial"]], advance=1, status=status)
            progress.update(overall, advance=1, status=f"last: trial {summary['trial']} {status}")

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
