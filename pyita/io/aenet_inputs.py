"""aenet's train.in, predict.in and descriptor set-up (.stp) files, written by aenet 2.0.4's rules.

generate.in has its own module (``pyita.io.generate_in``); this one adds the other inputs. Every writer checks
the rules it depends on and raises ``ValueError`` rather than write a file aenet would misread:

- Single-token values (TRAININGSET, NETWORKS file names) are read Fortran list-directed, where ``/`` ends the
  value: they are quoted by ``quote_token`` (PyITA's own run folders use plain names, so nothing needs it).
- ``key=value`` parameters (METHOD line, Chebyshev line, Behler2011 functions) are found by aenet with a plain
  substring search (``index(line, key)`` in io.f90), so a key that also occurs earlier inside another word is
  read from the wrong place: ``eta`` matches inside ``zeta=``, ``lambda`` inside ``lambda0=``. The writers put
  keys in an order where the first occurrence of every key is its own ``key=`` (checked by
  ``check_readval_keys``).
- Lines that aenet reads raw, without skipping comments, stay adjacent to their keyword: the method line after
  ``METHOD``, the parameter line after ``BASIS type=Chebyshev`` (all four on that one line), the count and the
  function lines after ``FUNCTIONS type=Behler2011``.
- Species symbols have at most 2 characters (aenet's TYPELEN); paths at most 1024 characters (PATHLEN).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Sequence

from ase.data import chemical_symbols

from pyita import __version__
from pyita.architecture import ChebyshevSetup
from pyita.io.generate_in import quote_token

__all__ = ["METHOD_PARAMS", "BehlerSetup", "TrainIn", "PredictIn", "arch_tag", "format_method_line",
           "format_train_in", "format_predict_in", "format_stp", "chebyshev_line", "feature_count",
           "check_readval_keys", "check_single_token", "check_symbol", "write_stp_files", "PATHLEN"]

PATHLEN = 1024
_SYMBOLS = frozenset(chemical_symbols[1:])
#: Parameters aenet's train.x reads for each METHOD (input.f90), in an order safe for its substring search.
METHOD_PARAMS: dict[str, tuple[str, ...]] = {
    "bfgs": (),
    "lm": ("batchsize", "learnrate", "iter", "conv", "adjust"),
    "online_sd": ("alpha", "gamma"),
    "adam": ("mu", "b1", "b2", "eps", "samplesize", "batchsize"),
    "ekf": ("lambda", "lambda0", "state", "pnoise", "adaptive", "wgroup"),
}
_SAMPLING = ("sequential", "random", "weighted", "energy")


def check_symbol(symbol: str) -> str:
    if symbol not in _SYMBOLS or len(symbol) > 2:
        raise ValueError(f"{symbol!r} is not a chemical symbol aenet accepts")
    return symbol


def check_single_token(value: str) -> str:
    """The text to write for a single-token value: plain when safe, quoted when it holds '/' or a blank."""
    if not value:
        raise ValueError("empty file name")
    if len(value) > PATHLEN:
        raise ValueError(f"path longer than aenet's {PATHLEN} characters: {value[:40]}…")
    return quote_token(value)


def check_readval_keys(line: str, keys: Iterable[str]) -> None:
    """Raise ValueError unless aenet's substring search finds every ``key`` at its own ``key=``."""
    for key in keys:
        own = re.search(rf"(?<![A-Za-z0-9_]){re.escape(key)}\s*=", line)
        if own is None:
            raise ValueError(f"{key}= missing from {line!r}")
        first = line.find(key)
        if first != own.start():
            raise ValueError(f"aenet would read {key!r} at column {first + 1} (inside another word), not at "
                             f"its own '{key}=' in {line!r}")


def _number(value) -> str:
    """A number as Fortran list-directed input reads it (no Python-only spellings such as 'inf' or '1_0')."""
    if isinstance(value, bool):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"not a finite number: {value!r}")
    if value == int(value) and abs(value) < 1e15:
        return f"{value:.1f}"
    return repr(value)


# ----------------------------------------------------------------------------------------------- networks

def _networks_hidden(layers: Sequence[tuple[int, str]]) -> str:
    """The hidden layers as train.in's NETWORKS block writes them: their number, then ``nodes:activation`` each
    (PyITA's own spelling is ``pyita.architecture.format_hidden``)."""
    return f"{len(layers)}  " + " ".join(f"{n}:{a}" for n, a in layers)


def arch_tag(layers: Sequence[tuple[int, str]]) -> str:
    """Short architecture label for file names, as in aenet's examples: ``15t-15t``."""
    short = {"linear": "l", "tanh": "t", "sigmoid": "s", "mtanh": "m", "twist": "w"}
    return "-".join(f"{n}{short[a]}" for n, a in layers)


# ----------------------------------------------------------------------------------------------- train.in

