"""What decides an aenet run besides the data, and the fixed names of a run folder's files."""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field

from pyita.architecture import ChebyshevSetup, parse_hidden
from pyita.choices import AENET_DESCRIPTORS
from pyita.errors import PyitaError
from pyita.io.aenet_inputs import BehlerSetup, format_method_line
from pyita.reference import check_max_energy, check_reference_energies


#: File names inside a run folder. None of the single-token ones contains '/', so nothing needs quoting.
TRAINSET = "aenet.train"
RECORD = "pyita-aenet.json"
RUN_STATE = "pyita-aenet-run.json"
RUN_LOCK = ".pyita-aenet-run.lock"   # held by a running `pyita aenet run`
STRUCTURES_CSV = "structures.csv"
TEST_PARENTS = "test-parents.txt"
INITIAL_DIR = "initial-networks"
PROGRAMS = {"generate": "generate.x", "train": "train.x", "predict": "predict.x"}
ENV_VARS = {"generate": "AENET_GENERATE", "train": "AENET_TRAIN", "predict": "AENET_PREDICT"}
INPUTS = {"generate": "generate.in", "train": "train.in", "predict": "predict.in"}
LOGS = {"generate": "generate.out", "train": "train.out", "predict": "predict.out"}
RESULT_FILES = ("errors-energy.csv", "errors-force.csv", "results.json")
#: Names aenet (or a run of ``pyita aenet run``) may leave in a run folder; used to refuse a folder that
#: holds output PyITA did not write.
AENET_OUTPUT_PATTERNS = (re.escape(TRAINSET) + r"(\.forces)?", r".+\.nn(-\d+)?", r"energies\.(train|test)\.\d+",
                          r"train\.rngstate", r"(TRAIN|TEST)\.\d+", r"(generate|train|predict)\.(time|debug\d*)",
                          r"(generate|train|predict)\.out", r"errors-(energy|force)\.csv", r"results\.json")
XSF_NAME = re.compile(r"[^A-Za-z0-9._+-]+")



@dataclass
class AenetSettings:
    """Everything that decides an aenet run besides the data.

    ``hidden`` as ``"15:tanh,15:tanh"`` or a list; ``method`` one of bfgs, lm, adam, online_sd, ekf with
    ``method_params`` (aenet's names, e.g. ``{"mu": 0.001, "samplesize": 100}`` for adam); ``max_energy``
    is aenet's MAXENERGY in eV/atom above the atomic reference energies (None: keep all);
    ``reference_energies`` maps species to eV (missing ones are fitted); ``initial_networks`` is a folder
    with one ``<Sym>.nn`` / ``<Sym>.*.nn`` per species that train.x starts from (same initial weights
    across conditions; a finished run folder works).
    """

    hidden: list = field(default_factory=lambda: [(15, "tanh"), (15, "tanh")])
    iterations: int = 500
    method: str = "bfgs"
    method_params: dict = field(default_factory=dict)
    max_energy: float | None = None
    descriptor: str = "chebyshev"
    chebyshev: ChebyshevSetup = field(default_factory=ChebyshevSetup)
    behler: BehlerSetup = field(default_factory=BehlerSetup)
    forces: bool = True
    sampling: str | None = None
    reference_energies: dict | None = None
    initial_networks: str | None = None

    def __post_init__(self) -> None:
        try:
            self.hidden = parse_hidden(self.hidden)
            format_method_line(self.method, self.method_params)
        except ValueError as exc:
            raise PyitaError(str(exc)) from None
        self.method = self.method.lower()
        if self.descriptor not in AENET_DESCRIPTORS:
            raise PyitaError(f"descriptor must be {' or '.join(AENET_DESCRIPTORS)}, not {self.descriptor!r}")
        if int(self.iterations) != self.iterations or self.iterations < 0:
            raise PyitaError(f"iterations must be an integer ≥ 0, got {self.iterations}")
        self.max_energy = check_max_energy(self.max_energy)
        self.reference_energies = check_reference_energies(self.reference_energies)
        if isinstance(self.chebyshev, dict):
            self.chebyshev = ChebyshevSetup.from_dict(self.chebyshev)
        if isinstance(self.behler, dict):
            self.behler = BehlerSetup(**self.behler)

    @property
    def setup(self):
        return self.chebyshev if self.descriptor == "chebyshev" else self.behler

    _ALIASES = {"epochs": "iterations", "max_iterations": "iterations", "hidden_layers": "hidden",
                "architecture": "hidden", "maxenergy": "max_energy", "types": "reference_energies"}

    @classmethod
    def from_dict(cls, settings: dict | AenetSettings | None) -> AenetSettings:
        """Build from an experiment's trainer table; keys aenet cannot honour raise or warn."""
        if isinstance(settings, AenetSettings):
            return settings
        known = set(cls.__dataclass_fields__)
        settings = dict(settings or {})
        activation = settings.pop("activation", None)
        kwargs, ignored = {}, []
        for key, value in settings.items():
            key = cls._ALIASES.get(key, key)
            if key == "method" and str(value).lower() == "lbfgs":
                value = "bfgs"   # aenet's bfgs is limited-memory BFGS (L-BFGS-B): the embedded trainer's lbfgs
            if key in known:
                kwargs[key] = value
            elif key in ("force_weight", "parent_child_weight"):
                if value:
                    raise PyitaError(f"aenet's Fortran train.x fits energies only: {key} = {value} needs the "
                                     "embedded trainer (backend = \"embedded\")")
            else:
                ignored.append(key)
        if activation is not None:
            hidden = kwargs.get("hidden", [15, 15])
            if not isinstance(hidden, str):
                kwargs["hidden"] = [(n, activation) if isinstance(n, int) else n for n in hidden]
        if ignored:
            warnings.warn(f"aenet backend ignores trainer settings it has no equivalent for: {sorted(ignored)}",
                          stacklevel=2)
        return cls(**kwargs)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("chebyshev")
        d.pop("behler")
        d["descriptor_settings"] = self.setup.as_dict()
        d["hidden"] = [list(layer) for layer in self.hidden]
        return d
