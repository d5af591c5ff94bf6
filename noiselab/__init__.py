"""noiselab: noise-aware training with closed-form Gaussian noise propagation, and the tools to test it.

The core (this package's top level) is PyTorch only: tensors in, tensors out.
"""

from .loss import LearnableSigma, bimodel_term, stochastic_loss, stochastic_loss_terms
from .moments import avgpool_moments, max2_moments, maxpool_moments, relu_moments
from .propagate import CorrelatedGaussian, Gaussian, LayerMoments, monte_carlo, propagate, sequential_layers

__version__ = "0.1.0"

__all__ = [
    "CorrelatedGaussian",
    "Gaussian",
    "LayerMoments",
    "LearnableSigma",
    "avgpool_moments",
    "bimodel_term",
    "max2_moments",
    "maxpool_moments",
    "monte_carlo",
    "propagate",
    "relu_moments",
    "sequential_layers",
    "stochastic_loss",
    "stochastic_loss_terms",
]
