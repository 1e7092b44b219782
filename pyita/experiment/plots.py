"""Figures of an experiment, each saved as PNG and SVG: violins (the seed paper's Figures 3–5), per-trial
spread, learning curves, and error versus a and δ for sweeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pyita.experiment.analysis import pooled
from pyita.io.atomic import atomic_write


def _subplots(*grid, **options):
    """``pyplot.subplots`` without pyplot: a Figure on its own Agg canvas, so that making a plot neither
    changes the caller's matplotlib backend (a notebook's) nor registers a figure pyplot would keep open."""
    fig_options = {k: options.pop(k) for k in ("figsize",) if k in options}
    fig = Figure(**fig_options)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*grid, **options)


def _save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    fig.tight_layout()
    for path in paths:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=130))
    return paths


def log_log(ax, xlabel: str, ylabel: str) -> None:
    """Both axes logarithmic, with their labels: costs and errors span decades."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def violins(config, results, out: Path) -> list[Path]:
    """Distribution of absolute test errors per condition, pooled over trials (density of log10 errors,
    so the small errors that matter stay visible next to the outliers)."""
    names = [c.name for c in config.conditions]
    trials = list(range(config.trials))
    fig, axes = _subplots(1, 2, figsize=(max(7, 1.6 * len(names) * 2), 4.2))
    for ax, kind, label in ((axes[0], "energy", "|ΔE| per atom (meV/atom)"),
                            (axes[1], "force", "|ΔF| per component (eV/Å)")):
        data = [np.abs(pooled(config, results, trials, n, kind)) for n in names]
        keep = [k for k, d in enumerate(data) if d.size]
        if keep:
            logs = [np.log10(np.maximum(data[k], 1e-6)) for k in keep]
            parts = ax.violinplot(logs, positions=keep, showmedians=True, showextrema=True)
            for body in parts["bodies"]:
                body.set_alpha(0.6)
            ticks = np.arange(np.floor(min(map(np.min, logs))), np.ceil(max(map(np.max, logs))) + 1)
            ax.set_yticks(ticks, [f"$10^{{{int(t)}}}$" for t in ticks])
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right")
        ax.set_ylabel(label)
        ax.set_title(f"test {kind} errors (median marked)")
    return _save(fig, out, "violins")


def per_trial(config, table: list[dict], out: Path) -> list[Path]:
    """Per-trial MAE per condition, paired trials joined by lines: shows trial-to-trial scatter."""
    names = [c.name for c in config.conditions]
    fig, axes = _subplots(1, 2, figsize=(max(7, 1.6 * len(names) * 2), 4.2))
    for ax, key, label in ((axes[0], "energy_mae", "energy MAE (meV/atom)"),
                           (axes[1], "force_mae", "force MAE (eV/Å)")):
        for trial in sorted({r["trial"] for r in table}):
            rows = {r["condition"]: r[key] for r in table if r["trial"] == trial}
            xs = [k for k, n in enumerate(names) if n in rows]
            ax.plot(xs, [rows[names[k]] for k in xs], "o-", alpha=0.6, label=f"trial {trial}")
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    return _save(fig, out, "per_trial")


#: Per-epoch history keys of the backends (embedded, aenet) for the same quantity.
_HISTORY_KEYS = {"train_mae": ("train_mae", "train_energy_mae"), "test_mae": ("test_mae", "test_energy_mae")}


def _history_value(row: dict, key: str):
    return next((row[k] for k in _HISTORY_KEYS[key] if k in row), None)


