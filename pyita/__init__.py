"""PyITA: Taylor-expansion data augmentation for neural-network interatomic potentials."""

__version__ = "0.1.0"
