"""The full-set rows of one or more ``full_set.py`` runs in one figure and one CSV: test energy RMSE against test
force RMSE, each row a point (open: its energy RMSE without the worst five test structures), the issue's aims as
lines.

    python benchmarks/plot_full_set.py full-set-e/full-set.json full-set-f1/full-set.json ... \\
        --out docs/figures/full-set-tio2        # writes .png, .svg and .csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from pyita.io.atomic import atomic_write, atomic_write_text

ENERGY_AIM, FORCE_AIM = 3.5, 0.25   # meV/atom, eV/Å (issue 14)
COLUMNS = ("row", "epochs", "train_seconds", "energy_mae", "energy_rmse", "rmse_without_worst_5",
           "rmse_highest_tenth", "rmse_other_nine_tenths", "force_mae", "force_rmse", "train_energy_rmse")


def label(name: str, row: dict) -> str:
    """A row's name with what sets it apart from the defaults (network size, parent–child weight)."""
    command = row["command"]
    parts = [name]
    if row.get("hidden", "15:tanh,15:tanh") != "15:tanh,15:tanh":
        layers = row["hidden"].split(",")
        parts.append(f"{len(layers)}×{layers[0].replace(':', ' ')}" if len(set(layers)) == 1 else row["hidden"])
    if "--parent-child-weight" in command:
        parts.append(f"weight {command[command.index('--parent-child-weight') + 1]}")
    return " ".join(parts)


def rows_of(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        try:
            for name, row in json.loads(path.read_text())["rows"].items():
                rows.append({"row": label(name, row), **{k: row[k] for k in COLUMNS[1:]}})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            sys.exit(f"{path}: not a full-set.json written by full_set.py ({type(exc).__name__}: {exc})")
    return rows


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for k, row in enumerate(rows):
        ax.plot(row["force_rmse"], row["energy_rmse"], "o", color=f"C{k}",
                label=f"{row['row']} ({row['epochs']:,} epochs)")
        ax.plot(row["force_rmse"], row["rmse_without_worst_5"], "o", mfc="none", color=f"C{k}")
        ax.plot([row["force_rmse"]] * 2, [row["rmse_without_worst_5"], row["energy_rmse"]], ":", color=f"C{k}")
    ax.axhline(ENERGY_AIM, color="grey", ls="--", lw=0.8)
    ax.axvline(FORCE_AIM, color="grey", ls="--", lw=0.8)
    ax.fill_between([0, FORCE_AIM], 0, ENERGY_AIM, color="grey", alpha=0.12, label="the aims (60 min)")
    ax.set_xlim(0, 1.1 * max(r["force_rmse"] for r in rows))
    ax.set_ylim(0, 1.1 * max(r["energy_rmse"] for r in rows))
    ax.set_xlabel("test force RMSE (eV/Å)")
    ax.set_ylabel("test energy RMSE (meV/atom)\nopen: without the worst 5 structures")
    ax.set_title("Full TiO2 set, 60 min of L-BFGS on one thread", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    for suffix in (".png", ".svg"):
        atomic_write(out.with_suffix(suffix), lambda tmp, kind=suffix[1:]: fig.savefig(tmp, dpi=120, format=kind))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="full-set.json files of full_set.py")
    parser.add_argument("--out", type=Path, required=True, help="figure and CSV path, without suffix")
    args = parser.parse_args()
    rows = rows_of(args.results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(args.out.with_suffix(".csv"), table.getvalue())
    plot(rows, args.out)
    print(f"wrote {args.out.with_suffix('.png')}, .svg and .csv ({len(rows)} rows)")


if __name__ == "__main__":
    main()
