"""Benchmark: augment all 7815 TiO2 structures (a = 4, δ = 0.03 Å: 31,260 derived files) with PyITA and with
a naive line-by-line script (naive_augment.py), in the same run, alternating, on the same input.

    python benchmarks/bench_augment.py                 # both strategies, output on disk and in /dev/shm
    python benchmarks/bench_augment.py --reps 3 --fs disk

Each job runs as its own process, end to end (interpreter start, imports, reading, writing; PyITA through
its command line ``python -m pyita.cli augment ... -q``, once with its default worker processes and once with
PYITA_WORKERS=1), timed by wall clock and by CPU time (user + system, worker processes included), with its
peak resident memory. A memory section then runs PyITA in one process
with tracemalloc on 1000 and on 7815 parents, to show that memory does not grow with the number of parents.

The machine may be shared: the load average is printed with every run, and the best of ``--reps`` repetitions
is what the summary compares (the other runs are printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: naive script; PyITA's command line (worker processes on all cores, at most 4); the same in one process
IMPLEMENTATIONS = ("naive", "pyita", "pyita-1")
ROOT = HERE.parent
TIO2 = ROOT.parent / "shared" / "data" / "tio2"
CACHE = Path(os.environ.get("PYITA_TEST_CACHE", Path.home() / ".cache" / "pyita-tests"))
TYPES = "TYPES\n2\nTi  -1626.66972707   | eV\nO    -433.23448532   | eV\n"


def tio2_files() -> list[Path]:
    """The 7815 XSF files, unpacked once into the test cache (as tests/conftest.py does)."""
    target = CACHE / "tio2"
    if not (target / ".complete").exists():
        archive = TIO2 / "tio2-xsf-full.tar.gz"
        if not archive.exists():
            sys.exit(f"TiO2 data not found at {archive}")
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        (target / ".complete").touch()
    return sorted((target / "xsf").glob("structure*.xsf"))


def write_generate_in(path: Path, files: list[Path]) -> None:
    path.write_text(f"OUTPUT  TiO.train\n\n{TYPES}\nSETUPS\nTi   Ti.stp\nO    O.stp\n\nFILES\n{len(files)}\n"
                    + "".join(f"{f}\n" for f in files))


def run(cmd: list[str], env: dict | None = None) -> dict:
    """Run one job; wall time, CPU time and peak RSS of the process and the children it waited for."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out}\n{err}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
            "load": os.getloadavg()[0]}


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def count_files(folder: Path) -> int:
    return sum(1 for _ in os.scandir(folder / "derived"))


def timing(roots: dict[str, Path], gen: Path, strategies: list[str], reps: int, a: int, delta: float,
           workers: int | None = None) -> list:
    rows = []
    for fs, root in roots.items():
        for strategy in strategies:
            for rep in range(reps):
                for impl in IMPLEMENTATIONS:
                    out = root / f"{impl}-{strategy}-{rep}"
                    remove(out)
                    if impl == "naive":
                        cmd = [sys.executable, str(HERE / "naive_augment.py"), str(gen), str(out), "--a", str(a),
                               "--delta", str(delta), "--strategy", strategy]
                    else:
                        cmd = [sys.executable, "-m", "pyita.cli", "augment", str(gen), "--a", str(a), "--delta",
                               str(delta), "--strategy", strategy, "--out", str(out), "-q"]
                    os.sync()
                    env = {"PYITA_WORKERS": "1"} if impl == "pyita-1" else None
                    if impl == "pyita" and workers:
                        env = {"PYITA_WORKERS": str(workers)}
                    result = run(cmd, env)
                    result.update(fs=fs, strategy=strategy, impl=impl, rep=rep, derived=count_files(out))
                    rows.append(result)
                    print(f"  {fs:5s} {strategy:10s} {impl:7s} rep {rep}: wall {result['wall']:6.2f} s  "
                          f"cpu {result['cpu']:6.2f} s  peak RSS {result['rss_mb']:6.1f} MB  "
                          f"({result['derived']} files, load {result['load']:.1f})", flush=True)
                    remove(out)
    return rows


