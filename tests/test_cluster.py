"""`pyita experiment` on a real Dask cluster: a scheduler and workers started as separate processes in a folder
that is not the client's, as on other machines. The results land in the client's --out (a relative one), equal
a local run number for number, and survive a worker killed mid-task: the task runs again elsewhere, or — beyond
the scheduler's allowed failures — the run ends with exit 2, naming what is missing, and --resume completes it."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from faults import cli_env, error_line, run_cli, wait_until

distributed = pytest.importorskip("distributed")

CONFIG = """
[experiment]
name = "cluster"
data = "sample:tio2-md"
trials = 2
subset_size = 16
test_fraction = 0.25
seed = 5
workers = 1

[trainer]
iterations = 4
hidden = "4:tanh"

[[condition]]
name = "baseline"

[[condition]]
name = "large delta"
augment = { strategy = "balanced", a = 1, delta = 0.12 }
"""
TASKS = [(0, "baseline"), (0, "large_delta"), (1, "baseline"), (1, "large_delta")]


class Cluster:
    """A `dask scheduler` and `dask worker`s as processes of their own, working in ``folder``."""

    def __init__(self, folder: Path, **env):
        self.folder, self.env = folder, cli_env(**env)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.file = folder / "scheduler.json"
        self.processes: dict[str, subprocess.Popen] = {}
        self._start("scheduler", "distributed.cli.dask_scheduler", "--port", "0", "--scheduler-file", str(self.file))
        assert wait_until(lambda: self.file.exists(), timeout=60), self.log("scheduler")
        self.address = json.loads(self.file.read_text())["address"]

    def _start(self, name: str, module: str, *args: str) -> None:
        with open(self.folder / f"{name}.log", "w") as log:
            self.processes[name] = subprocess.Popen([sys.executable, "-m", module, *args, "--dashboard-address", ":0"],
                                                    cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def worker(self, name: str) -> None:
        self._start(name, "distributed.cli.dask_worker", "--no-nanny", "--nthreads", "1", "--name", name, self.address)

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(30)


@pytest.fixture
def cluster(tmp_path):
    started = []

    def start(**env) -> Cluster:
        started.append(Cluster(tmp_path / "elsewhere", **env))
        return started[-1]

    yield start
    for one in started:
        one.stop()


def _tables(out: Path) -> tuple[list[dict], dict]:
    """per_trial.csv without its timings, and every saved array."""
    with open(out / "per_trial.csv", newline="") as handle:
        rows = [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]
    arrays = {}
    for npz in sorted((out / "results").glob("trial-*/*.npz")):
        with np.load(npz) as data:
            arrays.update({(npz.parent.name, npz.stem, key): data[key] for key in data.files})
    return rows, arrays


def _same_numbers(out: Path, reference: Path) -> None:
    rows, arrays = _tables(out)
    expected_rows, expected_arrays = _tables(reference)
    assert rows == expected_rows and len(rows) == 4
    assert arrays.keys() == expected_arrays.keys()
    for key, value in arrays.items():
        assert np.array_equal(value, expected_arrays[key]), key


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The same experiment run locally, in the command's own process (--workers 1)."""
    root = tmp_path_factory.mktemp("local")
    (root / "cluster.toml").write_text(CONFIG)
    done = run_cli("experiment", "cluster.toml", "--out", "out", "--workers", 1, "-q", cwd=root)
    assert done.returncode == 0, done.stderr
    return root / "out"


def _client_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "client"
    folder.mkdir()
    (folder / "cluster.toml").write_text(CONFIG)
    return folder


