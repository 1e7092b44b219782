"""`pyita experiment`: check the settings, claim the output folder, run the tasks (``tasks.py``), write the
report.

Each finished task is saved at once (atomically) under ``results/``; a rerun with ``resume`` skips what
is there, so a killed experiment loses at most the tasks that were running.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from pyita.errors import PyitaError
from pyita.experiment.config import (ExperimentConfig, backend_of, first_difference, parse_config, parse_toml,
                                     read_config_text)
from pyita.experiment.results import KEPT_RUNS, RESULTS, SCRATCH
from pyita.experiment.tasks import cluster_client, on_cluster, require_dask, run_trials, unfinished
from pyita.io.atomic import TMP_MARK, atomic_write_text
from pyita.io.locks import exclusive
from pyita.io import open_source
from pyita.io.outputs import data_inputs, listing, refuse_overlap
from pyita.io.records import json_text


#: The lock file of a running experiment, inside its folder.
LOCK = ".pyita.lock"


@dataclass
class PreparedExperiment:
    """An experiment checked to start: its settings, the config it came from, and the inputs it reads."""

    config: ExperimentConfig
    raw: dict
    path: Path
    text: str
    overrides: dict
    inputs: list[Path] = field(default_factory=list)


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
        source = open_source(config.data, keys=config.label_keys)   # label keys for XSF data: refused here
        prepared.inputs = data_inputs(config.data, source) + ([path] if config_file else [])
        check_backends(config)
    return prepared


def check_backends(config: ExperimentConfig) -> None:
    """Fail before anything is written or trained when a condition needs aenet and none is usable, or a Dask
    scheduler is given without Dask or its scheduler file is not there."""
    if on_cluster(config):
        require_dask()
        if config.scheduler_file and not Path(config.scheduler_file).is_file():
            raise PyitaError(f"--scheduler-file {config.scheduler_file}: no such file (the file that `dask scheduler "
                             "--scheduler-file` writes)")
    needing = [c.name for c in config.conditions if backend_of(config, c) == "aenet"]
    if needing:
        from pyita.backends.aenet import find_executables

        try:
            find_executables(config.aenet_bin)
        except PyitaError as exc:
            raise PyitaError(f"conditions {', '.join(map(repr, needing))} need aenet: {exc}") from None


#: Settings that say where tasks run, not what they compute: free to differ between a run and its resume.
_WHERE = ("workers", "scheduler", "scheduler_file", "max_memory")


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
                                       _what_results_depend_on(json.loads(json_text(given.as_dict(), default=str))))
            if differs:
                raise PyitaError(f"--report-only: the config given is not the experiment in {out} ({differs}); "
                                 "give the same config, or none to report the stored one")
        return write_report(stored, out)


#: What `pyita experiment` writes in its folder, as paths relative to it; anything else there is not its own.
_OWN = re.compile(r"experiment\.json|config\.toml|summary\.json|report\.(md|html)|"
                  r"(per_trial|conditions|comparisons|md_survival)\.csv|(energy|force)_errors\.csv\.gz|"
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
    settings = json_text(config.as_dict(), indent=1, default=str, ensure_ascii=False)
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
        atomic_write_text(saved, settings)
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
    summary. When tasks did not finish, the report of those that did is written all the same and
    ``UnfinishedExperiment`` (a PyitaError: exit status 2 on the command line) names the others."""
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
    # a scheduler that cannot be reached or workers that cannot be set up: refused before the folder is claimed
    with cluster_client(config) as client, \
            experiment_output(out, config, prepared.text, resume, prepared.inputs, overwrite=overwrite):
        run = run_trials(config, out, progress_enabled=progress, client=client)
        from pyita.experiment.report import write_report   # matplotlib: only once there are results

        summary = write_report(config, out)
        if run.missing:
            raise unfinished(run, out, summary)
        return summary
