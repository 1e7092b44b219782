"""What decides the derived structures (``AugmentSettings``), and δ's one default: the same for ``pyita augment``,
``pyita train``, training's ``augment`` part and an experiment condition's ``augment`` table."""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import asdict, dataclass, fields

from pyita.choices import STRATEGIES
from pyita.errors import PyitaError

#: Displacement δ (Å) when none is given.
DEFAULT_DELTA = 0.03
#: Above this δ (Å) the first-order label is usually poor; see ``pyita check`` to measure it.
LARGE_DELTA = 0.1
ABSURD_DELTA = 1.0
#: The ``config_type`` of derived frames in extended-XYZ output, which MACE's ``config_type_weights`` (and
#: similar per-type weights) can weight: ``pyita augment --config-type``'s default.
DEFAULT_CONFIG_TYPE = "taylor"
_CONFIG_TYPE = re.compile(r"[A-Za-z0-9_.+-]+")


def check_config_type(value: str) -> str:
    """A ``config_type`` as one plain token (extended XYZ would quote anything else, and tools split on it)."""
    if not isinstance(value, str) or not _CONFIG_TYPE.fullmatch(value):
        raise PyitaError(f"--config-type must be one word of letters, digits and _.+-, got {value!r}")
    return value


@dataclass(frozen=True)
class AugmentSettings:
    """Everything that decides the derived structures; recorded in every manifest."""

    a: float
    delta: float = DEFAULT_DELTA
    strategy: str = "balanced"
    seed: int = 0
    max_force: float | None = None
    cap: float = 3.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise PyitaError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if not self.a > 0:
            raise PyitaError(f"a (new structures per parent) must be > 0, got {self.a:g}: " + (
                "a = 0 would make no derived structure" if self.a == 0 else "a count is ≥ 0, and 0 makes none"))
        # a = inf overflows the per-parent counts; an infinite δ, force limit or cap means nothing
        for name, value in (("a", self.a), ("delta", self.delta), ("max-force", self.max_force), ("cap", self.cap)):
            if value is not None and not math.isfinite(value):
                raise PyitaError(f"{name} must be a finite number, got {value}")
        if not self.delta > 0:
            raise PyitaError(f"delta must be > 0 Å, got {self.delta}")
        if self.delta > ABSURD_DELTA:
            raise PyitaError(f"delta {self.delta} Å is far beyond first-order validity (max {ABSURD_DELTA} Å)")
        if self.delta > LARGE_DELTA:
            warnings.warn(f"delta {self.delta} Å is large: first-order Taylor labels degrade as δ²; "
                          "measure with `pyita check`", stacklevel=3)
        if self.max_force is not None and not self.max_force > 0:
            raise PyitaError(f"max-force must be > 0 eV/Å, got {self.max_force}")
        if not self.cap >= 1:
            raise PyitaError(f"cap must be ≥ 1 (in units of δ), got {self.cap}")

    @classmethod
    def from_table(cls, table: dict, seed: int = 0) -> AugmentSettings:
        """The settings among a table's keys (an experiment condition's ``augment`` table, whose other keys are
        training's); ``seed`` is the caller's (a trial's), never the table's."""
        return cls(**{f.name: table[f.name] for f in fields(cls) if f.name in table and f.name != "seed"}, seed=seed)

    def as_dict(self) -> dict:
        return asdict(self)