def format_method_line(method: str, params: dict | None = None) -> str:
    """The line after ``METHOD``: the method name, then ``key=value`` in an order aenet reads correctly."""
    method = method.lower()
    if method == "online_gd":
        method = "online_sd"
    if method not in METHOD_PARAMS:
        raise ValueError(f"unknown training method {method!r}; aenet knows {', '.join(METHOD_PARAMS)}")
    params = dict(params or {})
    allowed = METHOD_PARAMS[method]
    unknown = set(params) - set(allowed)
    if unknown:
        hint = f"; {method} takes {', '.join(allowed)}" if allowed else f"; {method} takes no parameters"
        raise ValueError(f"unknown {method} parameter(s) {sorted(unknown)}{hint}")
    keys = [k for k in allowed if k in params]
    line = " ".join([method] + [f"{k}={_number(params[k])}" for k in keys])
    check_readval_keys(line, keys)
    return line


@dataclass
class TrainIn:
    """train.in settings. ``networks`` maps species → network file (written in the run folder)."""

    trainingset: str
    networks: dict[str, str]
    hidden: list[tuple[int, str]]
    iterations: int = 500
    method: str = "bfgs"
    method_params: dict = field(default_factory=dict)
    testpercent: float = 0.0
    max_energy: float | None = None
    sampling: str | None = None
    save_energies: bool = True
    timing: bool = False
    comments: list[str] = field(default_factory=list)
    testpercent_comments: list[str] = field(default_factory=list)


def _comment(text: str) -> str:
    return "! " + text if text else "!"


