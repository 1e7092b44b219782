"""Run a `pyita experiment` on a SLURM cluster: dask-jobqueue submits batch jobs that start Dask workers, and the
experiment's tasks run on them; results and report are written here, under --out, by this process.

    pip install "pyita[dask]" dask-jobqueue
    python examples/slurm_experiment.py my-study.toml --out study/ --jobs 4 --tasks-per-job 8 \\
        --threads-per-task 2 --memory 32GB --walltime 04:00:00 --queue compute

Run it on the login node (or in a small job of its own) with the environment the workers will have: each job
starts `python -m distributed.cli.dask_worker` with this very Python, so it must exist on the compute nodes (a
virtual environment on a shared filesystem, or the same module/conda setup). The workers need pyita (this
version) and torch; not the data, which this process reads and sends them, nor --out. aenet conditions need
aenet's executables on every node (AENET_BIN or PATH there; a config's aenet_bin is used as given).

Each worker runs one task at a time with --threads-per-task torch threads, --tasks-per-job workers per job. If
the jobs end before the experiment does (walltime), rerun with --resume: finished tasks are kept.
"""

from __future__ import annotations

import argparse
import sys


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="experiment TOML file (or give --preset)")
    parser.add_argument("--preset", help="a bundled preset instead of a config file (quick, seed-500, …)")
    parser.add_argument("--out", required=True, help="experiment folder, written by this process only")
    parser.add_argument("--resume", action="store_true", help="continue the experiment in --out")
    parser.add_argument("--jobs", type=positive, default=1, help="SLURM jobs to start (default 1)")
    parser.add_argument("--tasks-per-job", type=positive, default=1,
                        help="Dask workers per job, each running one task at a time (default 1)")
    parser.add_argument("--threads-per-task", type=positive, default=1, help="torch threads per task (default 1)")
    parser.add_argument("--memory", required=True, help="memory per job, e.g. 16GB")
    parser.add_argument("--walltime", default="01:00:00", help="per job, HH:MM:SS (default 01:00:00)")
    parser.add_argument("--queue", help="SLURM partition")
    parser.add_argument("--account", help="SLURM account")
    args = parser.parse_args(argv)
    if (args.config is None) == (args.preset is None):
        parser.error("give either a config file or --preset")
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        print("error: this script needs dask-jobqueue (pip install dask-jobqueue)", file=sys.stderr)
        return 2
    from pyita.errors import PyitaError
    from pyita.experiment import run_experiment
    from pyita.experiment.runner import prepare_experiment

    try:   # every setting, and that the data can be read, before any job is submitted
        prepare_experiment(args.config, args.preset)
    except PyitaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cluster = SLURMCluster(
        cores=args.tasks_per_job,                 # Dask threads per job: one task per worker at a time
        processes=args.tasks_per_job,             # one worker process per task slot
        job_cpu=args.tasks_per_job * args.threads_per_task,   # the cores SLURM books
        memory=args.memory, walltime=args.walltime, queue=args.queue, account=args.account,
        job_script_prologue=[f"export OMP_NUM_THREADS={args.threads_per_task}"],   # pyita's worker setup reads it
    )
    try:
        cluster.scale(jobs=args.jobs)   # the jobs queue; the tasks wait for the first worker
        summary = run_experiment(args.config, args.preset, {"scheduler": cluster.scheduler_address}, args.out,
                                 resume=args.resume)
    except PyitaError as exc:   # settings, or tasks that did not finish (rerun with --resume)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        cluster.close()
    for line in summary["plain_summary"]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
