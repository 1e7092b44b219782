"""What ``pyita check`` leaves on disk: errors.csv (one row per derived structure), check.json (the summary)
and check.png/.svg (error against δ); and the same numbers as tables on the console (print_report)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pyita.io.records import json_text
from pyita.io.tables import write_csv
from pyita.structure import Structure

CSV_FIELDS = ["strategy", "delta", "parent_index", "parent", "copy", "atom", "direction", "n_atoms",
              "max_displacement_A", "E_parent_eV", "E_taylor_eV", "E_true_eV", "error_eV",
              "abs_error_meV", "abs_error_meV_per_atom", "signal_meV", "signal_meV_per_atom", "snr"]
OUTPUT_FILES = ("errors.csv", "check.json", "check.png", "check.svg")


@dataclass
class CheckResult:
    """The study: one row per derived structure (errors.csv), the summary (check.json) and the parents with
    the calculator's labels."""

    rows: list[dict]
    summary: dict
    parents: list[Structure] = field(default_factory=list)

    @property
    def recommendation(self) -> dict:
        return self.summary["recommendation"]


def write_check(result: CheckResult, folder: str | Path) -> list[Path]:
    """errors.csv (one row per derived structure), check.json (summary), check.png/.svg (the plot)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "errors.csv", result.rows, CSV_FIELDS)
    (folder / "check.json").write_text(json_text(result.summary, indent=2))
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


# --- console ----------------------------------------------------------------------------------------------

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
