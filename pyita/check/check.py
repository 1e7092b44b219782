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

import csv
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.stats import linregress

from pyita import __version__
from pyita.augment import AugmentSettings, iter_augmented
from pyita.augment.strategies import STRATEGIES
from pyita.check.calculators import resolve_calculator
from pyita.check.label import Checkpoint, CheckpointFolder, fingerprint, label_structures
from pyita.errors import PyitaError
from pyita.io import open_source
from pyita.io.records import jsonable
from pyita.structure import Structure
from pyita.metrics import summarize


__all__ = ["CheckSettings", "CheckResult", "check", "run_check", "write_check", "summarise", "recommend",
           "fit_slope", "DEFAULT_DELTAS", "CSV_FIELDS", "print_report"]

DEFAULT_DELTAS = (0.005, 0.01, 0.02, 0.03, 0.05)
DEFAULT_STRATEGIES = ("balanced", "random-all")
CSV_FIELDS = ["strategy", "delta", "parent_index", "parent", "copy", "atom", "direction", "n_atoms",
              "max_displacement_A", "E_parent_eV", "E_taylor_eV", "E_true_eV", "error_eV",
              "abs_error_meV", "abs_error_meV_per_atom", "signal_meV", "signal_meV_per_atom", "snr"]
OUTPUT_FILES = ("errors.csv", "check.json", "check.png", "check.svg")


def _as_tuple(value, kind) -> tuple:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    try:
        return tuple(kind(v) for v in value)
    except ValueError:
        raise PyitaError(f"cannot read {value!r} as a comma-separated list") from None


@dataclass(frozen=True)
class CheckSettings:
    """Everything that decides the study; recorded in check.json."""

    deltas: tuple[float, ...] = DEFAULT_DELTAS
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    parents: int = 20
    a: float = 2
    seed: int = 0
    tolerance: float = 1.0  # meV/atom, on the 95th percentile
    max_force: float | None = None
    cap: float = 3.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "deltas", tuple(sorted(set(_as_tuple(self.deltas, float)))))
        object.__setattr__(self, "strategies", tuple(dict.fromkeys(_as_tuple(self.strategies, str))))
        if not self.deltas:
            raise PyitaError("give at least one δ (--delta)")
        if self.deltas[0] <= 0:
            raise PyitaError(f"every δ must be > 0 Å, got {self.deltas[0]}")
        for strategy in self.strategies:
            if strategy not in STRATEGIES:
                raise PyitaError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        if not self.strategies:
            raise PyitaError("give at least one strategy (--strategy)")
        if self.parents < 1:
            raise PyitaError(f"--parents must be ≥ 1, got {self.parents}")
        if not self.a > 0:
            raise PyitaError(f"--a must be > 0, got {self.a}")
        if not self.tolerance > 0:
            raise PyitaError(f"--tolerance must be > 0 meV/atom, got {self.tolerance}")
        for delta in self.deltas:  # the augment layer's own validation (and its warning for large δ)
            self.augment_settings(self.strategies[0], delta)

    def augment_settings(self, strategy: str, delta: float) -> AugmentSettings:
        return AugmentSettings(a=self.a, delta=delta, strategy=strategy, seed=self.seed,
                               max_force=self.max_force, cap=self.cap)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["deltas"], d["strategies"] = list(self.deltas), list(self.strategies)
        return d


@dataclass
class CheckResult:
    rows: list[dict]
    summary: dict
    parents: list[Structure] = field(default_factory=list)

    @property
    def recommendation(self) -> dict:
        return self.summary["recommendation"]


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

