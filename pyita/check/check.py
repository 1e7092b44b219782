"""``pyita check``: how wrong are first-order Taylor labels, and which δ keeps them right enough?

For a seeded sample of parents the reference calculator recomputes the parent's energy E and forces F,
the derived structures are made exactly as ``pyita augment`` makes them (same strategies, same seeds), and
the calculator gives their true energies E(R + D). Using the calculator's own E and F for the parent makes
the study self-consistent: its potential-energy surface stands in for the data's, whose curvature is
unknown. Then per derived structure

    error  = E_taylor − E_true = E − F·D − E(R + D)    (≈ −½ DᵀHD: O(δ²))
    signal = |F·D|                                     (what the derived label adds over the parent's: O(δ))
    SNR    = |F·D| / |error|                           (∝ 1/δ)

summarised per strategy and δ (median, 95th percentile, max; meV/atom and meV/structure), with the fitted
log-log slope (≈ 2 expected) and a recommendation: the largest tested δ whose 95th-percentile error stays
below a tolerance (meV/atom).
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from collections.abc import Sequence

import numpy as np
from scipy.stats import linregress

from pyita import __version__
from pyita.augment import iter_augmented
from pyita.check.calculators import resolve_calculator
from pyita.check.label import Checkpoint, CheckpointFolder, fingerprint, label_structures
from pyita.check.report import CheckResult, write_check
from pyita.check.settings import CheckSettings
from pyita.errors import PyitaError
from pyita.io import open_source
from pyita.structure import LabelKeys, Structure
from pyita.metrics import summarize


__all__ = ["check", "run_check", "summarise", "recommend", "fit_slope"]


# --- statistics -------------------------------------------------------------------------------------------

def _stats(values) -> dict:
    """check.json's summary of non-negative values (errors, signals, ratios): None where there are none."""
    s = summarize(values)
    if not s["n"]:
        return {"median": None, "p95": None, "max": None, "mean": None}
    return {"median": s["median"], "p95": s["p95"], "max": s["max"], "mean": s["mae"]}


def summarise(rows: Sequence[dict], settings: CheckSettings) -> list[dict]:
    """One entry per (strategy, δ) with the distributions of error, signal and SNR."""
    out = []
    for strategy in settings.strategies:
        for delta in settings.deltas:
            sel = [r for r in rows if r["strategy"] == strategy and r["delta"] == delta]
            err_atom = [r["abs_error_meV_per_atom"] for r in sel]
            snr = np.array([r["snr"] for r in sel], dtype=np.float64)
            out.append({
                "strategy": strategy, "delta": delta, "n": len(sel),
                "error_meV_per_atom": _stats(err_atom),
                "error_meV": _stats([r["abs_error_meV"] for r in sel]),
                "signed_error_meV_per_atom_mean": float(np.mean([r["error_eV"] * 1000 / r["n_atoms"]
                                                                 for r in sel])) if sel else None,
                "signal_meV_per_atom": _stats([r["signal_meV_per_atom"] for r in sel]),
                "signal_meV": _stats([r["signal_meV"] for r in sel]),
                "snr": {"median": float(np.median(snr)) if sel else None,
                        "p5": float(np.percentile(snr, 5)) if sel else None,
                        "fraction_below_1": float(np.mean(snr < 1)) if sel else None},
            })
    return out


def fit_slope(deltas, errors) -> dict:
    """Least-squares line through (log δ, log error); errors ≤ 0 are left out."""
    d = np.asarray(deltas, dtype=np.float64)
    e = np.asarray([np.nan if v is None else v for v in errors], dtype=np.float64)
    ok = np.isfinite(e) & (e > 0)
    if ok.sum() < 2:
        return {"slope": None, "intercept": None, "r2": None, "points": int(ok.sum())}
    y = np.log(e[ok])
    fit = linregress(np.log(d[ok]), y)
    r2 = float(fit.rvalue ** 2) if np.ptp(y) > 0 else 1.0   # a flat line fits flat data exactly
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "r2": r2, "points": int(ok.sum())}