def learning_curves(config, results, out: Path) -> list[Path]:
    """Median over trials of the per-epoch train and test energy MAE, per condition."""
    fig, ax = _subplots(figsize=(7, 4.2))
    for k, condition in enumerate(config.conditions):
        histories = [r.summary["history"] for (t, n), r in results.items() if n == condition.name]
        histories = [h for h in histories if h]
        if not histories:
            continue
        length = min(len(h) for h in histories)
        epochs = [h["epoch"] for h in histories[0][:length]]
        for key, style in (("train_mae", "--"), ("test_mae", "-")):
            if _history_value(histories[0][0], key) is not None:
                values = np.median([[_history_value(h[i], key) for i in range(length)] for h in histories],
                                   axis=0)
                ax.plot(epochs, values, style, color=f"C{k}",
                        label=f"{condition.name} ({key.split('_')[0]})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("energy MAE (meV/atom)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    return _save(fig, out, "learning_curves")


def sweep(config, table: list[dict], out: Path) -> list[Path]:
    """Energy MAE against a (one line per δ) and against δ (one line per a), for swept conditions."""
    points = {}
    for condition in config.conditions:
        if condition.augment and "a" in condition.augment:
            key = (condition.augment.get("strategy", "balanced"), condition.augment["a"],
                   condition.augment["delta"])
            values = [r["energy_mae"] for r in table if r["condition"] == condition.name]
            if values:
                points[key] = (float(np.mean(values)), float(np.std(values)))
    strategies = {k[0] for k in points}
    if not any(len({k[1:] for k in points if k[0] == st}) > 1 for st in strategies):
        return []   # no strategy was run at more than one (a, δ)
    base = [r["energy_mae"] for r in table if any(c.is_baseline and c.name == r["condition"]
                                                  for c in config.conditions)]
    fig, axes = _subplots(1, 2, figsize=(10, 4.2))
    for ax, axis, other, label in ((axes[0], 1, 2, "a (new structures per parent)"), (axes[1], 2, 1, "δ (Å)")):
        for group in sorted({(k[0], k[other]) for k in points}):
            keys = sorted((k for k in points if (k[0], k[other]) == group), key=lambda k: k[axis])
            ax.errorbar([k[axis] for k in keys], [points[k][0] for k in keys], [points[k][1] for k in keys],
                        marker="o", capsize=3, label=f"{group[0]}, {'δ' if other == 2 else 'a'}={group[1]:g}")
        if base:
            ax.axhline(np.mean(base), color="k", ls=":", label="baseline")
        ax.set_xlabel(label)
        ax.set_ylabel("test energy MAE (meV/atom)")
        ax.legend(fontsize=7)
    return _save(fig, out, "sweep")


def crossover(config, results, table: list[dict], out: Path) -> list[Path]:
    """Test errors against the model's own training error, one line per condition family over training
    lengths, with the Taylor signal δ·|F|/N as vertical lines: augmentation can only pay to the left of
    its line, where the model's error is smaller than what a derived label adds."""
    families = _length_families(config)
    if not any(len(names) > 1 for names in families.values()):
        return []
    fig, axes = _subplots(1, 2, figsize=(11, 4.4))
    signals: dict[float, list[float]] = {}
    for k, (family, names) in enumerate(families.items()):
        xs, ye, yf = [], [], []
        for name in names:
            runs = [r for (t, n), r in results.items() if n == name]
            rows = [row for row in table if row["condition"] == name]
            if not rows:
                continue
            xs.append(np.mean([row["train_energy_mae"] for row in rows]))   # of the model evaluated
            ye.append(np.mean([row["energy_mae"] for row in rows]))
            yf.append(np.mean([row["force_mae"] for row in rows]))
            aug = next(c.augment for c in config.conditions if c.name == name)
            for r in runs:
                if aug and r.summary.get("taylor_signal_meV_atom"):
                    signals.setdefault(aug["delta"], []).append(r.summary["taylor_signal_meV_atom"])
        order = np.argsort(xs)
        for ax, ys in ((axes[0], ye), (axes[1], yf)):
            ax.plot(np.array(xs)[order], np.array(ys)[order], "o-", color=f"C{k}", label=family)
    for ax, label in ((axes[0], "test energy MAE (meV/atom)"), (axes[1], "test force MAE (eV/Å)")):
        for j, (delta, values) in enumerate(sorted(signals.items())):
            ax.axvline(np.median(values), color="k", ls=["--", ":", "-."][j % 3], lw=1,
                       label=f"Taylor signal δ={delta:g} Å")
        log_log(ax, "model training energy MAE (meV/atom)  ← longer training", label)
        ax.invert_xaxis()
    axes[0].legend(fontsize=7)
    return _save(fig, out, "crossover")


def _length_families(config) -> dict[str, list[str]]:
    """Conditions grouped by what they are apart from their training length (the " it=N" of a sweep)."""
    import re

    families: dict[str, list[str]] = {}
    for condition in config.conditions:
        families.setdefault(re.sub(r" it=\d+$", "", condition.name), []).append(condition.name)
    return families


def budget(config, table: list[dict], out: Path) -> list[Path]:
    """Test errors against the mean training wall time, one line per condition family over training
    lengths: which approach is best for a given compute budget (e.g. force fractions against the parent–child
    loss and absolute augmentation)."""
    families = _length_families(config)
    if not any(len(names) > 1 for names in families.values()):
        return []
    fig, axes = _subplots(1, 2, figsize=(11, 4.4))
    for k, (family, names) in enumerate(families.items()):
        rows = [row for name in names for row in table if row["condition"] == name and row["trials"]]
        rows.sort(key=lambda row: row["seconds_mean"])
        for ax, key in ((axes[0], "energy_mae"), (axes[1], "force_mae")):
            ax.plot([row["seconds_mean"] for row in rows], [row[key] for row in rows], "o-", color=f"C{k}",
                    label=family)
    for ax, label in ((axes[0], "test energy MAE (meV/atom)"), (axes[1], "test force MAE (eV/Å)")):
        log_log(ax, "training wall time per run (s, mean over trials)", label)
    axes[0].legend(fontsize=7)
    return _save(fig, out, "budget")


def effects(tests: list[dict], out: Path) -> list[Path]:
    """Condition − baseline as % of the baseline MAE with the 95 % paired t interval that decides the
    verdict, one panel per metric (green: better, red: worse, grey: no detectable difference)."""
    metrics = list(dict.fromkeys(t["metric"] for t in tests))
    if not metrics:
        return []
    rows = list(dict.fromkeys((t["condition"], t["baseline"]) for t in tests))
    fig, axes = _subplots(1, len(metrics), figsize=(5.2 * len(metrics), 0.9 + 0.45 * len(rows)),
                             squeeze=False)
    colours = {"better": "tab:green", "worse": "tab:red"}
    for ax, metric in zip(axes[0], metrics):
        for y, (name, base) in enumerate(rows):
            t = next((t for t in tests if (t["condition"], t["baseline"], t["metric"]) == (name, base, metric)),
                     None)
            if t is None or not np.isfinite(t["percent_difference"]):
                continue
            colour = colours.get(t["verdict"], "0.45")
            low, high = t["percent_ci_low"], t["percent_ci_high"]
            if np.isfinite(low) and np.isfinite(high):
                ax.plot([low, high], [y, y], "-", color=colour, lw=2.5, solid_capstyle="butt")
            ax.plot(t["percent_difference"], y, "o", color=colour, ms=6)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(rows)), [name if base == "baseline" else f"{name} (vs {base})"
                                         for name, base in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlabel(f"{metric.split(' (')[0]}: Δ % of baseline (95 % CI)")
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, out, "effects")


