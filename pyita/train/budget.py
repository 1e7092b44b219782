"""Whether force training stores its descriptor Jacobians, builds them per chunk or mini-batch (streamed), or
cannot run at all: decided before training starts, from their size and the memory available
(:mod:`pyita.memory`: the machine's, a batch system's cgroup, rlimits, ``--max-memory``).

Storing needs all Jacobians with the safety margin (``with_margin``: measured peaks). Streamed, full-batch L-BFGS
builds one chunk of about ``CHUNK_ATOMS`` atoms at a time, Adam one mini-batch; the validation set is evaluated
chunk by chunk. Only when one of those pieces alone does not fit is training refused, naming what would fit.
"""

from __future__ import annotations

import math
import warnings

from pyita.errors import PyitaError
from pyita.memory import gib, tightest, with_margin, with_share


def jacobians_streamed(sizes: dict[str, dict[int, float]], chunks: dict[str, list[list[int]]], method: str,
                       batch_size: int, limits: dict[str, int], atoms_share: float = 1.0) -> bool:
    """True when the Jacobians are to be built per chunk or mini-batch instead of stored.

    ``sizes``: bytes of each force-trained structure's Jacobians, per set ("train", "val"); ``chunks``: the
    pieces streaming builds at once, per set; ``limits``: :func:`pyita.memory.memory_limits`; ``atoms_share``: the
    force fraction of atoms in use (1 otherwise), from which a smaller one that fits is worked out. Raises
    PyitaError when not even one piece fits.
    """
    found = tightest(limits)
    need = sum(sum(per.values()) for per in sizes.values())
    largest = sorted(sizes["train"].values())
    batch = sum(largest[-batch_size:]) if method == "adam" else 0.0   # Adam's copy of a batch's stored blocks
    if found is None or with_margin(need + batch) <= found[0]:
        return False
    free, source = found
    available = f"only {gib(free)} is available ({source})"
    pieces = {name: max((sum(sizes[name][k] for k in chunk) for chunk in chunks.get(name, [])), default=0.0)
              for name in sizes}
    if method == "adam" and with_share(batch) > free:
        fitting = _count_fitting(largest, free)
        hint = f"--batch-size {fitting} fits" if fitting else _atoms_hint(largest[-1], free, atoms_share, source)
        raise PyitaError(f"one mini-batch of {batch_size} structures needs up to {gib(batch)} for descriptor "
                         f"Jacobians (built per mini-batch, as storing them all would take {gib(need)}) but "
                         f"{available}; {hint}")
    for name, what in (("train", "training"), ("val", "validation")):
        if (method != "adam" or name == "val") and with_share(pieces[name]) > free:
            hint = _atoms_hint(pieces[name], free, atoms_share, source) if name == "train" else \
                "the validation set keeps every atom's forces: fewer or smaller validation structures fit"
            raise PyitaError(f"one chunk of {what} structures needs {gib(pieces[name])} for descriptor Jacobians "
                             f"(built chunk by chunk, as storing them all would take {gib(need)}) but {available}; "
                             f"{hint}")
    how = ("per mini-batch instead, which makes each epoch several times slower" if method == "adam" else
           "per chunk at each L-BFGS evaluation instead: an epoch takes about as long as building them all, "
           "10–25× a stored one")
    warnings.warn(f"storing the descriptor Jacobians would take {gib(need)} (with margin "
                  f"{gib(with_margin(need + batch))}) but {gib(free)} is available ({source}): they are computed {how}",
                  stacklevel=5)
    return True


def _count_fitting(sizes: list[float], free: float) -> int:
    """How many of the largest ``sizes`` (sorted ascending) fit in ``free`` together."""
    total, count = 0.0, 0
    for size in reversed(sizes):
        total += size
        if with_share(total) > free:
            break
        count += 1
    return count


def _atoms_hint(piece: float, free: float, share: float, source: str) -> str:
    """The force fraction of atoms whose Jacobians of ``piece`` (taken at ``share``) would fit in ``free``."""
    fraction = share * free / with_share(piece) if piece else 0.0
    if fraction <= 0:
        more = "a larger --max-memory" if source == "--max-memory" else "more memory"
        return f"not even a share of the atoms fits: the process needs {more}"
    digits = 10 ** (1 - math.floor(math.log10(fraction)))   # rounded down to two significant digits
    return f"--force-fraction-of atoms --force-fraction {math.floor(fraction * digits) / digits:g} fits"
