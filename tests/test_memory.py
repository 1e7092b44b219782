"""The memory a process may use (issue 24): the limit readers against fake cgroup v2/v1 trees and /proc files, a
real subprocess under RLIMIT_AS, the decision to store or stream descriptor Jacobians and its refusals, streamed
L-BFGS equal to stored L-BFGS, and --max-memory on the command line and in experiments."""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from pyita.errors import InputError, PyitaError
from pyita.memory import (GIB, MARGIN_BYTES, available_memory, cgroup_v1_headroom, cgroup_v2_headroom,
                          meminfo_available, memory_limits, resident_memory, rlimit_headroom, with_margin)
from pyita.train.budget import jacobians_streamed
from pyita.train.fit import train
from pyita.train.settings import TrainSettings
from faults import error_line, make_case, run_cli, tree_hashes
from trainer_data import SMALL_DESCRIPTOR, emt_structures

TESTS = Path(__file__).resolve().parent
FAST = dict(hidden="5:tanh,5:tanh", descriptor=SMALL_DESCRIPTOR, device="cpu")
V1_UNLIMITED = 9223372036854771712   # what cgroup v1 writes for "no limit"


def write(root: Path, files: dict[str, str | int]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"{text}\n")
    return root


# ------------------------------------------------------------------------------------------- limit readers

def test_cgroup_v2_limit_of_an_ancestor_counts_and_max_means_none(tmp_path):
    """A SLURM job's limit sits on its slice, the process in a scope below it: the least of limit − usage (+ the
    page cache the kernel can drop) over the cgroup and its ancestors; "max" is no limit."""
    write(tmp_path, {
        "proc/self/cgroup": "0::/job.slice/step.scope",
        "sys/fs/cgroup/memory.current": 50 * GIB,             # the root cgroup: no memory.max, not a limit
        "sys/fs/cgroup/job.slice/memory.max": 8 * GIB,
        "sys/fs/cgroup/job.slice/memory.current": 3 * GIB,
        "sys/fs/cgroup/job.slice/memory.stat": f"anon 100\nfile 200\ninactive_file {GIB // 2}\nactive_file 7",
        "sys/fs/cgroup/job.slice/step.scope/memory.max": "max",
        "sys/fs/cgroup/job.slice/step.scope/memory.current": 1 * GIB,
    })
    assert cgroup_v2_headroom(tmp_path) == 8 * GIB - 3 * GIB + GIB // 2
    write(tmp_path, {"sys/fs/cgroup/job.slice/step.scope/memory.max": 2 * GIB})   # tighter below: that one
    assert cgroup_v2_headroom(tmp_path) == 1 * GIB
    write(tmp_path, {"sys/fs/cgroup/job.slice/step.scope/memory.current": 3 * GIB})   # over: nothing left, not < 0
    assert cgroup_v2_headroom(tmp_path) == 0
    assert cgroup_v1_headroom(tmp_path) is None   # no v1 memory controller in /proc/self/cgroup


def test_cgroup_v2_inside_a_container_reads_the_mounted_cgroup(tmp_path):
    """Without a cgroup namespace /proc/self/cgroup names the host's path, which the container does not see: its
    own cgroup is the mount itself."""
    write(tmp_path, {"proc/self/cgroup": "0::/kubepods/pod1/abc",
                     "sys/fs/cgroup/memory.max": 4 * GIB, "sys/fs/cgroup/memory.current": GIB})
    assert cgroup_v2_headroom(tmp_path) == 3 * GIB
    write(tmp_path, {"proc/self/cgroup": "0::/"})   # with a namespace: "/" is the mount
    assert cgroup_v2_headroom(tmp_path) == 3 * GIB


def test_cgroup_v1_limits_ignore_unlimited_and_subtract_usage(tmp_path):
    write(tmp_path, {
        "proc/self/cgroup": "12:pids:/slurm/job_5\n4:cpuacct,memory:/slurm/uid_0/job_5\n0::/",
        "sys/fs/cgroup/memory/memory.limit_in_bytes": V1_UNLIMITED,
        "sys/fs/cgroup/memory/memory.usage_in_bytes": 60 * GIB,
        "sys/fs/cgroup/memory/slurm/uid_0/memory.limit_in_bytes": 6 * GIB,
        "sys/fs/cgroup/memory/slurm/uid_0/memory.usage_in_bytes": 2 * GIB,
        "sys/fs/cgroup/memory/slurm/uid_0/memory.stat": f"cache 5\ninactive_file 1\ntotal_inactive_file {GIB}",
        "sys/fs/cgroup/memory/slurm/uid_0/job_5/memory.limit_in_bytes": V1_UNLIMITED,
        "sys/fs/cgroup/memory/slurm/uid_0/job_5/memory.usage_in_bytes": GIB,
    })
    assert cgroup_v1_headroom(tmp_path) == 6 * GIB - 2 * GIB + GIB
    assert cgroup_v2_headroom(tmp_path) is None   # "0::/" but no memory.max anywhere: no v2 limit
    write(tmp_path, {"sys/fs/cgroup/memory/slurm/uid_0/memory.limit_in_bytes": V1_UNLIMITED})
    assert cgroup_v1_headroom(tmp_path) is None


