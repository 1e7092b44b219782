"""Running an experiment's (trial, condition) tasks: in this process, in a local process pool, or on a Dask
cluster — with one set of inputs and one way of saving.

The data are read once, here, and handed to every task (Dask: sent to the scheduler once). A task returns
its result (``FinishedTask``) and this process saves it under the experiment folder as it arrives, so a worker
needs neither the data files nor the folder, and a killed experiment loses at most the tasks that were running.
A task that fails (an error, a worker lost more often than the scheduler's ``allowed-failures``) leaves the
others running; the run then ends with the list of what is missing.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
import uuid
import warnings
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pyita import __version__
from pyita.errors import PyitaError
from pyita.experiment.config import ExperimentConfig, backend_of
from pyita.experiment.protocol import derived_for, load_pool, taylor_signal, trial_split
from pyita.experiment.results import SCRATCH, DamagedResult, FinishedTask, TaskResult, kept_run_folder, \
    result_paths, slug
from pyita.parallel import plan_workers, usable_cores, use_threads, worker_pool
from pyita.progress import progress_bar
from pyita.structure import Structure


@dataclass
class TaskInputs:
    """What every task of an experiment needs, read once: the settings, the usable structures and their
    reference energies. ``out`` is the experiment folder, absolute, where tasks running on this machine keep
    aenet's run folders; None on a cluster, whose workers use their own temporary folder."""

    config: ExperimentConfig
    pool: list[Structure]
    reference: dict[str, float]
    out: str | None = None


def run_task(inputs: TaskInputs, trial: int, condition_index: int, threads: int = 0) -> FinishedTask:
    """Train and evaluate one condition of one trial (in whatever process runs it); returns its result, saved
    by the caller. ``threads``: torch threads for this process (0: as they are). The warnings it raises come
    back with the result; when it fails they are shown where it ran."""
    start = time.perf_counter()
    if threads:
        use_threads(threads)
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:   # those the filters let through, as shown here
            task = _train(inputs, trial, condition_index)
    except BaseException:
        for message in caught:
            warnings.warn_explicit(message.message, message.category, message.filename, message.lineno)
        raise
    task.warnings = [(str(w.message), w.category) for w in caught]
    task.seconds_in_task = time.perf_counter() - start
    return task


def _train(inputs: TaskInputs, trial: int, condition_index: int) -> FinishedTask:
    from pyita.backends import get_backend

    config = inputs.config
    condition = config.conditions[condition_index]
    pool = inputs.pool
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
    backend = backend_of(config, condition)
    keep_runs = trainer.pop("keep_runs", False)
    if backend == "embedded" and config.max_memory is not None:
        trainer["max_memory"] = config.max_memory
    if backend == "aenet":
        if config.aenet_bin:
            trainer["aenet_bin"] = config.aenet_bin
        if keep_runs:
            if inputs.out is None:
                raise PyitaError("keep_runs = true keeps aenet's run folders in the experiment folder, which "
                                 "cluster workers do not write to")
            extra["workdir"] = kept_run_folder(Path(inputs.out), trial, condition.name)
            import shutil

            shutil.rmtree(extra["workdir"], ignore_errors=True)   # an interrupted attempt's folder, ours
        elif inputs.out is not None:
            extra["scratch"] = Path(inputs.out) / SCRATCH
    start = time.perf_counter()
    result = get_backend(backend)(parents=parents, derived=derived, test=test, trainer=trainer,
                                  augment=condition.augment, seed=split.model_seed,
                                  reference_energies=inputs.reference, **extra)
    seconds = time.perf_counter() - start
    summary = {
        "trial": trial, "condition": condition.name, "backend": backend, "seed": split.model_seed,
        **({"init_seed": split.model_seed + condition.init_seed_offset} if extra.get("init_seed_offset") else {}),
        "n_train_parents": len(parents), "n_derived": len(derived), "n_test": len(test),
        "test_sources": [s.source for s in test], "seconds": seconds, "history": result.history,
        "taylor_signal_meV_atom": signal,
        "train_energy_mae": result.train_energy_mae, "train_energy_rmse": result.train_energy_rmse,
        "pyita_version": __version__,
    }
    arrays = {"energy_ref": result.energy_ref, "energy_pred": result.energy_pred, "n_atoms": result.n_atoms,
              "force_errors": result.force_errors}
    if config.md:
        from pyita.experiment.md import run_task_md

        md_summary, md_arrays = run_task_md(config.md, result.potential, parents, test, split.model_seed)
        summary.update(md_summary)
        arrays.update(md_arrays)
    return FinishedTask(summary, arrays, run_folder=str(Path(result.rundir).absolute()) if result.rundir else None)


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


def on_cluster(config: ExperimentConfig) -> bool:
    return bool(config.scheduler or config.scheduler_file)


