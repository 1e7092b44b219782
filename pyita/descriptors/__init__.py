"""Atomic-environment descriptors (aenet's Chebyshev basis), the neighbour batches they read and their exact
Jacobians dG/dR (``pyita.descriptors.jacobian``, for force training)."""

from pyita.descriptors.chebyshev import ChebyshevDescriptor, typespin
from pyita.descriptors.featurize import featurize
from pyita.descriptors.neighbors import AtomsBatch, make_batch

__all__ = ["AtomsBatch", "ChebyshevDescriptor", "featurize", "make_batch", "typespin"]