def test_rlimits_meminfo_and_the_users_cap(tmp_path):
    """RLIMIT_AS − VmSize and RLIMIT_DATA − VmData from /proc/self/limits and status (unlimited: absent); the
    user's cap counts what the process holds (VmRSS); the least of all is what is available."""
    write(tmp_path, {
        "proc/self/limits": textwrap.dedent("""\
            Limit                     Soft Limit           Hard Limit           Units
            Max cpu time              unlimited            unlimited            seconds
            Max data size             unlimited            unlimited            bytes
            Max stack size            8388608              unlimited            bytes
            Max address space         6442450944           unlimited            bytes"""),
        "proc/self/status": "Name:\tpython\nVmPeak:\t 3000000 kB\nVmSize:\t 2097152 kB\nVmRSS:\t  524288 kB\n"
                            "VmData:\t 1048576 kB",
        "proc/meminfo": "MemTotal:       24683568 kB\nMemFree:         1000000 kB\nMemAvailable:    8388608 kB",
    })
    assert rlimit_headroom(tmp_path) == {"RLIMIT_AS": 6 * GIB - 2 * GIB}
    assert meminfo_available(tmp_path) == 8 * GIB
    assert resident_memory(tmp_path) == GIB // 2
    assert memory_limits(root=tmp_path) == {"free memory (MemAvailable)": 8 * GIB, "RLIMIT_AS": 4 * GIB}
    assert available_memory(root=tmp_path) == 4 * GIB
    assert available_memory(3, root=tmp_path) == 3 * GIB - GIB // 2   # the cap, less what the process holds
    write(tmp_path, {"proc/self/limits": "Max data size             3221225472           unlimited            bytes"})
    assert rlimit_headroom(tmp_path) == {"RLIMIT_DATA": 2 * GIB}


def test_nothing_known_is_none_and_a_cap_alone_is_used(tmp_path):
    assert memory_limits(root=tmp_path) == {} and available_memory(root=tmp_path) is None
    assert available_memory(1.5, root=tmp_path) == int(1.5 * GIB)


def _rlimited_child(code: str, limit: int, timeout: float = 120) -> subprocess.CompletedProcess:
    """``code`` run by a fresh Python whose address space the kernel bounds at ``limit`` bytes."""
    def bound():
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))

    return subprocess.run([sys.executable, "-c", code], preexec_fn=bound, capture_output=True, text=True,
                          timeout=timeout, cwd=TESTS, env={**_env(), "OMP_NUM_THREADS": "1"})


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}


def test_a_real_rlimit_as_bounds_the_memory_available():
    """Under a real RLIMIT_AS (set before the child starts) what is available is at most the limit less the address
    space in use, however much the machine has free."""
    limit = GIB
    code = textwrap.dedent("""\
        import json, re
        from pyita.memory import available_memory, memory_limits
        def size():
            return int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
        before = size()
        limits, available = memory_limits(), available_memory()
        print(json.dumps({"before": before, "after": size(), "limits": limits, "available": available}))""")
    done = _rlimited_child(code, limit)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert limit - seen["after"] <= seen["limits"]["RLIMIT_AS"] <= limit - seen["before"]
    assert seen["available"] == seen["limits"]["RLIMIT_AS"] < limit


# ------------------------------------------------------------------------------------ store, stream or refuse

SIZES = {"train": {0: 1 * GIB, 1: 2 * GIB, 2: 3 * GIB, 3: 4 * GIB}, "val": {}}
CHUNKS = {"train": [[0, 1], [2, 3]], "val": []}


def decide(free, method="lbfgs", batch_size=2, share=1.0, sizes=SIZES, chunks=CHUNKS):
    return jacobians_streamed(sizes, chunks, method, batch_size, {"cgroup memory.max": math.ceil(free)}, share)


