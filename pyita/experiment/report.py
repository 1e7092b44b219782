"""The experiment's report: report.md and a self-contained report.html, CSV tables and raw errors."""

from __future__ import annotations

import base64
import csv
import gzip
import html
import json
from pathlib import Path

from pyita import __version__
from pyita.experiment import plots
from pyita.experiment.analysis import comparisons, condition_table, per_trial_table
from pyita.experiment.results import load_results
from pyita.experiment.config import ExperimentConfig


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _raw_errors(results, out: Path) -> None:
    """Every test error, one row each, so users can re-analyse without re-running."""
    energy, force = [], []
    for (trial, name), r in sorted(results.items()):
        for source, err in zip(r.summary["test_sources"], r.energy_errors):
            energy.append({"trial": trial, "condition": name, "structure": source, "error_meV_per_atom": err})
        force += [{"trial": trial, "condition": name, "component": k, "abs_error_eV_per_A": float(v)}
                  for k, v in enumerate(r.force_errors.ravel())]
    _write_csv(out / "energy_errors.csv.gz", energy)
    _write_csv(out / "force_errors.csv.gz", force)


def _fmt(value, digits=3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return "" if value is None else str(value)


def _md_table(rows: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(key)) for key, _ in columns) + " |" for r in rows]
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
        figure_files += plots.violins(config, results, figures)
        figure_files += plots.per_trial(config, trials_table, figures)
        figure_files += plots.learning_curves(config, results, figures)
        figure_files += plots.sweep(config, trials_table, figures)
        figure_files += plots.crossover(config, results, trials_table, figures)
    _write_csv(out / "per_trial.csv", trials_table)
    _write_csv(out / "conditions.csv", conditions)
    _write_csv(out / "comparisons.csv", tests)
    _raw_errors(results, out)
    summary = {"pyita_version": __version__, "config": config.as_dict(), "conditions": conditions,
               "comparisons": tests, "finished_tasks": len(results),
               "expected_tasks": config.trials * len(config.conditions)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    md = _markdown(config, conditions, tests, figure_files, len(results))
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(_html(md, figure_files, out))
    return summary


def _markdown(config, conditions, tests, figure_files, finished) -> str:
    lines = [f"# PyITA experiment: {config.name}", "", config.description, "",
             f"PyITA {__version__}. Data `{config.data}`; {config.trials} paired trials "
             f"({finished}/{config.trials * len(config.conditions)} tasks finished); seed {config.seed}; "
             f"subset {config.subset_size or 'all'}; test fraction {config.test_fraction}; "
             f"MAXENERGY {config.max_energy}; backend {config.backend}.", "",
             "Errors are measured on held-out *original* structures (never derived ones), the same test "
             "parents for every condition within a trial. Energy error: |E_pred − E_ref| / N in meV/atom; "
             "force error: |F_pred − F_ref| per Cartesian component in eV/Å.", "",
             f"Trainer: `{json.dumps(config.trainer)}`", "", "## Conditions", ""]
    lines += [f"- **{c.name}**: augment `{json.dumps(c.augment)}`, trainer overrides `{json.dumps(c.trainer)}`"
              for c in config.conditions]
    lines += ["", "## Errors (pooled over trials)", ""]
    lines += _md_table(conditions, [("condition", "condition"), ("trials", "trials"),
                                    ("energy_mae", "E MAE"), ("energy_rmse", "E RMSE"),
                                    ("energy_median", "E median"), ("energy_iqr", "E IQR"),
                                    ("energy_max", "E max"), ("force_mae", "F MAE"), ("force_rmse", "F RMSE"),
                                    ("force_median", "F median"), ("seconds_mean", "train s")])
    lines += ["", "## Verdicts (condition − baseline, per trial; negative = better)", ""]
    lines += _md_table(tests, [("condition", "condition"), ("baseline", "vs"), ("metric", "metric"),
                               ("mean_difference", "mean Δ"), ("ci_low", "95% CI low"),
                               ("ci_high", "95% CI high"), ("wilcoxon_p_trials", "p (trials)"),
                               ("min_possible_p", "min p"), ("wilcoxon_p_structures", "p (paired structures)"),
                               ("mannwhitney_p_pooled", "p (Mann–Whitney)"), ("trials_needed", "trials needed"),
                               ("verdict", "verdict")])
    lines += ["", "CI: percentile bootstrap over trials. A verdict needs the CI to exclude zero and a "
              "significant paired test (over trials when they can reach p < 0.05, otherwise a Wilcoxon test "
              "over the paired per-test-structure errors: |ΔE|, or the structure's mean |ΔF|). Mann–Whitney "
              "compares the pooled per-structure errors unpaired. 'trials needed': paired trials to detect the observed mean difference "
              "at α = 0.05 with 80 % power.", "", "## Figures", ""]
    lines += [f"![{p.stem}](figures/{p.name})" for p in figure_files if p.suffix == ".png"]
    lines += ["", "Raw errors: `energy_errors.csv.gz`, `force_errors.csv.gz`; tables: `per_trial.csv`, "
              "`conditions.csv`, `comparisons.csv`; everything to re-run: `config.toml`, `summary.json`."]
    return "\n".join(lines) + "\n"


def _html(md: str, figure_files, out: Path) -> str:
    """A dependency-free HTML page from the markdown: headings, paragraphs, tables, embedded figures."""
    body, table = [], []

    def flush_table():
        if table:
            rows = ["<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"
                    for k, cells in enumerate(table) for tag in ["th" if k == 0 else "td"]]
            body.append("<table>" + "".join(rows) + "</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                table.append(cells)
            continue
        flush_table()
        if line.startswith("!["):
            continue
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    images = "".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{p.stem}</figcaption></figure>" for p in figure_files if p.suffix == ".png")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{border:1px solid #ccc;"
             "padding:2px 6px}table{border-collapse:collapse}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>PyITA report</title><style>{style}"
            f"</style></head><body>{chr(10).join(body)}<h2>Figure images</h2>{images}</body></html>\n")