def recommend(table: Sequence[dict], settings: CheckSettings, slopes: dict) -> dict:
    """Per strategy: the largest tested δ whose 95th-percentile Taylor error (meV/atom) is ≤ tolerance,
    and, from the fitted p95 power law, the δ where the error would reach the tolerance."""
    out = {}
    for strategy in settings.strategies:
        entries = [t for t in table if t["strategy"] == strategy and t["n"] > 0]
        passing = [t for t in entries if t["error_meV_per_atom"]["p95"] <= settings.tolerance]
        best = max(passing, key=lambda t: t["delta"]) if passing else None
        fit = slopes.get(strategy, {}).get("p95", {})
        at_tol = None
        if fit.get("slope") and fit["slope"] > 0:
            at_tol = float(math.exp((math.log(settings.tolerance) - fit["intercept"]) / fit["slope"]))
        if best is not None:
            note = (f"largest tested δ with p95 error ≤ {settings.tolerance:g} meV/atom: {best['delta']:g} Å "
                    f"(p95 {best['error_meV_per_atom']['p95']:.3g} meV/atom)")
        elif entries:
            smallest = min(entries, key=lambda t: t["delta"])
            note = (f"no tested δ keeps the p95 error ≤ {settings.tolerance:g} meV/atom (smallest δ "
                    f"{smallest['delta']:g} Å gives {smallest['error_meV_per_atom']['p95']:.3g})")
        else:
            note = "no derived structures (all parents skipped?)"
        if at_tol is not None:
            note += f"; the fitted p95 power law reaches the tolerance at δ ≈ {at_tol:.3g} Å"
        out[strategy] = {"delta": None if best is None else best["delta"],
                         "p95_meV_per_atom": None if best is None else best["error_meV_per_atom"]["p95"],
                         "tolerance_meV_per_atom": settings.tolerance,
                         "delta_at_tolerance_fit": at_tol, "note": note}
    return out


# --- the study --------------------------------------------------------------------------------------------

def select_parents(data, count: int, seed: int, keys: LabelKeys | None = None) -> tuple[list[int], list[Structure]]:
    """A seeded sample of ``count`` original (non-derived) structures, in data order (``keys``: the labels of
    an ASE file, ``LabelKeys``)."""
    if isinstance(data, (list, tuple)):
        structures = list(data)
    else:
        structures = list(open_source(data, require_labels=False, keys=keys))
    candidates = [k for k, s in enumerate(structures) if not s.is_derived]
    if not candidates:
        raise PyitaError(f"{data}: no original (non-derived) structures to check")
    rng = np.random.default_rng(seed)
    chosen = sorted(int(candidates[k]) for k in rng.choice(len(candidates), size=min(count, len(candidates)),
                                                          replace=False))
    return chosen, [structures[k] for k in chosen]


def _data_label(data) -> str:
    return str(data) if isinstance(data, (str, Path)) else "<structures>"