def test_stored_when_they_fit_with_the_margin_else_streamed_with_a_note():
    need = 10 * GIB
    assert with_margin(need) == 11 * GIB + MARGIN_BYTES
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decide(with_margin(need)) is False
        assert jacobians_streamed(SIZES, CHUNKS, "lbfgs", 2, {}) is False   # nothing known: as before, stored
    with pytest.warns(UserWarning, match=r"^storing the descriptor Jacobians would take 10\.0 GiB \(with margin "
                      r"12\.2 GiB\) but 12\.2 GiB is available \(cgroup memory\.max\): they are computed per chunk "
                      r"at each L-BFGS evaluation instead: an epoch takes about as long as building them all, "
                      r"10–25× a stored one$"):
        assert decide(with_margin(need) - 1) is True
    # Adam copies a mini-batch's stored blocks (the two largest: 7 GiB): what holds the Jacobians but not that
    # copy stores them for L-BFGS and streams them for Adam
    assert decide(with_margin(need + 7 * GIB)) is False and decide(with_margin(need + 7 * GIB), "adam") is False
    assert decide(with_margin(need) + 1) is False
    with pytest.warns(UserWarning, match="computed per mini-batch instead, which makes each epoch several times"):
        assert decide(with_margin(need) + 1, "adam") is True


def test_what_cannot_run_at_all_is_refused_naming_the_need_and_what_fits():
    # L-BFGS: the largest chunk (3 + 4 GiB) with its 10 % must fit; a force fraction of atoms of 3.5/7.7 does
    with pytest.raises(PyitaError) as refused:
        decide(3.5 * GIB)
    assert str(refused.value) == (
        "one chunk of training structures needs 7.0 GiB for descriptor Jacobians (built chunk by chunk, as storing "
        "them all would take 10.0 GiB) but only 3.5 GiB is available (cgroup memory.max); --force-fraction-of atoms "
        "--force-fraction 0.45 fits")
    assert 0.45 * 7.7 <= 3.5 < 0.46 * 7.7
    with pytest.warns(UserWarning, match="computed per chunk"):
        decide(7.7 * GIB)   # one chunk with its share fits: streamed, not refused
    # Adam: a mini-batch of the 3 largest (9 GiB) does not fit in 5 GiB, one structure (4.4 with its share) does
    with pytest.raises(PyitaError, match=r"^one mini-batch of 3 structures needs up to 9\.0 GiB for descriptor "
                       r"Jacobians \(built per mini-batch, as storing them all would take 10\.0 GiB\) but only "
                       r"5\.0 GiB is available \(cgroup memory\.max\); --batch-size 1 fits$"):
        decide(5 * GIB, "adam", batch_size=3)
    # not even one structure: a share of its atoms, relative to the share already in use
    with pytest.raises(PyitaError, match=r"--force-fraction-of atoms --force-fraction 0\.9 fits$"):
        decide(4 * GIB, "adam", batch_size=3)
    with pytest.raises(PyitaError, match=r"--force-fraction-of atoms --force-fraction 0\.45 fits$"):
        decide(4 * GIB, "adam", batch_size=3, share=0.5)
    with pytest.raises(PyitaError, match="not even a share of the atoms fits"):
        decide(0, "adam")
    # the validation set is evaluated chunk by chunk too, keeping every atom
    sizes, chunks = {**SIZES, "val": {0: 5 * GIB}}, {**CHUNKS, "val": [[0]]}
    with pytest.raises(PyitaError, match=r"^one chunk of validation structures needs 5\.0 GiB .* fewer or smaller "
                       "validation structures fit$"):
        decide(5 * GIB, "adam", batch_size=1, sizes=sizes, chunks=chunks)


def test_training_refuses_before_it_starts_when_nothing_fits():
    """A cap below what the process already holds leaves nothing: refused with the need and where the limit is."""
    structures = emt_structures(8)
    for method, what in (("lbfgs", "one chunk of training structures needs"),
                         ("adam", "one mini-batch of 4 structures needs up to")):
        settings = TrainSettings.from_flat(method=method, batch_size=4, iterations=1, force_weight=1.0,
                                           max_memory=1e-6, **FAST)
        with pytest.raises(PyitaError, match=rf"^{what} [\d.e-]+ GiB for descriptor Jacobians .* but only 0 GiB is "
                           r"available \(--max-memory\); not even a share of the atoms fits"):
            train(structures, settings=settings, use_cache=False)


# --------------------------------------------------------------------------------------- streamed L-BFGS

def _weights(potential) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in potential.networks.parameters()])


def _headroom_cap(extra_gib: float = 0.3) -> float:
    """A --max-memory that leaves ``extra_gib`` above what this process holds: less than the margin storing needs."""
    return (resident_memory() + extra_gib * GIB) / GIB


