"""Marketplace: train neural networks with forward passes only.

A `Market` splits a model into specs, each offered by several vendors whose
weights differ by seeded perturbations; every path through the vendors is
evaluated in one batched forward pass, and an optimizer (`V1`, `V2`,
`AdaptiveV2`) turns the losses of the paths into an update.
"""

from .errors import MarketplaceError
from .functional import (
    NonFiniteLossError,
    best_path,
    path_losses,
    reconcile,
    standardized_attribution,
    unit_directions,
    vendor_attribution,
)
from .market import Market, MarketError, MarketOutput
from .models import beautiful_mnist, mlp
from .optim import V1, V2, AdaptiveV2, ForwardGradient, MarketOptimizer, TorchMarketOptimizer
from .vendors import SeededVendors, draw_vendors

__version__ = "0.2.0"

__all__ = [
    "AdaptiveV2", "ForwardGradient", "Market", "MarketError", "MarketOptimizer", "MarketOutput", "MarketplaceError",
    "NonFiniteLossError", "SeededVendors", "TorchMarketOptimizer", "V1", "V2", "beautiful_mnist", "best_path", "draw_vendors",
    "mlp", "path_losses", "reconcile", "standardized_attribution", "unit_directions", "vendor_attribution",
]
