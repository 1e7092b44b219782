"""aenet 2.0.4's network files (``.nn``, one per species), read and written record by record.

A .nn file is what train.x leaves and predict.x (``load_NNPot``) reads: Fortran sequential unformatted
records (a 4-byte length before and after each), little-endian, with 4-byte integers and logicals, 8-byte
reals and blank-padded fixed-length strings. Three parts follow one another, one record per line below:

network (``save_Network``, feedforward.f90)
    nlayers · nnodes_max · Wsize · nvalues · nnodes(nlayers) · f_a(2:nlayers) · iw(nlayers) · iv(nlayers) ·
    W(Wsize). Layer k → k+1 uses W(iw(k)+1 : iw(k+1)) as an (nnodes(k+1), nnodes(k)+1) matrix stored
    column by column, its last column multiplying a constant 1 (the bias). Activation codes: 0 linear,
    1 tanh, 2 sigmoid, 3 mtanh (1.7159 tanh(2x/3)), 4 twist (mtanh + 0.1 x).
descriptor set-up (``save_Setup``, sfsetup.f90)
    description (1024 characters) · atomtype (2) · nenv · envtypes (2 each) · Rc_min · Rc_max · sftype (100)
    · nsf · nsfparam · sf(nsf) · sfparam(nsfparam, nsf) · sfenv(2, nsf) · neval · sfval_min · sfval_max ·
    sfval_avg · sfval_cov (nsf each). The Chebyshev basis keeps its parameters in sfparam(1:4, 1):
    radial_Rc, radial_N, angular_Rc, angular_N. Features are normalised as (G − avg)/√(cov − avg²), and
    multiplied by 0 instead where √(cov − avg²) ≤ 1e-10.
training-set summary (``save_TrnSet_info``, trainset.f90)
    file (1024) · normalized · scale · shift · nTypes · typeName (2 each) · E_atom(nTypes) · nAtomsTot ·
    nStrucs · (E_min, E_max, E_av) in one record.

aenet's energy of an atom of species s with network output y: E_atom(s) + shift + y / scale
(``aenet_atomic_energy``), with E_atom looked up by name in that species' own file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.io import FortranFile

from pyita.errors import InputError

__all__ = ["NNNetwork", "NNSetup", "NNTrainingSet", "NNFile", "read_nn", "write_nn", "ACTIVATION_NAMES"]

DESCRIPTION_LEN = 1024   # Setup%description
TYPELEN = 2              # aeio.f90 TYPELEN: species names
SFTYPE_LEN = 100         # Setup%sftype
PATHLEN = 1024           # aeio.f90 PATHLEN: TrnSet%file
NENV_MAX = 2             # sfsetup.f90: rows of sfenv
#: aenet's activation codes (feedforward.f90 ``ff_activate``).
ACTIVATION_NAMES = {0: "linear", 1: "tanh", 2: "sigmoid", 3: "mtanh", 4: "twist"}

_INT, _REAL, _CHAR = np.dtype("<i4"), np.dtype("<f8"), np.dtype("u1")


@dataclass
class NNNetwork:
    """The feed-forward network; nlayers, nnodes_max, Wsize, nvalues, iw and iv follow from ``nnodes``."""

    nnodes: list[int]        # nodes per layer (without bias), input layer first
    activations: list[int]   # code of layers 2 … nlayers (ACTIVATION_NAMES)
    weights: np.ndarray      # W, every layer's matrix column by column

    @property
    def iw(self) -> list[int]:
        """Index of each layer's last weight (0 for the input layer)."""
        ends = np.cumsum([(a + 1) * b for a, b in zip(self.nnodes[:-1], self.nnodes[1:])])
        return [0] + [int(e) for e in ends]

    @property
    def iv(self) -> list[int]:
        """Index of each layer's last node value, its bias node included (0 for the input layer)."""
        return [0] + [int(e) for e in np.cumsum([n + 1 for n in self.nnodes[:-1]])]

    @property
    def nvalues(self) -> int:
        return self.iv[-1] + self.nnodes[-1]

    def layer(self, k: int) -> np.ndarray:
        """Matrix of layer k → k + 1 (k from 0): (outputs, inputs + 1), bias in the last column."""
        start, end = self.iw[k], self.iw[k + 1]
        return self.weights[start:end].reshape(self.nnodes[k] + 1, self.nnodes[k + 1]).T


@dataclass
class NNSetup:
    """The descriptor set-up of one species (``Setup`` of sfsetup.f90); arrays are per function, in rows."""

    description: str
    atomtype: str
    envtypes: list[str]
    rc_min: float
    rc_max: float
    sftype: str
    sf: np.ndarray           # (nsf,) function kinds (Behler2011; zeros for Chebyshev)
    sfparam: np.ndarray      # (nsf, nsfparam)
    sfenv: np.ndarray        # (nsf, NENV_MAX)
    neval: int
    sfval_min: np.ndarray
    sfval_max: np.ndarray
    sfval_avg: np.ndarray
    sfval_cov: np.ndarray


