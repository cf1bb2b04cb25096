"""Where a server's market comes from, and how a client rebuilds it.

A `marketplace train` checkpoint records its model (the preset or the
user's factory, the split, the input shape and classes; see
`training.model_record`). The server rebuilds the market from that record
and hands the same record to its clients (`/v1/market`), so a privacy
client can build the same specs itself, whatever the model and the data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import torch

from ..continual.pretrain import widen_head
from ..data import MEAN, STD, cifar
from ..errors import MarketplaceError
from ..machine import resolve_device
from ..market import Market
from ..training import Checkpoint, load_checkpoint, market_from_checkpoint
from .config import ServerConfig
from .engine import Engine, file_digest

# What a checkpoint without a model record holds (those written before records existed).
DEFAULT_RECORD = {"source": "beautiful-mnist", "split": None, "input_shape": [1, 28, 28], "classes": 10}

Pixels = tuple[float | Sequence[float], float | Sequence[float]]  # (mean, std) of pixels / 255


def model_of(ckpt: Checkpoint) -> dict[str, Any]:
    """The checkpoint's model record, completed with what rebuilding it needs (norm, batch)."""
    saved = ckpt.meta.get("config", {})
    record = {**DEFAULT_RECORD, "source": saved.get("model", DEFAULT_RECORD["source"]), "split": saved.get("split"),
              "norm": saved.get("norm", "instance"), "batch": saved.get("batch", 128)}
    record.update(ckpt.meta.get("model") or {})  # as `market_from_checkpoint` reads it
    record["input_shape"] = [int(v) for v in record["input_shape"]]
    return record


def pixels_of(saved: dict[str, Any]) -> Pixels | None:
    """How training normalised uint8 pixels: per data set, or from a user's file (None if it is not at hand)."""
    if saved.get("data"):
        from ..data import load_file

        try:
            file = load_file(saved["data"])
        except MarketplaceError:
            return None
        if file.x_train.dtype != torch.uint8:
            return None
        train = file.x_train.float() / 255.0
        return float(train.mean()), float(train.std()) or 1.0
    if saved.get("dataset") == cifar.NAME:
        return cifar.MEAN, cifar.STD
    return MEAN, STD


def engine_from_checkpoint(path: str | Path, config: ServerConfig) -> Engine:
    """The market of a `marketplace train` checkpoint, rebuilt from its record (head widened to `config.classes`)."""
    device = resolve_device(config.device)
    ckpt = load_checkpoint(path)
    market = market_from_checkpoint(ckpt, str(path), device)
    model = model_of(ckpt)
    classes = config.classes or model["classes"]
    market = widen_head(market, classes)
    vendors = market.vendor_counts if config.vendors is None else tuple(config.vendors)
    rank = market.rank if config.rank is None else config.rank
    if vendors != market.vendor_counts or rank != market.rank:  # same weights, other vendors
        if len(vendors) != market.depth:
            raise MarketplaceError(f"vendors gives {len(vendors)} counts; the checkpoint's market has "
                                   f"{market.depth} specs")
        market = Market(list(market.specs), list(vendors), market.sampling, rank=rank).to(device)
    model.update(depth=market.depth, served_classes=classes)
    made_for = f"{file_digest(path)}/{classes}" + (f"/{list(config.vendors)}" if config.vendors else "") \
        + (f"/rank{market.rank}" if market.rank else "")
    source = hashlib.sha256(made_for.encode()).hexdigest()
    return Engine(market, config, source, tuple(model["input_shape"]), model,
                  pixels=pixels_of(ckpt.meta.get("config", {})))


def engine_from_market(market: Market, config: ServerConfig, input_shape: tuple[int, ...],
                       model: dict[str, Any] | None = None, pixels: Pixels | None = None) -> Engine:
    """A user's market; its clients build the specs themselves (`PrivateClient(specs=...)`)."""
    h = hashlib.sha256(repr(market.vendor_counts).encode())
    for name, value in sorted(market.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return Engine(market, config, h.hexdigest(), input_shape, model, pixels=pixels)


def _from_preset(model: dict[str, Any]) -> dict[str, Any]:
    """A description in the older form ({"preset": "beautiful_mnist", ...}) as a model record."""
    return {**DEFAULT_RECORD, "norm": model.get("norm", "instance"), "batch": model.get("batch", 128),
            "classes": model["classes"], "depth": model["depth"]}


def specs_of(model: dict[str, Any] | None) -> list[torch.nn.Module]:
    """The specs a server's model record names, with the head it serves (what a client builds to load the weights)."""
    from ..models import build_model
    from ..norms import norm_layer

    if model and model.get("preset") == "beautiful_mnist":
        model = _from_preset(model)
    if not model or "source" not in model or "depth" not in model:
        raise MarketplaceError(f"the server's market has no model record this library can rebuild ({model!r}): "
                               "pass specs= to the client")
    try:
        specs = build_model(model["source"], model["depth"], model["input_shape"], model["classes"],
                            model.get("split"), norm=norm_layer(model.get("norm", "instance"), model.get("batch", 128)))
    except (MarketplaceError, ValueError) as e:  # e.g. a factory file that exists only on the server's machine
        raise MarketplaceError(f"cannot rebuild the server's model {model['source']} here "
                               f"({str(e).splitlines()[0]}): pass specs= to the client") from e
    served = model.get("served_classes") or model["classes"]
    if served != model["classes"]:
        specs = list(widen_head(Market(specs, [1] * len(specs)), served).specs)
    return specs
