"""``pyita recommend DATA --budget-minutes M --out DIR``: every check first (settings, data, forces, a budget that
holds one round), then the race (``pyita.recommend.race``), the final potential (``pyita.recommend.final``) and
the recommendation (``pyita.recommend.report``), all in a folder this command claims for itself."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

from pyita import __version__
from pyita.errors import InputError, PyitaError
from pyita.io.atomic import atomic_write_text
from pyita.io.sources import NO_FORCES
from pyita.io.locks import exclusive
from pyita.io.records import json_text
from pyita.recommend.race import ROUNDS, available_recipes, check_budget, run_race
from pyita.recommend.rounds import RecommendSettings, round_config

#: What the command writes in its folder; anything else there is not its own.
RECORD = "recommend.json"
LOCK = ".pyita-recommend.lock"
#: Iterations of the probe that sizes round 1 before anything is written.
PROBE_ITERATIONS = 3


def _probe(pool, reference, settings: RecommendSettings) -> float:
    """Seconds of a short energy-only training of one trial's training set: a lower bound of any task's cost."""
    from pyita.backends.embedded import train_and_evaluate

    started = time.perf_counter()
    size = min(len(pool), settings.subset_size or len(pool))
    train_and_evaluate(pool[: max(1, int(size * (1 - settings.test_fraction)))], [], [],
                       {"iterations": PROBE_ITERATIONS}, seed=settings.seed, reference_energies=reference)
    return time.perf_counter() - started


def delta_from_reference(settings: RecommendSettings, say) -> float:
    """δ of the absolute recipes from the Taylor error against ``settings.reference`` (``pyita check``'s study of
    the balanced strategy on 20 seeded parents: the largest tested δ whose 95th-percentile error is ≤ 1 meV/atom)."""
    from pyita.check.check import check
    from pyita.check.settings import CheckSettings

    found = check(settings.data, settings.reference, CheckSettings(strategies=("balanced",), seed=settings.seed),
                  progress=False).recommendation["balanced"]
    if found["delta"] is None:
        raise PyitaError(f"--reference {settings.reference}: {found['note']}; give --delta instead")
    say(f"δ from {settings.reference}: {found['note']}")
    return float(found["delta"])


def _claim(out: Path, record: dict, resume: bool) -> None:
    """Refuse a non-empty ``out`` unless resuming the same recommendation (same settings)."""
    saved = out / RECORD
    if out.exists() and not out.is_dir():
        raise PyitaError(f"{out} exists and is not a folder")
    if out.exists() and any(p.name != LOCK for p in out.iterdir()):
        if not resume:
            raise PyitaError(f"{out} is not empty; pass --resume to continue that recommendation, or choose another "
                             "--out")
        if not saved.is_file():
            raise PyitaError(f"--resume: {out} holds no {RECORD}, so it is not a folder of `pyita recommend`; it was "
                             "left untouched")
        try:
            before = json.loads(saved.read_text())["settings"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PyitaError(f"--resume: {saved} is damaged ({exc}); it was left untouched") from None
        now = json.loads(json_text(record["settings"]))
        if before != now:
            changed = sorted(k for k in now if before.get(k) != now[k])
            raise PyitaError(f"--resume: {out} holds a recommendation with other settings ({', '.join(changed)}); "
                             "give the same ones, or choose another --out")
    elif resume:
        raise PyitaError(f"--resume: {out} holds no recommendation to continue")


def recommend(settings: RecommendSettings, out: str | Path, *, workers: int = 2, scheduler: str | None = None,
              scheduler_file: str | None = None, resume: bool = False, progress: bool = True, say=print) -> dict:
    """Race the recipes on ``settings.data`` and train the chosen one; returns recommendation.json's content."""
    from pyita.experiment.config import ExperimentConfig, parse_config
    from pyita.experiment.tasks import cluster_client
    from pyita.experiment.protocol import load_pool
    from pyita.io.outputs import refuse_overlap
    from pyita.parallel import check_workers
    from pyita.recommend.final import train_final
    from pyita.recommend.report import write_recommendation

    out = Path(out)
    if not settings.data.startswith("sample"):   # recorded absolute: the same data from any folder
        settings = replace(settings, data=os.path.abspath(settings.data))
    check_workers(workers, "--workers")
    cluster = {k: v for k, v in (("scheduler", scheduler), ("scheduler_file", scheduler_file)) if v}
    if len(cluster) > 1:
        raise PyitaError("--scheduler and --scheduler-file both say where the Dask scheduler is; give one of them")
    try:
        pool, reference = load_pool(ExperimentConfig("recommend", settings.data, subset_size=settings.subset_size,
                                                     max_energy=settings.max_energy))
    except InputError as exc:
        if exc.problem != NO_FORCES:
            raise
        raise PyitaError(f"{exc}: every recipe but energy only needs forces, and energy only alone is nothing to "
                         "race (`pyita train` trains it)") from None
    if settings.reference is not None:
        settings = replace(settings, delta=delta_from_reference(settings, say))
    recipes = available_recipes(settings)
    if len(recipes) < 2:
        raise PyitaError("--recipes names no recipe besides energy only: nothing to race")
    refuse_overlap(out, [Path(settings.data)] if Path(settings.data).exists() else [])
    record = {"command": "recommend", "pyita_version": __version__, "settings": settings.as_dict()}
    _claim(out, record, resume)
    first = parse_config(round_config(settings, 1, recipes, workers, cluster), out / ROUNDS / "round-1")
    check_budget(settings, len(recipes), _probe(pool, reference, settings), workers)
    # a scheduler that cannot be reached or workers that cannot be set up: refused before the folder is claimed
    with cluster_client(first) as client:
        out.mkdir(parents=True, exist_ok=True)
        with exclusive(out / LOCK, f"recommendation folder {out}"):
            if not (out / RECORD).exists():
                atomic_write_text(out / RECORD, json_text(record, indent=1))
            race = run_race(settings, out, recipes, workers=workers, cluster=cluster, client=client,
                            progress=progress, say=say)
            chosen = next(r for r in recipes if r.name == race.chosen)
            say(f"chosen: {chosen.name!r} ({race.stopped_because}); training it on all {len(pool)} structures")
            final = train_final(settings, chosen, pool, reference, out,
                                {"recommendation": {"stopped_because": race.stopped_because,
                                                    "rounds": len(race.rounds), "folder": ROUNDS}}, progress=progress)
            return write_recommendation(race, chosen, final, out)
