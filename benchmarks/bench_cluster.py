"""Tasks per hour of one experiment on this machine: in the command's own process (--workers 1), in a local
pool of 2 worker processes (--workers 2), and on a Dask LocalCluster of 2 worker processes (1 thread each) —
and Dask's overhead per task.

    python benchmarks/bench_cluster.py [--preset quick | --config FILE] [--trials 2] [--overhead-tasks 4]
                                       [--json result.json]

Each mode runs the same pending tasks into a folder of its own through ``run_trials``, the call `pyita
experiment` makes (the report is not written: it costs the same in every mode); its wall time includes starting
the workers' processes (local pool) or their first imports (Dask: the cluster is started before, untimed).
The script also says whether the results are equal number for number: Dask and the local pool run each task
with 1 torch thread; --workers 1 with all the cores' threads, which sums in another order.

Overhead per task on Dask: after the throughput run (workers warm), ``--overhead-tasks`` tasks one after
another, each timed at the client from submission to its result in hand, minus the time the task spent inside
``run_task`` (measured by the worker): what the scheduler, the transfers and the (de)serialisation add.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _config(args, **where):
    from pyita.experiment.runner import prepare_experiment

    return prepare_experiment(args.config, None if args.config else args.preset, {"trials": args.trials,
                                                                                  **where}).config


def _timed(config, out: Path, client=None) -> dict:
    from pyita.experiment.tasks import run_trials

    out.mkdir()
    load = os.getloadavg()[0]
    start = time.perf_counter()
    run = run_trials(config, out, progress_enabled=False, client=client)
    seconds = time.perf_counter() - start
    assert not run.missing, run.missing
    return {"tasks": len(run.saved), "seconds": seconds, "tasks_per_hour": 3600 * len(run.saved) / seconds,
            "load_before": load, "load_after": os.getloadavg()[0],
            "task_seconds_median": statistics.median(s["seconds"] for s in run.saved)}


def _arrays(out: Path) -> dict:
    found = {}
    for npz in sorted(out.glob("results/trial-*/*.npz")):
        with np.load(npz) as data:
            found.update({(npz.parent.name, npz.stem, k): data[k] for k in data.files})
    return found


def _overhead(client, config, tasks: int) -> dict:
    """Client-seen time minus in-task time, one task at a time on warm workers."""
    from pyita.experiment.protocol import load_pool
    from pyita.experiment.tasks import TaskInputs, run_task

    inputs = TaskInputs(config, *load_pool(config))
    shared = client.scatter(inputs, broadcast=True, hash=False)
    rows = []
    for k in range(tasks):
        trial, cond = divmod(k, len(config.conditions))
        start = time.perf_counter()
        finished = client.submit(run_task, shared, trial % config.trials, cond, pure=False).result()
        seen = time.perf_counter() - start
        rows.append({"seen": seen, "in_task": finished.seconds_in_task, "overhead": seen - finished.seconds_in_task})
    return {"tasks": rows, "overhead_median": statistics.median(r["overhead"] for r in rows),
            "in_task_median": statistics.median(r["in_task"] for r in rows),
            "inputs_bytes": len(pickle.dumps(inputs)), "result_bytes": len(pickle.dumps(finished))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--config", type=Path, help="an experiment config instead of the preset")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--overhead-tasks", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from distributed import LocalCluster

    from pyita.cluster import connect

    result = {"preset": str(args.config or args.preset), "trials": args.trials, "cores": len(os.sched_getaffinity(0))}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for workers in (1, 2):
            result[f"workers {workers}"] = _timed(_config(args, workers=workers),
                                                  root / f"workers-{workers}")
            print(f"workers {workers}: {result[f'workers {workers}']}", flush=True)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                connect(cluster.scheduler_address) as client:
            config = _config(args, scheduler=cluster.scheduler_address)
            result["dask 2 processes"] = _timed(config, root / "dask", client)
            print(f"dask: {result['dask 2 processes']}", flush=True)
            result["dask overhead"] = _overhead(client, config, args.overhead_tasks)
            print(f"overhead: {result['dask overhead']}", flush=True)
        arrays = {mode: _arrays(root / mode) for mode in ("workers-1", "workers-2", "dask")}
        for mode, other in (("workers-2", "workers-1"), ("dask", "workers-2")):   # 2 and 1 torch threads; 1 and 1
            result[f"{mode} equals {other}"] = arrays[mode].keys() == arrays[other].keys() and all(
                np.array_equal(arrays[mode][k], arrays[other][k]) for k in arrays[other])
    base = result["workers 1"]["tasks_per_hour"]
    for mode in ("workers 1", "workers 2", "dask 2 processes"):
        row = result[mode]
        print(f"| {mode} | {row['tasks']} | {row['seconds']:.1f} s | {row['tasks_per_hour']:.0f} | "
              f"{row['tasks_per_hour'] / base:.2f}× | {row['load_before']:.1f}–{row['load_after']:.1f} |")
    over = result["dask overhead"]
    print(f"Dask overhead per task: median {over['overhead_median']:.3f} s over {len(over['tasks'])} tasks of median "
          f"{over['in_task_median']:.1f} s in run_task ({100 * over['overhead_median'] / 30:.2f} % of a 30-s task); "
          f"inputs {over['inputs_bytes'] / 2**20:.1f} MiB, a result {over['result_bytes'] / 2**10:.0f} KiB")
    print(f"results equal: workers 2 and workers 1 {result['workers-2 equals workers-1']}, "
          f"Dask and workers 2 {result['dask equals workers-2']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
