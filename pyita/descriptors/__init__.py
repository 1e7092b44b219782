"""Atomic-environment descriptors (aenet's Chebyshev basis), their neighbour batches and exact Jacobians.

The Jacobians dG/dR (``pyita.descriptors.jacobian``) let force training skip the descriptor's double backward.
"""

from pyita.descriptors.chebyshev import ChebyshevDescriptor, typespin
from pyita.descriptors.featurize import featurize
from pyita.descriptors.neighbors import AtomsBatch, make_batch

__all__ = ["AtomsBatch", "ChebyshevDescriptor", "featurize", "make_batch", "typespin"]
