"""The settings of a training run (``TrainSettings``): everything that decides a trained model, checked when
made and recorded in the model file. The loop that uses them is ``pyita.train.trainer``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pyita.errors import PyitaError, SettingError, whole_number
from pyita.architecture import ChebyshevSetup
from pyita.model.network import WEIGHT_INITS, hidden_layers
from pyita.model.load import load_potential
from pyita.train.data import ENERGY_NORMALIZATIONS


METHODS = ("lbfgs", "adam")


#: What a force fraction is a share of: whole structures, or the atoms of every structure.
FORCE_FRACTION_OF = ("structures", "atoms")


#: Hidden layers when neither the settings nor initial networks give them.
DEFAULT_HIDDEN = "15:tanh,15:tanh"


def default_descriptor() -> dict:
    """The Chebyshev settings' defaults (``ChebyshevSetup``: aenet's TiO2 example, 44 features for TiO2)."""
    return ChebyshevSetup().descriptor_settings()


@dataclass
class TrainSettings:
    """Everything that decides a trained model, recorded in the model file."""

    method: str = "lbfgs"
    iterations: int = 500
    #: None: DEFAULT_HIDDEN, or the initial networks' layers.
    hidden: str | None = None
    force_weight: float = 0.0
    #: Share of the force information that the force term uses (seeded choice; 1: all): of the training
    #: structures with forces, or of the atoms of each of them (``force_fraction_of``).
    force_fraction: float = 1.0
    force_fraction_of: str = "structures"
    derived_weight: float = 1.0
    parent_child_weight: float = 0.0
    batch_size: int = 32
    learning_rate: float = 1e-3
    lbfgs_history: int = 100
    #: Initial weight range: "aenet" (its train.x's) or "pytorch" (nn.Linear's default); see WEIGHT_INITS.
    weight_init: str = "aenet"
    #: Energy normalisation of the network output: "range" (aenet's: midpoint and half-range of the training
    #: set's per-atom cohesive energies) or "std" (their mean and standard deviation).
    energy_normalization: str = "range"
    patience: int | None = None
    #: Training-time budget: stop after the epoch that reaches it, as if it were the last (None: no limit).
    max_minutes: float | None = None
    seed: int = 0
    #: Seed of the initial weights alone (None: ``seed``); batches, splits and augmentation keep ``seed``.
    init_seed: int | None = None
    augment_a: float = 0.0
    augment_delta: float = 0.03
    augment_strategy: str = "balanced"
    augment_max_force: float | None = None
    on_the_fly: bool = False
    #: Chebyshev settings (``ChebyshevDescriptor`` keywords); those left out are ``default_descriptor()``'s, or
    #: the initial networks'.
    descriptor: dict | None = None
    device: str = "auto"
    checkpoint_every: float = 30.0
    #: Start from these networks (a PyITA model file, or aenet .nn files: see ``load_potential``), keeping their
    #: descriptor, hidden layers, normalisation and reference energies; settings that contradict them are refused.
    initial_networks: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise PyitaError(f"unknown training method {self.method!r}; choose {' or '.join(METHODS)}")
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise PyitaError(f"iterations must be a positive integer, got {self.iterations}")
        if not self.force_weight >= 0 or not self.derived_weight >= 0 or not self.parent_child_weight >= 0:
            raise PyitaError("force, derived-structure and parent–child weights must be ≥ 0")
        if not 0 < self.force_fraction <= 1:
            raise SettingError(f"force fraction must be in (0, 1], got {self.force_fraction}")
        if self.force_fraction_of not in FORCE_FRACTION_OF:
            raise SettingError(f"force_fraction_of must be {' or '.join(FORCE_FRACTION_OF)}, got "
                               f"{self.force_fraction_of!r}")
        whole_number(self.batch_size, "batch size", 1)
        if not self.learning_rate > 0:
            raise SettingError(f"the learning rate must be > 0, got {self.learning_rate}")
        whole_number(self.seed, "seed", 0)   # numpy's and torch's generators take no negative seed
        if self.init_seed is not None:
            whole_number(self.init_seed, "init_seed", 0)
        if not self.checkpoint_every >= 0:
            raise SettingError(f"checkpoint_every must be ≥ 0 seconds (0: every epoch), got {self.checkpoint_every}")
        if self.weight_init not in WEIGHT_INITS:
            raise SettingError(f"weight_init must be one of {', '.join(WEIGHT_INITS)}, got {self.weight_init!r}")
        if self.energy_normalization not in ENERGY_NORMALIZATIONS:
            raise SettingError(f"energy_normalization must be one of {', '.join(ENERGY_NORMALIZATIONS)}, got "
                               f"{self.energy_normalization!r}")
        if self.patience is not None and self.patience < 1:
            raise PyitaError(f"patience must be ≥ 1 epoch, got {self.patience}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise SettingError(f"the time budget must be > 0 minutes, got {self.max_minutes}")
        if self.on_the_fly and not self.augment_a > 0:
            raise PyitaError("on-the-fly augmentation needs augment_a > 0 (new structures per parent)")
        if self.initial_networks is None:
            self.hidden = DEFAULT_HIDDEN if self.hidden is None else self.hidden
            self.descriptor = {**default_descriptor(), **(self.descriptor or {})}
        else:
            self._adopt_initial_networks()
        hidden_layers(self.hidden)
        try:
            ChebyshevSetup.from_dict(self.descriptor)
        except (TypeError, ValueError) as exc:
            raise SettingError(f"descriptor settings {self.descriptor}: {exc}") from None

    def _adopt_initial_networks(self) -> None:
        """Hidden layers and descriptor settings from the initial networks; given ones must agree with them."""
        self.initial_networks = str(self.initial_networks)
        start = load_potential(self.initial_networks)
        theirs = {k: v for k, v in start.descriptor.settings().items() if k != "species"}
        conflicts = [f"{k} {v!r}" for k, v in (self.descriptor or {}).items() if theirs.get(k, object()) != v]
        if self.hidden is not None and hidden_layers(self.hidden) != start.networks.layers:
            conflicts.append(f"hidden layers {self.hidden!r}")
        if conflicts:
            have = ", ".join(f"{k} {v!r}" for k, v in theirs.items())
            raise SettingError(f"the initial networks {self.initial_networks} have hidden layers {start.hidden!r}, "
                               f"{have}; the settings ask for {', '.join(conflicts)}. Leave those out (they come "
                               "from the initial networks) or make them match")
        self.hidden, self.descriptor = start.hidden, theirs

    def as_dict(self) -> dict:
        return asdict(self)
