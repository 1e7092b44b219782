"""Per-species feed-forward networks: one small network per element, as in aenet and Behler–Parrinello.

The architecture is written as aenet's NETWORKS line, e.g. ``"15:tanh,15:tanh"`` (commas or spaces
between layers); the output layer (one linear unit) is implicit.
"""

from __future__ import annotations

import torch
from torch import nn

from pyita.architecture import format_hidden, parse_hidden


class ScaledTanh(nn.Module):
    """aenet's ``mtanh``: 1.7159·tanh(2x/3) (LeCun's choice, unit variance for unit-variance inputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "linear": nn.Identity, "mtanh": ScaledTanh}


def hidden_layers(spec) -> list[tuple[int, str]]:
    """``"15:tanh,15:tanh"`` → ``[(15, "tanh"), (15, "tanh")]`` with aenet's notation (one parser:
    ``pyita.architecture.parse_hidden``), for the activations these networks have; an empty string means
    no hidden layer."""
    return parse_hidden(spec, activations=tuple(ACTIVATIONS), allow_empty=True)


#: Initial weight ranges by name (pyita.choices.WEIGHT_INITS): uniform in ±bound(fan_in), for weights and biases alike.
WEIGHT_BOUNDS = {
    # aenet's (feedforward.f90, ff_random_init_weights): standard deviation 1/√(fan_in + 1), the bias
    # counted as one more input. About √3 × PyTorch's, so tanh layers start in their non-linear range.
    "aenet": lambda fan_in: (3.0 / (fan_in + 1)) ** 0.5,
    # PyTorch's nn.Linear default: standard deviation 1/√(3·fan_in).
    "pytorch": lambda fan_in: fan_in ** -0.5,
}


def atomic_network(n_inputs: int, layers: list[tuple[int, str]], generator: torch.Generator,
                   weight_init: str = "aenet") -> nn.Sequential:
    """One species' network, float64, initialised from ``generator`` so weights depend only on the seed.

    Weights and biases are uniform in ±bound (``WEIGHT_BOUNDS[weight_init]``), drawn from an explicit generator.
    """
    modules: list[nn.Module] = []
    width_in = n_inputs
    for width, activation in layers + [(1, "linear")]:
        linear = nn.Linear(width_in, width, dtype=torch.float64)
        bound = WEIGHT_BOUNDS[weight_init](width_in)
        with torch.no_grad():
            linear.weight.copy_(torch.rand(linear.weight.shape, generator=generator, dtype=torch.float64)
                                * 2 * bound - bound)
            linear.bias.copy_(torch.rand(linear.bias.shape, generator=generator, dtype=torch.float64)
                              * 2 * bound - bound)
        modules += [linear, ACTIVATIONS[activation]()]
        width_in = width
    return nn.Sequential(*modules[:-1])  # the output unit is linear: drop its Identity


class SpeciesNetworks(nn.Module):
    """One network per species; maps normalised features of atoms, grouped by species, to atomic outputs."""

    def __init__(self, n_species: int, n_inputs: int, hidden: str = "15:tanh,15:tanh", seed: int = 0,
                 weight_init: str = "aenet"):
        super().__init__()
        self.layers = hidden_layers(hidden)
        generator = torch.Generator().manual_seed(seed)
        self.nets = nn.ModuleList(atomic_network(n_inputs, self.layers, generator, weight_init)
                                  for _ in range(n_species))

    @property
    def hidden(self) -> str:
        return format_hidden(self.layers)

    def forward(self, features: torch.Tensor, species_index: torch.Tensor) -> torch.Tensor:
        """Outputs (M,) for features (M, F) of atoms of any species mix (split, evaluated, reassembled)."""
        out = features.new_empty(features.shape[0])
        for k, net in enumerate(self.nets):
            rows = torch.nonzero(species_index == k).squeeze(1)
            if len(rows):
                out[rows] = net(features[rows]).squeeze(1)
        return out