def check(data, calculator, settings: CheckSettings | None = None, *, calc_kwargs=None, workers: int = 1,
          progress: bool = True, checkpoint_dir: str | Path | None = None, restart: bool = False,
          threads: int | None = None, fold="auto", keys: LabelKeys | None = None) -> CheckResult:
    """Run the Taylor-error study in memory (see the module docstring). With ``checkpoint_dir`` every
    finished calculation is kept there, and a rerun with the same arguments continues."""
    settings = settings or CheckSettings()
    spec = resolve_calculator(calculator, calc_kwargs, fold)
    start = time.perf_counter()
    indices, chosen = select_parents(data, settings.parents, settings.seed, keys)
    names = [s.source or f"{_data_label(data)}[{k}]" for k, s in zip(indices, chosen)]
    chosen = [s.copy(source=name) for s, name in zip(chosen, names)]
    base_meta = {"data": _data_label(data), "calculator": spec.describe(), "pyita_version": __version__}

    folder = None if checkpoint_dir is None else CheckpointFolder(checkpoint_dir, "check")

    def checkpoint(name: str, structures: list[Structure]) -> Checkpoint | None:
        if folder is None:
            return None
        meta = {**base_meta, "kind": f"check-{name}", "count": len(structures),
                "fingerprint": fingerprint(structures)}
        return Checkpoint(folder.path / f"{name}.jsonl", meta, restart=restart, folder=folder)

    labels = label_structures(chosen, spec, checkpoint=checkpoint("parents", chosen), workers=workers,
                              progress=progress, description="check: parents", noun="parent",
                              threads=threads)
    parents = [s.copy(energy=e, forces=f, energy_kind="total", info={**s.info, "derived": False})
               for s, (e, f) in zip(chosen, labels)]

    derived = _derive(parents, names, settings)
    if not derived:
        raise PyitaError("no derived structures were made (every parent skipped: --max-force too low, or "
                         "single-atom structures with random-all?)")
    children = [d[4] for d in derived]
    true = label_structures(children, spec, checkpoint=checkpoint("derived", children), workers=workers,
                            need_forces=False, progress=progress, description="check: derived",
                            noun="derived structure", threads=threads)

    rows = [_row(strategy, delta, indices[k], names[k], parent, child, e_true)
            for (strategy, delta, k, parent, child), (e_true, _) in zip(derived, true)]
    table = summarise(rows, settings)
    slopes = _slopes(table, settings)
    summary = {
        "pyita_version": __version__,
        "command": "check",
        "data": _data_label(data),
        "settings": settings.as_dict(),
        "seed": settings.seed,
        "calculator": spec.describe(),
        "workers": workers,
        "parents": [{"index": i, "name": n, "n_atoms": len(p), "E_eV": p.energy,
                     "max_force_eV_per_A": float(np.linalg.norm(p.forces, axis=1).max())}
                    for i, n, p in zip(indices, names, parents)],
        "counts": {"parents": len(parents), "derived": len(rows), "calculations": len(parents) + len(rows)},
        "reference_vs_data": _agreement(chosen, parents),
        "table": table,
        "slopes": slopes,
        "recommendation": recommend(table, settings, slopes),
        "seconds": round(time.perf_counter() - start, 3),
        "definitions": {
            "error": "E_taylor - E_true, E_taylor = E_parent - F_parent.D, all from the same calculator; "
                     "tables use |error|, per atom divides by the structure's atom count",
            "signal": "|F_parent.D| = |E_taylor - E_parent|, what a derived label adds to its parent's",
            "snr": "signal / |error| per derived structure",
            "slope": "least-squares slope of log(error statistic) against log(delta); 2 expected",
            "recommendation": "largest tested delta whose 95th-percentile |error| per atom <= tolerance",
        },
    }
    return CheckResult(rows=rows, summary=summary, parents=parents)


def _derive(parents: list[Structure], names: list[str], settings: CheckSettings
            ) -> list[tuple[str, float, int, Structure, Structure]]:
    """(strategy, δ, parent's place, parent, derived structure) for every strategy and δ of the study, made
    exactly as ``pyita augment`` makes them."""
    derived = []
    for strategy in settings.strategies:
        for delta in settings.deltas:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # large-δ warnings were given once, by CheckSettings
                for k, parent, children in iter_augmented(parents, settings.augment_settings(strategy, delta),
                                                          n_parents=len(parents)):
                    for child in children:
                        child.source = (f"derived from {names[k]}: {strategy}, delta {delta:g} A, "
                                        f"copy {child.info['copy'] + 1}")
                        if "fold" in parent.info:  # evaluate children exactly as their parent
                            child.info["fold"] = parent.info["fold"]
                        derived.append((strategy, delta, k, parent, child))
    return derived


