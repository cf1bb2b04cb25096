"""Market optimizers, in order of increasing complexity, all update rules over one estimator.

`ForwardGradient` draws the vendors and attributes the losses of their paths;
V1, V2, AdaptiveV2 and the torch.optim bridge turn that into a step.
"""

from .protocol import MarketOptimizerProtocol
from .forward_gradient import DIRECTIONS, ForwardGradient
from .base import ALGORITHM_ALIASES, NONFINITE, MarketOptimizer, RateOptimizer, canonical_algorithm
from .v1 import V1
from .v2 import V2
from .adaptive import AdaptiveV2
from .torch_bridge import TorchMarketOptimizer

OPTIMIZERS = {"v1": V1, "v2": V2, "adaptive": AdaptiveV2}  # by their one name; old spellings in ALGORITHM_ALIASES

__all__ = ["ALGORITHM_ALIASES", "DIRECTIONS", "NONFINITE", "OPTIMIZERS", "AdaptiveV2", "ForwardGradient",
           "MarketOptimizer", "MarketOptimizerProtocol", "RateOptimizer", "TorchMarketOptimizer", "V1", "V2",
           "canonical_algorithm"]
