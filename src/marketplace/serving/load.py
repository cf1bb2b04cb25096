"""Where a server's market comes from: a `marketplace train` checkpoint, or a user's own market."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from ..continual.pretrain import widen_head
from ..machine import resolve_device
from ..market import Market
from ..training import load_checkpoint, market_from_checkpoint
from .config import ServerConfig
from .engine import Engine, file_digest

MNIST_SHAPE = (1, 28, 28)


def engine_from_checkpoint(path: str | Path, config: ServerConfig) -> Engine:
    """The beautiful-MNIST market of a `marketplace train` checkpoint (head widened to `config.classes`)."""
    device = resolve_device(config.device)
    ckpt = load_checkpoint(path)
    market = market_from_checkpoint(ckpt, str(path), device)
    old = market(torch.zeros(1, *MNIST_SHAPE, device=device)).shape[-1]
    classes = config.classes or old
    market = widen_head(market, classes)
    saved = ckpt.meta.get("config", {})
    model = {"preset": "beautiful_mnist", "depth": market.depth, "classes": classes,
             "norm": saved.get("norm", "instance"), "batch": saved.get("batch", 128)}
    source = hashlib.sha256(f"{file_digest(path)}/{classes}".encode()).hexdigest()
    return Engine(market, config, source, MNIST_SHAPE, model)


def engine_from_market(market: Market, config: ServerConfig, input_shape: tuple[int, ...],
                       model: dict[str, Any] | None = None) -> Engine:
    """A user's market; its clients build the specs themselves (`PrivateClient(specs=...)`)."""
    h = hashlib.sha256(repr(market.vendor_counts).encode())
    for name, value in sorted(market.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return Engine(market, config, h.hexdigest(), input_shape, model)


def specs_of(model: dict[str, Any]) -> list[torch.nn.Module]:
    """The specs a market description names (what a client rebuilds before loading the weights)."""
    from ..errors import MarketplaceError
    from ..models import beautiful_mnist
    from ..norms import norm_layer

    if not model or model.get("preset") != "beautiful_mnist":
        raise MarketplaceError(f"the server's market is not a preset this library can rebuild ({model!r}): "
                               "pass specs= to the client")
    return beautiful_mnist(model["depth"], model["classes"], norm_layer(model["norm"], model["batch"]))
