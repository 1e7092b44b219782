"""Molecular dynamics with a trained potential, and whether it holds up (``pyita md``).

    from pyita.md import MDSettings, run_md
    summary = run_md("model.pt", "sample:tio2-md", "md-out", MDSettings(temperature=300, steps=200, starts=2))
    summary["totals"]["fraction_stable"]

``run_md`` is imported on first use, so that the command line (which reads the settings' defaults for its help)
starts without loading torch.
"""

from pyita.md.failure import CRITERIA
from pyita.md.settings import MDSettings

__all__ = ["CRITERIA", "MDSettings", "run_md"]


def __getattr__(name: str):
    if name == "run_md":
        from pyita.md.run import run_md

        return run_md
    raise AttributeError(f"module 'pyita.md' has no attribute {name!r}")