def _row(strategy: str, delta: float, index: int, name: str, parent: Structure, child: Structure,
         e_true: float) -> dict:
    """errors.csv's row of one derived structure: its Taylor error and signal."""
    n = len(child)
    displacement = child.positions - parent.positions
    error = child.energy - e_true
    signal = abs(child.info["taylor_shift"])
    return {
        "strategy": strategy, "delta": delta, "parent_index": index, "parent": name,
        "copy": child.info["copy"], "atom": child.info["atom"] + 1 if child.info["atom"] >= 0 else "all",
        "direction": child.info["direction"], "n_atoms": n,
        "max_displacement_A": float(np.linalg.norm(displacement, axis=1).max()),
        "E_parent_eV": parent.energy, "E_taylor_eV": child.energy, "E_true_eV": e_true,
        "error_eV": error, "abs_error_meV": abs(error) * 1000, "abs_error_meV_per_atom": abs(error) * 1000 / n,
        "signal_meV": signal * 1000, "signal_meV_per_atom": signal * 1000 / n,
        "snr": signal / abs(error) if error != 0 else math.inf,
    }


def _slopes(table: Sequence[dict], settings: CheckSettings) -> dict:
    """Per strategy, the fitted log-log slopes of the median and 95th-percentile error and of the median SNR."""
    slopes = {}
    for strategy in settings.strategies:
        entries = [t for t in table if t["strategy"] == strategy]
        ds = [t["delta"] for t in entries]
        slopes[strategy] = {"median": fit_slope(ds, [t["error_meV_per_atom"]["median"] for t in entries]),
                            "p95": fit_slope(ds, [t["error_meV_per_atom"]["p95"] for t in entries]),
                            "snr_median": fit_slope(ds, [t["snr"]["median"] for t in entries])}
    return slopes


def _agreement(original: Sequence[Structure], recomputed: Sequence[Structure]) -> dict:
    """How far the calculator's parent labels are from the data's own (when the data has labels): zero
    when the data was made with this calculator, else a measure of how well its PES stands in."""
    de, df = [], []
    for o, r in zip(original, recomputed):
        if o.energy is None or o.energy_kind != "total":
            continue
        de.append(abs(o.energy - r.energy) * 1000 / len(o))
        if o.forces is not None:
            df.append(np.abs(o.forces - r.forces).ravel())
    out = {"parents_with_labels": len(de)}
    if de:
        out.update(energy_mae_meV_per_atom=float(np.mean(de)), energy_max_meV_per_atom=float(np.max(de)))
    if df:
        f = np.concatenate(df)
        out.update(force_mae_eV_per_A=float(np.mean(f)), force_max_eV_per_A=float(np.max(f)))
    return out


def run_check(data, calculator, out: str | Path, settings: CheckSettings | None = None, *, calc_kwargs=None,
              workers: int = 1, progress: bool = True, overwrite: bool = False, restart: bool = False,
              threads: int | None = None, fold="auto", keys: LabelKeys | None = None) -> CheckResult:
    """``pyita check``: the study, with a resumable checkpoint in ``OUT.partial/`` and the results
    written atomically to ``OUT/`` (errors.csv, check.json, check.png, check.svg)."""
    from pyita.io.atomic import atomic_output_dir, existing_ancestor
    from pyita.io.locks import exclusive
    from pyita.io.outputs import guard_output, input_files_of, refuse_overlap

    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    inputs = input_files_of(data)
    guard_output(out, inputs, "check", overwrite)
    refuse_overlap(partial, inputs, option="--out (its checkpoint folder)")
    with exclusive(existing_ancestor(out.parent) / f".{partial.name}.lock", f"checkpoint {partial}"):
        CheckpointFolder(partial, "check")   # someone else's folder of that name: refused before any work
        result = check(data, calculator, settings, calc_kwargs=calc_kwargs, workers=workers, progress=progress,
                       checkpoint_dir=partial, restart=restart, threads=threads, fold=fold, keys=keys)
        with atomic_output_dir(out, overwrite=overwrite, command="check") as tmp:
            write_check(result, tmp)
        CheckpointFolder(partial, "check").remove()
    return result