@pytest.mark.slow
def test_results_come_back_to_a_relative_out_and_equal_a_local_run(tmp_path, cluster, local_run):
    dask = cluster()
    dask.worker("w1")
    client = _client_folder(tmp_path)
    scheduler_file = os.path.relpath(dask.file, client)   # relative to the client's folder, like --out
    done = run_cli("experiment", "cluster.toml", "--out", "out", "--scheduler-file", scheduler_file, "-q",
                   cwd=client)
    assert done.returncode == 0, done.stderr + dask.log("w1")
    assert sorted((p.parent.name, p.stem) for p in (client / "out" / "results").glob("*/*.json")) == [
        (f"trial-{t:03d}", name) for t, name in TASKS]
    assert sorted(p.name for p in dask.folder.iterdir()) == ["scheduler.json", "scheduler.log", "w1.log"]
    _same_numbers(client / "out", local_run)
    # a warning raised in a task on the worker reaches the command's own stderr, once
    assert [ln for ln in done.stderr.splitlines() if "delta 0.12 Å is large" in ln] == [
        "warning: delta 0.12 Å is large: first-order Taylor labels degrade as δ²; measure with `pyita check`"]
    summary = json.loads((client / "out" / "summary.json").read_text())
    assert summary["finished_tasks"] == summary["expected_tasks"] == 4


def _kill_w1_in_a_task(dask: Cluster, experiment: subprocess.Popen, late_w2: bool = False) -> list[str]:
    """SIGKILL worker w1 while it runs a task of the experiment (as the scheduler sees it) and w2 is there;
    ``late_w2``: w1 is stopped (SIGSTOP) in its task while w2 starts, so that w2 joins a running experiment and
    w1, the only worker that held the experiment's inputs, dies in a task. Returns the tasks w1 had."""
    with distributed.Client(dask.address, timeout=30) as watcher:
        def workers() -> dict[str, str]:
            return {worker["name"]: address
                    for address, worker in watcher.scheduler_info(n_workers=-1)["workers"].items()}

        def w1_tasks() -> list[str]:
            w1 = workers().get("w1")
            return [str(k) for k in watcher.processing().get(w1, []) if "-trial-" in str(k)] if w1 else []

        assert wait_until(lambda: w1_tasks() or experiment.poll() is not None, timeout=120)
        tasks = w1_tasks()
        assert tasks, "the experiment ended before w1 took a task"
        if late_w2:
            dask.processes["w1"].send_signal(signal.SIGSTOP)
            dask.worker("w2")
        assert wait_until(lambda: "w2" in workers(), timeout=120), dask.log("w2")
        dask.processes["w1"].send_signal(signal.SIGKILL)
        dask.processes["w1"].wait(30)
    return tasks


def _experiment(client: Path, dask: Cluster, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pyita.cli", "experiment", "cluster.toml", "--out", "out",
                             "--scheduler", dask.address, "-q", *args], cwd=client, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_task_on_a_killed_worker_runs_again_on_another(tmp_path, cluster, local_run):
    """w2 joins after the experiment started, as batch jobs do; w1, the only worker there at first, is killed."""
    dask = cluster()
    dask.worker("w1")
    client = _client_folder(tmp_path)
    experiment = _experiment(client, dask)
    _kill_w1_in_a_task(dask, experiment, late_w2=True)
    _, stderr = experiment.communicate(timeout=300)
    assert experiment.returncode == 0, stderr
    _same_numbers(client / "out", local_run)
    assert len(list((client / "out" / "results").glob("*/*.json"))) == 4


