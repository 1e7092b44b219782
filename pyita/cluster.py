"""A Dask cluster for an experiment's tasks: connecting to its scheduler, and setting up each worker as a local
worker process is set up.

Needs ``distributed`` (``pip install pyita[dask]``), imported here at once: callers check it is installed first.
Workers need pyita (the client's version) and torch, nothing else: tasks get their data from the client and hand
their results back to it, so a worker needs neither the data files nor the experiment folder.
"""

from __future__ import annotations

import ctypes
import os
import sys
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

from distributed import Client, WorkerPlugin

from pyita import __version__
from pyita.errors import PyitaError
from pyita.parallel import use_threads


class WorkerSetup(WorkerPlugin):
    """Run on every worker that joins (and those already there): refuses a worker whose pyita is not the
    client's (its results would not be the ones the experiment records), lets OpenMP threads wait passively,
    gives each task ``threads`` torch threads — by default the worker's OMP_NUM_THREADS, else 1, since a worker
    runs as many tasks side by side as it has threads and cores are shared among them — and undoes the memory
    setting of Dask's nanny that slows training (``adaptive_malloc``)."""

    def __init__(self, version: str, threads: int | None = None):
        self.version = version
        self.threads = threads

    def setup(self, worker) -> None:
        if __version__ != self.version:
            raise PyitaError(f"Dask worker {worker.address} runs pyita {__version__} and the client pyita "
                             f"{self.version}; install the same version on every worker")
        use_threads(self.threads or int(os.environ.get("OMP_NUM_THREADS") or 1))
        adaptive_malloc()


#: glibc's mallopt parameters, and the values its adaptive defaults grow to on 64-bit systems.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20


def adaptive_malloc() -> None:
    """Dask's nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536, to hand freed memory back to the system
    at once; glibc then serves every allocation above 128 KiB with a fresh mmap, and a force-training task of
    ``--preset quick`` took 43 s instead of 21 s. Set glibc's thresholds to those its adaptive defaults reach
    (a no-op where the variable is not set, or not glibc)."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX)
    except (OSError, AttributeError):   # another C library
        pass


def where(address: str | None, scheduler_file: str | Path | None) -> str:
    """The scheduler as the user named it, for messages."""
    return f"--scheduler {address}" if address else f"--scheduler-file {scheduler_file}"


@contextmanager
def connect(address: str | None = None, scheduler_file: str | Path | None = None, threads: int | None = None):
    """A client of the scheduler at ``address`` (or named in ``scheduler_file``, the file `dask scheduler
    --scheduler-file`, dask-jobqueue and dask-mpi write) whose workers are set up by ``WorkerSetup``; one line
    of PyitaError when the scheduler cannot be reached or a worker cannot be set up."""
    named = where(address, scheduler_file)
    try:
        client = Client(address) if address else Client(scheduler_file=str(scheduler_file))
    except (OSError, ValueError) as exc:   # unreachable (TimeoutError is an OSError), a malformed address or file
        raise PyitaError(f"{named}: cannot reach the Dask scheduler ({type(exc).__name__}: {exc})") from None
    name = f"pyita-setup-{uuid.uuid4().hex[:8]}"   # this client's own: another experiment's stays
    with client:
        try:
            client.register_plugin(WorkerSetup(__version__, threads), name=name)
        except PyitaError:
            raise
        except Exception as exc:   # e.g. a worker without pyita cannot even read the setup
            raise PyitaError(f"{named}: cannot set up the Dask workers ({type(exc).__name__}: {exc}); every worker "
                             f"needs pyita {__version__} and torch") from None
        try:
            yield client
        finally:
            with suppress(Exception):   # a scheduler already gone has nothing to unregister
                client.unregister_worker_plugin(name)
