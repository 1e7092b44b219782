"""The embedded trainer: data preparation, feature cache, loss terms and the loop.

Most callers want :func:`train` (structures in, potential out, ``fit.py``) or :func:`run_train` (``pyita train``:
a data file in, a model file out, ``run.py``).
"""

from pyita.train.data import FeatureSet, evaluate, filter_max_energy, split_by_parent
from pyita.train.fit import TrainResult, train
from pyita.train.losses import EnergyLoss, ForceLoss
from pyita.train.run import run_train
from pyita.train.settings import LossSettings, ModelSettings, OptimizerSettings, RuntimeSettings, TrainSettings
from pyita.train.trainer import Trainer

__all__ = ["EnergyLoss", "FeatureSet", "ForceLoss", "LossSettings", "ModelSettings", "OptimizerSettings",
           "RuntimeSettings", "TrainResult", "TrainSettings", "Trainer", "evaluate", "filter_max_energy", "run_train",
           "split_by_parent", "train"]
