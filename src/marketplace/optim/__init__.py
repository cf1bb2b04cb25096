"""Market optimizers, in order of increasing complexity."""

from .base import MarketOptimizer
from .v1 import V1
from .v2 import V2
from .adaptive import AdaptiveV2
from .estimator import DIRECTIONS, ForwardGradient
from .torch_step import TorchMarketOptimizer

OPTIMIZERS = {"v1": V1, "v2": V2, "adaptive": AdaptiveV2}

__all__ = ["DIRECTIONS", "MarketOptimizer", "V1", "V2", "AdaptiveV2", "ForwardGradient", "TorchMarketOptimizer", "OPTIMIZERS"]
