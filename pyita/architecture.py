"""The model's architecture: the descriptor's settings and the hidden layers, as every layer reads them.

Below ``io`` (which writes them into aenet's files), ``descriptors`` and ``model`` (which build them), so
that one home serves the command line, the embedded trainer and the aenet backend alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

from pyita.errors import SettingError

__all__ = ["ACTIVATIONS", "ChebyshevSetup", "format_hidden", "parse_hidden"]

#: Every activation aenet knows (the embedded networks have all but ``twist``: ``pyita.model.network``).
ACTIVATIONS = ("linear", "tanh", "sigmoid", "mtanh", "twist")
_ACTIVATION_ALIASES = {"l": "linear", "t": "tanh", "s": "sigmoid", "m": "mtanh", "tw": "twist"}


def parse_hidden(spec, activations: Sequence[str] = ACTIVATIONS, allow_empty: bool = False) -> list[tuple[int, str]]:
    """Hidden layers from ``"15:tanh,15:tanh"``, ``"15:tanh 15:tanh"``, ``[15, 15]`` (tanh) or pairs; aenet's
    one-letter activations (t, s, l, m) too. ``activations``: those the caller's networks have (aenet's by
    default); ``allow_empty``: an empty spec means no hidden layer (aenet needs one)."""
    if isinstance(spec, str):
        parts = spec.split(",") if spec.strip() else []
        if any(not part.strip() for part in parts):   # "5:tanh,,5:tanh" is a typo, not two layers
            raise SettingError(f"hidden layers {spec!r}: an empty entry between commas; write e.g. 15:tanh,15:tanh")
        items = [s for part in parts for s in part.split()]
    else:
        items = list(spec)
    layers = []
    for item in items:
        if isinstance(item, (tuple, list)):
            nodes, act = item
        elif isinstance(item, int):
            nodes, act = item, "tanh"
        else:
            text = str(item)
            nodes, _, act = text.partition(":")
            act = act or "tanh"
        try:
            nodes = int(nodes)
        except ValueError:
            raise SettingError(f"hidden layer {item!r}: width must be a positive integer (e.g. 15:tanh)") from None
        act = _ACTIVATION_ALIASES.get(str(act).lower(), str(act).lower())
        if act not in activations:
            raise SettingError(f"hidden layer {item!r}: unknown activation; choose {', '.join(activations)}")
        if nodes < 1:
            raise SettingError(f"hidden layer {item!r}: width must be a positive integer (e.g. 15:tanh)")
        layers.append((nodes, act))
    if not layers and not allow_empty:
        raise SettingError("at least one hidden layer is needed")
    return layers


def format_hidden(layers: Sequence[tuple[int, str]]) -> str:
    """``[(15, "tanh"), (15, "tanh")]`` → ``"15:tanh,15:tanh"``, the text ``parse_hidden`` reads."""
    return ",".join(f"{width}:{activation}" for width, activation in layers)


@dataclass
class ChebyshevSetup:
    """aenet's Chebyshev descriptor (Artrith, Urban & Ceder, PRB 96, 014112 (2017)): the one home of its
    settings and their defaults (aenet's TiO2 example), for the embedded descriptor, the .stp writer and
    the command line. Cutoffs in Å; ``rmin`` is generate.x's RMIN (aenet only)."""

    radial_rc: float = 8.0
    radial_n: int = 16
    angular_rc: float = 6.5
    angular_n: int = 4
    rmin: float = 0.55

    def __post_init__(self) -> None:
        if not (self.radial_rc > 0 and self.angular_rc > 0):
            raise ValueError("Chebyshev cutoffs must be > 0 Å")
        if self.radial_n < 0 or self.angular_n < 0 or int(self.radial_n) != self.radial_n \
                or int(self.angular_n) != self.angular_n:
            raise ValueError("Chebyshev orders must be integers ≥ 0")
        if not 0 < self.rmin < min(self.radial_rc, self.angular_rc):
            raise ValueError("RMIN must be > 0 and below the cutoffs")

    kind = "chebyshev"
    #: aenet's own spelling of the four parameters (the .stp line, and PyITA's records of aenet runs).
    AENET_NAMES = {"radial_rc": "radial_Rc", "radial_n": "radial_N", "angular_rc": "angular_Rc",
                   "angular_n": "angular_N"}

    @classmethod
    def from_dict(cls, values: dict) -> ChebyshevSetup:
        """From settings in either spelling (``radial_rc`` or aenet's ``radial_Rc``)."""
        plain = {v: k for k, v in cls.AENET_NAMES.items()}
        return cls(**{plain.get(k, k): v for k, v in values.items() if k != "type"})

    def descriptor_settings(self) -> dict:
        """The keyword arguments of ``pyita.descriptors.ChebyshevDescriptor`` (all but ``rmin``)."""
        return {name: getattr(self, name) for name in self.AENET_NAMES}

    def n_features(self, n_env: int) -> int:
        n = int(self.radial_n) + int(self.angular_n) + 2
        return 2 * n if n_env > 1 else n

    def as_dict(self) -> dict:
        return {"type": "chebyshev", **{self.AENET_NAMES[k]: v for k, v in self.descriptor_settings().items()},
                "rmin": self.rmin}
