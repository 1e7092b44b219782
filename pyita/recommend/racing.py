"""TEMPORARY scaffold (replaced by the helper's module)."""
from __future__ import annotations
from dataclasses import dataclass, field
import numpy as np
from scipy import stats


@dataclass
class RoundDecision:
    status: str
    best: str
    survivors: list
    outcomes: dict = field(default_factory=dict)
    statements: list = field(default_factory=list)

    def to_dict(self):
        return dict(self.__dict__)


def decide_round(values, lower_is_better=True, log_scale=True, round_index=1, rounds=5, alpha=0.05):
    names = list(values)
    x = {n: (np.log(values[n]) if log_scale else np.asarray(values[n], float)) * (1 if lower_is_better else -1)
         for n in names}
    best = min(names, key=lambda n: x[n].mean())
    level = alpha / rounds
    ps = {n: stats.ttest_rel(x[n], x[best]).pvalue for n in names if n != best}
    order = sorted(ps, key=ps.get)
    dropped = []
    for i, n in enumerate(order):
        if ps[n] <= level / (len(order) - i) and x[n].mean() > x[best].mean():
            dropped.append(n)
        else:
            break
    survivors = [n for n in names if n not in dropped]
    status = "best" if len(survivors) == 1 else "continue"
    return RoundDecision(status, best, survivors, {n: "dropped" for n in dropped})
