"""Where a model comes from (a PyITA model file or aenet networks) and where it runs (the device): above both
``potential`` and ``aenet``, which reads aenet networks into Potentials."""

from __future__ import annotations

from pathlib import Path

import torch

from pyita.choices import DEVICES
from pyita.errors import PyitaError, SettingError
from pyita.model.aenet import read_aenet_potential
from pyita.model.potential import Potential


def load_potential(model: str | Path | Potential | list, device=None) -> Potential:
    """Accept a Potential, a path to a model file, or aenet networks — a folder of .nn files, one .nn file or
    a list of them (``pyita.model.aenet.read_aenet_potential``) — the form every user-facing entry point
    takes."""
    if not isinstance(model, Potential) and (isinstance(model, (list, tuple)) or Path(model).is_dir()
                                             or Path(model).suffix == ".nn"):
        model = read_aenet_potential(model)
    if isinstance(model, Potential):
        return model.to(device) if device is not None else model
    return Potential.load(model, device=device)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: CUDA when present, else CPU; otherwise the device asked for (checked)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise SettingError(f"unknown device {device!r}; choose {', '.join(DEVICES)} (or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PyitaError("device cuda requested but CUDA is not available")
    return device
