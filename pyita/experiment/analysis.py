"""From saved task results to tables: per-trial metrics, pooled summaries and condition-vs-baseline tests."""

from __future__ import annotations

import numpy as np

from pyita.experiment.config import ExperimentConfig
from pyita.experiment.md import MD_METRICS, md_metrics
from pyita.experiment.stats import compare, no_verdict, summarize


def complete_trials(config: ExperimentConfig, results) -> list[int]:
    """Trials in which every condition finished: only these enter paired comparisons."""
    return [t for t in range(config.trials) if all((t, c.name) in results for c in config.conditions)]


def per_trial_table(config: ExperimentConfig, results) -> list[dict]:
    rows = []
    for (trial, name), r in sorted(results.items()):
        e, f = summarize(r.energy_errors), summarize(r.force_errors)
        rows.append({"trial": trial, "condition": name,
                     "train_energy_mae": r.summary.get("train_energy_mae", float("nan")),
                     "train_energy_rmse": r.summary.get("train_energy_rmse", float("nan")),
                     "energy_mae": e["mae"], "energy_rmse": e["rmse"],
                     "energy_median": e["median"], "force_mae": f["mae"], "force_rmse": f["rmse"],
                     "force_median": f["median"], "seconds": r.summary["seconds"],
                     "n_train_parents": r.summary["n_train_parents"], "n_derived": r.summary["n_derived"],
                     "n_test": r.summary["n_test"],
                     **{key: r.summary.get(key, float("nan")) for key in md_metrics(config)}})
    return rows


def pooled(config: ExperimentConfig, results, trials: list[int], name: str, kind: str) -> np.ndarray:
    """Errors of one condition over the given trials, concatenated in a fixed (paired) order."""
    parts = [getattr(results[(t, name)], f"{kind}_errors") for t in trials if (t, name) in results]
    return np.concatenate(parts) if parts else np.array([])


def condition_table(config: ExperimentConfig, results) -> list[dict]:
    """Pooled error statistics per condition (meV/atom for energies, eV/Å for forces)."""
    trials = list(range(config.trials))
    rows = []
    for condition in config.conditions:
        e = summarize(pooled(config, results, trials, condition.name, "energy"))
        f = summarize(pooled(config, results, trials, condition.name, "force"))
        mine = [r.summary for (t, n), r in results.items() if n == condition.name]
        rows.append({"condition": condition.name, "trials": len(mine),
                     **{f"energy_{k}": v for k, v in e.items()}, **{f"force_{k}": v for k, v in f.items()},
                     # beside the test errors, so that over- and under-fitting show (results older than
                     # this column have no training error: NaN)
                     **{key: _mean([r.get(key, float("nan")) for r in mine])
                        for key in ("train_energy_mae", "train_energy_rmse")},
                     "seconds_mean": _mean([r["seconds"] for r in mine])})
    return rows


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def baseline_for(config: ExperimentConfig, condition) -> str:
    """The baseline a condition is compared with: the one trained for as many iterations, else the first."""
    baselines = [c for c in config.conditions if c.is_baseline]
    length = condition.trainer.get("iterations")
    same = [c for c in baselines if c.trainer.get("iterations") == length]
    return (same or baselines)[0].name


def comparisons(config: ExperimentConfig, results) -> list[dict]:
    """Each condition against its baseline, on per-trial energy MAE and force MAE, complete trials only."""
    trials = complete_trials(config, results)
    out = []
    for condition in config.conditions:
        if condition.is_baseline or not trials:
            continue
        base = baseline_for(config, condition)
        for kind, metric in (("energy", "energy MAE (meV/atom)"), ("force", "force MAE (eV/Å)")):
            unusable = _not_finite(results, trials, (base, condition.name), kind)
            if unusable:
                out.append({"baseline": base, **no_verdict(condition.name, metric, len(trials), unusable).as_dict()})
                continue
            b = [float(np.mean(np.abs(getattr(results[(t, base)], f"{kind}_errors")))) for t in trials]
            c = [float(np.mean(np.abs(getattr(results[(t, condition.name)], f"{kind}_errors")))) for t in trials]
            bp = np.concatenate([results[(t, base)].structure_errors(kind) for t in trials])
            cp = np.concatenate([results[(t, condition.name)].structure_errors(kind) for t in trials])
            row = compare(condition.name, metric, b, c, bp, cp).as_dict()
            out.append({"baseline": base, **row})
        out += _md_comparisons(config, results, trials, base, condition.name)
    return out


def _md_comparisons(config: ExperimentConfig, results, trials: list[int], base: str, name: str) -> list[dict]:
    """The condition against its baseline on each per-trial MD metric (``pyita.experiment.md``), by the same
    rule; stability and time to failure are better when higher. A task that ran no MD (or a metric that is
    not finite) gives no verdict, with the reason."""
    out = []
    for key in md_metrics(config):
        metric, _, _, higher = MD_METRICS[key]
        values = {n: [results[(t, n)].summary.get(key) for t in trials] for n in (base, name)}
        bad = [f"{n!r} in trial {t}" for n in values for t, v in zip(trials, values[n])
               if not isinstance(v, (int, float)) or not np.isfinite(v)]
        if bad:
            skipped = results[(trials[0], name)].summary.get("md_skipped")
            reason = skipped or f"no finite {metric} for {', '.join(bad[:3])}"
            out.append({"baseline": base, **no_verdict(name, metric, len(trials), reason).as_dict()})
            continue
        pooled_runs = [np.concatenate([results[(t, n)].md.get("md_time_to_failure_fs", np.zeros(0)) for t in trials])
                       for n in (base, name)] if key == "md_median_time_to_failure_fs" else [(), ()]
        row = compare(name, metric, values[base], values[name], *pooled_runs, higher_is_better=higher).as_dict()
        out.append({"baseline": base, **row})
    return out