def select_parents(data, count: int, seed: int) -> tuple[list[int], list[Structure]]:
    """A seeded sample of ``count`` original (non-derived) structures, in data order."""
    if isinstance(data, (list, tuple)):
        structures = list(data)
    else:
        structures = list(open_source(data, require_labels=False))
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
          threads: int | None = None, fold="auto") -> CheckResult:
    """Run the Taylor-error study in memory (see the module docstring). With ``checkpoint_dir`` every
    finished calculation is kept there, and a rerun with the same arguments continues."""
    settings = settings or CheckSettings()
    spec = resolve_calculator(calculator, calc_kwargs, fold)
    start = time.perf_counter()
    indices, chosen = select_parents(data, settings.parents, settings.seed)
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

    derived: list[tuple[str, float, int, Structure, Structure]] = []
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
    if not derived:
        raise PyitaError("no derived structures were made (every parent skipped: --max-force too low, or "
                         "single-atom structures with random-all?)")
    children = [d[4] for d in derived]
    true = label_structures(children, spec, checkpoint=checkpoint("derived", children), workers=workers,
                            need_forces=False, progress=progress, description="check: derived",
                            noun="derived structure", threads=threads)

    rows = []
    for (strategy, delta, k, parent, child), (e_true, _) in zip(derived, true):
        n = len(child)
        displacement = child.positions - parent.positions
        error = child.energy - e_true
        signal = abs(child.info["taylor_shift"])
        rows.append({
            "strategy": strategy, "delta": delta, "parent_index": indices[k], "parent": names[k],
            "copy": child.info["copy"], "atom": child.info["atom"] + 1 if child.info["atom"] >= 0 else "all",
            "direction": child.info["direction"], "n_atoms": n,
            "max_displacement_A": float(np.linalg.norm(displacement, axis=1).max()),
            "E_parent_eV": parent.energy, "E_taylor_eV": child.energy, "E_true_eV": e_true,
            "error_eV": error, "abs_error_meV": abs(error) * 1000, "abs_error_meV_per_atom": abs(error) * 1000 / n,
            "signal_meV": signal * 1000, "signal_meV_per_atom": signal * 1000 / n,
            "snr": signal / abs(error) if error != 0 else math.inf,
        })
    table = summarise(rows, settings)
    slopes = {}
    for strategy in settings.strategies:
        entries = [t for t in table if t["strategy"] == strategy]
        ds = [t["delta"] for t in entries]
        slopes[strategy] = {"median": fit_slope(ds, [t["error_meV_per_atom"]["median"] for t in entries]),
                            "p95": fit_slope(ds, [t["error_meV_per_atom"]["p95"] for t in entries]),
                            "snr_median": fit_slope(ds, [t["snr"]["median"] for t in entries])}
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


# --- output -----------------------------------------------------------------------------------------------