@dataclass
class NNTrainingSet:
    """What the network file keeps of its training set (``TrnSet`` info of trainset.f90)."""

    file: str
    normalized: bool
    scale: float
    shift: float
    typenames: list[str]
    e_atom: np.ndarray
    natoms_tot: int
    nstrucs: int
    e_min: float
    e_max: float
    e_av: float


@dataclass
class NNFile:
    network: NNNetwork
    setup: NNSetup
    trainset: NNTrainingSet


# --------------------------------------------------------------------------------------------- reading

class _Records:
    """Sequential records of one file, each read with a name so that every failure can say which."""

    def __init__(self, handle, path: Path):
        self.handle, self.path = handle, path
        self.size = path.stat().st_size
        self.fortran = FortranFile(handle, "r", header_dtype=np.dtype("<u4"))
        self.count = 0

    def fail(self, problem: str) -> InputError:
        return InputError(f"not a readable aenet .nn file: {problem}", self.path)

    def read(self, what: str, dtype: np.dtype, count: int | None = None) -> np.ndarray:
        self.count += 1
        where = f"record {self.count} ({what})"
        start = self.handle.tell()
        marker = self.handle.read(4)
        self.handle.seek(start)
        if len(marker) < 4:
            raise self.fail(f"the file ends before {where}; truncated?")
        length = int.from_bytes(marker, "little")
        if start + length + 8 > self.size:   # checked first: a foreign file's "length" may be gigabytes
            raise self.fail(f"{where} runs past the end of the file; truncated, or not an .nn file")
        try:
            values = self.fortran.read_record(dtype)
        except (ValueError, TypeError, OSError) as exc:
            raise self.fail(f"{where}: {exc}") from None
        if count is not None and len(values) != count:
            raise self.fail(f"{where} holds {length} bytes, expected {count * dtype.itemsize}")
        return values

    def integer(self, what: str, minimum: int = 0) -> int:
        value = int(self.read(what, _INT, 1)[0])
        if value < minimum:
            raise self.fail(f"record {self.count} ({what}) is {value}, expected at least {minimum}")
        return value

    def integers(self, what: str, count: int) -> np.ndarray:
        return self.read(what, _INT, count).astype(np.int64)

    def real(self, what: str) -> float:
        return float(self.read(what, _REAL, 1)[0])

    def reals(self, what: str, count: int) -> np.ndarray:
        return self.read(what, _REAL, count).astype(np.float64)

    def text(self, what: str, length: int, count: int = 1) -> list[str]:
        raw = self.read(what, _CHAR, length * count).tobytes()
        return [raw[k * length:(k + 1) * length].decode("latin-1").rstrip(" ") for k in range(count)]

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            raise self.fail(problem)


def _read_network(r: _Records) -> NNNetwork:
    nlayers = r.integer("number of layers", 2)
    nnodes_max = r.integer("largest layer")
    wsize = r.integer("number of weights")
    nvalues = r.integer("number of node values")
    nnodes = [int(n) for n in r.integers("nodes per layer", nlayers)]
    activations = [int(a) for a in r.integers("activation functions", nlayers - 1)]
    iw = r.integers("weight indices", nlayers).tolist()
    iv = r.integers("node indices", nlayers).tolist()
    weights = r.reals("weights", wsize)
    network = NNNetwork(nnodes, activations, weights)
    r.check(min(nnodes) >= 1 and nnodes_max == max(nnodes) and iw == network.iw and iv == network.iv
            and wsize == network.iw[-1] and nvalues == network.nvalues,
            f"the network's sizes and indices disagree (layers {nnodes}, {wsize} weights)")
    unknown = sorted(set(activations) - set(ACTIVATION_NAMES))
    r.check(not unknown, f"unknown activation function code(s) {unknown}")
    return network


def _read_setup(r: _Records) -> NNSetup:
    description = r.text("set-up description", DESCRIPTION_LEN)[0]
    atomtype = r.text("species", TYPELEN)[0]
    nenv = r.integer("number of environment species", 1)
    envtypes = r.text("environment species", TYPELEN, nenv)
    rc_min, rc_max = r.real("Rc_min"), r.real("Rc_max")
    sftype = r.text("descriptor type", SFTYPE_LEN)[0]
    nsf = r.integer("number of descriptor functions")
    nsfparam = r.integer("parameters per function")
    return NNSetup(
        description=description, atomtype=atomtype, envtypes=envtypes, rc_min=rc_min, rc_max=rc_max,
        sftype=sftype, sf=r.integers("function kinds", nsf),
        sfparam=r.reals("function parameters", nsf * nsfparam).reshape(nsf, nsfparam),
        sfenv=r.integers("function species", nsf * NENV_MAX).reshape(nsf, NENV_MAX),
        neval=r.integer("number of evaluations"), sfval_min=r.reals("feature minima", nsf),
        sfval_max=r.reals("feature maxima", nsf), sfval_avg=r.reals("feature averages", nsf),
        sfval_cov=r.reals("feature second moments", nsf))


