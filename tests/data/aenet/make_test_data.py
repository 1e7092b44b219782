"""Regenerate the synthetic test data in this folder (run from the project root; deterministic).

Nothing here comes from aenet or from real DFT data:

- ``xsf/s01.xsf … s06.xsf``: made-up rutile-like Ti2O4 / Ti2O3 cells with invented energies and forces.
- ``train.out``, ``energies.train.0``, ``energies.test.0``, ``energies-3species.train.0``, ``predict.out``:
  output files CONSTRUCTED from aenet 2.0.4's documented layout and its Fortran format statements
  (train.f90: epoch rows ``(1x,I5,2x,ES14.6,2x,ES14.6,2x,ES14.6,2x,ES14.6," <")``, energies rows
  ``(1x,2(ES14.6,1x),I5,1x,4(ES14.6,1x))`` + ``(1x,I4)`` per species + ``(1x,A)``; predict.F90: header
  lines, lattice ``(3x,"a = ( ",3(2x,F15.8)," )")``, atoms ``(1x,A2,3(2x,F12.6))`` + ``3(2x,F12.6)``,
  energies ``F20.8``, structures separated by a line of 70 '+'). They were not produced by running aenet.

predict.out predicts the test parents s05 and s06 with known errors: E_pred = E_ref + 0.012 eV × N
(12 meV/atom) and F_pred = F_ref + (0.1, −0.2, 0) eV/Å, so the error tables have exact expected values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pyita.io.xsf import read_xsf
from pyita.io.xsf_write import format_xsf
from pyita.structure import Structure

HERE = Path(__file__).resolve().parent
E_TI, E_O = -1626.66972707, -433.23448532


def rutile(rng, drop_last_o: bool = False) -> tuple[list[str], np.ndarray, np.ndarray]:
    a, c, u = 4.5937, 2.9587, 0.3048
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [u, u, 0], [1 - u, 1 - u, 0],
                     [0.5 + u, 0.5 - u, 0.5], [0.5 - u, 0.5 + u, 0.5]])
    symbols = ["Ti", "Ti", "O", "O", "O", "O"]
    if drop_last_o:
        frac, symbols = frac[:-1], symbols[:-1]
    cell = np.diag([a, a, c])
    positions = frac @ cell + rng.normal(0, 0.05, (len(symbols), 3))
    return symbols, positions, cell


def make_xsf() -> list[Structure]:
    rng = np.random.default_rng(20240605)
    out = []
    (HERE / "xsf").mkdir(exist_ok=True)
    for k in range(6):
        symbols, positions, cell = rutile(rng, drop_last_o=(k == 3))
        n_ti, n_o = symbols.count("Ti"), symbols.count("O")
        energy = n_ti * E_TI + n_o * E_O - 3.1 * len(symbols) + rng.normal(0, 0.05)
        forces = rng.normal(0, 0.8, (len(symbols), 3))
        forces -= forces.mean(axis=0)
        s = Structure(symbols, positions, cell, energy=round(energy, 8), forces=np.round(forces, 8),
                      comments=["synthetic test structure for PyITA (invented energy and forces, not DFT)"])
        path = HERE / "xsf" / f"s{k + 1:02d}.xsf"
        path.write_text(format_xsf(s))
        out.append(read_xsf(path))
    return out


def es(x: float) -> str:
    """Fortran ES14.6 (gfortran prints NaN right-justified)."""
    return f"{'NaN':>14}" if x != x else f"{x:14.6E}"


def train_out() -> str:
    rows = [(0, 0.4123, 0.5234), (1, 0.1012, 0.1345), (2, 0.0312, 0.0421), (3, 0.0123, 0.0167)]
    text = [" " + "=" * 70, " " + "Training process started.".center(70).rstrip(), " " + "=" * 70, "",
            " Copyright (C) 2015-2025 Nongnuch Artrith and Alexander Urban", "",
            " " + "-" * 70, " " + "Training details".center(70).rstrip(), " " + "-" * 70, "",
            " Training method         : Limited Memory BFGS", "",
            " Number of iterations    : 3", "",
            " Training structures     : 14", " Testing  structures     : 0", "",
            " Testing set : ", "", "",
            " " + "-" * 70, " " + "Training process".center(70).rstrip(), " " + "-" * 70, "",
            " Weight optimization for 3 epochs using the Limited Memory BFGS method.", "",
            "        " + "|------------TRAIN-----------|".ljust(30) + "  " + "|------------TEST------------|",
            " " + "epoch".ljust(5) + "".join("  " + h.ljust(14) for h in ("MAE", "<RMSE>", "MAE", "<RMSE>"))]
    for epoch, mae, rmse in rows:
        text.append(f" {epoch:5d}  {es(mae)}  {es(rmse)}  {es(0.0)}  {es(float('nan'))} <")
    text += ["", " Training finished.", "",
             " " + "-" * 70, " " + "Storing final energies".center(70).rstrip(), " " + "-" * 70, "",
             " Energies of training structures : energies.train.PROCESS",
             " Energies of testing structures  : energies.test.PROCESS", "",
             f" Final MAE of training set  = {12.3:8.1f} meV/atom",
             f" Final MAE of testing set   = {0.0:8.1f} meV/atom", "",
             f" Final RMSE of training set = {16.7:8.1f} meV/atom",
             f" Final RMSE of testing set  = {'NaN':>8} meV/atom", "",
             " " + "=" * 70, " " + "Neural Network training done.".center(70).rstrip(), " " + "=" * 70]
    return "\n".join(text) + "\n"


def energies_header(species: list[str]) -> str:
    header = "  Ref(eV)        ANN(eV)      #atoms  Ref(eV/atom)   ANN(eV/atom) Ref-ANN(eV/atom)    Cost-Func"
    header += " " + f"  #{species[0]:<2}".rstrip()
    for s in species[1:]:
        header += f"  #{s:<2}".rstrip()
    return header + "    Path-of-input-file"


def energies_row(e_ref: float, e_ann: float, counts: list[int], path: str, scale: float = 0.5) -> str:
    n = sum(counts)
    d = (e_ref - e_ann) / n
    row = " " + f"{es(e_ref)} {es(e_ann)} {n:5d} " + "".join(f"{es(v)} " for v in (e_ref / n, e_ann / n, d,
                                                                                        d * scale))
    return row + "".join(f" {c:4d}" for c in counts) + " " + path


def predict_out(structures: list[Structure], names: list[str]) -> str:
    text = [" " + "=" * 70, " " + "Atomic Energy Network Interpolation".center(70).rstrip(), " " + "=" * 70, "",
            " " + "-" * 70, " " + "Energy evaluation".center(70).rstrip(), " " + "-" * 70, ""]
    for k, (s, name) in enumerate(zip(structures, names)):
        n = len(s)
        text += [f" Structure number  : {k + 1}", f" File name         : {name}",
                 f" Number of atoms   : {n}", f" Number of species : {len(set(s.symbols))}", "",
                 " Lattice vectors (Angstrom):", ""]
        for label, vec in zip("abc", s.cell):
            text.append("   " + f"{label} = ( " + "".join(f"  {v:15.8f}" for v in vec) + " )")
        text += ["", " Cartesian atomic coordinates (input) and corresponding atomic forces:", ""]
        text.append(" " + "  " + "".join("  " + h for h in ("     x      ", "     y      ", "     z      "))
                    + "".join("  " + h for h in ("     Fx     ", "    Fy      ", "    Fz      ")))
        text.append(" " + "  " + "".join("  " + h for h in ["    (Ang)   "] * 3)
                    + "".join("  " + h for h in ["  (eV/Ang)  "] * 3))
        text.append(" " + "-" * 44 + "-" * 42)
        inv = np.linalg.inv(s.cell)
        wrapped = ((s.positions @ inv) % 1.0) @ s.cell
        f_pred = s.forces + np.array([0.1, -0.2, 0.0])
        for sym, xyz, f in zip(s.symbols, wrapped, f_pred):
            text.append(f" {sym:<2}" + "".join(f"  {v:12.6f}" for v in xyz) + "".join(f"  {v:12.6f}" for v in f))
        e_tot = s.energy + 0.012 * n
        e_coh = e_tot - sum(E_TI if x == "Ti" else E_O for x in s.symbols)
        text += ["", f" Cohesive energy            :  {e_coh:20.8f} eV",
                 f" Total energy               :  {e_tot:20.8f} eV",
                 " Mean force (must be zero)  :" + "".join(f"  {v:12.6f}" for v in f_pred.mean(axis=0)),
                 " Mean absolute force        :" + "".join(f"  {v:12.6f}" for v in np.abs(f_pred).mean(axis=0)),
                 " Maximum force              :" + "".join(f"  {v:12.6f}" for v in f_pred[0]),
                 f" RMS force                  :  {np.sqrt((f_pred ** 2).sum(axis=1).mean()):12.6f}",
                 " The maximum force is acting on atom 1.", " All forces are given in eV/Angstrom.", ""]
        if k < len(structures) - 1:
            text += [" " + "+" * 70, ""]
    text += [" " + "=" * 70, " " + "Atomic Energy Network done.".center(70).rstrip(), " " + "=" * 70]
    return "\n".join(text) + "\n"


def main() -> None:
    structures = make_xsf()
    (HERE / "train.out").write_text(train_out())
    rows = [energies_header(["Ti", "O"])]
    for k, s in enumerate(structures[:4]):
        counts = [s.symbols.count("Ti"), s.symbols.count("O")]
        e_coh = s.energy - counts[0] * E_TI - counts[1] * E_O
        rows.append(energies_row(e_coh, e_coh + 0.01 * (k + 1) * len(s), counts, f"xsf/train/s{k + 1:02d}.xsf"))
    (HERE / "energies.train.0").write_text("\n".join(rows) + "\n")
    (HERE / "energies.test.0").write_text(energies_header(["Ti", "O"]) + "\n")
    rows = [energies_header(["Li", "Ti", "O"]),
            energies_row(-25.5, -25.4, [1, 2, 4], "xsf/train/LiTi2O4.xsf"),
            energies_row(-30.25, -30.5, [2, 2, 5], "../other folder/with space.xsf")]
    (HERE / "energies-3species.train.0").write_text("\n".join(rows) + "\n")
    (HERE / "predict.out").write_text(predict_out(structures[4:], ["xsf/test/s05.xsf", "xsf/test/s06.xsf"]))


if __name__ == "__main__":
    main()
