"""The Behler–Parrinello potential: descriptor → normalised features → per-species networks → energies.

Energies are assembled as aenet does: each atom contributes its species' reference (isolated-atom)
energy plus a scaled network output, E = Σ_i [E_ref(s_i) + shift + scale · NN_{s_i}((G_i − μ_s)/σ_s)],
so the networks only learn the small, normalised cohesive part. Forces and stress are exact autograd
derivatives of that energy.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from pyita import __version__
from pyita.descriptors import AtomsBatch, ChebyshevDescriptor
from pyita.errors import InputError, PyitaError
from pyita.io.atomic import atomic_write
from pyita.model.network import SpeciesNetworks

#: Bumped whenever a saved model can no longer be read by the code that reads format 1.
MODEL_FORMAT = 1
MODEL_KIND = "pyita-potential"
#: The top-level entries of a format-1 model file, exactly (``save`` writes these and nothing else).
MODEL_KEYS = ("kind", "format", "pyita_version", "descriptor", "hidden", "seed", "state_dict", "metadata")
#: The descriptor entry's keys (its ``type`` and ``ChebyshevDescriptor.settings()``).
_DESCRIPTOR_KEYS = ("type", "species", "radial_rc", "radial_n", "angular_rc", "angular_n")
#: How every zip archive, and so every file torch.save writes, begins.
_ZIP_MAGIC = b"PK\x03\x04"


class Evaluation(NamedTuple):
    """What ``Potential.evaluate`` returns for a batch of B structures with M atoms in all."""

    energies: torch.Tensor
    forces: torch.Tensor | None
    d_strain: torch.Tensor | None
    atomic: torch.Tensor


class Potential(nn.Module):
    """AtomsBatch in, per-structure total energies (eV) out; float64 throughout."""

    def __init__(self, descriptor: ChebyshevDescriptor, hidden: str = "15:tanh,15:tanh",
                 reference_energies: dict[str, float] | None = None, seed: int = 0, weight_init: str = "aenet"):
        super().__init__()
        self.descriptor = descriptor
        self.species = tuple(descriptor.species)
        self.seed = seed
        n_species, n_features = len(self.species), descriptor.n_features
        self.networks = SpeciesNetworks(n_species, n_features, hidden, seed, weight_init)
        refs = reference_energies or {}
        self.register_buffer("reference", torch.tensor([float(refs.get(s, 0.0)) for s in self.species],
                                                       dtype=torch.float64))
        self.register_buffer("feature_shift", torch.zeros(n_species, n_features, dtype=torch.float64))
        self.register_buffer("feature_scale", torch.ones(n_species, n_features, dtype=torch.float64))
        self.register_buffer("energy_shift", torch.zeros((), dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones((), dtype=torch.float64))
        self.metadata: dict = {}

    @property
    def hidden(self) -> str:
        return self.networks.hidden

    @property
    def device(self) -> torch.device:
        return self.reference.device

    def reference_energies(self) -> dict[str, float]:
        return {s: float(e) for s, e in zip(self.species, self.reference.tolist())}

    def check_species(self, structures) -> None:
        """Refuse structures with elements the model has no network for (naming the first offender)."""
        known = set(self.species)
        for k, s in enumerate(structures):
            unknown = sorted(set(s.symbols) - known)
            if unknown:
                raise InputError(f"species {', '.join(unknown)} not covered by the model, which knows "
                                 f"{', '.join(self.species)}", s.source or f"structure {k + 1}")

    def normalize(self, features: torch.Tensor, species_index: torch.Tensor) -> torch.Tensor:
        return (features - self.feature_shift[species_index]) / self.feature_scale[species_index]

    def atomic_energies(self, features: torch.Tensor, species_index: torch.Tensor) -> torch.Tensor:
        """Energy (eV) of each atom from its raw descriptor features."""
        outputs = self.networks(self.normalize(features, species_index), species_index)
        return self.reference[species_index] + self.energy_shift + self.energy_scale * outputs

    def forward(self, batch: AtomsBatch) -> torch.Tensor:
        return self._energies(batch)[0]

    def _energies(self, batch: AtomsBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-structure energies (B,) and the per-atom energies (M,) they are the sums of."""
        atomic = self.atomic_energies(self.descriptor(batch), batch.species_index)
        return atomic.new_zeros(batch.n_structures).index_add(0, batch.structure_index, atomic), atomic

    def energy_and_derivatives(self, batch: AtomsBatch, forces: bool = True, strain: bool = False):
        """Energies (B,), forces −∂E/∂R (M, 3) or None, and ∂E/∂ε (B, 3, 3) or None (``evaluate``'s first three)."""
        return self.evaluate(batch, forces, strain)[:3]

    def evaluate(self, batch: AtomsBatch, forces: bool = True, strain: bool = False) -> Evaluation:
        """Energies (B,), forces −∂E/∂R (M, 3) or None, ∂E/∂ε (B, 3, 3) or None, and the per-atom energies (M,)
        whose sums the energies are.

        ε is a homogeneous strain applied to positions and periodic image offsets alike (R → R(1 + ε));
        the stress is ∂E/∂ε divided by the cell volume.
        """
        positions = batch.positions.detach().requires_grad_(forces)
        epsilon = positions.new_zeros((batch.n_structures, 3, 3), requires_grad=strain)
        inputs = [t for t, wanted in ((positions, forces), (epsilon, strain)) if wanted]
        with torch.enable_grad():
            deformed = replace(batch, positions=positions)
            if strain:
                deform = torch.eye(3, dtype=positions.dtype, device=positions.device) + epsilon
                per_atom = deform[batch.structure_index]
                deformed = replace(
                    batch,
                    positions=torch.bmm(positions.unsqueeze(1), per_atom).squeeze(1),
                    pair_shift=torch.bmm(batch.pair_shift.unsqueeze(1),
                                         per_atom[batch.pair_i]).squeeze(1))
            energies, atomic = self._energies(deformed)
            grads = list(torch.autograd.grad(energies.sum(), inputs)) if inputs else []
        force = -grads.pop(0) if forces else None
        d_strain = grads.pop(0) if strain else None
        return Evaluation(energies.detach(), force, d_strain, atomic.detach())

    # -- saving and loading ---------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """One file: weights, normalisation, descriptor settings, species, version and ``metadata``
        (training settings, seed, history). Written through a temporary file, so never half-written."""
        payload = {
            "kind": MODEL_KIND,
            "format": MODEL_FORMAT,
            "pyita_version": __version__,
            "descriptor": {"type": "chebyshev", **self.descriptor.settings()},
            "hidden": self.hidden,
            "seed": self.seed,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "metadata": self.metadata,
        }
        atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | Path, device=None) -> Potential:
        """Read a model file written by ``save``, checking every part, so that a damaged or edited file
        gives one clear error naming it rather than a traceback or NaN predictions."""
        path = Path(path)
        if not path.is_file():
            raise InputError("no such model file", path)
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises pickle, zip, runtime and OS errors for foreign or damaged files
            raise InputError(_unreadable(path, exc), path) from None
        if not isinstance(payload, dict) or payload.get("kind") != MODEL_KIND:
            raise InputError("not a PyITA model file (no pyita-potential header)", path)
        if payload.get("format") != MODEL_FORMAT:
            raise InputError(
                f"model format {payload.get('format')} (written by pyita {payload.get('pyita_version')}) "
                f"cannot be read by pyita {__version__}, which reads format {MODEL_FORMAT}; "
                "use the matching pyita version or retrain", path)
        _check_keys(payload, MODEL_KEYS, "damaged model file", path)
        settings = payload["descriptor"]
        if not isinstance(settings, dict) or settings.get("type") != "chebyshev":
            raise InputError("model uses an unknown descriptor type", path)
        _check_keys(settings, _DESCRIPTOR_KEYS, "damaged model file: descriptor settings", path)
        try:
            descriptor = ChebyshevDescriptor(**{k: v for k, v in settings.items() if k != "type"})
            potential = cls(descriptor, payload["hidden"], seed=payload["seed"])
        except (TypeError, ValueError, RuntimeError, AttributeError, PyitaError) as exc:
            raise InputError(f"model declares an architecture PyITA cannot build: {exc}", path) from None
        state = payload["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise InputError("damaged model file: its weights are not a table of tensors", path)
        for name, tensor in state.items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise InputError(f"weight tensor {name!r} contains NaN or inf (training diverged, or the file "
                                 "is damaged); retrain", path)
        try:
            potential.load_state_dict(state)
        except RuntimeError as exc:
            raise InputError(f"model weights do not match its declared architecture: {exc}", path) from None
        if not isinstance(payload["metadata"], dict):
            raise InputError("damaged model file: its metadata is not a table", path)
        potential.metadata = payload["metadata"]
        return potential.to(device) if device is not None else potential


def _check_keys(table: dict, expected: tuple[str, ...], what: str, path: Path) -> None:
    """Refuse a table whose keys are not exactly ``expected``, saying which are missing or unexpected."""
    missing = [repr(k) for k in expected if k not in table]
    unexpected = sorted(map(repr, set(table) - set(expected)))
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(unexpected)}"] if unexpected else [])
        raise InputError(f"{what}: {'; '.join(parts)}", path)


def _unreadable(path: Path, exc: Exception) -> str:
    """Why torch could not read ``path``: a damaged model (a zip archive, as torch.save writes, or nothing
    at all) or some other kind of file."""
    with open(path, "rb") as handle:
        head = handle.read(len(_ZIP_MAGIC))
    why = type(exc).__name__ + (f": {str(exc)[:120]}" if str(exc) else "")
    if head in (b"", _ZIP_MAGIC):
        return f"truncated or corrupt model file ({why}); save or copy it again"
    return f"not a PyITA model file ({why})"


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` into memory, then the bytes to a temporary sibling and a rename: readers never see a
    partial file, and a full disk is an OSError that ``atomic_write`` reports naming the file (torch's own
    file writer reports it as a RuntimeError such as "unexpected pos 45440 vs 45336")."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getbuffer()))