def require_dask():
    """``pyita.cluster``, or a PyitaError when Dask's distributed is not installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise PyitaError("a Dask scheduler was given but dask.distributed is not installed "
                         "(pip install pyita[dask])") from None
    from pyita import cluster

    return cluster


@contextmanager
def cluster_client(config: ExperimentConfig):
    """A connected, set-up Dask client when ``config`` names a scheduler, else None."""
    if not on_cluster(config):
        yield None
        return
    with require_dask().connect(config.scheduler, config.scheduler_file) as client:
        yield client


@dataclass
class TrialsRun:
    """What a run of the pending tasks did: the summaries saved now, and the tasks that did not finish with
    why, keyed by (trial, condition name) in the order of the tasks."""

    saved: list[dict] = field(default_factory=list)
    missing: dict[tuple[int, str], str] = field(default_factory=dict)


class UnfinishedExperiment(PyitaError):
    """Fewer tasks finished than planned; ``summary`` is the report of those that did."""

    def __init__(self, message: str, missing: dict[tuple[int, str], str], summary: dict | None = None):
        super().__init__(message)
        self.missing, self.summary = missing, summary

    def __reduce__(self):
        return type(self), (str(self), self.missing, self.summary)


def unfinished(run: TrialsRun, out: Path, summary: dict) -> UnfinishedExperiment:
    """The error that ends a run with tasks missing; each distinct failure is first said in a warning."""
    by_reason: dict[str, list[str]] = {}
    for (trial, name), why in run.missing.items():
        by_reason.setdefault(why, []).append(f"trial {trial} {name!r}")
    for why, tasks in by_reason.items():
        warnings.warn(f"{_listed(tasks)} did not finish: {why}", stacklevel=2)
    tasks = [f"trial {t} {n!r}" for t, n in run.missing]
    return UnfinishedExperiment(
        f"{len(tasks)} of {summary['expected_tasks']} tasks did not finish ({_listed(tasks)}); the report in {out} "
        f"covers the {summary['finished_tasks']} that did; rerun the same command with --resume to run them",
        dict(run.missing), summary)


def _listed(items: list[str], most: int = 6) -> str:
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


def run_trials(config: ExperimentConfig, out: Path, progress_enabled: bool = True, inline: bool | None = None,
               client=None) -> TrialsRun:
    """Run the pending tasks of ``config`` and save each result in ``out`` as it arrives: here (``inline``, the
    default for ``workers = 1``), in a local process pool, or on the Dask ``client`` (connected here when the
    config names a scheduler and none is given). A task that fails is recorded in ``missing``; an interruption
    stops everything at once."""
    out = Path(out)
    tasks = pending_tasks(config, out)
    run = TrialsRun()
    if not tasks:
        return run
    inputs = TaskInputs(config, *load_pool(config), out=None if on_cluster(config) else str(out.absolute()))
    names = {(t, c): config.conditions[c].name for t, c in tasks}
    shown: set[tuple[str, type]] = set()   # each distinct warning once, however many tasks raise it
    with progress_bar(len(tasks), "experiment", "tasks", enabled=progress_enabled) as advance, \
            closing(_outcomes(inputs, tasks, inline, client)) as outcomes:
        for (trial, cond), outcome in outcomes:
            key = (trial, names[trial, cond])
            if isinstance(outcome, FinishedTask) and outcome.summary.get("pyita_version") != __version__:
                outcome = PyitaError(f"ran on pyita {outcome.summary.get('pyita_version')}, this is {__version__}")
            if isinstance(outcome, FinishedTask):
                for message, category in outcome.warnings:
                    if (message, category) not in shown:
                        shown.add((message, category))
                        warnings.warn(message, category, stacklevel=2)
                run.saved.append(outcome.save(out))
                advance(1, last=f"trial {trial} {key[1]}: {outcome.summary['seconds']:.0f} s")
            else:
                run.missing[key] = str(outcome) if isinstance(outcome, PyitaError) else \
                    f"{type(outcome).__name__}: {outcome}"
                advance(1, last=f"trial {trial} {key[1]}: failed")
    order = [(t, names[t, c]) for t, c in tasks]
    run.missing = {key: run.missing[key] for key in order if key in run.missing}
    return run


def _outcomes(inputs: TaskInputs, tasks: list[tuple[int, int]], inline: bool | None, client):
    """``((trial, condition index), FinishedTask or the exception it raised)`` for each task, as they finish."""
    config = inputs.config
    if on_cluster(config):
        if client is None:
            with cluster_client(config) as client:
                yield from _on_cluster(client, inputs, tasks)
        else:
            yield from _on_cluster(client, inputs, tasks)
        return
    if inline if inline is not None else config.workers == 1:
        for trial, cond in tasks:
            try:
                yield (trial, cond), run_task(inputs, trial, cond)
            except Exception as exc:
                yield (trial, cond), exc
        return
    workers = plan_workers(config.workers, len(tasks), "workers")
    threads = max(1, usable_cores() // workers)
    with worker_pool(workers, "spawn") as pool:
        futures = {pool.submit(run_task, inputs, t, c, threads): (t, c) for t, c in tasks}
        try:
            for future in cf.as_completed(futures):
                yield futures[future], _result_or_error(future)
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _on_cluster(client, inputs: TaskInputs, tasks: list[tuple[int, int]]):
    """The tasks on a Dask cluster. The inputs go to the scheduler once, as a task of their own that every task
    depends on, copied to each worker there (so that the scheduler spreads the tasks over all of them; workers
    joining later fetch a copy from a peer). Should every worker holding them die, the scheduler makes them again
    from its own copy: data scattered to the workers would be lost with them, and every task after it."""
    from distributed import as_completed

    if not client.scheduler_info().get("workers"):
        warnings.warn("no Dask worker has joined the scheduler yet; the tasks wait for one", stacklevel=3)
    run = uuid.uuid4().hex[:8]
    with warnings.catch_warnings():   # Dask's advice to scatter large data instead: see above
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        shared = client.submit(_same, inputs, pure=False, key=f"pyita-{run}-inputs")
    client.replicate([shared])
    futures = {client.submit(run_task, shared, t, c, pure=False,
                             key=f"pyita-{run}-trial-{t:03d}-{slug(inputs.config.conditions[c].name)}"): (t, c)
               for t, c in tasks}
    try:
        for future in as_completed(futures):
            yield futures[future], _result_or_error(future)
    except BaseException:
        client.cancel([*futures, shared])
        raise


def _same(inputs: TaskInputs) -> TaskInputs:
    return inputs


def _result_or_error(future) -> FinishedTask | Exception:
    try:
        return future.result()
    except Exception as exc:   # the task's own error, a lost worker (local pool or Dask) or a cancelled task
        return exc

