"""Marketplace: train neural networks with forward passes only.

A `Market` splits a model into specs, each offered by several vendors whose
weights differ by seeded perturbations; every path through the vendors is
evaluated in one batched forward pass, and an optimizer (`V1`, `V2`,
`AdaptiveV2`, or any torch.optim optimizer through `ForwardGradient`) turns
the losses of the paths into an update:

    market = Market(build_model("beautiful-mnist", 3, (1, 28, 28), 10), [4, 4, 4])
    opt = V2(market, lr=0.15)
    out = market.evaluate(x, opt.vendors)
    opt.step(path_losses(out.products, y), out.paths)

What is exported here is the surface: the market, the optimizers, the models,
the vendors, the pure functions of the step and the error base. Everything
else is imported from its module (`marketplace.training`, `marketplace.data`, ...).
"""

from .errors import MarketError, MarketplaceError, NonFiniteLossError
from .functional import (
    best_path,
    centered_rank_attribution,
    path_losses,
    reconcile,
    standardized_attribution,
    unit_directions,
    vendor_attribution,
)
from .market import Market, MarketOutput
from .models import beautiful_mnist, build_model, mlp
from .optim import V1, V2, AdaptiveV2, ForwardGradient, MarketOptimizer
from .vendors import SeededVendors, Vendors, draw_vendors

__version__ = "0.2.0"

__all__ = [
    # the market and its output
    "Market", "MarketOutput",
    # optimizers: the market's own update rules, and the estimate for any torch.optim optimizer
    "MarketOptimizer", "V1", "V2", "AdaptiveV2", "ForwardGradient",
    # models
    "build_model", "beautiful_mnist", "mlp",
    # vendors
    "Vendors", "SeededVendors", "draw_vendors",
    # the pure functions of a step
    "path_losses", "standardized_attribution", "centered_rank_attribution", "vendor_attribution", "reconcile",
    "unit_directions", "best_path",
    # errors: catch MarketplaceError for all of them (marketplace.errors has the rest)
    "MarketplaceError", "MarketError", "NonFiniteLossError",
]
