"""The potential a recommendation ends with: the chosen recipe trained on all the data (no test split: the rounds
measured it), its aenet networks, and — for absolute augmentation, which aenet can train — the augmented set."""

from __future__ import annotations

from pathlib import Path

from pyita.recommend.recipes import Recipe
from pyita.recommend.rounds import RecommendSettings

MODEL = "model.pt"
NETWORKS = "nn"
AUGMENTED = "augmented"


def final_trainer(settings: RecommendSettings, recipe: Recipe) -> dict:
    """The trainer table of the final training: the rounds' trainer at the full length, and the recipe's own."""
    table = {"iterations": settings.iterations, **recipe.trainer}
    if settings.max_minutes:
        table["max_minutes"] = settings.max_minutes
    return table


def train_final(settings: RecommendSettings, recipe: Recipe, pool, reference: dict[str, float], out: Path,
                metadata: dict, progress: bool = True) -> dict:
    """Train ``recipe`` on every structure of ``pool`` into ``out/model.pt``, export ``out/nn`` and, when aenet can
    train the recipe, ``out/augmented``; returns what was written (paths relative to ``out``)."""
    from pyita.backends.aenet import run_aenet_export
    from pyita.backends.embedded import train_settings
    from pyita.experiment.config import Condition
    from pyita.experiment.protocol import derived_for
    from pyita.train.fit import train

    seed = settings.seed
    derived = derived_for(Condition(recipe.name, recipe.augment, recipe.trainer), list(pool), seed)
    trained, _ = train_settings(final_trainer(settings, recipe), recipe.augment, seed)
    result = train(list(pool) + derived, None, trained, reference_energies=reference, progress=progress)
    potential = result.potential
    potential.metadata.update({"recipe": recipe.name, "recipe_description": recipe.description,
                               "data": settings.data, **metadata})
    potential.save(out / MODEL)
    written = {"model": MODEL, "networks": NETWORKS}
    run_aenet_export(out / MODEL, out / NETWORKS, overwrite=(out / NETWORKS).exists())
    if recipe.augment and not recipe.augment.get("parent_child_weight") and not recipe.trainer:
        from pyita.augment.run import run_augment
        from pyita.augment.settings import AugmentSettings

        run_augment(settings.data, out / AUGMENTED, AugmentSettings.from_table(recipe.augment, seed),
                    overwrite=(out / AUGMENTED).exists(), progress=progress)
        written["augmented"] = AUGMENTED
    return {**written, "epochs": len(result.history), "train_seconds": round(result.seconds, 2),
            "structures": len(pool), "derived": len(derived)}
