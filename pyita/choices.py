"""The names of every choice a setting offers, in one place: the settings check values against them, and the
command line shows and completes them (``pyita train --help`` lists ``lbfgs|adam``).

Torch-free and importing nothing of PyITA, so the command line can build its options without loading the
modules that implement the choices. A module that maps a name to its implementation (``WEIGHT_BOUNDS``,
``METHOD_PARAMS``…) keys it by these names; tests/test_cli_conventions.py holds the two together."""

from __future__ import annotations

from importlib import resources

#: Training methods of the embedded trainer: full-batch L-BFGS (aenet's bfgs) or mini-batch Adam.
METHODS = ("lbfgs", "adam")
#: What a force fraction is a share of: whole structures, or the atoms of every structure.
FORCE_FRACTION_OF = ("structures", "atoms")
#: Scaling of the network output: aenet's midpoint and half-range, or mean and standard deviation.
ENERGY_NORMALIZATIONS = ("range", "std")
#: Initial weight ranges: aenet's train.x's, or PyTorch's nn.Linear default.
WEIGHT_INITS = ("aenet", "pytorch")
#: Devices by kind (torch also takes an index, cuda:1); auto is CUDA when present.
DEVICES = ("auto", "cpu", "cuda")
#: How derived structures are made from a parent (pyita.augment.strategies).
STRATEGIES = ("sequential", "balanced", "random-all")
#: Output formats of ``pyita augment``: aenet XSF files with a generate.in, or one extended-XYZ file.
FORMATS = ("xsf", "extxyz")
#: Trainers of an experiment: PyITA's own (PyTorch) or aenet's train.x.
BACKENDS = ("embedded", "aenet")
#: aenet descriptors ``pyita aenet prepare`` writes: Chebyshev (its TiO2 example) or Behler's symmetry functions.
AENET_DESCRIPTORS = ("chebyshev", "behler")
#: MD ensembles of ``pyita md``: constant energy (velocity Verlet) or constant temperature (Langevin, BAOAB).
ENSEMBLES = ("nve", "nvt")
#: What ``pyita recommend`` decides on: test energy or force MAE, both (their geometric mean), or MD stability.
OBJECTIVES = ("energy", "forces", "both", "md")
#: Training methods of aenet's train.x (input.f90).
AENET_METHODS = ("bfgs", "lm", "online_sd", "adam", "ekf")

_PRESET_FOLDER = resources.files("pyita") / "experiment" / "presets"
#: The bundled experiment presets: the TOML files of pyita/experiment/presets, the quick one first.
PRESETS = tuple(sorted((p.name.removesuffix(".toml") for p in _PRESET_FOLDER.iterdir() if p.name.endswith(".toml")),
                       key=lambda name: (name != "quick", name)))