def format_train_in(t: TrainIn) -> str:
    if t.iterations < 0:
        raise ValueError("ITERATIONS must be ≥ 0")
    if not 0 <= t.testpercent < 100:
        raise ValueError("TESTPERCENT must be in [0, 100)")
    if t.sampling is not None and t.sampling not in _SAMPLING:
        raise ValueError(f"SAMPLING must be one of {', '.join(_SAMPLING)}")
    if not t.networks:
        raise ValueError("NETWORKS needs one network per species")
    out = [_comment(c) for c in t.comments]
    if out:
        out.append("")
    out.append(f"TRAININGSET {check_single_token(t.trainingset)}")
    out += [_comment(c) for c in t.testpercent_comments]
    pct = float(t.testpercent)
    out.append(f"TESTPERCENT {int(pct) if pct.is_integer() else _number(pct)}")
    out.append(f"ITERATIONS  {int(t.iterations)}")
    if t.max_energy is not None:
        out.append(f"MAXENERGY   {_number(t.max_energy)}")
    if t.sampling:
        out.append(f"SAMPLING    {t.sampling}")
    if t.timing:
        out.append("TIMING")
    if t.save_energies:
        out.append("SAVE_ENERGIES")
    out += ["", "METHOD", format_method_line(t.method, t.method_params), ""]
    out += ["NETWORKS", "! species  file  hidden-layers  nodes:activation"]
    width = max(len(check_single_token(f)) for f in t.networks.values())
    for sym, nn in t.networks.items():
        out.append(f"  {check_symbol(sym):<3} {check_single_token(nn):<{width}}  {_networks_hidden(t.hidden)}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------- predict.in

@dataclass
class PredictIn:
    """predict.in settings; ``files`` are whole FILES lines (paths may contain '/')."""

    networks: dict[str, str]
    files: list[str]
    forces: bool = True
    print_atomic_energies: bool = False
    timing: bool = False
    comments: list[str] = field(default_factory=list)
    files_comments: list[str] = field(default_factory=list)


def format_predict_in(p: PredictIn) -> str:
    if not p.networks:
        raise ValueError("predict.in needs one network per species")
    if not p.files:
        raise ValueError("predict.in needs at least one structure file (predict.x stops on none)")
    out = [_comment(c) for c in p.comments]
    if out:
        out.append("")
    out += ["TYPES", str(len(p.networks))] + [check_symbol(s) for s in p.networks]
    out += ["", "NETWORKS"]
    width = max(len(s) for s in p.networks)
    out += [f"{s:<{width}}  {check_single_token(nn)}" for s, nn in p.networks.items()]
    out.append("")
    if p.forces:
        out.append("FORCES")
    if p.print_atomic_energies:
        out.append("PRINT_ATOMIC_ENERGIES")
    if p.timing:
        out.append("TIMING")
    if p.forces or p.print_atomic_energies or p.timing:
        out.append("")
    for name in p.files:
        if not name.strip() or name != name.strip() or "\n" in name:
            raise ValueError(f"FILES entry {name!r} must be one non-blank line without surrounding blanks")
        if len(name) > PATHLEN:
            raise ValueError(f"FILES entry longer than aenet's {PATHLEN} characters: {name[:40]}…")
        if name[0] in "!#%":
            raise ValueError(f"FILES entry {name!r} would be read as a comment")
    out += [_comment(c) for c in p.files_comments]
    out += ["FILES", str(len(p.files))] + list(p.files)
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ descriptors

#: Behler's radial η set (Å⁻², Rs = 0) and a small angular set; Rc as in aenet's TiO2 example.
BEHLER_RADIAL_ETA = (0.003214, 0.035711, 0.071421, 0.124987, 0.214264, 0.357106, 0.714213, 1.428426)
BEHLER_ANGULAR = tuple((eta, lam, zeta) for eta in (0.000357, 0.028569, 0.089277)
                       for zeta in (1.0, 2.0) for lam in (-1.0, 1.0))


@dataclass
class BehlerSetup:
    """Behler (2011) symmetry functions: G2 for every neighbour species, G4 for every species pair."""

    rc: float = 6.5
    radial_eta: tuple = BEHLER_RADIAL_ETA
    angular: tuple = BEHLER_ANGULAR
    rmin: float = 0.55

    kind = "behler"

    def __post_init__(self) -> None:
        if not 0 < self.rmin < self.rc:
            raise ValueError("need 0 < RMIN < Rc")

    def functions(self, env: Sequence[str]) -> list[str]:
        rc = _number(float(self.rc))
        lines = []
        for t2 in env:
            for eta in self.radial_eta:
                line = f"G=2 type2={t2} Rc={rc} Rs=0.0 eta={_number(float(eta))}"
                check_readval_keys(line, ("G", "type2", "Rc", "Rs", "eta"))
                lines.append(line)
        for i, t2 in enumerate(env):
            for t3 in env[i:]:
                for eta, lam, zeta in self.angular:
                    # eta before zeta: aenet's substring search would otherwise read eta from "zeta=".
                    line = (f"G=4 type2={t2} type3={t3} Rc={rc} eta={_number(float(eta))} "
                            f"lambda={_number(float(lam))} zeta={_number(float(zeta))}")
                    check_readval_keys(line, ("G", "type2", "type3", "Rc", "eta", "lambda", "zeta"))
                    lines.append(line)
        return lines

    def n_features(self, n_env: int) -> int:
        return n_env * len(self.radial_eta) + n_env * (n_env + 1) // 2 * len(self.angular)

    def as_dict(self) -> dict:
        return {"type": "behler", "rc": self.rc, "radial_eta": list(self.radial_eta),
                "angular": [list(a) for a in self.angular], "rmin": self.rmin}


def feature_count(setup, n_env: int) -> int:
    return setup.n_features(n_env)


def chebyshev_line(setup: ChebyshevSetup) -> str:
    """The line after ``BASIS type=Chebyshev``: all four parameters, in aenet's spelling."""
    text = (f"radial_Rc = {_number(float(setup.radial_rc))}  radial_N = {int(setup.radial_n)} "
            f"angular_Rc = {_number(float(setup.angular_rc))}  angular_N = {int(setup.angular_n)}")
    check_readval_keys(text, tuple(setup.AENET_NAMES.values()))
    return text


def format_stp(species: str, env: Sequence[str], setup, description: Sequence[str] = ()) -> str:
    """One species' set-up file; ``env`` lists every species of the data set (aenet's ENV)."""
    check_symbol(species)
    env = [check_symbol(s) for s in env]
    if species not in env:
        raise ValueError(f"ENV must contain the central species {species}")
    if len(set(env)) != len(env):
        raise ValueError("ENV lists a species twice")
    descr = [d for d in description if d.strip()] or ["structural fingerprint set-up written by PyITA"]
    for d in descr:
        if "end descr" in d.lower():
            raise ValueError("description text may not contain 'END DESCR'")
    out = ["DESCR"] + [f"  {d}" for d in descr] + ["END DESCR", "", f"ATOM {species}", "",
                                                        f"ENV {len(env)}"] + env
    out += ["", f"RMIN {_number(float(setup.rmin))}d0", ""]
    if isinstance(setup, ChebyshevSetup):
        # aenet reads the four parameters from the single line after BASIS; split lines give a wrong basis.
        out += ["BASIS type=Chebyshev", chebyshev_line(setup)]
    elif isinstance(setup, BehlerSetup):
        functions = setup.functions(env)
        # The count and the function lines are read raw: no comment or blank line may come between.
        out += ["FUNCTIONS type=Behler2011", str(len(functions))] + functions
    else:
        raise ValueError(f"unknown descriptor set-up {setup!r}")
    return "\n".join(out) + "\n"


def write_stp_files(folder: str | Path, species: Sequence[str], setup) -> dict[str, str]:
    """Write ``<Sym>.stp`` for every species into ``folder`` (each with all ``species`` as its ENV), as generate.x
    reads them from a generate.in's SETUPS; returns species → file name."""
    names = {}
    for sym in species:
        names[sym] = f"{sym}.stp"
        text = format_stp(sym, species, setup, [f"{setup.kind} descriptor for {sym}, written by PyITA {__version__}"])
        (Path(folder) / names[sym]).write_text(text)
    return names
