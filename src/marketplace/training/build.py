"""What a training run is built from: its data, its market (from a config or a checkpoint), its optimizer.

Pure functions of a `TrainConfig`, so `Trainer`, `marketplace evaluate`,
the server and the experiments build the same market from the same settings.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .. import data
from ..errors import CheckpointError, MarketplaceError
from ..market import Market
from ..models import build_model, canonical_source, is_factory_source
from ..norms import norm_layer
from ..optim import OPTIMIZERS, ForwardGradient, MarketOptimizerProtocol, TorchMarketOptimizer
from .averaging import averaged_weights
from .checkpoint import Checkpoint
from .cheap_vendors import market_vendors, raised_rates
from .config import TrainConfig
from .schedules import Schedule, build_scheduler, build_torch_optimizer


def load_training_data(config: TrainConfig, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y of one split: from `config.data` (a user's file) if given, else the named data set."""
    if config.data:
        return data.load_file(config.data).inputs(split, device)
    return data.load_data(config.dataset, split, config.data_dir, device)


def data_shape(config: TrainConfig) -> tuple[tuple[int, ...], int]:
    """(shape of one example, number of classes) of the run's data, to build the model before loading it."""
    if config.data:
        file = data.load_file(config.data)
        return file.input_shape, file.classes
    return data.input_shape(config.dataset), data.num_classes(config.dataset)


def build_market(config: TrainConfig, device: torch.device, input_shape: Sequence[int] | None = None,
                 classes: int | None = None) -> Market:
    """`config.model` split into len(vendors) specs, initialised from the seed.

    input_shape, classes: what the model reads and predicts; by default those of
    the config's own data (its named data set or its file), never a fixed shape.
    """
    if input_shape is None or classes is None:
        shape, n = data_shape(config)
        input_shape = shape if input_shape is None else input_shape
        classes = n if classes is None else classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        specs = build_model(config.model, len(config.vendors), input_shape, classes, config.split,
                            norm=norm_layer(config.norm, config.batch))
    if len(specs) != len(config.vendors):
        raise MarketplaceError(f"vendors has {len(config.vendors)} counts but model {config.model} has "
                               f"{len(specs)} specs: give one count per spec", fields=("model", "vendors"))
    sampling = list(config.sampling) if config.sampling else 0
    return Market(specs, list(market_vendors(config, specs, input_shape)), sampling, rank=config.rank).to(device)


def model_record(config: TrainConfig, input_shape: Sequence[int], classes: int) -> dict[str, Any]:
    """What a checkpoint keeps to rebuild the model: where it came from and what it reads."""
    source = canonical_source(config.model) if is_factory_source(config.model) else config.model
    return {"source": source, "split": list(config.split) if config.split else None,
            "input_shape": list(input_shape), "classes": classes}


def market_from_checkpoint(ckpt: Checkpoint, path: str, device: torch.device) -> Market:
    """The market a `marketplace train` checkpoint was saved from, with the weights the run scored.

    Those are the averaged weights of a run with `average`, else the market's.

    A preset or a user's factory is rebuilt from the checkpoint's model record
    (checkpoints without one hold the beautiful-MNIST CNN).
    """
    saved = ckpt.meta.get("config", {})
    record = ckpt.meta.get("model") or {}
    split = record.get("split", saved.get("split"))
    config = TrainConfig(vendors=tuple(saved.get("vendors", (4, 4, 4))), sampling=saved.get("sampling"),
                         norm=saved.get("norm", "instance"), batch=saved.get("batch", 128),
                         model=record.get("source", saved.get("model", "beautiful-mnist")),
                         split=tuple(split) if split else None, cheap_vendors=saved.get("cheap_vendors", 0.0),
                         rank=int(saved.get("rank", 0)))
    market = build_market(config, device, tuple(record.get("input_shape", (1, 28, 28))), record.get("classes", 10))
    try:
        market.load_state_dict(averaged_weights(ckpt.optimizer) or ckpt.model)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not hold the {config.model} market it names: "
                              f"{str(e).splitlines()[0]}") from e
    return market


def build_torch_v2(config: TrainConfig, market: Market, lr: float | Sequence[float]) -> TorchMarketOptimizer:
    """V2's estimate under the configured torch optimizer and lr schedule."""
    optimizer = build_torch_optimizer(config.optimizer, market, lr, config.momentum, config.weight_decay,
                                      config.nesterov)
    schedule = Schedule(config.schedule, config.horizon(), config.warmup, config.decay, config.min_lr,
                        seconds=config.clock_horizon())
    estimator = ForwardGradient(market, optimizer, probe_scale=config.probe_scale, probe_width=config.probe_width,
                                seed=config.seed, attribution=config.attribution, direction=config.direction,
                                per_spec=config.per_spec, antithetic=config.antithetic,
                                cache_deltas=config.cache_deltas)
    return TorchMarketOptimizer(estimator, optimizer, build_scheduler(optimizer, schedule), config.clip,
                                config.on_nonfinite)


def default_rates(config: TrainConfig, vendor_counts: Sequence[int]) -> float | list[float]:
    """Each spec's rate: --lr as given, else the algorithm's default, halved (v2) where cheap_vendors raised it."""
    lr = config.rates()
    if config.lr is None and config.algorithm == "v2":
        return raised_rates(lr, config.vendors, vendor_counts)
    return lr


def build_optimizer(config: TrainConfig, market: Market) -> MarketOptimizerProtocol:
    """V1, V2 or AdaptiveV2; v2 with torch options goes through torch.optim (plain V2 is the same as sgd + constant)."""
    lr = default_rates(config, market.vendor_counts)
    if config.algorithm == "v2" and config.torch_options_used():
        return build_torch_v2(config, market, lr)
    common = dict(decay=config.decay, seed=config.seed, cache_deltas=config.cache_deltas,
                  on_nonfinite=config.on_nonfinite)
    if config.algorithm == "v1":
        return OPTIMIZERS["v1"](market, lr, **common)
    extra = dict(probe_scale=config.probe_scale, per_spec=config.per_spec)
    if config.algorithm == "adaptive":
        extra.update(meta_lr=config.meta_lr, rate_bounds=config.rate_bounds, rate_smoothing=config.rate_smoothing)
    return OPTIMIZERS[config.algorithm](market, lr, **extra, **common)
