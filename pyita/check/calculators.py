"""Reference calculators: named offline presets, or any ASE calculator by import path.

A calculator is named by a string so that it can be recorded in a result file and rebuilt in a worker
process:

* a preset: ``gfn1-xtb``, ``gfn2-xtb`` (tblite, ``pip install pyita[xtb]``) or ``emt`` (ASE EMT, metals);
* an import path ``module:Class`` (e.g. ``ase.calculators.emt:EMT``), optionally followed by JSON keyword
  arguments: ``'ase.calculators.lj:LennardJones{"sigma": 2.5}'``.

Keyword arguments can also come separately (``--calc-kwargs``); they override inline ones, which override
the preset's defaults. From Python, an ASE ``Calculator`` subclass or a zero-argument factory works too.

Energies are the force-consistent ones (``free_energy`` where a calculator reports it, else ``energy``), so
that forces are exactly −∂E/∂R, which the Taylor expansion assumes.
"""

from __future__ import annotations

import importlib
import json
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from collections.abc import Callable

import numpy as np

from pyita.errors import PyitaError

__all__ = ["PRESETS", "Preset", "CalculatorSpec", "CalculatorError", "CalculationError", "resolve_calculator",
           "make_calculator", "compute", "limit_threads", "threads_limited", "parse_fold", "fold_for"]


#: Keywords every ASE calculator's constructor takes besides its own parameters.
_BASE_KWARGS = {"restart", "ignore_bad_restart_file", "label", "atoms", "directory", "txt", "command",
                "comm", "profile"}


class CalculatorError(PyitaError):
    """The calculator cannot be set up: unknown name, missing package, bad keyword arguments."""


class CalculationError(PyitaError):
    """The calculator failed on one structure (the message names it)."""


@dataclass(frozen=True)
class Preset:
    target: str
    kwargs: dict
    help: str
    extra: str | None = None  # the pip extra that provides the package
    package: str | None = None


#: Named calculators that work offline. tblite: cache_api=False so every structure starts from the same
#: initial guess and results do not depend on the order (or the worker) a structure is computed in.
PRESETS: dict[str, Preset] = {
    "gfn1-xtb": Preset("tblite.ase:TBLite", {"method": "GFN1-xTB", "verbosity": 0, "cache_api": False},
                       "tblite GFN1-xTB: most elements (Ti, O, …), periodic or isolated", "xtb", "tblite"),
    "gfn2-xtb": Preset("tblite.ase:TBLite", {"method": "GFN2-xTB", "verbosity": 0, "cache_api": False},
                       "tblite GFN2-xTB: molecules mainly (periodic support is limited)", "xtb", "tblite"),
    "emt": Preset("ase.calculators.emt:EMT", {}, "ASE EMT: fcc metals Al Cu Ag Au Ni Pd Pt (H C N O rough)"),
}


def _split_inline_kwargs(text: str) -> tuple[str, dict]:
    brace = text.find("{")
    if brace < 0:
        return text.strip(), {}
    name, raw = text[:brace].strip().rstrip(":").strip(), text[brace:]
    return name, _parse_kwargs(raw, name)


def _parse_kwargs(raw: str | dict | None, name: str) -> dict:
    if raw is None or raw == "":
        return {}
    if isinstance(raw, dict):
        return dict(raw)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CalculatorError(f"calculator {name!r}: keyword arguments are not valid JSON ({exc.msg} at "
                              f"character {exc.pos}): {raw}") from None
    if not isinstance(value, dict):
        raise CalculatorError(f"calculator {name!r}: keyword arguments must be a JSON object {{...}}, got {raw}")
    return value


