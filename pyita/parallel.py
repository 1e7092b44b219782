"""Worker processes that never outlive the command that started them.

A worker asks the kernel to kill it when its parent dies (Linux ``PR_SET_PDEATHSIG``) and, everywhere, a
watchdog thread checks that its parent is still the one that started it. So however the command ends —
an error, Ctrl-C, SIGTERM, even SIGKILL — no worker keeps running, writing results into a folder that a
``--resume`` may already be using. On an error or an interruption the pool is stopped at once: queued work
is cancelled and running workers are terminated instead of being waited for.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

from pyita.errors import PyitaError

WATCHDOG_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1


def check_workers(workers: int, option: str = "--workers") -> int:
    """A worker count as given by a user: a whole number ≥ 1."""
    if isinstance(workers, bool) or int(workers) != workers or workers < 1:
        raise PyitaError(f"{option} must be a whole number ≥ 1, got {workers}")
    return int(workers)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def plan_workers(workers: int, tasks: int, option: str = "--workers") -> int:
    """The worker processes to start for ``tasks`` pieces of work when ``workers`` are asked for: at most one
    per piece and one per usable core (more would sit idle or fight over the same cores), at least 1.

    The one rule for every command with a worker pool (augment, check, label, experiment).
    """
    return max(1, min(check_workers(workers, option), tasks, usable_cores()))


def passive_openmp() -> None:
    """Let OpenMP threads sleep while they wait instead of spinning: spinning threads make torch 10–20× slower
    when another process holds a core (measured on 2 cores), and passive waiting costs nothing on an idle
    machine. Takes effect only before torch loads: the command line sets it at start, worker setups first."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def use_threads(threads: int) -> None:
    """Let each torch operation of this process use ``threads`` threads: a worker's share of the cores, so
    that the tasks running side by side do not fight over them (the one rule for local and cluster workers)."""
    import torch

    passive_openmp()
    torch.set_num_threads(check_workers(threads, "threads per task"))


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere nothing). Also the
    ``preexec_fn`` of external programs (aenet's), so a killed command leaves none running in its folder."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass


def _die_with(parent_pid: int) -> None:
    die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_SECONDS)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="pyita-parent-watchdog", daemon=True).start()


def _start_worker(parent_pid: int, initializer, initargs) -> None:
    _die_with(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a forked worker must not inherit the parent's handler
    if initializer is not None:
        initializer(*initargs)


def stop_pool(pool: ProcessPoolExecutor, grace: float = 5.0) -> None:
    """Cancel queued work and end the running workers now (SIGTERM, then SIGKILL after ``grace`` s)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)


@contextmanager
def worker_pool(workers: int, start_method: str = "spawn", initializer=None, initargs: tuple = ()):
    """A ``ProcessPoolExecutor`` whose workers die with this process; stopped at once on any exception."""
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(start_method),
                               initializer=_start_worker, initargs=(os.getpid(), initializer, initargs))
    try:
        yield pool
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown(wait=True)
