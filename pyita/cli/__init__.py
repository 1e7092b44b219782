"""The ``pyita`` command line: a thin layer over the Python API, one command per job.

``pyita X`` calls ``run_X`` of its package (``pyita aenet X``: ``run_aenet_X`` of ``pyita.backends.aenet``)."""

from pyita.cli.entry import app, main

__all__ = ["app", "main"]