def _read_trainset(r: _Records) -> NNTrainingSet:
    file = r.text("training set file", PATHLEN)[0]
    normalized = int(r.read("normalized flag", _INT, 1)[0]) != 0   # gfortran writes .true. as 1, ifort as -1
    scale, shift = r.real("energy scale"), r.real("energy shift")
    ntypes = r.integer("number of species", 1)
    typenames = r.text("species", TYPELEN, ntypes)
    e_atom = r.reals("atomic energies", ntypes)
    natoms_tot, nstrucs = r.integer("number of atoms"), r.integer("number of structures")
    e_min, e_max, e_av = r.reals("energy range and average", 3).tolist()
    return NNTrainingSet(file, normalized, scale, shift, typenames, e_atom, natoms_tot, nstrucs,
                         e_min, e_max, e_av)


def read_nn(path: str | Path) -> NNFile:
    """Read one .nn file; a damaged, truncated or foreign file gives one InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such aenet network file", path)
    with open(path, "rb") as handle:
        records = _Records(handle, path)
        nnfile = NNFile(_read_network(records), _read_setup(records), _read_trainset(records))
        records.check(handle.tell() == records.size,
                      f"{records.size - handle.tell()} bytes follow the last record (training-set summary)")
    _check_finite(nnfile, path)
    return nnfile


def _check_finite(nnfile: NNFile, path: Path) -> None:
    """Refuse non-finite values among those that decide an atom's energy: a train.x run that diverged
    writes NaN weights, and a damaged file any bytes; neither may become a model."""
    net, stp, ts = nnfile.network, nnfile.setup, nnfile.trainset
    values = {"weights": net.weights, "cutoff radii (Rc_min, Rc_max)": [stp.rc_min, stp.rc_max],
              "descriptor parameters": stp.sfparam, "feature averages": stp.sfval_avg,
              "feature second moments": stp.sfval_cov, "energy scale": ts.scale, "energy shift": ts.shift,
              "atomic energies (E_atom)": ts.e_atom}
    for what, value in values.items():
        value = np.asarray(value, dtype=np.float64)
        if not np.isfinite(value).all():
            bad = value.ravel()[~np.isfinite(value.ravel())][0]
            raise InputError(f"its {what} hold {bad} (not a finite number): the file is damaged or the "
                             "training that wrote it diverged", path)


# --------------------------------------------------------------------------------------------- writing

def _text(value: str, length: int) -> np.ndarray:
    raw = value.encode("latin-1", errors="replace")
    if len(raw) > length:
        raise ValueError(f"{value[:40]!r} is longer than aenet's {length} characters")
    return np.frombuffer(raw.ljust(length), dtype=_CHAR)


def write_nn(path: str | Path, nnfile: NNFile) -> None:
    """Write ``nnfile`` exactly as aenet's save routines do: a file of a gfortran-built train.x, read and
    written back, keeps every byte."""
    net, stp, ts = nnfile.network, nnfile.setup, nnfile.trainset
    nsf = len(stp.sf)
    if len(net.activations) != len(net.nnodes) - 1 or len(net.weights) != net.iw[-1]:
        raise ValueError(f"network of layers {net.nnodes} needs {len(net.nnodes) - 1} activations and "
                         f"{net.iw[-1]} weights")
    if stp.sfparam.shape[0] != nsf or stp.sfenv.shape != (nsf, NENV_MAX) or len(ts.e_atom) != len(ts.typenames):
        raise ValueError("set-up or training-set arrays do not match their counts")

    def ints(values) -> np.ndarray:
        return np.asarray(values, dtype=_INT).reshape(-1)

    def reals(values) -> np.ndarray:
        return np.asarray(values, dtype=_REAL).reshape(-1)

    records = [
        ints(len(net.nnodes)), ints(max(net.nnodes)), ints(net.iw[-1]), ints(net.nvalues), ints(net.nnodes),
        ints(net.activations), ints(net.iw), ints(net.iv), reals(net.weights),
        _text(stp.description, DESCRIPTION_LEN), _text(stp.atomtype, TYPELEN), ints(len(stp.envtypes)),
        np.concatenate([_text(t, TYPELEN) for t in stp.envtypes]), reals(stp.rc_min), reals(stp.rc_max),
        _text(stp.sftype, SFTYPE_LEN), ints(nsf), ints(stp.sfparam.shape[1]), ints(stp.sf), reals(stp.sfparam),
        ints(stp.sfenv), ints(stp.neval), reals(stp.sfval_min), reals(stp.sfval_max), reals(stp.sfval_avg),
        reals(stp.sfval_cov),
        _text(ts.file, PATHLEN), ints(int(ts.normalized)), reals(ts.scale), reals(ts.shift),
        ints(len(ts.typenames)), np.concatenate([_text(t, TYPELEN) for t in ts.typenames]), reals(ts.e_atom),
        ints(ts.natoms_tot), ints(ts.nstrucs), reals([ts.e_min, ts.e_max, ts.e_av]),
    ]
    with FortranFile(str(path), "w", header_dtype=np.dtype("<u4")) as out:
        for record in records:
            out.write_record(record)
