"""The embedded trainer: data preparation, feature cache, loss terms and the loop.

Most callers want :func:`pyita.train.fit.train` (structures in, potential out) or
``pyita train`` (:func:`pyita.train.run.train_from_data`).
"""

from pyita.train.data import FeatureSet, evaluate, filter_max_energy, split_by_parent
from pyita.train.losses import EnergyLoss, ForceLoss
from pyita.train.trainer import Trainer
from pyita.train.settings import TrainSettings

__all__ = ["EnergyLoss", "FeatureSet", "ForceLoss", "TrainSettings", "Trainer", "evaluate", "filter_max_energy",
           "split_by_parent"]
