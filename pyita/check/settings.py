"""What decides a ``pyita check`` study: the δ values and strategies tried, the parents sampled, the tolerance."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pyita.augment import AugmentSettings
from pyita.choices import STRATEGIES
from pyita.errors import PyitaError

DEFAULT_DELTAS = (0.005, 0.01, 0.02, 0.03, 0.05)
DEFAULT_STRATEGIES = ("balanced", "random-all")


def _as_tuple(value, kind) -> tuple:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    try:
        return tuple(kind(v) for v in value)
    except ValueError:
        raise PyitaError(f"cannot read {value!r} as a comma-separated list") from None


@dataclass(frozen=True)
class CheckSettings:
    """Everything that decides the study; recorded in check.json."""

    deltas: tuple[float, ...] = DEFAULT_DELTAS
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    parents: int = 20
    a: float = 2
    seed: int = 0
    tolerance: float = 1.0  # meV/atom, on the 95th percentile
    max_force: float | None = None
    cap: float = 3.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "deltas", tuple(sorted(set(_as_tuple(self.deltas, float)))))
        object.__setattr__(self, "strategies", tuple(dict.fromkeys(_as_tuple(self.strategies, str))))
        if not self.deltas:
            raise PyitaError("give at least one δ (--delta)")
        if self.deltas[0] <= 0:
            raise PyitaError(f"every δ must be > 0 Å, got {self.deltas[0]}")
        for strategy in self.strategies:
            if strategy not in STRATEGIES:
                raise PyitaError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        if not self.strategies:
            raise PyitaError("give at least one strategy (--strategy)")
        if self.parents < 1:
            raise PyitaError(f"--parents must be ≥ 1, got {self.parents}")
        if not self.a > 0:
            raise PyitaError(f"--a must be > 0, got {self.a}")
        if not self.tolerance > 0:
            raise PyitaError(f"--tolerance must be > 0 meV/atom, got {self.tolerance}")
        for delta in self.deltas:  # the augment layer's own validation (and its warning for large δ)
            self.augment_settings(self.strategies[0], delta)

    def augment_settings(self, strategy: str, delta: float) -> AugmentSettings:
        return AugmentSettings(a=self.a, delta=delta, strategy=strategy, seed=self.seed,
                               max_force=self.max_force, cap=self.cap)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["deltas"], d["strategies"] = list(self.deltas), list(self.strategies)
        return d
