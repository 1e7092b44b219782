"""Recommending a training recipe by racing recipes over rounds of paired trials (issue 27): the statistics."""

from pyita.recommend.racing import ALPHA, MARGIN, race_round, round_alpha, round_decisions
from pyita.recommend.results import Comparison, Elimination, RaceStatement, RoundResult, final_statement

__all__ = ["ALPHA", "MARGIN", "Comparison", "Elimination", "RaceStatement", "RoundResult", "final_statement",
           "race_round", "round_alpha", "round_decisions"]
