"""The trainable potential: per-species networks on descriptor features, with aenet-style normalisation."""

from pyita.model.network import SpeciesNetworks, hidden_layers
from pyita.model.load import load_potential, resolve_device
from pyita.model.potential import MODEL_FORMAT, Potential

__all__ = ["MODEL_FORMAT", "Potential", "SpeciesNetworks", "load_potential", "hidden_layers", "resolve_device"]
