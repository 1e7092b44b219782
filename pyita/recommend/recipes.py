"""The recipes ``pyita recommend`` races: named ways to use the forces a data set has, each one an experiment
condition (augmentation and trainer settings over the experiment's trainer), with what it needs and why it is a
candidate. The numbers are those of the README's findings: a = 4 derived structures per parent, δ = 0.03 Å for
absolute labels (0.01 Å for the parent–child loss, whose derived energies are not fitted), force weight 0.1."""

from __future__ import annotations

from dataclasses import dataclass, field

#: The force-loss weight of every force recipe (the README's findings and the bundled presets).
FORCE_WEIGHT = 0.1


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    augment: dict | None = None
    trainer: dict = field(default_factory=dict)
    #: Needs forces in the data (all recipes but energy only do).
    needs_forces: bool = True

    def condition(self) -> dict:
        """The recipe as an experiment's ``[[condition]]`` table."""
        table: dict = {"name": self.name}
        if self.augment is not None:
            table["augment"] = dict(self.augment)
        if self.trainer:
            table["trainer"] = dict(self.trainer)
        return table


def _absolute(delta: float) -> dict:
    return {"strategy": "balanced", "a": 4, "delta": delta}


def _forces(fraction: float, of: str = "structures") -> dict:
    table = {"force_weight": FORCE_WEIGHT}
    if fraction < 1:
        table["force_fraction"] = fraction
    if of != "structures":
        table["force_fraction_of"] = of
    return table


def candidate_recipes(delta: float = 0.03) -> list[Recipe]:
    """Every candidate, energy only first (the reference the others must beat); ``delta``: the absolute
    augmentation's displacement (Å), e.g. from a Taylor-error estimate against a reference calculator."""
    return [
        Recipe("energy only", "the DFT energies alone: what training without forces gives", needs_forces=False),
        Recipe(f"absolute a=4 δ={delta:g}",
               "4 derived structures per parent (one atom moved ±δ), labelled E − F·D and fitted as energies",
               augment=_absolute(delta)),
        Recipe("parent-child w=1", "4 derived structures per parent whose energy differences to their parent "
               "(−F·D) are fitted, not their absolute energies; loss weight 1",
               augment={**_absolute(0.01), "weight": 0.0, "parent_child_weight": 1.0}),
        Recipe("parent-child w=10", "the parent–child loss with weight 10",
               augment={**_absolute(0.01), "weight": 0.0, "parent_child_weight": 10.0}),
        Recipe("forces f=0.1", "direct force training on 10 % of the structures (seeded choice)",
               trainer=_forces(0.1)),
        Recipe("forces atoms f=0.1", "direct force training on 10 % of the atoms of every structure",
               trainer=_forces(0.1, "atoms")),
        Recipe("forces f=0.2", "direct force training on 20 % of the structures", trainer=_forces(0.2)),
        Recipe("forces", "direct force training on every structure", trainer=_forces(1.0)),
        Recipe(f"forces f=0.2 + absolute δ={delta:g}", "both: 20 % force training and absolute augmentation",
               augment=_absolute(delta), trainer=_forces(0.2)),
    ]