def _same_history(one: list[dict], other: list[dict], tolerance: float = 1e-10) -> None:
    assert [row["epoch"] for row in one] == [row["epoch"] for row in other]
    for a, b in zip(one, other):
        assert a.keys() == b.keys()
        for key in a.keys() - {"seconds"}:
            assert abs(a[key] - b[key]) <= tolerance * max(1.0, abs(a[key])), (a["epoch"], key, a[key], b[key])


@pytest.mark.parametrize("fraction", [{}, {"force_fraction": 0.5, "force_fraction_of": "atoms"}],
                         ids=["all forces", "half the atoms"])
def test_streamed_lbfgs_equals_stored_lbfgs_number_for_number(tmp_path, fraction):
    """Jacobians that do not fit are built chunk by chunk (3 chunks here) every L-BFGS evaluation: the same loss,
    gradient, line search and weights as stored ones, to rounding; a stored run resumed under a limit streams
    and continues exactly as the uninterrupted run (max_memory may change on --resume)."""
    from pyita.descriptors.jacobian import CHUNK_ATOMS

    structures = emt_structures(300, atoms_per_cell=8)
    train_set, validation = structures[:260], structures[260:]
    assert sum(map(len, train_set)) > 2 * CHUNK_ATOMS
    settings = TrainSettings.from_flat(iterations=4, force_weight=1.0, seed=3, checkpoint_every=0, **fraction,
                                       **FAST)
    stored = train(train_set, validation, settings, use_cache=False)
    limited = TrainSettings.from_flat(**{**settings.as_dict(), "max_memory": _headroom_cap()})
    with pytest.warns(UserWarning, match="computed per chunk at each L-BFGS evaluation"):
        streamed = train(train_set, validation, limited, use_cache=False)
    _same_history(streamed.history, stored.history)
    torch.testing.assert_close(_weights(streamed.potential), _weights(stored.potential), rtol=0, atol=1e-10)
    assert streamed.potential.metadata["settings"]["max_memory"] == limited.runtime.max_memory

    checkpoint = tmp_path / "run.ckpt"
    half = TrainSettings.from_flat(**{**settings.as_dict(), "iterations": 2})
    train(train_set, validation, half, checkpoint=checkpoint, use_cache=False)
    with pytest.warns(UserWarning, match="computed per chunk at each L-BFGS evaluation"):
        resumed = train(train_set, validation, limited, checkpoint=checkpoint, resume=True, use_cache=False)
    _same_history(resumed.history, stored.history)
    torch.testing.assert_close(_weights(resumed.potential), _weights(stored.potential), rtol=0, atol=1e-10)


CHILD_TRAINING = textwrap.dedent("""\
    import json, re, warnings
    import numpy as np
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from pyita.structure import Structure
    from pyita.train.fit import train
    from pyita.train.settings import TrainSettings

    structures = []
    rng = np.random.default_rng(0)
    for k in range(16):   # 108-atom fcc cells: every atom links every other within 8 Å, 11 MiB of Jacobians each
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
        atoms[int(rng.integers(len(atoms)))].symbol = "Au"
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        atoms.get_forces()
        structures.append(Structure.from_ase(atoms, source=f"cell-{k}"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(structures, settings=TrainSettings.from_flat(iterations=2, force_weight=1.0, hidden="5:tanh",
                                                                    device="cpu"), use_cache=False)
    status = open("/proc/self/status").read()
    print(json.dumps({"notes": [str(w.message) for w in caught if "descriptor Jacobians" in str(w.message)],
                      "losses": [row["loss"] for row in result.history],
                      "peak": int(re.search(r"VmPeak:\\s+(\\d+)", status).group(1)) * 1024}))""")


