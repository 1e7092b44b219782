"""Which recipe to use on one's own data (``pyita recommend``): race the recipes over rounds of paired trials
(the statistics: ``racing``, ``results``), then train the chosen one.

    from pyita.recommend import RecommendSettings, recommend
    result = recommend(RecommendSettings("sample:tio2-md", budget_minutes=10), "recommendation")
    result["recipe"], result["decision"]

``recommend`` is imported on first use, so that the command line starts without loading torch.
"""

from pyita.recommend.racing import ALPHA, MARGIN, race_round, round_alpha, round_decisions
from pyita.recommend.recipes import Recipe, candidate_recipes
from pyita.recommend.results import Comparison, Elimination, RaceStatement, RoundResult, final_statement
from pyita.recommend.rounds import RecommendSettings

__all__ = ["ALPHA", "MARGIN", "Comparison", "Elimination", "RaceStatement", "Recipe", "RecommendSettings",
           "RoundResult", "candidate_recipes", "final_statement", "race_round", "recommend", "round_alpha",
           "round_decisions"]


def __getattr__(name: str):
    if name == "recommend":
        from pyita.recommend.run import recommend

        return recommend
    raise AttributeError(f"module 'pyita.recommend' has no attribute {name!r}")