def write_check(result: CheckResult, folder: str | Path) -> list[Path]:
    """errors.csv (one row per derived structure), check.json (summary), check.png/.svg (the plot)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "errors.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS)
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: (repr(float(v)) if isinstance(v, float) else v) for k, v in row.items()})
    (folder / "check.json").write_text(json.dumps(jsonable(result.summary), indent=2) + "\n")
    plot_check(result.summary, folder / "check.png", folder / "check.svg")
    return [folder / name for name in OUTPUT_FILES]


def plot_check(summary: dict, *paths: Path) -> None:
    """Log-log error versus δ per strategy (median, 95th percentile, max), the median signal |F·D|/N,
    a δ² reference line and the tolerance."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    table = summary["table"]
    settings = summary["settings"]
    anchor_x, anchor_y = [], []
    for color, strategy in zip(colors, settings["strategies"]):
        entries = [t for t in table if t["strategy"] == strategy and t["n"] > 0]
        if not entries:
            continue
        d = np.array([t["delta"] for t in entries])
        med = np.array([t["error_meV_per_atom"]["median"] for t in entries])
        p95 = np.array([t["error_meV_per_atom"]["p95"] for t in entries])
        mx = np.array([t["error_meV_per_atom"]["max"] for t in entries])
        sig = np.array([t["signal_meV_per_atom"]["median"] for t in entries])
        slope = summary["slopes"][strategy]["median"]["slope"]
        label = f"{strategy}: median error" + (f" (slope {slope:.2f})" if slope is not None else "")
        ax.plot(d, med, "o-", color=color, label=label)
        ax.plot(d, p95, "^--", color=color, label=f"{strategy}: 95th percentile")
        ax.plot(d, mx, ":", color=color, alpha=0.6, label=f"{strategy}: max")
        ax.plot(d, sig, "x-", color=color, alpha=0.35, lw=1, label=f"{strategy}: signal |F·D|/N (median)")
        good = med > 0
        anchor_x += list(d[good])
        anchor_y += list(med[good])
    if anchor_x:
        x, y = np.array(anchor_x), np.array(anchor_y)
        c = math.exp(float(np.mean(np.log(y) - 2 * np.log(x))))
        xs = np.geomspace(x.min() * 0.8, x.max() * 1.25, 20)
        ax.plot(xs, c * xs ** 2, "k--", lw=1, alpha=0.7, label="∝ δ² (reference slope 2)")
    ax.axhline(settings["tolerance"], color="grey", lw=1, ls="-.",
               label=f"tolerance {settings['tolerance']:g} meV/atom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.xaxis.set_major_locator(FixedLocator(settings["deltas"]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{d:g}" for d in settings["deltas"]])
    ax.set_xlabel("δ (Å; random-all: RMS per atom)")
    ax.set_ylabel("meV/atom: |E_taylor − E_true|/N, and signal |F·D|/N")
    calc = summary["calculator"]["name"]
    ax.set_title(f"First-order Taylor error vs δ — {calc}, {summary['counts']['parents']} parents, "
                 f"a={settings['a']:g}", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    for path in paths:
        fig.savefig(path, dpi=150)


def print_report(summary: dict, console) -> None:
    """The study's numbers as tables on a rich console."""
    from rich import box
    from rich.table import Table

    calc = summary["calculator"]["name"]
    agree = summary.get("reference_vs_data", {})
    if agree.get("parents_with_labels"):
        line = (f"{calc} vs the data's own labels on {agree['parents_with_labels']} parents: energy MAE "
                f"{agree['energy_mae_meV_per_atom']:.3g} meV/atom (max {agree['energy_max_meV_per_atom']:.3g})")
        if "force_mae_eV_per_A" in agree:
            line += f", force MAE {agree['force_mae_eV_per_A']:.3g} eV/Å (max {agree['force_max_eV_per_A']:.3g})"
        console.print(line + (" — the same PES" if agree["energy_max_meV_per_atom"] < 0.01 else
                              " — the check measures the calculator's PES, standing in for the data's"),
                      soft_wrap=True)
    for strategy in summary["settings"]["strategies"]:
        table = Table(title=f"Taylor error — {strategy}, {calc}, {summary['counts']['parents']} parents",
                      title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("δ/Å", "n", "med", "p95", "max", "med", "p95", "max", "F·D", "SNR"):
            table.add_column(column, justify="right", no_wrap=True)
        for t in summary["table"]:
            if t["strategy"] != strategy:
                continue
            ea, es = t["error_meV_per_atom"], t["error_meV"]
            if not t["n"]:
                table.add_row(f"{t['delta']:g}", "0", *[""] * 8)
                continue
            table.add_row(f"{t['delta']:g}", str(t["n"]), *(f"{ea[k]:.3g}" for k in ("median", "p95", "max")),
                          *(f"{es[k]:.3g}" for k in ("median", "p95", "max")),
                          f"{t['signal_meV_per_atom']['median']:.3g}", f"{t['snr']['median']:.3g}")
        table.caption = ("|E_taylor − E_true|: meV/atom (med, p95, max), then meV/structure; "
                         "F·D: median signal meV/atom; SNR: median |F·D|/|error|")
        narrow = console.width
        console.width = max(narrow, 100)  # never elide numbers, even in a narrow terminal or a log file
        try:
            console.print(table)
        finally:
            console.width = narrow
        slope = summary["slopes"][strategy]
        s_med, s_p95 = slope["median"]["slope"], slope["p95"]["slope"]
        console.print(f"  fitted slope of log error vs log δ: median {_fmt(s_med)}, p95 {_fmt(s_p95)} "
                      f"(2 expected)", soft_wrap=True)
        console.print(f"  recommendation: {summary['recommendation'][strategy]['note']}", soft_wrap=True)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def run_check(data, calculator, out: str | Path, settings: CheckSettings | None = None, *, calc_kwargs=None,
              workers: int = 1, progress: bool = True, overwrite: bool = False, restart: bool = False,
              threads: int | None = None, fold="auto") -> CheckResult:
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
                       checkpoint_dir=partial, restart=restart, threads=threads, fold=fold)
        with atomic_output_dir(out, overwrite=overwrite, command="check") as tmp:
            write_check(result, tmp)
        CheckpointFolder(partial, "check").remove()
    return result