@pytest.mark.slow
def test_training_under_a_real_rlimit_streams_what_it_would_store_without_it():
    """The trainer of a process whose address space is bounded (a batch system's `ulimit -v`) reads the bound: the
    Jacobians it stores without one (180 MiB) are built per chunk under it, and the training is the same."""
    free = subprocess.run([sys.executable, "-c", CHILD_TRAINING], capture_output=True, text=True, timeout=300,
                          cwd=TESTS, env={**_env(), "OMP_NUM_THREADS": "1"})
    assert free.returncode == 0, free.stderr
    unbounded = json.loads(free.stdout.splitlines()[-1])
    assert unbounded["notes"] == []   # stored
    # room for the same peak again, but less than the margin that storing asks for at the decision
    bounded_run = _rlimited_child(CHILD_TRAINING, unbounded["peak"] + GIB // 2, timeout=300)
    assert bounded_run.returncode == 0, bounded_run.stderr
    bounded = json.loads(bounded_run.stdout.splitlines()[-1])
    assert len(bounded["notes"]) == 1 and "(RLIMIT_AS): they are computed per chunk" in bounded["notes"][0]
    assert bounded["losses"] == pytest.approx(unbounded["losses"], rel=1e-10, abs=0)


# ----------------------------------------------------------------------------- --max-memory in the commands

@pytest.mark.parametrize("value", ["0", "-2", "nan", "inf"])
def test_max_memory_is_checked_before_anything_is_written(tmp_path, value):
    generate_in = make_case(tmp_path / "case")
    before = tree_hashes(tmp_path)
    error_line(run_cli("train", generate_in, "--max-memory", value, "--out", "model.pt", "-q", cwd=tmp_path),
               "max_memory must be a finite number of GiB > 0")
    error_line(run_cli("experiment", "--preset", "quick", "--data", generate_in, "--max-memory", value, "--out",
                       "study", "-q", cwd=tmp_path), "--max-memory must be a finite number of GiB > 0")
    assert tree_hashes(tmp_path) == before


EXPERIMENT = """
[experiment]
name = "memory"
data = "sample:tio2-md"
trials = 1
subset_size = 10
test_fraction = 0.2
workers = 1

[trainer]
iterations = 2
hidden = "4:tanh"

[[condition]]
name = "baseline"

[[condition]]
name = "forces"
trainer = { force_weight = 0.5 }
"""


def test_experiment_passes_max_memory_to_its_tasks_and_may_change_it_on_resume(tmp_path, monkeypatch):
    """Each task trains under the experiment's max_memory (a cap below what it holds refuses force training, so it
    arrived); it says where tasks run, not what they compute: resuming with another value continues."""
    from pyita.experiment.config import parse_config
    from pyita.experiment.runner import run_experiment

    monkeypatch.setenv("PYITA_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "memory.toml"
    config.write_text(EXPERIMENT)
    out = tmp_path / "out"
    # the task that cannot run is named, the other finishes, and the run ends unfinished (exit 2 on the command line)
    with pytest.warns(UserWarning, match=r"one chunk of training structures needs .* \(--max-memory\)"), \
            pytest.raises(PyitaError, match=r"1 of 2 tasks did not finish \(trial 0 'forces'\)"):
        run_experiment(config, None, {"max_memory": 1e-6}, out, progress=False)
    assert (out / "results" / "trial-000" / "baseline.json").is_file()   # energy only: no Jacobians, it ran
    assert json.loads((out / "experiment.json").read_text())["max_memory"] == 1e-6
    summary = run_experiment(config, None, {"max_memory": 64.0}, out, resume=True, progress=False)
    assert (out / "results" / "trial-000" / "forces.json").is_file() and summary
    assert json.loads((out / "experiment.json").read_text())["max_memory"] == 64.0
    run_experiment(config, None, {}, out, resume=True, progress=False)   # and without one
    assert "max_memory" not in json.loads((out / "experiment.json").read_text())
    # in the config: [experiment] only, a positive finite number; not a trainer setting
    raw = {"experiment": {"data": "sample:tio2-md", "max_memory": 8}}
    assert parse_config(raw).max_memory == 8
    for bad in ({"max_memory": 0}, {"max_memory": "8"}):
        with pytest.raises(InputError, match=r"\[experiment\] max_memory must be a finite number of GiB > 0"):
            parse_config({"experiment": {**raw["experiment"], **bad}})
    with pytest.raises(InputError, match=r"\[trainer\]: max_memory is where a task runs.* \[experiment\]"):
        parse_config({**raw, "trainer": {"max_memory": 8.0}})


def test_the_aenet_backend_ignores_max_memory_and_says_so_once(tmp_path):
    from pyita.experiment.runner import run_experiment

    if not Path(os.environ.get("AENET_BIN", "/nonexistent")).is_dir():
        pytest.skip("aenet not installed")
    config = tmp_path / "memory.toml"
    config.write_text(EXPERIMENT.replace('trainer = { force_weight = 0.5 }',
                                         'augment = { strategy = "balanced", a = 1, delta = 0.02 }'))
    (tmp_path / "taken").write_text("a file where the output folder would go: the run stops after the checks")
    with pytest.warns(UserWarning, match="max_memory applies to the embedded trainer only") as caught, \
            pytest.raises(PyitaError, match="exists and is not a folder"):
        run_experiment(config, None, {"max_memory": 8.0, "backend": "aenet"}, tmp_path / "taken", progress=False)
    assert sum("max_memory" in str(w.message) for w in caught) == 1