@pytest.mark.slow
def test_a_task_lost_beyond_the_allowed_failures_ends_with_exit_2_and_resume_completes(tmp_path, cluster,
                                                                                       local_run):
    dask = cluster(DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")
    dask.worker("w1")
    dask.worker("w2")
    client = _client_folder(tmp_path)
    experiment = _experiment(client, dask)
    lost = _kill_w1_in_a_task(dask, experiment)
    stdout, stderr = experiment.communicate(timeout=300)
    failed = SimpleNamespace(returncode=experiment.returncode, stdout=stdout, stderr=stderr)
    line = error_line(failed, f"{len(lost)} of 4 tasks did not finish", "the report in out covers the "
                      f"{4 - len(lost)} that did", "rerun the same command with --resume to run them")
    for key in lost:   # pyita-<run>-trial-000-large_delta
        trial, name = key.split("-trial-")[1].split("-", 1)
        assert f"trial {int(trial)} {name.replace('_', ' ')!r}" in line
    assert any("KilledWorker" in ln for ln in stderr.splitlines() if ln.startswith("warning:")), stderr
    saved = {p: p.stat().st_mtime_ns for p in (client / "out" / "results").glob("*/*.json")}
    assert len(saved) == 4 - len(lost) == json.loads((client / "out" / "summary.json").read_text())["finished_tasks"]
    resumed = run_cli("experiment", "cluster.toml", "--out", "out", "--scheduler", dask.address, "--resume", "-q",
                      cwd=client)
    assert resumed.returncode == 0, resumed.stderr
    assert {p: p.stat().st_mtime_ns for p in saved} == saved   # only the missing tasks ran again
    _same_numbers(client / "out", local_run)


def test_scheduler_and_scheduler_file_together_are_refused(tmp_path):
    client = _client_folder(tmp_path)
    (client / "scheduler.json").write_text("{}")
    done = run_cli("experiment", "cluster.toml", "--out", "out", "--scheduler", "tcp://127.0.0.1:1",
                   "--scheduler-file", "scheduler.json", cwd=client)
    error_line(done, "--scheduler and --scheduler-file", "give one of them")
    both = CONFIG.replace('workers = 1', 'scheduler = "tcp://127.0.0.1:1"\nscheduler_file = "scheduler.json"')
    (client / "cluster.toml").write_text(both)
    done = run_cli("experiment", "cluster.toml", "--out", "out", cwd=client)
    error_line(done, "cluster.toml", "scheduler and scheduler_file", "give one of them")
    missing = run_cli("experiment", "cluster.toml", "--out", "out", "--scheduler-file", "nowhere.json", cwd=client)
    error_line(missing, "--scheduler-file", "nowhere.json", "no such file")
    assert sorted(p.name for p in client.iterdir()) == ["cluster.toml", "scheduler.json"]


def test_an_unreachable_scheduler_is_refused_before_the_folder_exists(tmp_path):
    client = _client_folder(tmp_path)
    done = run_cli("experiment", "cluster.toml", "--out", "out", "--scheduler", "tcp://127.0.0.1:9", "-q",
                   cwd=client, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s")
    error_line(done, "--scheduler tcp://127.0.0.1:9: cannot reach the Dask scheduler")
    assert not (client / "out").exists()


def test_the_command_line_scheduler_replaces_the_configs(tmp_path):
    """A config's scheduler_file is read from the config's folder; --scheduler given instead replaces it."""
    from pyita.experiment.config import parse_config, parse_toml

    text = CONFIG.replace('workers = 1', 'scheduler_file = "sched/scheduler.json"')
    config = parse_config(parse_toml(text, tmp_path / "c.toml"), tmp_path / "c.toml")
    assert config.scheduler_file == str(tmp_path / "sched" / "scheduler.json") and config.scheduler is None
    config = parse_config(parse_toml(text, tmp_path / "c.toml"), tmp_path / "c.toml", {"scheduler": "tcp://h:1"})
    assert config.scheduler == "tcp://h:1" and config.scheduler_file is None


def test_keep_runs_on_a_cluster_is_refused_before_the_folder_exists(tmp_path):
    client = _client_folder(tmp_path)
    (client / "cluster.toml").write_text(CONFIG.replace('hidden = "4:tanh"', 'hidden = "4:tanh"\nkeep_runs = true')
                                         .replace('name = "large delta"\naugment = { strategy = "balanced", a = 1, '
                                                  'delta = 0.12 }', 'name = "other"\ninit_seed_offset = 1'))
    done = run_cli("experiment", "cluster.toml", "--backend", "aenet", "--out", "out", "--scheduler",
                   "tcp://127.0.0.1:1", cwd=client)
    error_line(done, "cluster.toml", "keep_runs = true", "Dask workers do not write", "drop keep_runs")
    assert not (client / "out").exists()


def test_a_worker_of_another_pyita_version_is_refused():
    import torch

    from pyita import __version__
    from pyita.cluster import WorkerSetup
    from pyita.errors import PyitaError

    with pytest.raises(PyitaError, match=f"worker tcp://w:1 runs pyita {__version__} and the client pyita 0.0.1"):
        WorkerSetup("0.0.1").setup(SimpleNamespace(address="tcp://w:1"))
    before = torch.get_num_threads()
    try:
        WorkerSetup(__version__, threads=1).setup(SimpleNamespace(address="tcp://w:1"))
        assert torch.get_num_threads() == 1 and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    finally:
        torch.set_num_threads(before)


def test_a_failing_task_leaves_the_others_saved_and_is_named(tmp_path):
    """A condition whose trainer cannot run (aenet's executables are not where the config says) fails alone:
    the other tasks are saved, and the run names what is missing and how to finish it."""
    from pyita.experiment.config import parse_config, parse_toml
    from pyita.experiment.report import write_report
    from pyita.experiment.tasks import run_trials, unfinished

    text = CONFIG.replace("trials = 2", "trials = 1").replace("delta = 0.12 }", 'delta = 0.02 }\nbackend = "aenet"')
    text = text.replace('workers = 1', f'workers = 1\naenet_bin = "{tmp_path / "no-aenet"}"')
    config = parse_config(parse_toml(text, tmp_path / "c.toml"), tmp_path / "c.toml")
    out = tmp_path / "out"
    run = run_trials(config, out, progress_enabled=False)
    assert [s["condition"] for s in run.saved] == ["baseline"] and list(run.missing) == [(0, "large delta")]
    assert "no-aenet" in run.missing[0, "large delta"]
    with pytest.warns(UserWarning, match="trial 0 'large delta' did not finish: .*no-aenet"):
        error = unfinished(run, out, write_report(config, out))
    assert str(error) == (f"1 of 2 tasks did not finish (trial 0 'large delta'); the report in {out} covers the 1 "
                          "that did; rerun the same command with --resume to run them")
    assert sorted(p.name for p in (out / "results" / "trial-000").iterdir()) == ["baseline.json", "baseline.npz"]


def test_the_slurm_example_checks_its_arguments_and_imports_without_running(tmp_path):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "examples" / "slurm_experiment.py"
    spec = importlib.util.spec_from_file_location("slurm_experiment", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)   # defines, submits nothing
    args = module.arguments(["study.toml", "--out", "o", "--memory", "8GB", "--jobs", "3", "--tasks-per-job", "4"])
    assert (args.config, args.jobs, args.tasks_per_job, args.threads_per_task) == ("study.toml", 3, 4, 1)
    for bad, words in ((["x.toml", "--out", "o", "--memory", "8GB", "--jobs", "0"], "--jobs: must be ≥ 1"),
                       (["--out", "o", "--memory", "8GB"], "give either a config file or --preset")):
        done = subprocess.run([sys.executable, script, *bad], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and words in done.stderr, done.stderr
    if importlib.util.find_spec("dask_jobqueue") is None:
        done = subprocess.run([sys.executable, script, "--preset", "quick", "--out", "o", "--memory", "8GB"],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 2 and "needs dask-jobqueue" in done.stderr and not (tmp_path / "o").exists()


MMAPPED = """
import ctypes, numpy
from pyita.cluster import adaptive_malloc

class Info(ctypes.Structure):   # glibc's struct mallinfo2
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info

def mmapped():   # chunks served by their own mmap while a 2 MiB array lives
    before = libc.mallinfo2().hblks
    array = numpy.ones(2**18)
    return libc.mallinfo2().hblks - before

print([mmapped(), mmapped()], end=" ")
adaptive_malloc()
print([mmapped(), mmapped()])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_dask_nannys_malloc_setting_is_undone_on_workers():
    """The nanny's MALLOC_TRIM_THRESHOLD_ makes glibc mmap every allocation above 128 KiB, afresh each time;
    the worker setup restores the heap for them (a force-training task took twice as long without)."""
    done = subprocess.run([sys.executable, "-c", MMAPPED], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"})
    assert done.stdout.split() == ["[1,", "1]", "[0,", "0]"], done.stdout + done.stderr
    untouched = subprocess.run([sys.executable, "-c", MMAPPED], capture_output=True, text=True, timeout=60,
                               env={k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"})
    assert untouched.stdout.split()[2:] == ["[0,", "0]"], untouched.stdout + untouched.stderr
