"""PyITA potentials as aenet .nn files and back, so that predict.x (and aenet's LAMMPS/ASE interfaces) run a
PyITA potential and PyITA runs, or continues training, an aenet one.

Both programs compute an atom's energy the same way, only spelled differently:

* PyITA: E_ref(s) + energy_shift + energy_scale · NN_s((G − feature_shift_s) / feature_scale_s)
* aenet: E_atom(s) + shift + NN_s((G − avg_s) / √(cov_s − avg_s²)) / scale

so E_atom = E_ref, shift = energy_shift, scale = 1 / energy_scale, avg = feature_shift and
cov = feature_scale² + feature_shift² (aenet keeps the second moment, not the spread). The descriptor is the
same Chebyshev basis (``pyita.descriptors.chebyshev``) with ENV in the model's species order, which fixes the
typespin weights. A PyTorch layer (weight W, bias b) is aenet's matrix [W | b], stored column by column.

What cannot cross is refused with one error: activations aenet lacks (none of PyITA's) or PyITA lacks
(aenet's ``twist``), the Behler descriptor, networks or descriptor settings that differ between species
(PyITA has one architecture and one descriptor), energy normalisations that differ between species, and
angular_rc > radial_rc with several species (aenet then weights neighbours with a stale typespin). A feature
aenet multiplies by 0 (spread ≤ 1e-10 in its training set) is imported with its network inputs set to 0.
aenet's mtanh uses 0.666666666666667 for 2/3: PyITA's mtanh differs from it by 5e-16 relative.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pyita import __version__
from pyita.architecture import ChebyshevSetup, format_hidden
from pyita.descriptors import ChebyshevDescriptor
from pyita.errors import InputError, PyitaError
from pyita.io.aenet_inputs import arch_tag, check_symbol
from pyita.io.aenet_nn import (ACTIVATION_NAMES, DESCRIPTION_LEN, PATHLEN, NNFile, NNNetwork, NNSetup,
                               NNTrainingSet, read_nn)
from pyita.model.network import ACTIVATIONS
from pyita.model.potential import Potential

__all__ = ["potential_to_nn", "potential_from_nn", "read_aenet_potential", "network_file_names"]

_CODES = {name: code for code, name in ACTIVATION_NAMES.items()}
#: aenet zeroes a feature whose spread in its training set is at most this (stp_normalize).
_ZERO_SPREAD = 1e-10


def _linear_layers(network: nn.Sequential) -> list[nn.Linear]:
    return [m for m in network if isinstance(m, nn.Linear)]


def _aenet_spread(avg: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """√(cov − avg²) evaluated as aenet does (NaN where it is negative)."""
    with np.errstate(invalid="ignore"):
        return np.sqrt(cov - avg * avg)


# ---------------------------------------------------------------------------------------------- export

def network_file_names(potential: Potential) -> dict[str, str]:
    """``<Sym>.<arch>.nn`` (``Ti.15t-15t.nn``), as PyITA's aenet run folders name them; ``<Sym>.nn`` without
    hidden layers."""
    tag = arch_tag(potential.networks.layers)
    return {s: f"{s}.{tag}.nn" if tag else f"{s}.nn" for s in potential.species}


def _check_exportable(potential: Potential) -> None:
    d = potential.descriptor
    if d.multi and d.angular_rc > d.radial_rc:
        raise PyitaError(f"cannot export: angular_rc {d.angular_rc} Å > radial_rc {d.radial_rc} Å with several "
                         "species, for which aenet computes other features (stale typespin), so no .nn file can "
                         "reproduce this model")
    for s in potential.species:
        try:
            check_symbol(s)
        except ValueError as exc:
            raise PyitaError(f"cannot export: {exc}") from None
    if not float(potential.energy_scale) > 0:
        raise PyitaError(f"cannot export: energy scale {float(potential.energy_scale)} is not positive")


def potential_to_nn(potential: Potential, label: str = "PyITA potential") -> dict[str, NNFile]:
    """One NNFile per species that makes aenet compute this potential's energies and forces.

    Values PyITA does not keep are written as aenet's neutral ones: no evaluation or structure counts (0);
    feature extremes as avg ∓ spread and the energy range as −1, 1 with average 0 (the normalised units
    train.x's files hold them in). ``label`` goes into the description and training-set name fields.
    """
    _check_exportable(potential)
    d = potential.descriptor
    n = d.n_features
    shift = potential.feature_shift.detach().cpu().numpy().astype(np.float64)
    spread = potential.feature_scale.detach().cpu().numpy().astype(np.float64)
    second_moment = spread * spread + shift * shift
    achieved = _aenet_spread(shift, second_moment)
    bad = ~(np.abs(achieved - spread) <= 1e-8 * spread) | (achieved <= _ZERO_SPREAD)
    if bad.any():
        k, f = map(int, np.argwhere(bad)[0])
        raise PyitaError(f"cannot export: feature {f + 1} of {potential.species[k]} has a spread "
                         f"{spread[k, f]:.3g} too small against its mean {shift[k, f]:.6g} for aenet's "
                         "normalisation (it stores the second moment, which cannot resolve it)")
    codes = [_CODES[a] for _, a in potential.networks.layers] + [_CODES["linear"]]
    files = {}
    for k, sym in enumerate(potential.species):
        description = f"Chebyshev descriptor for {sym}, exported by PyITA {__version__} from {label}"
        params = np.zeros((n, 4))
        params[0] = [d.radial_rc, d.radial_n, d.angular_rc, d.angular_n]
        matrices = [torch.cat([lin.weight, lin.bias.unsqueeze(1)], dim=1).detach().cpu().numpy()
                    for lin in _linear_layers(potential.networks.nets[k])]
        network = NNNetwork(nnodes=[n] + [m.shape[0] for m in matrices], activations=list(codes),
                            weights=np.concatenate([m.T.reshape(-1) for m in matrices]).astype(np.float64))
        setup = NNSetup(
            description=description[:DESCRIPTION_LEN], atomtype=sym, envtypes=list(potential.species),
            rc_min=ChebyshevSetup.rmin, rc_max=d.cutoff, sftype="Chebyshev", sf=np.zeros(n, dtype=np.int64),
            sfparam=params, sfenv=np.zeros((n, 2), dtype=np.int64), neval=0, sfval_min=shift[k] - spread[k],
            sfval_max=shift[k] + spread[k], sfval_avg=shift[k], sfval_cov=second_moment[k])
        trainset = NNTrainingSet(
            file=label[:PATHLEN], normalized=True, scale=1.0 / float(potential.energy_scale),
            shift=float(potential.energy_shift), typenames=list(potential.species),
            e_atom=potential.reference.detach().cpu().numpy().astype(np.float64), natoms_tot=0, nstrucs=0,
            e_min=-1.0, e_max=1.0, e_av=0.0)
        files[sym] = NNFile(network, setup, trainset)
    return files


# ---------------------------------------------------------------------------------------------- import

def _network_files(source) -> list[Path]:
    """The .nn files named by ``source``: a folder (its ``*.nn``), one file, or a list of files."""
    if isinstance(source, (list, tuple)):
        return [Path(p) for p in source]
    source = Path(source)
    if source.is_dir():
        found = sorted(p for p in source.iterdir() if p.suffix == ".nn" and p.is_file())
        if not found:
            raise InputError("no aenet network files (*.nn) in this folder", source)
        return found
    return [source]


def read_aenet_potential(source) -> Potential:
    """A Potential from aenet network files: a folder of ``*.nn`` files (e.g. a train.x run folder or a
    ``pyita aenet export``), one .nn file, or a list of them — one per species."""
    paths = _network_files(source)
    return potential_from_nn({path: read_nn(path) for path in paths})


def _hidden(path: Path, network: NNNetwork) -> str:
    """PyITA's hidden-layer spec of an aenet network (one linear output node required)."""
    if network.nnodes[-1] != 1 or network.activations[-1] != _CODES["linear"]:
        raise InputError(f"the network ends in {network.nnodes[-1]} {ACTIVATION_NAMES[network.activations[-1]]} "
                         "node(s); PyITA's networks end in one linear node (an atomic energy)", path)
    names = [ACTIVATION_NAMES[code] for code in network.activations[:-1]]
    foreign = sorted(set(names) - set(ACTIVATIONS))
    if foreign:
        raise InputError(f"activation {', '.join(foreign)} has no PyITA equivalent (PyITA has "
                         f"{', '.join(ACTIVATIONS)})", path)
    return format_hidden(list(zip(network.nnodes[1:-1], names)))


def _chebyshev_settings(path: Path, setup: NNSetup) -> dict:
    if setup.sftype.strip().lower() != "chebyshev":
        raise InputError(f"descriptor type {setup.sftype.strip()!r}: PyITA implements aenet's Chebyshev "
                         "descriptor only", path)
    if setup.sfparam.shape[0] < 1 or setup.sfparam.shape[1] < 4:
        raise InputError("the Chebyshev set-up lacks its four parameters", path)
    radial_rc, radial_n, angular_rc, angular_n = setup.sfparam[0, :4].tolist()
    for name, order in (("radial_N", radial_n), ("angular_N", angular_n)):
        if not (order >= 0 and order == int(order)):   # the reader has refused NaN and inf already
            raise InputError(f"Chebyshev {name} = {order} is not an integer ≥ 0", path)
    settings = {"radial_rc": radial_rc, "radial_n": int(radial_n), "angular_rc": angular_rc,
                "angular_n": int(angular_n)}
    try:
        expected = ChebyshevSetup(**settings).n_features(len(setup.envtypes))
    except ValueError as exc:
        raise InputError(f"descriptor settings PyITA cannot use: {exc}", path) from None
    if expected != len(setup.sf):   # checked before any array of that size is made
        raise InputError(f"Chebyshev radial_N = {int(radial_n)} and angular_N = {int(angular_n)} give {expected} "
                         f"features, but the file holds {len(setup.sf)} descriptor functions", path)
    return settings


def potential_from_nn(files: dict[Path, NNFile]) -> Potential:
    """One Potential from one NNFile per species (keyed by the path each came from, for error messages)."""
    if not files:
        raise PyitaError("no aenet network files given")
    by_species: dict[str, tuple[Path, NNFile]] = {}
    for path, nnfile in files.items():
        sym = nnfile.setup.atomtype
        if sym in by_species:
            raise InputError(f"two network files for {sym}: {by_species[sym][0].name} and {path.name}", path)
        by_species[sym] = (path, nnfile)
    first_path, first = next(iter(files.items()))
    species = list(first.setup.envtypes)
    missing = [s for s in species if s not in by_species]
    if missing:
        raise InputError(f"its ENV lists {', '.join(species)} but no network file for {', '.join(missing)} "
                         "was given", first_path)
    settings = _chebyshev_settings(first_path, first.setup)
    hidden = _hidden(first_path, first.network)
    ts = first.trainset
    for path, nnfile in files.items():
        setup, what = nnfile.setup, None
        if setup.atomtype not in species or list(setup.envtypes) != species:
            what = f"species {setup.atomtype} with ENV {', '.join(setup.envtypes)}"
        elif _chebyshev_settings(path, setup) != settings:
            what = f"descriptor {_chebyshev_settings(path, setup)}"
        elif _hidden(path, nnfile.network) != hidden:
            what = f"hidden layers {_hidden(path, nnfile.network)}"
        elif (nnfile.trainset.scale, nnfile.trainset.shift) != (ts.scale, ts.shift):
            what = f"energy normalisation (scale {nnfile.trainset.scale}, shift {nnfile.trainset.shift})"
        if what:
            raise InputError(f"{what} differs from {first_path.name}: PyITA needs one species list, descriptor, "
                             "architecture and energy normalisation for all species", path)
    if len(species) > 1 and settings["angular_rc"] > settings["radial_rc"]:
        raise InputError(f"angular_Rc {settings['angular_rc']} > radial_Rc {settings['radial_rc']} with several "
                         "species: aenet weights such neighbours with a stale typespin, which PyITA does not "
                         "reproduce", first_path)
    reach = max(f.setup.rc_max for f in files.values())
    if reach < max(settings["radial_rc"], settings["angular_rc"]):
        raise InputError(f"Rc_max {reach} Å is below the Chebyshev cutoffs: aenet's neighbour lists would miss "
                         "neighbours the descriptor counts", first_path)
    if not (ts.scale > 0 and math.isfinite(1.0 / ts.scale)):
        raise InputError(f"energy scale {ts.scale} is not a positive number with a finite inverse", first_path)
    references = {}
    for sym, (path, nnfile) in by_species.items():
        if sym not in nnfile.trainset.typenames:
            raise InputError(f"no atomic energy for {sym} in its training-set record", path)
        references[sym] = float(nnfile.trainset.e_atom[nnfile.trainset.typenames.index(sym)])
    try:
        descriptor = ChebyshevDescriptor(species, **settings)
    except ValueError as exc:
        raise InputError(f"descriptor settings PyITA cannot use: {exc}", first_path) from None
    potential = Potential(descriptor, hidden, references)
    with torch.no_grad():
        for k, sym in enumerate(species):
            path, nnfile = by_species[sym]
            _load_species(potential, k, path, nnfile, descriptor.n_features)
        potential.energy_shift.fill_(ts.shift)
        potential.energy_scale.fill_(1.0 / ts.scale)
    potential.metadata = {"pyita_version": __version__, "source": "aenet",
                          "aenet_files": {s: str(p) for s, (p, _) in by_species.items()},
                          "aenet_training_set": ts.file}
    return potential


def _load_species(potential: Potential, k: int, path: Path, nnfile: NNFile, n_features: int) -> None:
    """Weights and feature normalisation of species ``k`` from its file (inside ``torch.no_grad``)."""
    network, setup = nnfile.network, nnfile.setup
    if network.nnodes[0] != n_features or len(setup.sf) != n_features:
        raise InputError(f"{network.nnodes[0]} network inputs and {len(setup.sf)} descriptor functions, but the "
                         f"Chebyshev settings give {n_features} features", path)
    spread = _aenet_spread(setup.sfval_avg, setup.sfval_cov)
    if np.isnan(spread).any() or not np.isfinite(network.weights).all() or not np.isfinite(setup.sfval_avg).all():
        raise InputError("non-finite weights or feature normalisation (cov < avg², on which aenet computes "
                         "NaN): the file is damaged or its training failed", path)
    zeroed = spread <= _ZERO_SPREAD
    layers = _linear_layers(potential.networks.nets[k])
    for j, linear in enumerate(layers):
        matrix = torch.from_numpy(network.layer(j))
        linear.weight.copy_(matrix[:, :-1])
        linear.bias.copy_(matrix[:, -1])
    layers[0].weight[:, torch.from_numpy(zeroed)] = 0.0   # aenet multiplies these features by 0
    potential.feature_shift[k] = torch.from_numpy(setup.sfval_avg)
    potential.feature_scale[k] = torch.from_numpy(np.where(zeroed, 1.0, spread))