def memory(work: Path, files: list[Path], subset: list[Path], a: int, delta: float) -> list:
    """PyITA in one process (workers=1) under tracemalloc, on 1000 and on all parents."""
    rows = []
    for label, chosen in (("1000", subset), (str(len(files)), files)):
        gen = work / f"generate-{label}.in"
        write_generate_in(gen, chosen)
        out = work / f"mem-{label}"
        remove(out)
        code = (
            "import json, resource, sys, tracemalloc\n"
            "tracemalloc.start()\n"
            "from pyita.augment import AugmentSettings\n"
            "from pyita.augment.run import run_augment\n"
            "base = tracemalloc.get_traced_memory()[0]\n"
            "tracemalloc.reset_peak()\n"
            f"run_augment({str(gen)!r}, {str(out)!r}, AugmentSettings(a={a}, delta={delta}), "
            "progress=False, workers=1)\n"
            "peak = tracemalloc.get_traced_memory()[1] - base\n"
            "print(json.dumps({'peak_mb': peak / 2**20, "
            "'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        naive = run([sys.executable, str(HERE / "naive_augment.py"), str(gen), str(work / f"naive-mem-{label}"),
                     "--a", str(a), "--delta", str(delta)])
        result.update(parents=len(chosen), naive_rss_mb=naive["rss_mb"])
        rows.append(result)
        print(f"  {len(chosen):5d} parents: PyITA tracemalloc peak {result['peak_mb']:6.2f} MB, peak RSS "
              f"{result['rss_mb']:6.1f} MB; naive peak RSS {naive['rss_mb']:6.1f} MB", flush=True)
        remove(out)
        remove(work / f"naive-mem-{label}")
    return rows


def summary(rows: list) -> None:
    print("\nBest of the repetitions: wall / CPU seconds, peak RSS; ratio = naive ÷ PyITA")
    keys = sorted({(r["fs"], r["strategy"]) for r in rows})
    for fs, strategy in keys:
        best = {}
        for impl in IMPLEMENTATIONS:
            sel = [r for r in rows if (r["fs"], r["strategy"], r["impl"]) == (fs, strategy, impl)]
            best[impl] = (min(r["wall"] for r in sel), min(r["cpu"] for r in sel), max(r["rss_mb"] for r in sel))
        nw, nc, nr = best["naive"]
        print(f"  {fs:5s} {strategy:10s} naive    {nw:6.2f} s / {nc:5.2f} s  {nr:5.1f} MB")
        for impl, label in (("pyita", "PyITA"), ("pyita-1", "PyITA, 1 process")):
            pw, pc, pr = best[impl]
            print(f"  {'':5s} {'':10s} {label:16s} {pw:6.2f} s / {pc:5.2f} s  {pr:5.1f} MB   "
                  f"wall ratio {nw / pw:4.2f}x   CPU ratio {nc / pc:4.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--a", type=int, default=4)
    parser.add_argument("--delta", type=float, default=0.03)
    parser.add_argument("--strategies", nargs="+", default=["balanced", "sequential"])
    parser.add_argument("--fs", nargs="+", default=["disk", "tmpfs"], choices=["disk", "tmpfs"],
                        help="where the output goes: a temporary folder on disk, and/or /dev/shm (RAM)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--workers", type=int, help="worker processes for the `pyita` runs (PYITA_WORKERS); "
                                                     "default: PyITA's own choice (idle cores)")
    parser.add_argument("--json", type=Path, help="also write all measurements here")
    args = parser.parse_args()

    files = tio2_files()
    names = (TIO2 / "subset-1000.txt").read_text().split()
    subset = [files[0].parent / Path(n).name for n in names]
    print(f"{len(files)} TiO2 structures; a = {args.a}, δ = {args.delta} Å → {args.a * len(files)} derived files; "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    work = Path(tempfile.mkdtemp(prefix="pyita-bench-"))
    roots = {"disk": work}
    if "tmpfs" in args.fs and Path("/dev/shm").is_dir():
        roots["tmpfs"] = Path(tempfile.mkdtemp(prefix="pyita-bench-", dir="/dev/shm"))
    roots = {fs: root for fs, root in roots.items() if fs in args.fs}
    gen = work / "generate.in"
    write_generate_in(gen, files)
    try:
        print("\nTiming (each job a separate process, naive and PyITA alternating):")
        rows = timing(roots, gen, args.strategies, args.reps, args.a, args.delta, args.workers)
        summary(rows)
        mem = []
        if not args.no_memory:
            print("\nMemory (balanced; PyITA in one process; naive holds all parents in a list):")
            mem = memory(work, files, subset, args.a, args.delta)
        if args.json:
            args.json.write_text(json.dumps({"timing": rows, "memory": mem}, indent=1))
    finally:
        for root in {work, *roots.values()}:
            remove(root)


if __name__ == "__main__":
    main()
