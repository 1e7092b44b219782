"""How much memory this process can still take: the smallest of what the machine has free, what a batch system's
cgroup allows, what the process's rlimits allow, and what the user allows.

On a batch system (SLURM, Docker, Kubernetes) a job's memory is bounded by its cgroup, not by the host's free
memory: a trainer that reads ``/proc/meminfo`` alone decides that data fit which the kernel then kills it for.
Each reader takes the root of the file system it reads (``/``; tests give fake trees) and returns bytes, or
None where its limit is unknown or absent; :func:`memory_limits` collects the known ones.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from pyita.errors import SettingError

GIB = 2**30

#: Memory kept free beyond an estimate, measured from real peaks: force training on 60 TiO2 cells of 648 atoms
#: peaked 1.2 GiB above its stored Jacobians (the temporaries of assembling them, the networks' graphs,
#: allocator slack); plus a share of the estimate itself (:func:`with_margin`).
MARGIN_BYTES = int(1.2 * GIB)
MARGIN_SHARE = 0.10

#: cgroup v1 writes "no limit" as the largest page count in bytes (9223372036854771712); anything this large is no
#: limit.
_UNLIMITED = 2**60

#: Where the cgroup file systems are mounted (systemd, Docker, SLURM's cgroup plugin and Kubernetes all use these).
_CGROUP_V2 = "sys/fs/cgroup"
_CGROUP_V1_MEMORY = "sys/fs/cgroup/memory"


def with_margin(need: float) -> float:
    """The memory that holding ``need`` bytes takes with the safety margin: 10 % more, plus 1.2 GiB."""
    return need * (1 + MARGIN_SHARE) + MARGIN_BYTES


def with_share(need: float) -> float:
    """``need`` bytes plus the proportional part of the margin alone: the least a run that holds them needs."""
    return need * (1 + MARGIN_SHARE)


def gib(size: float) -> str:
    """A size in bytes as GiB, with enough digits to be told apart from zero."""
    value = size / GIB
    return f"{value:.1f} GiB" if abs(value) >= 0.1 else f"{value:.3g} GiB"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _number(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _status_kib(root: str | Path, key: str) -> int | None:
    """A ``VmSize``-like line of /proc/self/status, in bytes."""
    found = re.search(rf"^{key}:\s+(\d+)\s*kB", _read(Path(root) / "proc/self/status") or "", re.MULTILINE)
    return int(found.group(1)) * 1024 if found else None


def meminfo_available(root: str | Path = "/") -> int | None:
    """Linux's MemAvailable: free memory plus the page cache that can be dropped. Where /proc is not there (not
    Linux) the free pages, for the real root only."""
    found = re.search(r"^MemAvailable:\s+(\d+)\s*kB", _read(Path(root) / "proc/meminfo") or "", re.MULTILINE)
    if found:
        return int(found.group(1)) * 1024
    if Path(root) == Path("/"):
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def _own_cgroups(root: str | Path) -> tuple[str | None, str | None]:
    """The process's cgroup path in the v2 hierarchy and in v1's memory controller (None where not in one)."""
    v2 = v1 = None
    for line in (_read(Path(root) / "proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "memory" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _with_ancestors(mount: Path, path: str) -> list[Path]:
    """The folder of cgroup ``path`` under ``mount`` and those of its ancestors up to the mount itself: a limit set
    on a parent (a SLURM job's slice, a pod) bounds its children too. Inside a container the path may name a
    cgroup above the mounted one; the folders that do not exist are then skipped and the mount (the container's
    own cgroup) is what counts."""
    parts = [p for p in path.strip("/").split("/") if p and p not in (".", "..")]
    return [mount.joinpath(*parts[:k]) for k in range(len(parts), -1, -1)]


def _inactive_file(folder: Path, key: str) -> int:
    """Page cache in the cgroup that the kernel reclaims before it fails an allocation (memory.stat)."""
    found = re.search(rf"^{key}\s+(\d+)", _read(folder / "memory.stat") or "", re.MULTILINE)
    return int(found.group(1)) if found else 0


def _headroom(folders: list[Path], limit_file: str, usage_file: str, cache_key: str) -> int | None:
    """The least of limit − usage (+ reclaimable page cache) over the folders that set a limit."""
    room = None
    for folder in folders:
        text = _read(folder / limit_file)
        limit = None if text is None or text.strip() == "max" else _number(text)
        usage = _number(_read(folder / usage_file))
        if limit is None or limit >= _UNLIMITED or usage is None:
            continue
        here = max(0, limit - usage + _inactive_file(folder, cache_key))
        room = here if room is None else min(room, here)
    return room


def cgroup_v2_headroom(root: str | Path = "/") -> int | None:
    """``memory.max`` − ``memory.current`` (+ inactive page cache) of the process's cgroup v2 and its ancestors:
    the least of them, or None where none sets a limit."""
    path, _ = _own_cgroups(root)
    if path is None:
        return None
    return _headroom(_with_ancestors(Path(root) / _CGROUP_V2, path), "memory.max", "memory.current", "inactive_file")


def cgroup_v1_headroom(root: str | Path = "/") -> int | None:
    """``memory.limit_in_bytes`` − ``memory.usage_in_bytes`` (+ inactive page cache) of the process's cgroup in
    v1's memory controller and its ancestors; the "unlimited" value counts as no limit."""
    _, path = _own_cgroups(root)
    if path is None:
        return None
    return _headroom(_with_ancestors(Path(root) / _CGROUP_V1_MEMORY, path), "memory.limit_in_bytes",
                     "memory.usage_in_bytes", "total_inactive_file")


def _soft_limit(root: str | Path, name: str) -> int | None:
    """The soft limit of a /proc/self/limits line (e.g. "Max address space"), None when unlimited."""
    found = re.search(rf"^{name}\s+(\S+)", _read(Path(root) / "proc/self/limits") or "", re.MULTILINE)
    return _number(found.group(1)) if found else None


def rlimit_headroom(root: str | Path = "/") -> dict[str, int]:
    """What the process's rlimits leave: ``RLIMIT_AS`` − VmSize (the address space, which ``ulimit -v`` and some
    batch systems bound) and ``RLIMIT_DATA`` − VmData; only those set."""
    found = {}
    for name, limit, used in (("RLIMIT_AS", "Max address space", "VmSize"), ("RLIMIT_DATA", "Max data size", "VmData")):
        soft, current = _soft_limit(root, limit), _status_kib(root, used)
        if soft is not None and current is not None:
            found[name] = max(0, soft - current)
    return found


def resident_memory(root: str | Path = "/") -> int | None:
    """The process's resident memory now (VmRSS), in bytes."""
    return _status_kib(root, "VmRSS")


def check_max_memory(value: float | None, what: str = "max_memory") -> float | None:
    """``value`` (GiB) as a float when it is a finite number > 0, None for None; else a SettingError naming
    ``what``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SettingError(f"{what} must be a finite number of GiB > 0, got {value!r}")
    return float(value)


def memory_limits(max_memory_gib: float | None = None, root: str | Path = "/") -> dict[str, int]:
    """Bytes the process can still allocate under each limit known, by what sets it. ``max_memory_gib`` is the
    user's cap on the process's memory in all (as a batch system's limit is): what it holds now counts."""
    found = {"free memory (MemAvailable)": meminfo_available(root), "cgroup memory.max": cgroup_v2_headroom(root),
             "cgroup memory.limit_in_bytes": cgroup_v1_headroom(root), **rlimit_headroom(root)}
    if max_memory_gib is not None:
        found["--max-memory"] = max(0, int(max_memory_gib * GIB) - (resident_memory(root) or 0))
    return {name: size for name, size in found.items() if size is not None}


def available_memory(max_memory_gib: float | None = None, root: str | Path = "/") -> int | None:
    """The least of :func:`memory_limits`: what the process can allocate without being killed or swapping; None
    only where no limit is known and no cap given."""
    limits = memory_limits(max_memory_gib, root)
    return min(limits.values()) if limits else None


def tightest(limits: dict[str, int]) -> tuple[int, str] | None:
    """The smallest of ``memory_limits``' values and what sets it, or None where none is known."""
    if not limits:
        return None
    name = min(limits, key=limits.get)
    return limits[name], name