def survival(config, table: list[dict], out: Path) -> list[Path]:
    """Fraction of MD runs still stable against time, one line per condition (runs pooled over trials)."""
    if not table:
        return []
    fig, ax = _subplots(figsize=(6.5, 4.2))
    for condition in config.conditions:
        rows = [r for r in table if r["condition"] == condition.name]
        if rows:
            ax.step([r["time_fs"] for r in rows], [r["fraction_stable"] for r in rows], where="post",
                    label=f"{condition.name} ({rows[0]['runs']} runs)")
    ax.set_xlabel("time (fs)")
    ax.set_ylabel("fraction of runs still stable")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=7)
    return _save(fig, out, "md_survival")


def trajectory_errors(config, table: list[dict], out: Path) -> list[Path]:
    """Per trial and condition, the force MAE along the model's own MD trajectories against its test-set force
    MAE: points above the diagonal are states the test set does not sample and the model gets wrong."""
    rows = [r for r in table if np.isfinite(r.get("md_force_mae_eV_A", np.nan)) and np.isfinite(r["force_mae"])]
    if not rows:
        return []
    fig, ax = _subplots(figsize=(5.2, 4.6))
    for condition in config.conditions:
        mine = [r for r in rows if r["condition"] == condition.name]
        if mine:
            ax.plot([r["force_mae"] for r in mine], [r["md_force_mae_eV_A"] for r in mine], "o", alpha=0.8,
                    label=condition.name)
    values = [v for r in rows for v in (r["force_mae"], r["md_force_mae_eV_A"]) if v > 0]
    if values:
        span = [min(values) / 1.5, max(values) * 1.5]
        ax.plot(span, span, "k:", lw=1, label="trajectory = test")
    log_log(ax, "test force MAE (eV/Å)", "force MAE along its own MD trajectories (eV/Å)")
    ax.legend(fontsize=7)
    return _save(fig, out, "md_trajectory_errors")
