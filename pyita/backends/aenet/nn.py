"""``pyita aenet export``: a PyITA potential as a folder of aenet .nn files (``pyita.model.aenet`` converts)."""

from __future__ import annotations

from pathlib import Path

from pyita import __version__
from pyita.io.aenet_nn import write_nn
from pyita.io.atomic import atomic_output_dir
from pyita.io.outputs import RECORDS, guard_output
from pyita.io.records import json_text
from pyita.model.aenet import network_file_names, potential_to_nn
from pyita.model import Potential, load_potential

__all__ = ["run_aenet_export"]


def run_aenet_export(model, out: str | Path, overwrite: bool = False) -> dict:
    """``pyita aenet export``: write the .nn files of ``model`` (a model file, aenet networks, or a Potential)
    into the folder ``out``, all or nothing, with a record (``RECORDS["aenet export"]``). Returns the record."""
    paths = [] if isinstance(model, Potential) else [
        Path(p) for p in (model if isinstance(model, (list, tuple)) else [model])]
    guard_output(out, paths, "aenet export", overwrite)
    potential = load_potential(model)
    label = paths[0].name if len(paths) == 1 else "PyITA potential"
    files = potential_to_nn(potential, label)
    names = network_file_names(potential)
    record = {"command": "aenet export", "pyita_version": __version__, "model": [str(p) for p in paths] or None,
              "species": list(potential.species), "networks": names,
              "descriptor": potential.descriptor.settings(), "hidden": potential.hidden,
              "reference_energies": potential.reference_energies(),
              "energy_shift": float(potential.energy_shift), "energy_scale": float(potential.energy_scale)}
    with atomic_output_dir(out, overwrite=overwrite, command="aenet export") as tmp:
        for sym, nnfile in files.items():
            write_nn(tmp / names[sym], nnfile)
        (tmp / RECORDS["aenet export"]).write_text(json_text(record, indent=2))
    return record
