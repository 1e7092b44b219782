"""Experiments: does augmentation help, and how much? Conditions × seeded trials, trained by a backend,
judged by paired statistics over trials (``pyita experiment``: :func:`run_experiment`)."""

from pyita.experiment.config import ExperimentConfig, parse_config
from pyita.experiment.runner import run_experiment
from pyita.experiment.tasks import UnfinishedExperiment

__all__ = ["ExperimentConfig", "UnfinishedExperiment", "parse_config", "run_experiment"]
