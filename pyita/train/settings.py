"""The settings of a training run (``TrainSettings``): everything that decides a trained model, in small typed parts
that each check their own fields when made (reading nothing), and recorded in the model file as one flat table.
The loop that uses them is ``pyita.train.trainer``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, get_type_hints

from pyita.augment.settings import AugmentSettings
from pyita.choices import ENERGY_NORMALIZATIONS, FORCE_FRACTION_OF, METHODS, WEIGHT_INITS
from pyita.errors import PyitaError, SettingError, whole_number
from pyita.architecture import ChebyshevSetup
from pyita.memory import check_max_memory
from pyita.model.network import hidden_layers
from pyita.model.potential import Potential

#: Hidden layers when neither the settings nor initial networks give them.
DEFAULT_HIDDEN = "15:tanh,15:tanh"


def default_descriptor() -> dict:
    """The Chebyshev settings' defaults (``ChebyshevSetup``: aenet's TiO2 example, 44 features for TiO2)."""
    return ChebyshevSetup().descriptor_settings()


@dataclass(frozen=True)
class OptimizerSettings:
    """How the weights are fitted, and when fitting stops."""

    method: str = "lbfgs"
    iterations: int = 500
    batch_size: int = 32
    learning_rate: float = 1e-3
    lbfgs_history: int = 100
    #: Epochs without validation improvement before stopping (None: never; needs a validation set).
    patience: int | None = None
    #: Training-time budget: stop after the epoch that reaches it, as if it were the last (None: no limit).
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise PyitaError(f"unknown training method {self.method!r}; choose {' or '.join(METHODS)}")
        if int(self.iterations) != self.iterations or self.iterations < 1:
            raise PyitaError(f"iterations must be a positive integer, got {self.iterations}")
        whole_number(self.batch_size, "batch size", 1)
        if not self.learning_rate > 0:
            raise SettingError(f"the learning rate must be > 0, got {self.learning_rate}")
        if self.patience is not None and self.patience < 1:
            raise PyitaError(f"patience must be ≥ 1 epoch, got {self.patience}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise SettingError(f"the time budget must be > 0 minutes, got {self.max_minutes}")


@dataclass(frozen=True)
class LossSettings:
    """The loss terms and their weights."""

    force_weight: float = 0.0
    #: Share of the force information that the force term uses (seeded choice; 1: all): of the training
    #: structures with forces, or of the atoms of each of them (``force_fraction_of``).
    force_fraction: float = 1.0
    force_fraction_of: str = "structures"
    derived_weight: float = 1.0
    parent_child_weight: float = 0.0

    def __post_init__(self) -> None:
        if not self.force_weight >= 0 or not self.derived_weight >= 0 or not self.parent_child_weight >= 0:
            raise PyitaError("force, derived-structure and parent–child weights must be ≥ 0")
        if not 0 < self.force_fraction <= 1:
            raise SettingError(f"force fraction must be in (0, 1], got {self.force_fraction}")
        if self.force_fraction_of not in FORCE_FRACTION_OF:
            raise SettingError(f"force_fraction_of must be {' or '.join(FORCE_FRACTION_OF)}, got "
                               f"{self.force_fraction_of!r}")


@dataclass(frozen=True)
class ModelSettings:
    """The potential's shape and start. Without initial networks the defaults fill in what is left out; with them
    the hidden layers and descriptor come from the networks when training starts (``adopt``)."""

    #: None: DEFAULT_HIDDEN, or the initial networks' layers.
    hidden: str | None = None
    #: Chebyshev settings (``ChebyshevDescriptor`` keywords); those left out are ``default_descriptor()``'s, or
    #: the initial networks'.
    descriptor: dict | None = None
    #: Initial weight range: "aenet" (its train.x's) or "pytorch" (nn.Linear's default); see WEIGHT_BOUNDS.
    weight_init: str = "aenet"
    #: Energy normalisation of the network output: "range" (aenet's: midpoint and half-range of the training
    #: set's per-atom cohesive energies) or "std" (their mean and standard deviation).
    energy_normalization: str = "range"
    #: Start from these networks (a PyITA model file, or aenet .nn files: see ``load_potential``), keeping their
    #: descriptor, hidden layers, normalisation and reference energies; settings that contradict them are refused.
    initial_networks: str | None = None

    def __post_init__(self) -> None:
        if self.weight_init not in WEIGHT_INITS:
            raise SettingError(f"weight_init must be one of {', '.join(WEIGHT_INITS)}, got {self.weight_init!r}")
        if self.energy_normalization not in ENERGY_NORMALIZATIONS:
            raise SettingError(f"energy_normalization must be one of {', '.join(ENERGY_NORMALIZATIONS)}, got "
                               f"{self.energy_normalization!r}")
        if self.hidden is not None:
            hidden_layers(self.hidden)
        if self.initial_networks is not None:   # the rest is theirs, compared in ``adopt``
            object.__setattr__(self, "initial_networks", str(self.initial_networks))
            return
        object.__setattr__(self, "hidden", DEFAULT_HIDDEN if self.hidden is None else self.hidden)
        object.__setattr__(self, "descriptor", {**default_descriptor(), **(self.descriptor or {})})
        try:
            ChebyshevSetup.from_dict(self.descriptor)
        except (TypeError, ValueError) as exc:
            raise SettingError(f"descriptor settings {self.descriptor}: {exc}") from None

    def adopt(self, start: Potential) -> ModelSettings:
        """These settings with the hidden layers and descriptor of ``start`` (the initial networks' potential);
        given ones must agree with them."""
        theirs = {k: v for k, v in start.descriptor.settings().items() if k != "species"}
        conflicts = [f"{k} {v!r}" for k, v in (self.descriptor or {}).items() if theirs.get(k, object()) != v]
        if self.hidden is not None and hidden_layers(self.hidden) != start.networks.layers:
            conflicts.append(f"hidden layers {self.hidden!r}")
        if conflicts:
            have = ", ".join(f"{k} {v!r}" for k, v in theirs.items())
            raise SettingError(f"the initial networks {self.initial_networks} have hidden layers {start.hidden!r}, "
                               f"{have}; the settings ask for {', '.join(conflicts)}. Leave those out (they come "
                               "from the initial networks) or make them match")
        return replace(self, hidden=start.hidden, descriptor=theirs)


@dataclass(frozen=True)
class RuntimeSettings:
    """Where training runs and how often it saves a checkpoint: nothing that changes the model."""

    device: str = "auto"
    checkpoint_every: float = 30.0
    #: GiB the process may use in all (a cap below the machine's, a cgroup's and the rlimits'; None: no cap of its
    #: own). It decides only whether descriptor Jacobians are stored or built per chunk/mini-batch: the same
    #: training either way (``pyita.train.budget``).
    max_memory: float | None = None

    def __post_init__(self) -> None:
        if not self.checkpoint_every >= 0:
            raise SettingError(f"checkpoint_every must be ≥ 0 seconds (0: every epoch), got {self.checkpoint_every}")
        object.__setattr__(self, "max_memory", check_max_memory(self.max_memory))


#: The parts, by the attribute that holds each; their fields are the record's keys.
_PARTS = {"optimizer": OptimizerSettings, "loss": LossSettings, "model": ModelSettings, "runtime": RuntimeSettings}
#: The AugmentSettings fields the record holds, as ``augment_<name>``: all but the seed (training's own) and the
#: cap (the default; see TrainSettings).
_AUGMENT_RECORDED = tuple(f.name for f in fields(AugmentSettings) if f.name not in ("seed", "cap"))


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides a trained model, recorded in the model file as one flat table (``as_dict``;
    ``from_flat`` reads it back, and takes the command line's and an experiment's ``[trainer]`` keys)."""

    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    seed: int = 0
    #: Seed of the initial weights alone (None: ``seed``); batches, splits and augmentation keep ``seed``.
    init_seed: int | None = None
    #: Taylor-derived structures added to the training set (None: none). Their draws are seeded by ``seed``
    #: (per epoch on the fly), whatever ``augment.seed`` says.
    augment: AugmentSettings | None = None
    #: Draw fresh derived structures every epoch instead of once.
    on_the_fly: bool = False

    def __post_init__(self) -> None:
        whole_number(self.seed, "seed", 0)   # numpy's and torch's generators take no negative seed
        if self.init_seed is not None:
            whole_number(self.init_seed, "init_seed", 0)
        if self.on_the_fly and self.augment is None:
            raise PyitaError("on-the-fly augmentation needs augment_a > 0 (new structures per parent)")
        if self.augment is not None and self.augment.cap != AugmentSettings.cap:
            raise SettingError(f"training's augmentation keeps cap {AugmentSettings.cap:g} (the model records no "
                               f"other), got {self.augment.cap:g}")

    @classmethod
    def from_flat(cls, **record) -> TrainSettings:
        """The settings of a flat table: ``as_dict``'s keys (those left out take their defaults); ``augment_a``
        0 means no augmentation."""
        unknown = sorted(set(record) - set(cls.record_types()))
        if unknown:
            raise SettingError(f"unknown trainer settings {unknown}; the embedded trainer knows "
                               f"{sorted(cls.record_types())}")
        parts = {name: part(**{f.name: record[f.name] for f in fields(part) if f.name in record})
                 for name, part in _PARTS.items()}
        augment = {k: record[f"augment_{k}"] for k in _AUGMENT_RECORDED if f"augment_{k}" in record}
        own = {k: record[k] for k in ("seed", "init_seed", "on_the_fly") if k in record}
        seed = own.get("seed", cls.seed)
        return cls(**parts, **own, augment=AugmentSettings(**augment, seed=seed) if augment.get("a", 0) else None)

    @classmethod
    def record_types(cls) -> dict[str, Any]:
        """The flat record's keys, in ``as_dict``'s order, with their types."""
        own = get_type_hints(cls)
        types = {k: v for part in _PARTS.values() for k, v in get_type_hints(part).items()}
        augment = get_type_hints(AugmentSettings)
        return {**types, "seed": own["seed"], "init_seed": own["init_seed"],
                **{f"augment_{k}": augment[k] for k in _AUGMENT_RECORDED}, "on_the_fly": own["on_the_fly"]}

    def as_dict(self) -> dict:
        """The flat record: every part's fields, the seeds, and the augmentation as ``augment_*`` (``augment_a``
        0: none)."""
        augment = asdict(self.augment) if self.augment is not None else {
            f.name: 0.0 if f.name == "a" else f.default for f in fields(AugmentSettings)}
        return {**{k: v for name in _PARTS for k, v in asdict(getattr(self, name)).items()},
                "seed": self.seed, "init_seed": self.init_seed,
                **{f"augment_{k}": augment[k] for k in _AUGMENT_RECORDED}, "on_the_fly": self.on_the_fly}