def _not_finite(results, trials: list[int], names: tuple[str, ...], kind: str) -> str:
    """Why no verdict is possible when a condition's errors hold NaN or inf (its predictions were not finite,
    e.g. its training diverged), else ""."""
    reasons = []
    for name in dict.fromkeys(names):
        bad = [t for t in trials if not np.isfinite(getattr(results[(t, name)], f"{kind}_errors")).all()]
        if bad:
            which = ", ".join(map(str, bad))
            reasons.append(f"the {kind} predictions of {name!r} are not finite in trial{'s' if len(bad) > 1 else ''} "
                           f"{which} (its training diverged?)")
    return "; ".join(reasons)


#: Metric names in comparisons → (plain word, unit).
_METRIC_WORDS = {"energy MAE (meV/atom)": ("energy", "meV/atom"), "force MAE (eV/Å)": ("forces", "eV/Å")}


def signed_text(value: float, unit: str = " %") -> str:
    """+19 %, −0.5 %, −12 % (two significant figures at most; a true minus sign)."""
    if value is None or not np.isfinite(value):
        return "n/a"
    digits = 0 if abs(value) >= 10 else 1 if abs(value) >= 1 else 2
    return f"{value:+.{digits}f}{unit}".replace("-", "−")


def three_figures(value: float) -> str:
    """Three significant figures, trailing zeros kept (0.300, 112, 0.0461)."""
    return f"{value:#.3g}".rstrip(".") if np.isfinite(value) else "n/a"


#: The MD metrics' names in comparisons → (plain word, unit, higher is better).
_MD_WORDS = {metric: (word, unit, higher) for metric, word, unit, higher in MD_METRICS.values()}


def _plain(row: dict) -> str:
    word, unit, higher = _MD_WORDS.get(row["metric"], (*_METRIC_WORDS.get(row["metric"], (row["metric"], "")), None))
    verdict, n = row["verdict"], row["n_trials"]
    if verdict == "better":
        what = "better, lower error" if higher is None else "better, higher" if higher else "better, lower"
    elif verdict == "worse":
        what = "worse, higher error" if higher is None else "worse, lower" if higher else "worse, higher"
    elif verdict.startswith("no verdict"):
        return f"{word} — {verdict}"
    elif verdict.startswith("insufficient"):
        what = f"no verdict possible from {n} trial{'s' if n != 1 else ''}"
    else:
        what = "no detectable change"
    effect = f"Δ {signed_text(row['percent_difference'])}"
    if np.isfinite(row["percent_ci_low"]):
        effect += f", 95 % CI {signed_text(row['percent_ci_low'])} … {signed_text(row['percent_ci_high'])}"
    means = f"{three_figures(row['baseline_mean'])} → {three_figures(row['condition_mean'])}"
    effect += f"; {'MAE' if higher is None else 'mean'} {means} {unit}".rstrip()
    needed = row.get("trials_needed")
    if not verdict.startswith(("better", "worse")) and needed is not None and needed > n:
        effect += f"; detecting a change this size would take {needed} trials at 80 % power"
    return f"{word} — {what} ({effect})"


def plain_groups(tests: list[dict]) -> list[tuple[str, str, int, list[str]]]:
    """(condition, baseline, trials, clauses) per condition, one clause per metric: "energy — no detectable
    change (Δ −0.52 %, 95 % CI −32 % … +31 %; MAE 0.369 → 0.367 meV/atom; …)"."""
    by_condition: dict[tuple[str, str], list[dict]] = {}
    for row in tests:
        by_condition.setdefault((row["condition"], row["baseline"]), []).append(row)
    return [(name, base, rows[0]["n_trials"], [_plain(r) for r in rows])
            for (name, base), rows in by_condition.items()]


def plain_summary(tests: list[dict]) -> list[str]:
    """One plain-language line per condition, its metrics separated by " | " (see :func:`plain_groups`)."""
    return [f"{name} (vs {base}, {n} trial{'s' if n != 1 else ''}): " + " | ".join(clauses)
            for name, base, n, clauses in plain_groups(tests)]


def survival_table(config: ExperimentConfig, results, points: int = 101) -> list[dict]:
    """Fraction of MD runs still stable against time, per condition, runs pooled over trials (md_survival.csv
    and the survival figure): at time t, the runs that had not failed by t (a run that failed at t counts as
    failed)."""
    rows = []
    for condition in config.conditions:
        mine = [r for (t, n), r in sorted(results.items()) if n == condition.name and "md_stable" in r.md]
        if not mine:
            continue
        times = np.concatenate([r.md["md_time_to_failure_fs"] for r in mine])
        stable = np.concatenate([r.md["md_stable"] for r in mine]).astype(bool)
        length = max(r.summary["md_run_length_fs"] for r in mine)
        for t in np.linspace(0.0, length, points):
            alive = stable | (times > t)
            rows.append({"condition": condition.name, "time_fs": round(float(t), 9), "runs": int(times.size),
                         "fraction_stable": float(alive.mean())})
    return rows
