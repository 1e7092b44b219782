"""The experiment's report: report.md and a self-contained report.html, CSV tables and raw errors."""

from __future__ import annotations

import base64
import re
import warnings
from html import escape
from pathlib import Path

from pyita import __version__
from pyita.experiment import plots
from pyita.experiment.analysis import comparisons, condition_table, per_trial_table, plain_groups, plain_summary, \
    survival_table
from pyita.experiment.results import load_results
from pyita.experiment.config import ExperimentConfig
from pyita.io.atomic import atomic_write_text
from pyita.io.records import json_text
from pyita.io.tables import write_csv


def _raw_errors(results, out: Path) -> None:
    """Every test error, one row each, so users can re-analyse without re-running."""
    energy, force = [], []
    for (trial, name), r in sorted(results.items()):
        for source, err in zip(r.summary["test_sources"], r.energy_errors):
            energy.append({"trial": trial, "condition": name, "structure": source, "error_meV_per_atom": err})
        force += [{"trial": trial, "condition": name, "component": k, "abs_error_eV_per_A": float(v)}
                  for k, v in enumerate(r.force_errors.ravel())]
    write_csv(out / "energy_errors.csv.gz", energy)
    write_csv(out / "force_errors.csv.gz", force)


def _fmt(value, digits=3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return "" if value is None else str(value)


def _md(text) -> str:
    """Text as Markdown shows it literally (condition names may hold * _ ` [ ] |)."""
    return re.sub(r"([\\`*_\[\]|<>#])", r"\\\1", str(text))


def _sig(value) -> str:
    """A signed difference to three significant figures (+0.0461, -1.20, +112)."""
    if not isinstance(value, float) or value != value:
        return _fmt(value)
    return f"{value:+#.3g}".rstrip(".")


def _pct(value) -> str:
    """A signed percentage to 0.1 (+112.0, -0.5)."""
    return f"{value:+.1f}" if isinstance(value, float) and value == value else _fmt(value)


def _md_table(rows: list[dict], columns: list[tuple]) -> list[str]:
    """A Markdown table; each column is (key, title) or (key, title, formatter)."""
    lines = ["| " + " | ".join(col[1] for col in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md((col[2] if len(col) > 2 else _fmt)(r.get(col[0]))) for col in columns) + " |"
              for r in rows]
    return lines


def write_report(config: ExperimentConfig, out: Path) -> dict:
    """(Re)build every table, figure and report page from the saved results."""
    results = load_results(config, out)
    trials_table = per_trial_table(config, results)
    conditions = condition_table(config, results)
    tests = comparisons(config, results) if results else []
    figures = out / "figures"
    figure_files = []
    if results:
        figure_files += plots.effects(tests, figures)
        figure_files += plots.violins(config, results, figures)
        figure_files += plots.per_trial(config, trials_table, figures)
        figure_files += plots.learning_curves(config, results, figures)
        figure_files += plots.sweep(config, trials_table, figures)
        figure_files += plots.crossover(config, results, trials_table, figures)
        figure_files += plots.budget(config, conditions, figures)
    survival = survival_table(config, results) if config.md else []
    if survival:
        figure_files += plots.survival(config, survival, figures)
        figure_files += plots.trajectory_errors(config, trials_table, figures)
        write_csv(out / "md_survival.csv", survival)
    write_csv(out / "per_trial.csv", trials_table)
    write_csv(out / "conditions.csv", conditions)
    write_csv(out / "comparisons.csv", tests)
    _raw_errors(results, out)
    subset = _subset_used(config, results)
    summary = {"pyita_version": __version__, "config": config.as_dict(), "plain_summary": plain_summary(tests),
               "conditions": conditions, "comparisons": tests, "finished_tasks": len(results),
               "expected_tasks": config.trials * len(config.conditions)}
    atomic_write_text(out / "summary.json", json_text(summary, indent=1, default=str))
    md = _markdown(config, conditions, tests, figure_files, len(results), subset)
    atomic_write_text(out / "report.md", md)
    atomic_write_text(out / "report.html", _html(md, out, config.name))
    return summary


def _subset_used(config: ExperimentConfig, results) -> int | None:
    """Structures a trial drew (training parents + test), as its results record them: all usable ones when
    ``subset_size`` asks for more than the data holds (the trials clamp it), said in a warning and the report."""
    sizes = [r.summary["n_train_parents"] + r.summary["n_test"] for r in results.values()
             if "n_train_parents" in r.summary and "n_test" in r.summary]
    if not sizes:
        return None
    used = max(sizes)
    if config.subset_size is not None and used < config.subset_size:
        warnings.warn(f"subset_size {config.subset_size} is more than the {used} usable structures of "
                      f"{config.data}: every trial used all {used}, and the report says so", stacklevel=2)
    return used


#: What each figure shows, under its heading in the report.
FIGURES = {
    "effects": ("Effect sizes", "Condition − baseline as a percentage of the baseline MAE, with the 95 % paired t "
                "interval over trials that decides the verdict (green: better, red: worse, grey: no detectable "
                "difference). An interval that crosses 0 means no detectable difference, not proof of none: its "
                "width shows how large an effect could still hide."),
    "violins": ("Error distributions", "Absolute test errors per condition, pooled over trials (log scale; "
                "median marked). Structures of one trial share one model: the pooled spread is not the "
                "uncertainty of a condition's mean."),
    "per_trial": ("Per-trial errors", "Each trial's MAE per condition, paired trials joined by lines: the "
                  "trial-to-trial scatter the verdicts are measured against."),
    "learning_curves": ("Learning curves", "Median over trials of the training and test energy MAE per epoch."),
    "sweep": ("Sweep over a and δ", "Energy MAE against a and against δ (mean ± SD over trials)."),
    "crossover": ("Crossover", "Test errors against the model's own training error, with the Taylor signal "
                  "δ·|F|/N as vertical lines."),
    "md_survival": ("MD stability", "Fraction of MD runs still stable against time, per condition, runs pooled "
                    "over trials: every condition of a trial starts from the same test parents with the same "
                    "velocities. A run fails at the first broken criterion of `pyita md` (atoms too close, a bond "
                    "torn, a temperature runaway, NVE drift, non-finite numbers)."),
    "md_trajectory_errors": ("Errors along MD trajectories", "Per trial, each condition's force MAE on frames "
                             "of its own MD runs (relabelled by the reference calculator) against its test-set "
                             "force MAE; the dotted line marks equality. Points far above it: the model drives "
                             "itself into states the test set does not sample."),
    "budget": ("Compute budget", "Test errors against the mean training wall time per run, one line per "
               "condition over its training lengths."),
}


def _describe(condition) -> str:
    """A condition in words: what it changes relative to the shared settings."""
    parts = [f"trained by {condition.backend}"] if condition.backend else []
    if condition.augment:
        aug = condition.augment
        how = "on-the-fly " if aug.get("on_the_fly") else ""
        parts.append(f"{how}{aug.get('strategy', 'balanced')} augmentation, a = {aug['a']:g}, "
                     f"δ = {aug['delta']:g} Å" + "".join(f", {k} = {aug[k]}" for k in aug
                                                      if k not in ("strategy", "a", "delta", "on_the_fly")))
    if condition.trainer:
        parts.append("trainer: " + ", ".join(f"{k} = {v}" for k, v in condition.trainer.items()))
    if condition.init_seed_offset:
        parts.append(f"other initial weights (trial seed + {condition.init_seed_offset}), nothing else "
                     "changed" + (": an A/A check, expected to show no difference" if condition.augment is None
                                  and not condition.trainer else ""))
    return "; ".join(parts) or "no augmentation, shared trainer settings"


def _subset_text(asked: int | None, used: int | None) -> str:
    if asked is not None and used is not None and used < asked:
        return f"{used} (all usable structures; subset_size {asked} asked for more than the data holds)"
    return str(asked or "all")


def _markdown(config, conditions, tests, figure_files, finished, subset=None) -> str:
    n = min((t["n_trials"] for t in tests), default=0)
    lines = [f"# PyITA experiment: {_md(config.name)}", "", _md(config.description), "", "## Summary", ""]
    if tests:
        lines += [f"Test errors of each condition against its baseline over {n} paired trials; a verdict needs "
                  "the 95 % paired t interval over the trials to exclude zero. Δ is condition − baseline as a "
                  "percentage of the baseline MAE (negative = lower error = better).", ""]
        for name, base, trials, clauses in plain_groups(tests):
            lines += [f"- **{_md(name)}** (vs {_md(base)}, {trials} trial{'s' if trials != 1 else ''})"]
            lines += [f"  - {_md(clause)}" for clause in clauses]
    else:
        lines += ["No comparison yet: no trial has finished for every condition."]
    lines += ["", "## Setup", "",
              f"PyITA {__version__}. Data `{config.data}`; {config.trials} paired trials "
              f"({finished}/{config.trials * len(config.conditions)} tasks finished); seed {config.seed}; "
              f"subset {_subset_text(config.subset_size, subset)}; test fraction {config.test_fraction}; "
              f"MAXENERGY {'none' if config.max_energy is None else config.max_energy}; "
              f"backend {config.backend}.", "",
              "Errors are measured on held-out *original* structures (never derived ones), the same test "
              "parents for every condition within a trial. Energy error: |E_pred − E_ref| / N in meV/atom; "
              "force error: |F_pred − F_ref| per Cartesian component in eV/Å.", "",
              "Trainer: " + (", ".join(f"`{k} = {v}`" for k, v in config.trainer.items()) or "defaults") + ".",
              "", "## Conditions", ""]
    lines += [f"- **{_md(c.name)}**: {_md(_describe(c))}" for c in config.conditions]
    lines += [f"- *{_md(name)}*: left out — {_md(why)} (backend {config.backend})"
              for name, why in config.left_out.items()]
    lines += ["", "## Errors (pooled over trials)", "",
              "Test errors on the held-out parents; *train E MAE* is the trainer's own energy MAE over what it "
              "fitted (parents and fixed derived structures), mean over trials, beside them so that over- and "
              "under-fitting show.", ""]
    lines += _md_table(conditions, [("condition", "condition"), ("trials", "trials"),
                                    ("train_energy_mae", "train E MAE"),
                                    ("energy_mae", "E MAE"), ("energy_rmse", "E RMSE"),
                                    ("energy_median", "E median"), ("energy_iqr", "E IQR"),
                                    ("energy_max", "E max"), ("force_mae", "F MAE"), ("force_rmse", "F RMSE"),
                                    ("force_median", "F median"), ("seconds_mean", "train s")])
    lines += ["", "## Verdicts (condition − baseline per trial; negative = better)", ""]
    if config.md:
        lines += ["MD stable fraction and median time to failure are better when higher: for them a positive "
                  "difference is \"better\".", ""]
    lines += _md_table(tests, [("condition", "condition"), ("baseline", "vs"), ("metric", "metric"),
                               ("mean_difference", "mean Δ", _sig), ("ci_low", "95 % CI low", _sig),
                               ("ci_high", "95 % CI high", _sig), ("percent_difference", "Δ %", _pct),
                               ("percent_ci_low", "CI low %", _pct), ("percent_ci_high", "CI high %", _pct),
                               ("t_p_trials", "p (paired t)"), ("n_trials", "trials"),
                               ("trials_needed", "trials needed"), ("verdict", "verdict")])
    lines += ["", "### Descriptive tests (they never decide a verdict)", ""]
    lines += _md_table(tests, [("condition", "condition"), ("metric", "metric"),
                               ("wilcoxon_p_trials", "p Wilcoxon (trials)"), ("min_possible_p", "min p"),
                               ("wilcoxon_p_structures", "p Wilcoxon (paired structures)"),
                               ("mannwhitney_p_pooled", "p Mann–Whitney (pooled)")])
    lines += ["", "## Method", "",
              "The unit of replication is the trial: the structures of one trial share one trained model, so "
              "they are not replicates of what varies between training runs (initial weights, subset, split). "
              "Each trial gives one paired difference d = MAE(condition) − MAE(baseline), and the verdict comes "
              "from the paired t interval over those differences, mean(d) ± t(0.975, n − 1)·sd(d)/√n: "
              "\"better\" when it lies below 0, \"worse\" when it lies above 0, otherwise \"no detectable "
              "difference\". This is exact for normal per-trial differences whatever the trial-to-trial "
              "scatter, and equals a linear mixed model with a random intercept per trial for this balanced "
              "design with the exact small-sample degrees of freedom. A bootstrap over 3–5 trials is not used: "
              "every resample of 4 same-sign differences has that sign, which happens by chance in 1 experiment "
              "in 8; nor does a test over per-structure errors decide anything, as it ignores the "
              "trial-to-trial variance. With simulated experiments of known structure (no true effect) this "
              "rule gives a false verdict in ≤ 5 % of them at 3, 4, 5 and 10 trials (tested).", "",
              "Δ % is the mean difference divided by the mean baseline MAE; its interval is the t interval "
              "divided by the same number, so it excludes 0 exactly when the verdict is \"better\" or "
              "\"worse\". 'trials needed': paired trials for the t test to detect the observed mean difference "
              "with the observed trial-to-trial SD at α = 0.05 and 80 % power (noncentral t). Wilcoxon p over "
              "trials (it cannot go below 'min p'), over the paired per-structure errors pooled across trials "
              "(|ΔE|, or the structure's mean |ΔF|), and Mann–Whitney over the pooled errors unpaired are "
              "descriptive only.", ""]
    pngs = [p for p in figure_files if p.suffix == ".png"]
    if pngs:
        lines += ["## Figures", ""]
        for p in pngs:
            title, caption = FIGURES.get(p.stem, (p.stem, ""))
            lines += [f"### {title}", "", f"![{title}](figures/{p.name})", "", caption, ""]
    lines += ["Raw errors: `energy_errors.csv.gz`, `force_errors.csv.gz`; tables: `per_trial.csv`, "
              "`conditions.csv`, `comparisons.csv`; everything to re-run: `config.toml`, `summary.json`; "
              "figures also as SVG in `figures/`."]
    return "\n".join(lines) + "\n"


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:auto;padding:0 1em;line-height:1.45}"
          "table{border-collapse:collapse;margin:0.5em 0;font-size:0.9em}td,th{border:1px solid #ccc;"
          "padding:2px 6px;text-align:left}th{background:#f3f3f3}tbody tr:nth-child(even){background:#fafafa}"
          "code{background:#f3f3f3;padding:0 3px;border-radius:3px}img{max-width:100%}"
          "h2{border-bottom:1px solid #ddd;padding-bottom:0.2em;margin-top:1.6em}")


def _html(md: str, out: Path, title: str) -> str:
    """The Markdown rendered by markdown-it-py (CommonMark + tables, raw HTML off), with every figure
    embedded as a base64 data URI so the page is one self-contained file."""
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = renderer.parse(md)
    for token in tokens:
        for child in token.children or ():
            src = child.attrGet("src") if child.type == "image" else None
            if src and not src.startswith("data:") and (out / src).is_file():
                child.attrSet("src", "data:image/png;base64," + base64.b64encode((out / src).read_bytes()).decode())
    body = renderer.renderer.render(tokens, renderer.options, {})
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>PyITA report: {escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n{body}</body></html>\n")