def _import_target(target: str, name: str, preset: Preset | None) -> Callable:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise CalculatorError(f"calculator {name!r}: expected a preset ({', '.join(PRESETS)}) or an import path "
                              "'module:Class', e.g. ase.calculators.emt:EMT")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if preset is not None and preset.package:
            raise CalculatorError(
                f"calculator {name!r} needs the package {preset.package!r}, which is not installed "
                f"({exc}). Install it with: pip install 'pyita[{preset.extra}]'  "
                f"(or: conda install -c conda-forge {preset.package}-python)") from None
        raise CalculatorError(f"calculator {name!r}: cannot import module {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CalculatorError(f"calculator {name!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise CalculatorError(f"calculator {name!r}: {target} is not a class or factory")
    return obj


@dataclass(frozen=True)
class CalculatorSpec:
    """A picklable recipe for a calculator: rebuilt fresh in every worker process."""

    name: str
    target: str | None = None
    kwargs: dict = field(default_factory=dict)
    factory: Callable | None = None
    instance: Any = None  # a ready calculator object (Python API, one process only)
    fold: str | tuple | None = "auto"  # see compute(): "auto" = each structure's info["fold"], if any

    def make(self):
        """A new calculator (or the given instance). Raises CalculatorError with a clear message."""
        if self.instance is not None:
            return self.instance
        preset = PRESETS.get(self.name)
        factory = self.factory or _import_target(self.target, self.name, preset)
        try:
            calc = factory(**self.kwargs)
        except CalculatorError:
            raise
        except Exception as exc:  # noqa: BLE001 - any constructor error is a set-up problem
            raise CalculatorError(f"calculator {self.name!r}: cannot create it with keyword arguments "
                                  f"{json.dumps(self.kwargs)}: {type(exc).__name__}: {exc}") from None
        if not (hasattr(calc, "get_potential_energy") or hasattr(calc, "calculate")):
            raise CalculatorError(f"calculator {self.name!r}: {type(calc).__name__} is not an ASE calculator")
        known = getattr(calc, "default_parameters", None)
        unknown = [k for k in self.kwargs if known and k not in known and k not in _BASE_KWARGS]
        if unknown:  # ASE calculators store unknown keywords silently: a typo would go unnoticed
            warnings.warn(f"calculator {self.name!r}: {', '.join(unknown)} not among its known parameters "
                          f"({', '.join(known)}); check the spelling", stacklevel=2)
        return calc

    @property
    def parallel_safe(self) -> bool:
        return self.instance is None

    def describe(self) -> dict:
        """What produced the numbers (for result files and checkpoints)."""
        out = {"name": self.name, "target": self.target, "kwargs": self.kwargs,
               "fold": list(self.fold) if isinstance(self.fold, tuple) else self.fold}
        if self.name in PRESETS:
            out["preset"] = PRESETS[self.name].help
        if self.target and self.target.startswith("tblite"):
            try:
                from importlib.metadata import version

                out["tblite_version"] = version("tblite")
            except Exception:  # noqa: BLE001
                pass
        return out


def resolve_calculator(spec, kwargs: str | dict | None = None, fold="auto") -> CalculatorSpec:
    """Turn a preset name, an import path (with optional inline JSON), a class, a factory or a calculator
    object into a ``CalculatorSpec``; checks that presets and import paths exist (imports the module).
    ``fold``: ``auto`` (default), ``none`` or e.g. ``2x2x1``, see ``compute``."""
    fold = parse_fold(fold)
    if isinstance(spec, CalculatorSpec):
        changes = {}
        if kwargs:
            changes["kwargs"] = {**spec.kwargs, **_parse_kwargs(kwargs, spec.name)}
        if fold != "auto":
            changes["fold"] = fold
        return replace(spec, **changes) if changes else spec
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        raise CalculatorError("no calculator given: name a preset (" + ", ".join(PRESETS) +
                              ") or an ASE calculator as module:Class")
    if not isinstance(spec, str):
        if isinstance(spec, type) or (callable(spec) and not hasattr(spec, "get_potential_energy")):
            name = f"{getattr(spec, '__module__', '?')}:{getattr(spec, '__qualname__', repr(spec))}"
            return CalculatorSpec(name, None, _parse_kwargs(kwargs, name), factory=spec, fold=fold)
        return CalculatorSpec(type(spec).__name__, None, {}, instance=spec, fold=fold)
    name, inline = _split_inline_kwargs(spec)
    extra = _parse_kwargs(kwargs, name)
    key = name.lower()
    if key in PRESETS:
        preset = PRESETS[key]
        result = CalculatorSpec(key, preset.target, {**preset.kwargs, **inline, **extra}, fold=fold)
    elif ":" in name:
        result = CalculatorSpec(name, name, {**inline, **extra}, fold=fold)
    else:
        raise CalculatorError(f"unknown calculator {name!r}: choose a preset ({', '.join(PRESETS)}) or give an "
                              "ASE calculator by import path 'module:Class', e.g. ase.calculators.emt:EMT")
    _import_target(result.target, result.name, PRESETS.get(key))  # fail early, before any work
    return result


def make_calculator(spec, kwargs: str | dict | None = None):  # noqa: D401
    """A ready ASE calculator from anything ``resolve_calculator`` accepts."""
    return resolve_calculator(spec, kwargs).make()


def parse_fold(value) -> str | tuple[int, int, int] | None:
    """``auto`` (a structure's own ``info["fold"]``, as the bundled sample carries), ``none``, or a
    replication such as ``2x2x1`` / (2, 2, 1)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", "none"):
            return None if text == "none" else "auto"
        value = text.replace(",", "x").split("x")
    try:
        fold = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise CalculatorError(f"--fold must be auto, none or three integers like 2x2x1, got {value!r}") from None
    if len(fold) != 3 or min(fold) < 1:
        raise CalculatorError(f"--fold must be three integers ≥ 1 like 2x2x1, got {value!r}")
    return None if fold == (1, 1, 1) else fold


def fold_for(structure, fold) -> tuple[int, int, int] | None:
    """The replication to evaluate ``structure`` with (None: as it is)."""
    if fold == "auto":
        fold = structure.info.get("fold")
        if fold is None:
            return None
        fold = parse_fold(fold)
    if fold is None or not structure.periodic:
        return None
    return tuple(int(f) for f in fold)


def compute(calc, structure, need_forces: bool = True,
            fold: tuple[int, int, int] | None = None) -> tuple[float, np.ndarray | None]:
    """Force-consistent energy (eV) and forces (eV/Å) of one structure; raises whatever the calculator
    raises, or ValueError for non-finite results. The calculator is reset first so that results never
    depend on what it computed before.

    ``fold`` evaluates the cell replicated fold[0]×fold[1]×fold[2] times and returns the energy per image
    and the image-averaged forces: a Γ-centred k-mesh for Γ-point-only calculators such as tblite, whose
    energies of small cells otherwise depend strongly on the cell size (and whose small-cell potential
    energy surface can even have negative curvature). The bundled sample was labelled this way.
    """
    atoms = structure.to_ase()
    atoms.info.clear()
    images = 1
    if fold is not None and int(np.prod(fold)) > 1:
        images = int(np.prod(fold))
        atoms = atoms.repeat(fold)  # image k holds atoms [k*n, (k+1)*n)
    if hasattr(calc, "reset"):
        calc.reset()
    atoms.calc = calc
    energy = atoms.get_potential_energy()
    results = getattr(calc, "results", {}) or {}
    energy = float(results.get("free_energy", energy)) / images
    forces = None
    if need_forces:
        forces = np.array(atoms.get_forces(), dtype=np.float64)
        if forces.shape == (images * len(structure), 3):
            forces = forces.reshape(images, len(structure), 3).mean(axis=0)
    if not math.isfinite(energy):
        raise ValueError(f"energy is {energy}")
    if forces is not None and (forces.shape != (len(structure), 3) or not np.isfinite(forces).all()):
        raise ValueError("forces are not finite or have the wrong shape")
    return energy, forces



_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _limit(n: int):
    """Tell the OpenMP and BLAS libraries loaded now to use ``n`` threads (threadpoolctl), and those loaded later
    (the environment variables they read when they start); returns threadpoolctl's limiter, whose
    ``restore_original_limits`` undoes the first part."""
    import os

    from threadpoolctl import threadpool_limits

    if n < 1:
        raise PyitaError(f"--threads must be ≥ 1, got {n}")
    for var in _THREAD_VARS:
        os.environ[var] = str(n)
    return threadpool_limits(limits=int(n))


def limit_threads(n: int | None) -> None:
    """Use ``n`` OpenMP/BLAS threads from now on in this process (None: leave as is); for worker processes.

    tblite parallelises with OpenMP; on a busy machine two processes × two threads can be several times
    slower than one thread each.
    """
    if n is not None:
        _limit(n)


@contextmanager
def threads_limited(n: int | None):
    """``limit_threads(n)`` for the duration of a block, then the previous settings again."""
    if n is None:
        yield
        return
    import os

    saved_env = {var: os.environ.get(var) for var in _THREAD_VARS}
    limiter = _limit(n)
    try:
        yield
    finally:
        limiter.restore_original_limits()
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
