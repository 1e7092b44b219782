"""Which recipe to use on one's own data (``pyita recommend``): race the recipes over rounds of paired trials,
then train the chosen one.

    from pyita.recommend import RecommendSettings, recommend
    result = recommend(RecommendSettings("sample:tio2-md", budget_minutes=10), "recommendation")
    result["recipe"], result["decision"]

``recommend`` is imported on first use, so that the command line starts without loading torch.
"""

from pyita.recommend.recipes import Recipe, candidate_recipes
from pyita.recommend.rounds import RecommendSettings

__all__ = ["Recipe", "RecommendSettings", "candidate_recipes", "recommend"]


def __getattr__(name: str):
    if name == "recommend":
        from pyita.recommend.run import recommend

        return recommend
    raise AttributeError(f"module 'pyita.recommend' has no attribute {name!r}")
